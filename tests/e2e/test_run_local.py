"""The README's run command: one process that prepares a fresh machine and runs all four services, and stops
them all on Ctrl-C."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import sys

import aiohttp
import pytest

from tests.conftest import AMQP_URL
from tests.e2e.conftest import ROOT, SERVICES
from tests.support.smtp import free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_the_run_command_creates_keys_starts_everything_and_ctrl_c_stops_it_all(
    databases, prefix, tmp_path, amqp
):
    ports = {name: free_port() for name in SERVICES}
    env = {
        "PATH": "/usr/bin:/bin",
        "COWORKING_LOCAL_DIR": str(tmp_path / "local"),
        "AMQP_URL": AMQP_URL,
        "AMQP_PREFIX": prefix,
        "JWKS_URL": f"http://127.0.0.1:{ports['accounts']}/.well-known/jwks.json",
    }
    for name in SERVICES:
        env[f"{name.upper()}_PORT"] = str(ports[name])
        env[f"{name.upper()}_DATABASE_URL"] = databases[name]
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([sys.executable, "scripts/run_local.py"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:

        async def all_ready() -> bool:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            try:
                async with aiohttp.ClientSession() as http:
                    for port in ports.values():
                        async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                            if r.status != 200:
                                return False
                return True
            except aiohttp.ClientError:
                return False

        await wait_for(all_ready, timeout=60, interval=0.3, what="the four services started by the run command")
        key = tmp_path / "local" / "jwt-signing-key.pem"
        assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
        assert (tmp_path / "local" / "seal.key").exists()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, (tmp_path / "run.log").read_text()[-3000:]
        assert not any(listening(p) for p in ports.values())
        assert "all services stopped" in (tmp_path / "run.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
