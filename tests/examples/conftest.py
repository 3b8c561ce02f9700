"""The examples (examples/coworking_client, examples/consumer.py) against the services running in the test
process. The examples are imported from the repository's examples/ folder, as a reader would run them."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.smtp import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

from coworking_client import Client  # noqa: E402


@pytest.fixture
async def system(system_factory, smtp):
    """customers, accounts and notifications, with emails going to the test's SMTP server."""
    system = system_factory(smtp_port=smtp.port)
    await system.start("customers", "accounts", "notifications")
    return system


@pytest.fixture
async def api(system, keys) -> AsyncIterator[Client]:
    """The example client with an operator token (signed with the key the in-process services trust)."""
    async with Client(dict(system.urls), token=keys.token(ttl_s=600)) as client:
        yield client


ROUTES = {
    "/v1/customers": "customers",
    "/v1/plans": "customers",
    "/v1/contracts": "customers",
    "/v1/teams": "customers",
    "/v1/tokens": "accounts",
    "/v1/activations": "accounts",
    "/v1/accounts": "accounts",
    "/v1/visits": "visitors",
    "/v1/check-ins": "visitors",
    "/v1/deliveries": "notifications",
}


@pytest.fixture
async def gateway(system):
    """One URL for every service, for the opt-in retries. ``lose[path] = n``: the next n POSTs to ``path`` are
    handled by the service, but the caller gets a 504 (the answer was lost on the way back)."""
    lose: dict[str, int] = {}

    async def forward(request: web.Request) -> web.StreamResponse:
        service = next(s for prefix, s in ROUTES.items() if request.path.startswith(prefix))
        keep = ("Authorization", "Content-Type", "Idempotency-Key", "If-Match")
        headers = {k: request.headers[k] for k in keep if k in request.headers}
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method, system.urls[service] + request.path_qs, data=await request.read(), headers=headers
            ) as resp,
        ):
            body = await resp.read()
            if request.method == "POST" and lose.get(request.path, 0) > 0:
                lose[request.path] -= 1
                if lose[request.path] == 0:
                    del lose[request.path]
                return web.Response(status=504, text="Gateway Timeout")
            keep_back = {k: resp.headers[k] for k in ("Content-Type", "ETag", "Location") if k in resp.headers}
            return web.Response(status=resp.status, body=body, headers=keep_back)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", lose
    await runner.cleanup()
