"""The services as they run: separate processes started with `python -m services.<name> serve`, configured
only through the environment, watched over HTTP, AMQP and SMTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AMQP_URL
from tests.support.smtp import SmtpServer, free_port
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("customers", "accounts", "visitors", "notifications")


@dataclass
class RunningSystem:
    env: dict[str, str]
    urls: dict[str, str]
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str) -> None:
        log = self.logs[name].open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}", "serve"], env=self.env, cwd=ROOT, stdout=log, stderr=log
        )

    async def wait_ready(self, timeout: float = 30) -> None:
        async def ready() -> bool:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{name} exited with {proc.returncode}:\n{self.logs[name].read_text()[-3000:]}"
                    )
            try:
                async with aiohttp.ClientSession() as s:
                    for url in self.urls.values():
                        async with s.get(f"{url}/readyz") as r:
                            if r.status != 200:
                                return False
                return True
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout=timeout, interval=0.2, what="all four services to be ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> dict[str, int]:
        codes = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = -9
        return codes

    def all_logs(self) -> str:
        return "\n".join(p.read_text() for p in self.logs.values() if p.exists())

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", *args],
            env=self.env,
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def smtp_server() -> SmtpServer:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def running(databases, prefix, keys, seal_key, smtp_server, tmp_path, amqp) -> AsyncIterator[RunningSystem]:
    ports = {name: free_port() for name in SERVICES}
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(f"{s.upper()}_" for s in SERVICES))}
    env.update(
        {
            "AMQP_URL": AMQP_URL,
            "AMQP_PREFIX": prefix,
            "JWKS_URL": f"http://127.0.0.1:{ports['accounts']}/.well-known/jwks.json",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "RETRY_DELAYS_MS": "200,400,800",
            "ACCOUNTS_JWT_PRIVATE_KEY_FILE": str(keys.path),
            "ACCOUNTS_SEAL_KEY": seal_key,
            "ACCOUNTS_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['accounts']}",
            "NOTIFICATIONS_SEAL_KEY": seal_key,
            "NOTIFICATIONS_SMTP_HOST": "127.0.0.1",
            "NOTIFICATIONS_SMTP_PORT": str(smtp_server.port),
        }
    )
    for name in SERVICES:
        env[f"{name.upper()}_PORT"] = str(ports[name])
        env[f"{name.upper()}_DATABASE_URL"] = databases[name]
    system = RunningSystem(
        env=env,
        urls={n: f"http://127.0.0.1:{p}" for n, p in ports.items()},
        logs={n: tmp_path / f"{n}.log" for n in SERVICES},
    )
    for name in SERVICES:
        system.start(name)
    try:
        await system.wait_ready()
        yield system
    finally:
        system.stop()
