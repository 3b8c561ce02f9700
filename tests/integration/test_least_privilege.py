"""Least privilege, for real, with what deploy/ runs: each service has its own RabbitMQ user and its own PostgreSQL
role, and nothing more.

RabbitMQ: the users and permissions come from ``python -m services rabbitmq-definitions`` (the command the compose
deployment's secrets step runs; the Kubernetes manifests grant the same, see tests/deploy), imported into a vhost of
this test's own with ``rabbitmqctl import_definitions``; the topology is declared by ``python -m services
setup-broker`` with the administrator. Then the four services run with their own users only: the welcome flow
goes through, and a service cannot consume, read, declare or delete what is not its own, nor publish another
service's events. PostgreSQL: ``python -m services setup-databases`` makes one role per service owning its own
database (CONNECT taken from PUBLIC); the services migrate and run as those roles, and no role can connect to
another service's database.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import aiormq
import asyncpg
import pytest

from shared.topology import QUEUES, SERVICES, Topology
from tests.conftest import PG_URL, dsn
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
RETRY_DELAYS_MS = [100, 200, 400]  # the in-process system's (tests/support/system.py)


def rabbitmqctl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["rabbitmqctl", "-q", *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"rabbitmqctl {args[0]}: {proc.stdout} {proc.stderr}"
    return proc.stdout


def import_definitions(definitions: dict[str, Any]) -> None:
    """``rabbitmqctl import_definitions`` (from standard input), and wait until they are all in: the import is
    asynchronous."""
    rabbitmqctl("import_definitions", "--format", "json", stdin=json.dumps(definitions))
    (vhost,) = [v["name"] for v in definitions["vhosts"]]
    expected = {(p["user"], p["configure"], p["write"], p["read"]) for p in definitions["permissions"]}
    expected_topic = {(p["user"], p["exchange"], p["write"], p["read"]) for p in definitions["topic_permissions"]}
    deadline = time.monotonic() + 60
    while True:
        try:
            permissions = {
                tuple(line.split("\t")) for line in rabbitmqctl("list_permissions", "-p", vhost).splitlines()
            }
            topic = {
                tuple(line.split("\t")) for line in rabbitmqctl("list_topic_permissions", "-p", vhost).splitlines()
            }
        except AssertionError:  # the vhost is not there yet
            permissions, topic = set(), set()
        if expected <= permissions and expected_topic <= topic:
            return
        assert time.monotonic() < deadline, f"definitions not imported: {permissions} {topic}"
        time.sleep(0.5)


def cli(*args: str, env: dict[str, str] | None = None) -> str:
    """``python -m services ...`` in a subprocess, as a deployment runs it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AMQP_", "RETRY_", "DATABASE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "services", *args],
        env={**base, "LOG_FORMAT": "text", **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"{args[0]} failed: {proc.stderr}"
    return proc.stdout


def new_secret(directory: Path, name: str) -> tuple[str, Path]:
    password = secrets.token_urlsafe(24)
    path = directory / name
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password, path


# --- RabbitMQ ----------------------------------------------------------------------------------------------------


@dataclass
class Vhost:
    name: str
    admin_url: str
    urls: dict[str, str]  # service -> its own user's URL
    definitions: dict[str, Any]

    def setup_broker(self) -> str:
        return cli(
            "setup-broker",
            "--wait",
            "10",
            env={"AMQP_URL": self.admin_url, "RETRY_DELAYS_MS": ",".join(map(str, RETRY_DELAYS_MS))},
        )


@pytest.fixture
def vhost(infrastructure: None, tmp_path: Path) -> Iterator[Vhost]:
    """A vhost of this test's own, with the users and permissions of the deployment imported into it."""
    tag = f"cw-lp-{uuid.uuid4().hex[:10]}"
    users = {service: f"{tag}-{service}" for service in SERVICES}
    admin = f"{tag}-admin"
    args = ["rabbitmq-definitions", "--vhost", tag]
    admin_password, admin_file = new_secret(tmp_path, "admin")
    args += ["--admin", admin, str(admin_file)]
    passwords = {}
    for service, user in users.items():
        passwords[service], path = new_secret(tmp_path, service)
        args += ["--user", service, user, str(path)]
    definitions = json.loads(cli(*args))
    assert admin_password not in json.dumps(definitions)  # hashes only
    try:
        import_definitions(definitions)
        yield Vhost(
            name=tag,
            admin_url=f"amqp://{admin}:{admin_password}@127.0.0.1:5672/{tag}",
            urls={s: f"amqp://{users[s]}:{passwords[s]}@127.0.0.1:5672/{tag}" for s in SERVICES},
            definitions=definitions,
        )
    finally:
        for user in [admin, *users.values()]:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=120)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", tag], capture_output=True, timeout=120)


async def refused(url: str, action: Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]) -> str:
    """Run ``action`` on a fresh channel of ``url``'s user; return the broker's ACCESS_REFUSED reason (fails if the
    broker allowed it)."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        try:
            await action(channel)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            return str(exc)
        raise AssertionError("the broker allowed it")
    finally:
        await connection.close()


async def allowed(url: str, action: Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    try:
        await action(await connection.channel(publisher_confirms=True))
    finally:
        await connection.close()


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


def consume(queue: str) -> Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]:
    async def action(channel: aio_pika.abc.AbstractChannel) -> None:
        q = await channel.declare_queue(queue, passive=True)  # needs no permission: the consume is what is checked
        await q.consume(ignore)

    return action


def get(queue: str) -> Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]:
    async def action(channel: aio_pika.abc.AbstractChannel) -> None:
        q = await channel.declare_queue(queue, passive=True)
        await q.get(fail=False)

    return action


def publish(exchange: str, routing_key: str) -> Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]:
    async def action(channel: aio_pika.abc.AbstractChannel) -> None:
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key, mandatory=False)

    return action


def declare(queue: str) -> Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]:
    async def action(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})

    return action


def delete(queue: str) -> Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]:
    async def action(channel: aio_pika.abc.AbstractChannel) -> None:
        await channel.queue_delete(queue)

    return action


# --- PostgreSQL --------------------------------------------------------------------------------------------------


def role_dsn(role: str, password: str, database: str) -> str:
    parts = urlsplit(PG_URL)
    return f"postgresql://{role}:{password}@{parts.hostname}:{parts.port or 5432}/{database}"


@dataclass
class OwnedDatabases:
    prefix: str
    passwords: dict[str, str]
    files: dict[str, Path]

    def url(self, service: str, database_of: str | None = None) -> str:
        return role_dsn(f"{self.prefix}{service}", self.passwords[service], f"{self.prefix}{database_of or service}")

    def setup(self) -> str:
        args = ["setup-databases", "--admin-url", dsn("postgres"), "--prefix", self.prefix]
        for service, path in self.files.items():
            args += ["--password-file", service, str(path)]
        return cli(*args)


@pytest.fixture
async def owned(infrastructure: None, tmp_path: Path) -> AsyncIterator[OwnedDatabases]:
    """Names for one role and database per service (``setup()`` makes them); dropped afterwards."""
    prefix = f"cwlp_{uuid.uuid4().hex[:10]}_"
    passwords, files = {}, {}
    for service in SERVICES:
        passwords[service], files[service] = new_secret(tmp_path, f"db-{service}")
    yield OwnedDatabases(prefix, passwords, files)
    conn = await asyncpg.connect(dsn("postgres"))
    try:
        for service in SERVICES:
            await conn.execute(f'DROP DATABASE IF EXISTS "{prefix}{service}" WITH (FORCE)')
            await conn.execute(f'DROP ROLE IF EXISTS "{prefix}{service}"')
    finally:
        await conn.close()


# --- the tests ---------------------------------------------------------------------------------------------------


async def test_the_services_run_the_welcome_flow_with_only_their_own_users_and_roles(
    vhost: Vhost, owned: OwnedDatabases, system_factory: Any, keys: Any, smtp: Any
) -> None:
    # a service alone cannot declare the topology: it waits for setup-broker (and says so), then runs
    await asyncio.to_thread(owned.setup)
    system = system_factory(smtp_port=smtp.port, amqp_urls=vhost.urls, retry_delays_ms=RETRY_DELAYS_MS)
    system.prefix = ""  # the deployment's names: the vhost is this test's own
    system.databases = {service: owned.url(service) for service in SERVICES}
    await system.start("customers", wait_ready=False)
    broker = system.runtime("customers").broker
    await wait_for(lambda: broker.declares_topology is False, what="customers refused declaring, so only checking")
    assert not system.runtime("customers").broker.connected  # and the topology is not there yet
    await asyncio.to_thread(vhost.setup_broker)
    await system.start("accounts", "visitors", "notifications")
    await system.wait_ready("customers")
    for service in SERVICES:
        assert system.runtime(service).broker.declares_topology is False, service

    email = f"least-{uuid.uuid4().hex[:8]}@example.com"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        resp = await http.post(
            f"{system.urls['customers']}/v1/customers",
            json={"full_name": "Ada Lovelace", "email": email, "send_welcome": True},
        )
        assert resp.status == 201, await resp.text()
        customer_id = uuid.UUID((await resp.json())["id"])

    [message] = await wait_for(lambda: smtp.to(email), timeout=20, what="the welcome email")
    assert "Ada Lovelace" in message.get_body(preferencelist=("plain",)).get_content()
    accounts_db = system.runtime("accounts").db
    assert await accounts_db.fetchval("SELECT status FROM accounts WHERE customer_id = $1", customer_id) == "invited"

    async def inbox(service: str, queue: str) -> int:
        return await system.runtime(service).db.fetchval("SELECT count(*) FROM inbox WHERE consumer = $1", queue)

    # customers heard back from accounts, visitors kept its replica: every service consumed with its own user
    await wait_for(lambda: inbox("customers", "customers.account-events"), what="customers to consume")
    await wait_for(lambda: inbox("visitors", "visitors.customer-events"), what="visitors to consume")

    # the migrations ran as the service's role, which owns what they made
    conn = await asyncpg.connect(owned.url("accounts"))
    try:
        owners = await conn.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'",
        )
        assert [r["tableowner"] for r in owners] == [f"{owned.prefix}accounts"]
    finally:
        await conn.close()


async def test_a_service_user_cannot_touch_what_is_not_its_own(vhost: Vhost) -> None:
    vhost.setup_broker()
    topology = Topology()
    own = {service: [q.name for q in QUEUES if q.name.startswith(f"{service}.")] for service in SERVICES}
    for service, url in vhost.urls.items():
        for queue in own[service]:  # its own: consume, get, and read its dead letters
            await allowed(url, consume(queue))
            await allowed(url, get(topology.dlq(queue)))
        others = [q for s, queues in own.items() if s != service for q in queues]
        for queue in others:
            for target in (queue, topology.dlq(queue), topology.retry_queue(queue, RETRY_DELAYS_MS[0])):
                reason = await refused(url, consume(target))
                assert "ACCESS_REFUSED" in reason and f"queue '{target}'" in reason, reason
            assert "ACCESS_REFUSED" in await refused(url, get(queue))
        # configure: nothing, not even its own queues
        assert "ACCESS_REFUSED" in await refused(url, declare(f"{service}.sneaky"))
        assert "ACCESS_REFUSED" in await refused(url, delete(own[service][0]))
        assert "ACCESS_REFUSED" in await refused(url, delete(others[0]))
        # publish: its own events only
        await allowed(url, publish("events", f"{service}.anything.happened.v1"))
        for other in set(SERVICES) - {service}:
            reason = await refused(url, publish("events", f"{other}.account.revoked.v1"))
            assert "access to topic" in reason, reason
        # commands: only the services that send emails
        send = publish("commands", "notifications.send_email.v1")
        if service in {"accounts", "visitors"}:
            await allowed(url, send)
        else:
            assert "ACCESS_REFUSED" in await refused(url, send)
    # the accounts user, concretely: customers' queue of account events is out of its reach
    reason = await refused(vhost.urls["accounts"], consume("customers.account-events"))
    assert "access to queue 'customers.account-events'" in reason


async def test_each_role_reaches_its_own_database_only(owned: OwnedDatabases) -> None:
    # an earlier deployment's database, made and migrated by the superuser: setup hands it over
    admin = await asyncpg.connect(dsn("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{owned.prefix}customers"')
    finally:
        await admin.close()
    legacy = await asyncpg.connect(dsn(f"{owned.prefix}customers"))
    try:
        await legacy.execute("CREATE TABLE customers (id serial PRIMARY KEY, name text)")
        await legacy.execute("CREATE FUNCTION shout(text) RETURNS text LANGUAGE sql AS 'SELECT upper($1)'")
        await legacy.execute("INSERT INTO customers (name) VALUES ('ada')")
    finally:
        await legacy.close()

    owned.setup()
    owned.setup()  # idempotent: a second deploy changes nothing

    for service in SERVICES:
        conn = await asyncpg.connect(owned.url(service))
        try:
            assert await conn.fetchval("SELECT current_user") == f"{owned.prefix}{service}"
            flags = await conn.fetchrow(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
            )
            assert tuple(flags) == (False, False, False)
            await conn.execute("CREATE TABLE IF NOT EXISTS probe (x int)")  # it owns its schema
        finally:
            await conn.close()
        for other in set(SERVICES) - {service}:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
                await asyncpg.connect(owned.url(service, database_of=other))

    # the accounts role, concretely, cannot connect to the customers database
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f'database "{owned.prefix}customers"'):
        await asyncpg.connect(owned.url("accounts", database_of="customers"))

    conn = await asyncpg.connect(owned.url("customers"))
    try:  # the handed-over table, its sequence and function are the role's now
        await conn.execute("INSERT INTO customers (name) VALUES ('grace')")
        assert await conn.fetchval("SELECT shout(name) FROM customers ORDER BY id DESC LIMIT 1") == "GRACE"
        await conn.execute("ALTER TABLE customers ADD COLUMN email text")
    finally:
        await conn.close()
