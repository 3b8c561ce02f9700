"""Revoking portal access: the person cannot log in, and tokens already handed out stop working everywhere."""

from __future__ import annotations

import re
import uuid

import aiohttp

from tests.integration.test_notifications import text_and_html
from tests.support.bus import EventRecorder
from tests.support.wait import wait_for

PASSWORD = "a long enough passphrase"


async def test_revoked_access_refuses_login_and_old_tokens_in_every_service_until_restored(
    system_factory, amqp, prefix, smtp, keys
):
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(smtp_port=smtp.port)
    await system.start()
    admin = {"Authorization": f"Bearer {keys.token()}"}
    c_url, a_url = system.urls["customers"], system.urls["accounts"]
    async with aiohttp.ClientSession() as http:
        customer = await (
            await http.post(
                f"{c_url}/v1/customers",
                json={"full_name": "Rita Revoked", "email": "rita@example.com", "send_welcome": True},
                headers=admin,
            )
        ).json()
        [mail] = await wait_for(lambda: smtp.to("rita@example.com"), what="welcome email")
        token = re.search(r"#token=(\S+)", text_and_html(mail)[0]).group(1)
        assert (await http.post(f"{a_url}/v1/activations", json={"token": token, "password": PASSWORD})).status == 200

        async def login() -> aiohttp.ClientResponse:
            return await http.post(f"{a_url}/v1/tokens", json={"email": "rita@example.com", "password": PASSWORD})

        old = {"Authorization": f"Bearer {(await (await login()).json())['access_token']}"}
        me = f"{c_url}/v1/customers/{customer['id']}"
        assert (await http.get(me, headers=old)).status == 200
        account_id = (
            await (await http.get(f"{a_url}/v1/accounts", params={"customer_id": customer["id"]}, headers=admin)).json()
        )["items"][0]["id"]

        member = {"Authorization": f"Bearer {keys.token('member', uuid.UUID(customer['id']))}"}
        assert (await http.post(f"{a_url}/v1/accounts/{account_id}/revocation", headers=member)).status == 403
        revoked = await http.post(f"{a_url}/v1/accounts/{account_id}/revocation", headers=admin)
        assert revoked.status == 200 and (await revoked.json())["status"] == "revoked"
        assert (await http.post(f"{a_url}/v1/accounts/{account_id}/revocation", headers=admin)).status == 409
        assert (await login()).status == 401
        assert (await http.get(f"{a_url}/v1/accounts/{account_id}", headers=old)).status == 401

        async def refused_by_customers() -> bool:
            return (await http.get(me, headers=old)).status == 401

        await wait_for(refused_by_customers, what="customers to refuse the old token")

        async def portal(expected: str) -> bool:
            return (await (await http.get(me, headers=admin)).json())["portal_access"] == expected

        await wait_for(lambda: portal("revoked"), what="portal access revoked in customers")

        restored = await http.delete(f"{a_url}/v1/accounts/{account_id}/revocation", headers=admin)
        assert restored.status == 200 and (await restored.json())["status"] == "active"
        assert (await http.delete(f"{a_url}/v1/accounts/{account_id}/revocation", headers=admin)).status == 409
        await wait_for(lambda: portal("active"), what="portal access back in customers")
        assert (await http.get(me, headers=old)).status == 401  # tokens from before the revocation stay dead

        async def new_login_works() -> bool:
            # token times are whole seconds: one issued in the second of the revocation counts as before it
            fresh = await login()
            assert fresh.status == 200
            new = {"Authorization": f"Bearer {(await fresh.json())['access_token']}"}
            return (await http.get(me, headers=new)).status == 200

        await wait_for(new_login_works, timeout=3, interval=0.3, what="a new login to work")
    [event] = await wait_for(lambda: recorder.of_type("accounts.account.revoked.v1"), what="the revoked event")
    assert event["payload"]["account_id"] == account_id
    await wait_for(lambda: recorder.of_type("accounts.account.restored.v1"), what="the restored event")
