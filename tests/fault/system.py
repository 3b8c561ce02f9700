"""The services as separate processes for the fault suite (like tests/e2e), with what the faults need: any number
of replicas of a service, per-service environment (a service's broker or database reached through a TcpProxy),
SIGKILL and restart of one process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.smtp import free_port
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("customers", "accounts", "visitors", "notifications")


@dataclass
class ProcessSystem:
    """``env`` is common to every process; ``service_env[name]`` overrides it for one service (all replicas)."""

    env: dict[str, str]
    log_dir: Path
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    procs: dict[tuple[str, int], subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, name: str, replica: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[(name, replica)]}"

    def urls(self, name: str) -> list[str]:
        return [self.url(n, r) for (n, r) in sorted(self.ports) if n == name]

    def log(self, name: str, replica: int = 0) -> Path:
        return self.log_dir / f"{name}.{replica}.log"

    def start(self, name: str, replica: int = 0) -> None:
        """Start (or start again, on the same port) one process of a service."""
        port = self.ports.setdefault((name, replica), free_port())
        env = {**self.env, **self.service_env.get(name, {}), f"{name.upper()}_PORT": str(port)}
        with self.log(name, replica).open("ab") as log:
            self.procs[(name, replica)] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}", "serve"], env=env, cwd=ROOT, stdout=log, stderr=log
            )

    def kill(self, name: str, replica: int = 0) -> None:
        """SIGKILL: no graceful stop, in-flight work is lost and must be redone by someone."""
        proc = self.procs[(name, replica)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    async def wait_ready(self, timeout: float = 40) -> None:
        async def ready() -> bool:
            for (name, replica), proc in self.procs.items():
                if proc.poll() is not None:
                    tail = self.log(name, replica).read_text(errors="replace")[-3000:]
                    raise AssertionError(f"{name}#{replica} exited with {proc.returncode}:\n{tail}")
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s:
                    for key in self.procs:
                        async with s.get(f"{self.url(*key)}/readyz") as r:
                            if r.status != 200:
                                return False
                return True
            except (aiohttp.ClientError, TimeoutError):
                return False

        await wait_for(ready, timeout=timeout, interval=0.2, what="every service process to be ready")

    async def astop(self, timeout: float = 20) -> dict[str, int]:
        """SIGTERM to every process; SIGKILL to whichever has not exited ``timeout`` s later. Waits without
        blocking the event loop, so TcpProxies running in it keep carrying the services' last words."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.stop(timeout=0)

    def stop(self, timeout: float = 20) -> dict[str, int]:
        """SIGTERM to every process, then SIGKILL to whichever has not exited ``timeout`` s later. Blocks: a
        service reaching its database or broker through a TcpProxy in this event loop needs ``astop``."""
        codes = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for (name, replica), proc in self.procs.items():
            try:
                codes[f"{name}#{replica}"] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
                codes[f"{name}#{replica}"] = -9
        return codes

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


def base_env(
    *,
    amqp_url: str,
    prefix: str,
    databases: dict[str, str],
    key_path: Path,
    seal_key: str,
    smtp_port: int,
    retry_delays_ms: tuple[int, ...],
    send_retry_delays_s: tuple[float, ...],
    jwks_port: int,
) -> dict[str, str]:
    """The environment of every service process of a fault run (only the environment configures them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(f"{s.upper()}_" for s in SERVICES))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "AMQP_URL": amqp_url,
            "AMQP_PREFIX": prefix,
            "JWKS_URL": f"http://127.0.0.1:{jwks_port}/.well-known/jwks.json",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "WARNING",
            "RETRY_DELAYS_MS": ",".join(map(str, retry_delays_ms)),
            "RELAY_POLL_INTERVAL_S": "0.5",
            "SHUTDOWN_GRACE_S": "5",
            "ACCOUNTS_JWT_PRIVATE_KEY_FILE": str(key_path),
            "ACCOUNTS_SEAL_KEY": seal_key,
            "ACCOUNTS_PUBLIC_BASE_URL": f"http://127.0.0.1:{jwks_port}",
            "NOTIFICATIONS_SEAL_KEY": seal_key,
            "NOTIFICATIONS_SMTP_HOST": "127.0.0.1",
            "NOTIFICATIONS_SMTP_PORT": str(smtp_port),
            "NOTIFICATIONS_SMTP_TIMEOUT_S": "10",
            "NOTIFICATIONS_SEND_RETRY_DELAYS_S": ",".join(map(str, send_retry_delays_s)),
            "NOTIFICATIONS_DISPATCH_POLL_INTERVAL_S": "0.5",
            "CUSTOMERS_SCHEDULER_INTERVAL_S": "1",
            "VISITORS_SCHEDULER_INTERVAL_S": "1",
        }
    )
    for name in SERVICES:
        env[f"{name.upper()}_DATABASE_URL"] = databases[name]
        env[f"{name.upper()}_DB_POOL_MIN"] = "1"
        env[f"{name.upper()}_DB_POOL_MAX"] = "5"  # PostgreSQL's 100 connections are shared with other runs
    return env
