"""Start the whole system on this machine: one process per service against the local PostgreSQL and RabbitMQ.

Creates what a fresh machine lacks (a token signing key and a sealing key under .local/, each service's
database and schema), then runs customers, accounts, visitors and notifications until Ctrl-C (SIGINT) or
SIGTERM, which stops them all cleanly. Settings can be overridden with the environment (see the README)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("COWORKING_LOCAL_DIR", ROOT / ".local"))
SERVICES = ("customers", "accounts", "visitors", "notifications")


def ensure_secrets(env: dict[str, str]) -> None:
    from services.accounts.security import generate_private_key_pem
    from shared.sealing import new_key

    LOCAL.mkdir(exist_ok=True)
    key_file = LOCAL / "jwt-signing-key.pem"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(generate_private_key_pem())
    seal_file = LOCAL / "seal.key"
    if not seal_file.exists():
        fd = os.open(seal_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key())
    env.setdefault("ACCOUNTS_JWT_PRIVATE_KEY_FILE", str(key_file))
    seal = seal_file.read_text().strip()
    env.setdefault("ACCOUNTS_SEAL_KEY", seal)
    env.setdefault("NOTIFICATIONS_SEAL_KEY", seal)
    env.setdefault("NOTIFICATIONS_MAIL_DIR", str(LOCAL / "mail"))
    env.setdefault("LOG_FORMAT", "text")


def check_infrastructure(env: dict[str, str]) -> None:
    import aio_pika
    import asyncpg

    async def check() -> None:
        dsn = env.get("CUSTOMERS_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        try:
            conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres", timeout=5)
            await conn.close()
        except Exception as exc:
            sys.exit(f"PostgreSQL is not reachable ({exc}). Start it, then run again.")
        url = env.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
        try:
            connection = await aio_pika.connect(url, timeout=5)
            await connection.close()
        except Exception as exc:
            sys.exit(f"RabbitMQ is not reachable ({exc}). Start it, then run again.")

    asyncio.run(check())


def main() -> int:
    env = dict(os.environ)
    ensure_secrets(env)
    check_infrastructure(env)
    for name in SERVICES:  # create databases and apply migrations up front: errors show here, one at a time
        subprocess.run([sys.executable, "-m", f"services.{name}", "migrate"], env=env, cwd=ROOT, check=True)
    procs = {
        name: subprocess.Popen([sys.executable, "-m", f"services.{name}", "serve"], env=env, cwd=ROOT)
        for name in SERVICES
    }
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    defaults = {"customers": 8001, "accounts": 8002, "visitors": 8003, "notifications": 8004}
    urls = "  ".join(f"{n} http://127.0.0.1:{env.get(f'{n.upper()}_PORT', p)}" for n, p in defaults.items())
    mail = (
        f"Emails go to SMTP {env['NOTIFICATIONS_SMTP_HOST']}"
        if env.get("NOTIFICATIONS_SMTP_HOST")
        else f"Emails are written to {env['NOTIFICATIONS_MAIL_DIR']}"
    )
    print(f"\nRunning: {urls}\n{mail}. Ctrl-C stops everything.\n", flush=True)
    exit_code = 0
    while not stopping:
        for name, p in procs.items():
            if p.poll() is not None:
                print(f"{name} exited with {p.returncode}; stopping the others", file=sys.stderr)
                exit_code = p.returncode or 1
                stopping = True
        time.sleep(0.2)
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    print("all services stopped")
    return exit_code


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
