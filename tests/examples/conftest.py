"""The examples (examples/coworking_client, examples/consumer.py) against the services running in the test
process. The examples are imported from the repository's examples/ folder, as a reader would run them."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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
