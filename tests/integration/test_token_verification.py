"""Services verify accounts' tokens with the public keys it publishes, and say so when they cannot."""

from __future__ import annotations

import uuid

import aiohttp

from services.accounts import security, store
from tests.support.smtp import free_port
from tests.support.tokens import KeyRing

PASSWORD = "operator passphrase 1"


async def make_operator(system) -> None:
    async with system.runtime("accounts").db.acquire() as conn:
        await store.insert_account(
            conn,
            account_id=uuid.uuid4(),
            customer_id=None,
            email="ops@example.com",
            full_name="Ops",
            role="admin",
            status="active",
            password_hash=security.hash_password(PASSWORD),
        )


async def test_a_token_from_accounts_is_accepted_by_customers_through_the_jwks(system_factory, tmp_path):
    accounts = system_factory()
    await accounts.start("accounts")
    await make_operator(accounts)
    system = system_factory(jwks_url=f"{accounts.urls['accounts']}/.well-known/jwks.json")
    await system.start("customers")
    async with aiohttp.ClientSession() as http:
        grant = await http.post(
            f"{accounts.urls['accounts']}/v1/tokens", json={"email": "ops@example.com", "password": PASSWORD}
        )
        token = (await grant.json())["access_token"]
        created = await http.post(
            f"{system.urls['customers']}/v1/customers",
            json={"full_name": "Via JWKS", "email": "jwks@example.com"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status == 201
        # a well-formed admin token signed by a key accounts does not publish is refused
        forged = KeyRing(tmp_path).token("admin")
        refused = await http.get(
            f"{system.urls['customers']}/v1/customers", headers={"Authorization": f"Bearer {forged}"}
        )
        assert refused.status == 401


async def test_when_the_issuer_is_unreachable_a_valid_token_gets_503_not_401(system_factory, keys):
    system = system_factory(jwks_url=f"http://127.0.0.1:{free_port()}/.well-known/jwks.json")
    await system.start("customers")
    async with aiohttp.ClientSession() as http:
        resp = await http.get(
            f"{system.urls['customers']}/v1/customers", headers={"Authorization": f"Bearer {keys.token()}"}
        )
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert resp.content_type == "application/problem+json"
