"""Account security as a person (or an attacker) meets it: common passwords refused, failed logins throttled
without telling which emails have accounts, and the password reset by emailed single-use link."""

from __future__ import annotations

import re

import aiohttp
import asyncpg
import jwt
import pytest

from tests.integration.test_messaging import body, customer_created
from tests.integration.test_notifications import text_and_html
from tests.support.bus import publish_raw
from tests.support.wait import wait_for

PASSWORD = "a long enough passphrase"
NEW_PASSWORD = "another long passphrase"


@pytest.fixture
async def accounts(system_factory, amqp, prefix, smtp):
    """Accounts and notifications running; ``person(email)`` creates a customer, follows the welcome link and
    sets PASSWORD."""
    system = system_factory(smtp_port=smtp.port)
    await system.start("accounts", "notifications")

    async def invite(email: str) -> str:
        envelope = customer_created(email)
        await publish_raw(amqp, f"{prefix}events", envelope.routing_key, body(envelope), str(envelope.event_id))
        [message] = await wait_for(lambda: smtp.to(email), what=f"the welcome email to {email}")
        return re.search(r"/activate#token=(\S+)", text_and_html(message)[0]).group(1)

    async with aiohttp.ClientSession(base_url=system.urls["accounts"]) as http:

        async def person(email: str) -> None:
            resp = await http.post("/v1/activations", json={"token": await invite(email), "password": PASSWORD})
            assert resp.status == 200

        yield system, http, invite, person


async def login(http, email: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
    return await http.post("/v1/tokens", json={"email": email, "password": password})


async def travel_past_the_window(system) -> None:
    conn = await asyncpg.connect(system.databases["accounts"])
    try:
        await conn.execute("UPDATE login_failures SET at = at - interval '16 minutes'")
    finally:
        await conn.close()


async def test_a_common_password_is_refused_whatever_its_case(accounts):
    _system, http, invite, _person = accounts
    token = await invite("ada@example.com")
    for common in ("Password1234", "QWERTY123456", "correcthorsebatterystaple"):
        resp = await http.post("/v1/activations", json={"token": token, "password": common})
        assert resp.status == 422
        problem = await resp.json()
        assert {"field": "password", "message": "is too common", "type": "password_policy"} in problem["errors"]
    # the link still works with a good password
    assert (await http.post("/v1/activations", json={"token": token, "password": PASSWORD})).status == 200


async def test_repeated_failed_logins_are_throttled_alike_for_known_and_unknown_emails_until_the_window_passes(
    accounts,
):
    system, http, _invite, person = accounts
    await person("ada@example.com")
    refusals = {}
    for email in ("Ada@example.com", "nobody@example.com"):
        for _ in range(5):
            assert (await login(http, email, "wrong password guess")).status == 401
        resp = await login(http, email, "wrong password guess")
        assert resp.status == 429
        retry_after = int(resp.headers["Retry-After"])
        assert 0 < retry_after <= 900
        refusals[email] = await resp.json()
    assert refusals["Ada@example.com"] == refusals["nobody@example.com"]  # nothing tells which email exists
    assert refusals["nobody@example.com"]["type"] == "urn:problem:too-many-attempts"

    # the right password during the lockout is refused too (else guessing would go on), in any case of the email
    resp = await login(http, "ada@EXAMPLE.com")
    assert resp.status == 429 and "Retry-After" in resp.headers
    # refused attempts do not extend the lockout: once the failures leave the window, login works again
    await travel_past_the_window(system)
    resp = await login(http, "ada@example.com")
    assert resp.status == 200
    assert "access_token" in await resp.json()


async def test_a_successful_login_clears_the_earlier_failures_of_the_email(accounts):
    _system, http, _invite, person = accounts
    await person("ada@example.com")
    for _ in range(4):
        assert (await login(http, "ada@example.com", "wrong password guess")).status == 401
    assert (await login(http, "ada@example.com")).status == 200
    for _ in range(5):
        assert (await login(http, "ada@example.com", "wrong password guess")).status == 401
    assert (await login(http, "ada@example.com")).status == 429


async def test_many_failed_logins_from_one_address_are_throttled_across_emails(accounts):
    system, http, _invite, person = accounts
    await person("ada@example.com")
    for i in range(50):
        assert (await login(http, f"guess{i}@example.com", "wrong password guess")).status == 401
    resp = await login(http, "ada@example.com")  # a fresh email from the same address
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    await travel_past_the_window(system)
    assert (await login(http, "ada@example.com")).status == 200


async def reset_link(smtp, email: str, count: int) -> str:
    messages = await wait_for(lambda: len(smtp.to(email)) >= count and smtp.to(email), what="the reset email")
    message = messages[count - 1]
    assert "reset your password" in message["Subject"]
    text, html = text_and_html(message)
    link = re.search(r"http://portal\.test/reset-password#token=(\S+)", text)
    assert link, "the reset email carries the link"
    assert link.group(0) in html
    return link.group(1)


async def test_a_password_reset_link_arrives_by_email_and_sets_a_new_password_once(accounts, smtp, keys):
    _system, http, _invite, person = accounts
    await person("ada@example.com")
    admin = {"Authorization": f"Bearer {keys.token()}"}
    [account] = (await (await http.get("/v1/accounts", headers=admin)).json())["items"]

    answers = []

    async def request_reset(email: str) -> None:
        resp = await http.post("/v1/password-resets", json={"email": email})
        assert resp.status == 202
        answers.append(await resp.json())

    await request_reset("ADA@example.com")
    await request_reset("nobody@example.com")
    first = await reset_link(smtp, "ada@example.com", 2)  # the welcome email, then the first reset
    # the second request only once the first email is in: emails sent at the same moment may arrive in any order
    await request_reset("ada@example.com")
    second = await reset_link(smtp, "ada@example.com", 3)
    assert answers[0] == answers[1] == answers[2] == {"status": "accepted"}

    # a newer link replaces the earlier one; a reset token is no set-password token
    confirm = "/v1/password-resets/confirm"
    assert (await http.post(confirm, json={"token": first, "password": NEW_PASSWORD})).status == 400
    assert (await http.post("/v1/activations", json={"token": second, "password": NEW_PASSWORD})).status == 400
    resp = await http.post(confirm, json={"token": second, "password": "Password1234"})
    assert resp.status == 422 and (await resp.json())["errors"][0]["field"] == "password"

    resp = await http.post(confirm, json={"token": second, "password": NEW_PASSWORD})
    assert resp.status == 200
    assert await resp.json() == {"status": "password_changed"}
    again = await http.post(confirm, json={"token": second, "password": "yet another passphrase"})
    assert again.status == 400 and (await again.json())["type"] == "urn:problem:invalid-token"

    assert (await login(http, "ada@example.com")).status == 401
    assert (await login(http, "ada@example.com", NEW_PASSWORD)).status == 200
    after = await (await http.get(f"/v1/accounts/{account['id']}", headers=admin)).json()
    assert after["version"] > account["version"]
    assert smtp.to("nobody@example.com") == []


async def test_a_password_reset_lifts_the_login_throttle_of_the_email(accounts, smtp):
    _system, http, _invite, person = accounts
    await person("ada@example.com")
    for _ in range(6):
        await login(http, "ada@example.com", "wrong password guess")
    assert (await login(http, "ada@example.com")).status == 429
    assert (await http.post("/v1/password-resets", json={"email": "ada@example.com"})).status == 202
    token = await reset_link(smtp, "ada@example.com", 2)
    resp = await http.post("/v1/password-resets/confirm", json={"token": token, "password": NEW_PASSWORD})
    assert resp.status == 200
    assert (await login(http, "ada@example.com", NEW_PASSWORD)).status == 200


async def test_the_reset_page_is_served_without_leaking_the_token(accounts):
    _system, http, _invite, _person = accounts
    resp = await http.get("/reset-password")
    assert resp.status == 200
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "/v1/password-resets/confirm" in await resp.text()


async def refresh(http, token: str) -> aiohttp.ClientResponse:
    return await http.post("/v1/tokens", json={"grant_type": "refresh_token", "refresh_token": token})


async def test_a_refresh_token_rotates_and_a_reused_one_revokes_its_whole_family(accounts):
    _system, http, _invite, person = accounts
    await person("ada@example.com")
    first = (await (await login(http, "ada@example.com")).json())["refresh_token"]
    other_login = (await (await login(http, "ada@example.com")).json())["refresh_token"]

    resp = await refresh(http, first)
    assert resp.status == 200
    grant = await resp.json()
    assert grant["token_type"] == "Bearer" and grant["access_token"]
    second = grant["refresh_token"]
    assert second != first
    claims = jwt.decode(grant["access_token"], options={"verify_signature": False})
    assert (claims["role"], claims["standing"]) == ("contact", "active")

    # the rotated token presented again: refused, and the family (the newer token too) is revoked
    reused = await refresh(http, first)
    assert reused.status == 400 and (await reused.json())["error"] == "invalid_grant"
    assert (await refresh(http, second)).status == 400
    # another login's family goes on
    assert (await refresh(http, other_login)).status == 200
    assert (await refresh(http, "not a token")).status == 400


async def test_logout_and_a_password_reset_revoke_refresh_tokens(accounts, smtp):
    _system, http, _invite, person = accounts
    await person("ada@example.com")
    session = (await (await login(http, "ada@example.com")).json())["refresh_token"]
    kept = (await (await login(http, "ada@example.com")).json())["refresh_token"]
    rotated = (await (await refresh(http, session)).json())["refresh_token"]

    assert (await http.post("/v1/logout", json={"refresh_token": rotated})).status == 204
    assert (await refresh(http, rotated)).status == 400
    assert (await http.post("/v1/logout", json={"refresh_token": "unknown"})).status == 204

    assert (await http.post("/v1/password-resets", json={"email": "ada@example.com"})).status == 202
    token = await reset_link(smtp, "ada@example.com", 2)
    resp = await http.post("/v1/password-resets/confirm", json={"token": token, "password": NEW_PASSWORD})
    assert resp.status == 200
    assert (await refresh(http, kept)).status == 400
