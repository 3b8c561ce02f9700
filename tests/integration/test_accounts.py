"""Accounts as the invited person and the other services meet it: the set-password link, activation, login,
and the public keys. Nothing here may tell a caller which emails have accounts."""

from __future__ import annotations

import asyncio
import re
import uuid

import aiohttp
import jwt
import pytest

from tests.integration.test_messaging import body, customer_created
from tests.integration.test_notifications import text_and_html
from tests.support.bus import EventRecorder, publish_raw
from tests.support.wait import wait_for

PASSWORD = "a long enough passphrase"


@pytest.fixture
async def invited(system_factory, amqp, prefix, smtp):
    """Accounts and notifications running; ``invite(email)`` creates a customer event and returns the token
    from the welcome email."""
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(smtp_port=smtp.port)
    await system.start("accounts", "notifications")

    async def invite(email: str) -> tuple[str, dict]:
        envelope = customer_created(email)
        await publish_raw(amqp, f"{prefix}events", envelope.routing_key, body(envelope), str(envelope.event_id))
        [message] = await wait_for(lambda: smtp.to(email), what=f"the welcome email to {email}")
        link = re.search(r"http://portal\.test/activate#token=(\S+)", text_and_html(message)[0])
        assert link, "the welcome email carries the set-password link"
        return link.group(1), envelope.payload

    async with aiohttp.ClientSession(base_url=system.urls["accounts"]) as http:
        yield system, http, invite, recorder


async def activate(http, token: str, password: str = PASSWORD):
    return await http.post("/v1/activations", json={"token": token, "password": password})


async def login(http, email: str, password: str = PASSWORD):
    return await http.post("/v1/tokens", json={"email": email, "password": password})


async def test_following_the_link_sets_the_password_activates_the_account_and_login_returns_a_token(invited):
    _system, http, invite, recorder = invited
    token, customer = await invite("ada@example.com")
    resp = await activate(http, token)
    assert resp.status == 200
    assert (await resp.json())["status"] == "active"
    [activated] = await wait_for(lambda: recorder.of_type("accounts.account.activated.v1"), what="activated event")
    assert activated["payload"]["customer_id"] == customer["customer_id"]
    assert activated["sequence"] == 2  # created = 1, activated = 2

    resp = await login(http, "ADA@example.com")
    assert resp.status == 200
    grant = await resp.json()
    assert (grant["token_type"], grant["expires_in"]) == ("Bearer", 900)
    jwks = await (await http.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(grant["access_token"])
    [key] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    claims = jwt.decode(
        grant["access_token"],
        jwt.PyJWK(key).key,
        algorithms=["ES256"],
        audience="coworking",
        issuer="coworking-accounts",
    )
    assert claims["customer_id"] == customer["customer_id"]
    assert (claims["role"], claims["standing"]) == ("contact", "active")

    me = await http.get(f"/v1/accounts/{claims['sub']}", headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert (await me.json())["status"] == "active"
    other = await http.get(f"/v1/accounts/{uuid.uuid4()}", headers={"Authorization": f"Bearer {grant['access_token']}"})
    assert other.status == 404


async def test_a_used_link_stops_working(invited):
    _, http, invite, _ = invited
    token, _ = await invite("once@example.com")
    assert (await activate(http, token)).status == 200
    again = await activate(http, token, "another long passphrase")
    assert again.status == 400
    assert (await login(http, "once@example.com", "another long passphrase")).status == 401
    assert (await login(http, "once@example.com")).status == 200


async def test_an_expired_link_gets_the_same_answer_as_an_unknown_one(invited):
    system, http, invite, _ = invited
    token, _ = await invite("late@example.com")
    await system.runtime("accounts").db.execute("UPDATE invitations SET expires_at = now() - interval '1 minute'")
    expired = await activate(http, token)
    unknown = await activate(http, "this-token-was-never-issued")
    assert expired.status == unknown.status == 400
    assert await expired.json() | {"instance": None} == await unknown.json() | {"instance": None}


async def test_a_short_password_is_refused_naming_the_field_and_the_link_still_works(invited):
    _, http, invite, _ = invited
    token, _ = await invite("short@example.com")
    resp = await activate(http, token, "short")
    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == ["password"]
    assert (await activate(http, token)).status == 200


async def test_two_concurrent_activations_with_one_link_only_one_wins(invited):
    _, http, invite, _ = invited
    token, _ = await invite("race@example.com")
    results = await asyncio.gather(*(activate(http, token, f"{PASSWORD} {i}") for i in range(4)))
    assert sorted(r.status for r in results) == [200, 400, 400, 400]


async def test_login_failures_look_the_same_whether_or_not_the_email_has_an_account(invited):
    _, http, invite, _ = invited
    token, _ = await invite("known@example.com")
    await invite("invited-only@example.com")
    assert (await activate(http, token)).status == 200
    answers = [
        await login(http, "known@example.com", "wrong password here"),
        await login(http, "nobody@example.com"),
        await login(http, "invited-only@example.com"),
    ]
    assert {r.status for r in answers} == {401}
    bodies = [await r.json() | {"instance": None} for r in answers]
    assert bodies[0] == bodies[1] == bodies[2]
    bad = await http.post("/v1/tokens", json={"email": "known@example.com"})
    assert bad.status == 422


async def test_the_token_is_stored_only_as_a_hash_and_never_travels_in_clear(invited):
    system, _http, invite, recorder = invited
    token, _ = await invite("secret@example.com")
    accounts_db = system.runtime("accounts").db
    notifications_db = system.runtime("notifications").db
    stored = await accounts_db.fetchval("SELECT token_hash FROM invitations")
    assert len(stored) == 32 and token.encode() not in stored
    outbox = b"".join(r["body"] for r in await accounts_db.fetch("SELECT body FROM outbox"))
    assert token.encode() not in outbox
    deliveries = await notifications_db.fetch("SELECT * FROM deliveries")
    assert all(token not in str(dict(r)) for r in deliveries)
    assert all(token not in str(e) for e in recorder.events)


async def test_an_operator_resends_the_link_the_old_one_stops_and_the_new_one_works(invited, keys, smtp):
    system, http, invite, _ = invited
    old_token, customer = await invite("resend@example.com")
    account_id = await system.runtime("accounts").db.fetchval(
        "SELECT id FROM accounts WHERE customer_id = $1", uuid.UUID(customer["customer_id"])
    )
    admin = {"Authorization": f"Bearer {keys.token()}"}
    url = f"/v1/accounts/{account_id}/invitations"
    member = {"Authorization": f"Bearer {keys.token('member', uuid.uuid4())}"}
    assert (await http.post(url, headers=member)).status == 403
    assert (await http.post(f"/v1/accounts/{uuid.uuid4()}/invitations", headers=admin)).status == 404
    resent = await http.post(url, headers=admin)
    assert resent.status == 202
    messages = await wait_for(
        lambda: len(smtp.to("resend@example.com")) == 2 and smtp.to("resend@example.com"),
        what="the second welcome email",
    )
    new_token = re.search(r"#token=(\S+)", text_and_html(messages[1])[0]).group(1)
    assert new_token != old_token
    assert (await activate(http, old_token)).status == 400
    assert (await activate(http, new_token)).status == 200
    again = await http.post(url, headers=admin)
    assert again.status == 409
    assert (await again.json())["account_status"] == "active"
