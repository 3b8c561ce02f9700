"""The defining flow, as an operator and the invited person live it, against the four service processes."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import aiohttp
import asyncpg
import jwt
import pytest

from tests.integration.test_notifications import text_and_html
from tests.support.bus import EventRecorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e
OPERATOR_PASSWORD = "operator passphrase 1"
PASSWORD = "my own long passphrase"


async def operator_token(running, http) -> str:
    made = running.cli(
        "services.accounts",
        "create-operator",
        "--email",
        "ops@example.com",
        "--name",
        "Olga",
        "--password-stdin",
        stdin=OPERATOR_PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    resp = await http.post(
        f"{running.urls['accounts']}/v1/tokens", json={"email": "ops@example.com", "password": OPERATOR_PASSWORD}
    )
    assert resp.status == 200
    return (await resp.json())["access_token"]


async def test_an_operator_creates_a_customer_with_welcome_and_the_person_activates_and_logs_in(
    running, smtp_server, amqp, prefix
):
    recorder = await EventRecorder(amqp, prefix).start()
    async with aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {await operator_token(running, http)}"}
        resp = await http.post(
            f"{running.urls['customers']}/v1/customers",
            json={"full_name": "Ada Lovelace", "email": "ada@example.com", "send_welcome": True},
            headers=admin,
        )
        created_at = time.monotonic()
        assert resp.status == 201
        customer = await resp.json()
        assert (customer["kind"], customer["standing"]) == ("contact", "active")
        assert resp.headers["Location"] == f"/v1/customers/{customer['id']}"

        # within a second: exactly one welcome email, greeting by name, with the set-password link
        [message] = await wait_for(lambda: smtp_server.to("ada@example.com"), timeout=5, what="the welcome email")
        elapsed = time.monotonic() - created_at
        assert elapsed < 1.0, f"the welcome email took {elapsed:.2f}s"
        text, html = text_and_html(message)
        assert "Hello Ada Lovelace," in text and "Ada Lovelace" in html
        link = re.search(r"(http://127\.0\.0\.1:\d+/activate)#token=(\S+)", text)
        assert link, text
        page_url, token = link.groups()

        accounts = await (
            await http.get(
                f"{running.urls['accounts']}/v1/accounts", params={"customer_id": customer["id"]}, headers=admin
            )
        ).json()
        [account] = accounts["items"]
        assert account["status"] == "invited"
        deliveries = await (
            await http.get(
                f"{running.urls['notifications']}/v1/deliveries", params={"customer_id": customer["id"]}, headers=admin
            )
        ).json()
        [delivery] = deliveries["items"]
        assert (delivery["status"], delivery["template"]) == ("sent", "welcome")

        # the bus carried the three events, in the envelope, following one correlation id
        for key in ("customers.customer.created.v1", "accounts.account.created.v1", "notifications.email.sent.v1"):
            await wait_for(lambda key=key: recorder.of_type(key), what=key)
        events = {f"{e['event_type']}.v{e['event_version']}": e for e in recorder.events}
        correlation = events["customers.customer.created.v1"]["correlation_id"]
        assert correlation == resp.headers["X-Request-ID"]
        for key, event in events.items():
            assert event["correlation_id"] == correlation, key
            assert set(event) >= {
                "event_id",
                "event_type",
                "event_version",
                "occurred_at",
                "producer",
                "correlation_id",
                "causation_id",
                "subject",
                "sequence",
                "payload",
            }
        assert (
            events["accounts.account.created.v1"]["causation_id"] == events["customers.customer.created.v1"]["event_id"]
        )
        assert events["accounts.account.created.v1"]["payload"]["customer_id"] == customer["id"]

        # the person follows the link: the page is there, the password is set once
        page = await http.get(page_url)
        assert page.status == 200 and "Set your password" in await page.text()
        activation = await http.post(
            f"{running.urls['accounts']}/v1/activations", json={"token": token, "password": PASSWORD}
        )
        assert activation.status == 200
        assert (
            await http.post(f"{running.urls['accounts']}/v1/activations", json={"token": token, "password": PASSWORD})
        ).status == 400
        await wait_for(lambda: recorder.of_type("accounts.account.activated.v1"), what="account.activated")

        grant = await http.post(
            f"{running.urls['accounts']}/v1/tokens", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert grant.status == 200
        access = (await grant.json())["access_token"]
        claims = jwt.decode(access, options={"verify_signature": False})
        assert claims["customer_id"] == customer["id"]
        # a customer's token is not an operator's
        forbidden = await http.get(
            f"{running.urls['customers']}/v1/customers", headers={"Authorization": f"Bearer {access}"}
        )
        assert forbidden.status == 403

    assert len(smtp_server.to("ada@example.com")) == 1
    logs = running.all_logs()
    assert token not in logs and PASSWORD not in logs and OPERATOR_PASSWORD not in logs


async def test_without_the_welcome_flag_there_is_no_account_and_no_email(running, smtp_server, amqp, prefix):
    recorder = await EventRecorder(amqp, prefix).start()
    async with aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {await operator_token(running, http)}"}
        resp = await http.post(
            f"{running.urls['customers']}/v1/customers",
            json={"full_name": "Quiet Contact", "email": "quiet@example.com"},
            headers=admin,
        )
        assert resp.status == 201
        customer = await resp.json()
        [event] = await wait_for(lambda: recorder.of_type("customers.customer.created.v1"), what="customer.created")
        assert event["payload"]["send_welcome"] is False
        conn = await asyncpg.connect(running.env["ACCOUNTS_DATABASE_URL"])
        try:
            await wait_for(
                lambda: conn.fetchval("SELECT 1 FROM inbox WHERE event_id = $1", event["event_id"]),
                what="accounts to have handled the event",
            )
            assert await conn.fetchval("SELECT count(*) FROM accounts WHERE customer_id = $1", customer["id"]) == 0
        finally:
            await conn.close()
        got = await http.get(f"{running.urls['customers']}/v1/customers/{customer['id']}", headers=admin)
        assert (await got.json())["full_name"] == "Quiet Contact"
        deliveries = await (
            await http.get(
                f"{running.urls['notifications']}/v1/deliveries", params={"customer_id": customer["id"]}, headers=admin
            )
        ).json()
        assert deliveries["items"] == []
    assert smtp_server.to("quiet@example.com") == []
    assert recorder.of_type("accounts.account.created.v1") == []


async def test_sigterm_and_ctrl_c_stop_every_service_cleanly(running):
    sent = {
        "customers": signal.SIGTERM,
        "accounts": signal.SIGINT,
        "visitors": signal.SIGTERM,
        "notifications": signal.SIGINT,
    }
    for name, sig in sent.items():
        running.procs[name].send_signal(sig)
    codes = {name: proc.wait(timeout=20) for name, proc in running.procs.items()}
    assert codes == {name: 0 for name in running.procs}, running.all_logs()[-3000:]
    assert "Traceback" not in running.all_logs()


async def test_operator_command_refuses_a_short_password_and_a_duplicate_email(running):
    short = running.cli(
        "services.accounts",
        "create-operator",
        "--email",
        "o@example.com",
        "--name",
        "O",
        "--password-stdin",
        stdin="short\n",
    )
    assert short.returncode == 1 and "at least" in short.stderr
    ok = running.cli(
        "services.accounts",
        "create-operator",
        "--email",
        "o@example.com",
        "--name",
        "O",
        "--password-stdin",
        stdin=OPERATOR_PASSWORD + "\n",
    )
    assert ok.returncode == 0
    again = running.cli(
        "services.accounts",
        "create-operator",
        "--email",
        "O@example.com",
        "--name",
        "O",
        "--password-stdin",
        stdin=OPERATOR_PASSWORD + "\n",
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    await asyncio.sleep(0)


async def test_a_member_whose_plan_ends_becomes_a_contact_and_accounts_follows(running, smtp_server, amqp, prefix):
    from datetime import date, timedelta

    recorder = await EventRecorder(amqp, prefix).start()
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    async with aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {await operator_token(running, http)}"}
        customers = running.urls["customers"]
        customer = await (
            await http.post(
                f"{customers}/v1/customers",
                json={"full_name": "Marie Member", "email": "marie@example.com", "send_welcome": True},
                headers=admin,
            )
        ).json()
        plan = await (
            await http.post(
                f"{customers}/v1/plans",
                json={"name": "Resident", "price_minor": 25000, "currency": "EUR", "billing_period": "month"},
                headers=admin,
            )
        ).json()

        async def account_role() -> str | None:
            page = await (
                await http.get(
                    f"{running.urls['accounts']}/v1/accounts", params={"customer_id": customer["id"]}, headers=admin
                )
            ).json()
            return page["items"][0]["role"] if page["items"] else None

        await wait_for(lambda: account_role(), what="the invited account")
        contract = await (
            await http.post(
                f"{customers}/v1/customers/{customer['id']}/contracts",
                json={"plan_id": plan["id"], "starts_on": yesterday},
                headers=admin,
            )
        ).json()
        assert contract["status"] == "active"
        await wait_for(lambda: _is(account_role(), "member"), what="the account's role to follow: member")

        cancelled = await http.post(
            f"{customers}/v1/contracts/{contract['id']}/cancellation",
            json={"ends_on": yesterday, "reason": "plan ended"},
            headers=admin,
        )
        assert cancelled.status == 200
        got = await (await http.get(f"{customers}/v1/customers/{customer['id']}", headers=admin)).json()
        assert got["kind"] == "contact"

        async def portal_access() -> str:
            c = await (await http.get(f"{customers}/v1/customers/{customer['id']}", headers=admin)).json()
            return c["portal_access"]

        # customers learns it from accounts' events
        await wait_for(lambda: _is(portal_access(), "invited"), what="portal access seen by customers")
        await wait_for(lambda: _is(account_role(), "contact"), what="the account's role to follow: contact")
    # the account row changes first; its event is relayed just after
    changes = await wait_for(
        lambda: (
            len(recorder.of_type("accounts.account.role_changed.v1")) >= 2
            and recorder.of_type("accounts.account.role_changed.v1")
        ),
        what="both role_changed events",
    )
    assert [e["payload"]["role"] for e in sorted(changes, key=lambda e: e["sequence"])] == ["member", "contact"]


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected


async def test_the_operator_cli_resends_a_welcome_and_shows_outbox_and_dead_letters(running, smtp_server):
    async with aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {await operator_token(running, http)}"}
        await http.post(
            f"{running.urls['customers']}/v1/customers",
            json={"full_name": "Late Larry", "email": "larry@example.com", "send_welcome": True},
            headers=admin,
        )
        [first] = await wait_for(lambda: smtp_server.to("larry@example.com"), what="the first welcome")
        resent = running.cli("services", "resend-welcome", "--email", "LARRY@example.com")
        assert resent.returncode == 0, resent.stderr
        second = await wait_for(
            lambda: len(smtp_server.to("larry@example.com")) == 2 and smtp_server.to("larry@example.com"),
            what="the second welcome",
        )
        old, new = (re.search(r"#token=(\S+)", text_and_html(m)[0]).group(1) for m in (first, second[1]))
        accounts = running.urls["accounts"]
        assert (await http.post(f"{accounts}/v1/activations", json={"token": old, "password": PASSWORD})).status == 400
        assert (await http.post(f"{accounts}/v1/activations", json={"token": new, "password": PASSWORD})).status == 200
    again = running.cli("services", "resend-welcome", "--email", "larry@example.com")
    assert again.returncode == 1 and "active" in again.stderr
    outbox = running.cli("services", "outbox")
    assert outbox.returncode == 0 and "customers" in outbox.stdout and "backlog=" in outbox.stdout
    dead = running.cli("services", "dead-letters")
    assert dead.returncode == 0 and "accounts.customer-events" in dead.stdout and "0 dead letter(s)" in dead.stdout
