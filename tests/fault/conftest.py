"""Fixtures of the fault suite: the four services as processes on the test's databases, broker prefix and SMTP
server, an operator's token, and one call that waits for quiescence and checks every outcome."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.topology import Topology
from tests.conftest import AMQP_URL, RETRY_DELAYS_USED
from tests.fault import checks
from tests.fault.system import ProcessSystem, base_env
from tests.support.smtp import SmtpServer, free_port
from tests.support.tokens import KeyRing

# long enough in total (~16 s) to outlast every outage the scenarios cause, short enough to converge fast
RETRY_DELAYS_MS = (250, 500, 1000, 2000, 4000, 8000)
SEND_RETRY_DELAYS_S = (0.5, 1, 2, 4, 8)
RETRY_DELAYS_USED.update(RETRY_DELAYS_MS)  # so the amqp fixture deletes these retry queues afterwards
N = 200  # customers per scenario, half of them with send_welcome


@pytest.fixture
def fault_smtp() -> AsyncIterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def processes(
    databases: dict[str, str], prefix: str, keys: KeyRing, seal_key: str, fault_smtp: SmtpServer, tmp_path: Path, amqp
) -> AsyncIterator[Callable[..., ProcessSystem]]:
    """``processes(amqp_url=..., service_env=...)`` builds the system (not started); every process it starts is
    stopped at the end of the test."""
    made: list[ProcessSystem] = []

    def make(*, amqp_url: str = AMQP_URL, service_env: dict[str, dict[str, str]] | None = None) -> ProcessSystem:
        accounts_port = free_port()
        env = base_env(
            amqp_url=amqp_url,
            prefix=prefix,
            databases=databases,
            key_path=keys.path,
            seal_key=seal_key,
            smtp_port=fault_smtp.port,
            retry_delays_ms=RETRY_DELAYS_MS,
            send_retry_delays_s=SEND_RETRY_DELAYS_S,
            jwks_port=accounts_port,
        )
        system = ProcessSystem(env=env, log_dir=tmp_path, service_env=service_env or {})
        system.ports[("accounts", 0)] = accounts_port
        made.append(system)
        return system

    yield make
    for system in made:
        system.stop()


@pytest.fixture
async def http(keys: KeyRing) -> AsyncIterator[aiohttp.ClientSession]:
    """An operator's session (a token signed with the key accounts publishes)."""
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {keys.token(ttl_s=3600)}"},
        timeout=aiohttp.ClientTimeout(total=15),
        connector=aiohttp.TCPConnector(limit=50),
    ) as session:
        yield session


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def settle_and_check(databases: dict[str, str], amqp, prefix: str, fault_smtp: SmtpServer) -> Callable[..., Any]:
    """``await settle_and_check(customers, ...)``: waits for quiescence (with a deadline), then asserts every
    outcome; returns the report."""
    topology = Topology(prefix, RETRY_DELAYS_MS)

    def mailbox() -> dict[str, list[str]]:
        with fault_smtp.lock:
            return checks.mailbox_of(list(fault_smtp.messages))

    async def run(
        customers: list[checks.Customer],
        *,
        expected_dead_letters: Mapping[str, Counter[bytes]] | None = None,
        rejected: set[str] = frozenset(),  # type: ignore[assignment]
        allow_resent: bool = False,
        timeout: float = 60.0,
        system: ProcessSystem | None = None,
    ) -> checks.Report:
        waited = await checks.wait_quiescent(
            databases, amqp, topology, customers, mailbox, rejected=rejected, allow_resent=allow_resent, timeout=timeout
        )
        report = await checks.check(
            databases,
            amqp,
            topology,
            customers,
            mailbox(),
            expected_dead_letters=expected_dead_letters,
            rejected=rejected,
            allow_resent=allow_resent,
        )
        report.stats["quiescent_after_s"] = waited
        print(f"fault report: {report.stats}")
        logs = f"\n--- service logs (tail) ---\n{system.logs()[-4000:]}" if system is not None and not report.ok else ""
        assert report.ok, report.summary() + logs
        return report

    return run
