"""Other internal services call the APIs with their own scoped credentials, never an operator's."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


async def test_a_service_client_created_by_the_operator_command_gets_a_token_limited_to_its_scopes(
    system_factory, keys
):
    system = system_factory()
    await system.start("accounts", "customers", "notifications")
    made = subprocess.run(
        [sys.executable, "-m", "services", "create-service-client", "--name", "billing", "--scope", "customers:read"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "ACCOUNTS_DATABASE_URL": system.databases["accounts"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    fields = dict(line.split("=", 1) for line in made.stdout.splitlines() if "=" in line)
    client_id, secret = fields["client_id"], fields["client_secret"]
    again = subprocess.run(
        [sys.executable, "-m", "services", "create-service-client", "--name", "billing", "--scope", "customers:read"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "ACCOUNTS_DATABASE_URL": system.databases["accounts"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "exists" in again.stderr
    stored = await system.runtime("accounts").db.fetchval("SELECT secret_hash FROM service_clients")
    assert secret.encode() not in bytes(stored)

    accounts, customers = system.urls["accounts"], system.urls["customers"]
    async with aiohttp.ClientSession() as http:
        grant = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        resp = await http.post(f"{accounts}/v1/tokens", json=grant)
        assert resp.status == 200, await resp.text()
        service = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
        wrong = await http.post(f"{accounts}/v1/tokens", json={**grant, "client_secret": "nope"})
        assert wrong.status == 401 and (await wrong.json())["error"] == "invalid_client"
        unknown = await http.post(f"{accounts}/v1/tokens", json={**grant, "client_id": str(uuid.uuid4())})
        assert unknown.status == 401

        operator = {"Authorization": f"Bearer {keys.token()}"}
        created = await http.post(
            f"{customers}/v1/customers",
            json={"full_name": "Seen By Billing", "email": "b@example.com"},
            headers=operator,
        )
        customer_id = (await created.json())["id"]
        assert (await http.get(f"{customers}/v1/customers/{customer_id}", headers=service)).status == 200
        assert (await http.get(f"{customers}/v1/customers", headers=service)).status == 200
        denied = await http.post(
            f"{customers}/v1/customers", json={"full_name": "X", "email": "x@example.com"}, headers=service
        )
        assert denied.status == 403 and (await denied.json())["type"] == "urn:problem:scope"
        assert (await http.post(f"{customers}/v1/plans", json={}, headers=service)).status == 403
        assert (await http.get(f"{system.urls['notifications']}/v1/deliveries", headers=service)).status == 403
