"""What a deployment sets up once, with administrator rights, so that each service runs with only its own:

- ``setup_broker``: declares the whole RabbitMQ topology (exchanges, queues, bindings, the event log), the one thing
  the services' own users may not do (they only check it exists, see ``shared.broker``).
- ``rabbitmq_definitions``: the RabbitMQ users, one per service, with the permissions ``Topology.permissions``
  gives them (and optionally the administrator), as a definitions document RabbitMQ imports at boot or with
  ``rabbitmqctl import_definitions``. Passwords appear only as salted SHA-256 hashes.
- ``setup_databases``: per service a PostgreSQL role owning its own database and everything in it; nobody else
  (``PUBLIC``) may connect to that database. Idempotent: run at every deploy, it also sets the passwords anew
  and hands over objects an earlier, shared owner created.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg

from shared.topology import Topology

log = logging.getLogger(__name__)


# --- RabbitMQ ---------------------------------------------------------------------------------------------------


async def setup_broker(url: str, topology: Topology, wait_s: float = 120.0) -> None:
    """Declare the whole topology as the (administrator) user of ``url``, waiting up to ``wait_s`` for the broker."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            connection = await aio_pika.connect(url, client_properties={"connection_name": "setup-broker"}, timeout=10)
            break
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionError(f"RabbitMQ unreachable: {exc}") from exc
            log.warning("RabbitMQ unreachable, retrying", extra={"error": str(exc)})
            await asyncio.sleep(2)
    try:
        channel = await connection.channel()
        await topology.declare(channel)
    finally:
        await connection.close()


def rabbitmq_password_hash(password: str, salt: bytes | None = None) -> str:
    """``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password)), with a 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass(frozen=True)
class BrokerUser:
    name: str
    password: str


def rabbitmq_definitions(
    topology: Topology, vhost: str, users: dict[str, BrokerUser], admin: BrokerUser | None = None
) -> dict[str, Any]:
    """Users (``users``: service → its user) and their permissions in ``vhost``, as RabbitMQ definitions."""
    hashing = "rabbit_password_hashing_sha256"
    out: dict[str, Any] = {"vhosts": [{"name": vhost}], "users": [], "permissions": [], "topic_permissions": []}
    if admin is not None:
        out["users"].append(
            {
                "name": admin.name,
                "password_hash": rabbitmq_password_hash(admin.password),
                "hashing_algorithm": hashing,
                "tags": ["administrator"],
            }
        )
        out["permissions"].append({"user": admin.name, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"})
    for service, user in users.items():
        permissions = topology.permissions(service)
        out["users"].append(
            {
                "name": user.name,
                "password_hash": rabbitmq_password_hash(user.password),
                "hashing_algorithm": hashing,
                "tags": [],
            }
        )
        out["permissions"].append(
            {
                "user": user.name,
                "vhost": vhost,
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            }
        )
        for exchange, (write, read) in permissions.topic.items():
            out["topic_permissions"].append(
                {"user": user.name, "vhost": vhost, "exchange": exchange, "write": write, "read": read}
            )
    return out


# --- PostgreSQL -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseOwner:
    role: str
    database: str
    password: str


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def _sql(conn: asyncpg.Connection, template: str, *args: str) -> None:
    """Run a utility statement (they take no bind parameters) built with PostgreSQL's own quoting: ``format()``
    with ``%I`` for names and ``%L`` for literals."""
    placeholders = ", ".join(f"${i + 1}::text" for i in range(len(args)))
    statement = await conn.fetchval(f"SELECT format($fmt${template}$fmt$, {placeholders})", *args)
    await conn.execute(statement)


async def setup_databases(admin_dsn: str, owners: list[DatabaseOwner]) -> None:
    """As a superuser (``admin_dsn``, any database of the server): each role (LOGIN, nothing more) with its
    password, its database owned by it with CONNECT and TEMP taken from PUBLIC, the ``public`` schema and every
    table, sequence, view and function in it owned by the role."""
    conn = await asyncpg.connect(admin_dsn, timeout=30)
    try:
        for owner in owners:
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", owner.role)
            verb = "ALTER" if exists else "CREATE"
            await _sql(
                conn,
                f"{verb} ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L",
                owner.role,
                owner.password,
            )
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", owner.database):
                await _sql(conn, "CREATE DATABASE %I OWNER %I", owner.database, owner.role)
            await _sql(conn, "ALTER DATABASE %I OWNER TO %I", owner.database, owner.role)
            await _sql(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", owner.database)
            log.info("database ready", extra={"database": owner.database, "role": owner.role})
    finally:
        await conn.close()
    for owner in owners:
        db = await asyncpg.connect(_with_database(admin_dsn, owner.database), timeout=30)
        try:
            await _hand_over(db, owner.role)
        finally:
            await db.close()


async def _hand_over(conn: asyncpg.Connection, role: str) -> None:
    async with conn.transaction():
        await _sql(conn, "ALTER SCHEMA public OWNER TO %I", role)
        await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
        for relkind in ("r", "p", "v", "m", "S"):  # tables first: their owned sequences follow them
            rows = await conn.fetch(
                """SELECT c.oid::regclass::text AS name FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND c.relkind = $1::text::"char" AND pg_get_userbyid(c.relowner) <> $2""",
                relkind,
                role,
            )
            for row in rows:
                await conn.execute(f"ALTER {kinds[relkind]} {row['name']} OWNER TO {_ident(role)}")
        functions = await conn.fetch(
            """SELECT p.oid::regprocedure::text AS name FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> $1""",
            role,
        )
        for row in functions:
            await conn.execute(f"ALTER ROUTINE {row['name']} OWNER TO {_ident(role)}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
