"""A visit as the front desk lives it, against the four service processes: an operator registers a visitor for a
customer, the visitor's email carries the check-in code, the kiosk checks them in with it and the host is told."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from services.visitors.domain import CODE_ALPHABET
from tests.e2e.test_welcome_flow import operator_token
from tests.integration.test_notifications import text_and_html
from tests.support.bus import EventRecorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e


async def test_a_registered_visitor_checks_in_at_the_kiosk_with_the_code_from_their_email(
    running, smtp_server, amqp, prefix
):
    recorder = await EventRecorder(amqp, prefix).start()
    async with aiohttp.ClientSession() as http:
        admin = {"Authorization": f"Bearer {await operator_token(running, http)}"}
        resp = await http.post(
            f"{running.urls['customers']}/v1/customers",
            json={"full_name": "Ada Lovelace", "email": "ada@example.com"},
            headers=admin,
        )
        assert resp.status == 201
        host_id = (await resp.json())["id"]

        visitors = running.urls["visitors"]
        expected_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        body = {
            "visitor": {"full_name": "Grace Hopper", "email": "grace@example.org", "company_name": "Navy"},
            "host_customer_id": host_id,
            "purpose": "meeting",
            "expected_at": expected_at.isoformat(),
        }
        key = {"Idempotency-Key": str(uuid.uuid4()), **admin}

        async def register() -> dict | None:
            """422 until visitors has the host from customers' event; the key makes retrying safe."""
            async with http.post(f"{visitors}/v1/visits", json=body, headers=key) as r:
                if r.status == 422:
                    return None
                assert r.status == 201, await r.text()
                return await r.json()

        visit = await wait_for(register, timeout=5, interval=0.1, what="visitors to know the host and register")
        assert (visit["status"], visit["host_name"]) == ("expected", "Ada Lovelace")

        [mail] = await wait_for(lambda: smtp_server.to("grace@example.org"), timeout=5, what="the visitor's email")
        text, _ = text_and_html(mail)
        assert "Ada Lovelace" in text
        code = re.search(f"check-in code: ([{CODE_ALPHABET}]{{6}})", text)
        assert code and code.group(1) == visit["check_in_code"], text

        resp = await http.post(f"{visitors}/v1/check-ins", json={"code": code.group(1).lower()}, headers=admin)
        assert resp.status == 200
        assert (await resp.json())["status"] == "checked_in"
        [arrived] = await wait_for(lambda: smtp_server.to("ada@example.com"), timeout=5, what="the host's email")
        assert "Grace Hopper has arrived" in arrived["Subject"]

        resp = await http.post(f"{visitors}/v1/visits/{visit['id']}/check-out", headers=admin)
        assert resp.status == 200
        resp = await http.get(
            f"{running.urls['notifications']}/v1/deliveries", params={"customer_id": host_id}, headers=admin
        )
        [delivery] = (await resp.json())["items"]
        assert (delivery["template"], delivery["status"]) == ("host_visitor_arrived", "sent")

    for key in ("registered", "checked_in", "checked_out"):
        await wait_for(lambda k=key: recorder.of_type(f"visitors.visit.{k}.v1"), timeout=5, what=f"{key} event")
    assert "grace@example.org" not in running.all_logs()
