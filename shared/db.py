"""PostgreSQL: pools, database creation and the migration runner (numbered plain-SQL files)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

log = logging.getLogger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What a lost, killed or refused database connection raises: worth another attempt on a fresh connection."""


OUTBOX_INSERT = "INSERT INTO outbox"
"""What every statement that writes outbox rows contains (``shared.outbox`` builds them all): a pooled connection
that ran one wakes the relay when it goes back to the pool (see ``OutboxSignal``)."""


class OutboxSignal:
    """How a process's relay learns that rows were committed to its outbox, without a NOTIFY from the writing
    transaction: PostgreSQL serializes the commits of every notifying transaction in the cluster behind one lock
    held through the WAL flush, which costs writes their group commit (measured: a bare insert + outbox row went
    from 1,305-1,511 to 1,510-1,684 per second with the trigger's NOTIFY gone, alternating runs on one VM).

    A pool made with a signal fires it when a connection that ran an outbox insert is released (its transaction
    over: committed, or rolled back, which only costs an empty relay round). With nobody subscribed (a command-line
    process, or a service whose relay has stopped) the connection sends ``NOTIFY outbox`` instead, which the relays
    of the other processes listen for; their poll interval is the last resort."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    async def written(self, conn: asyncpg.Connection) -> None:
        if self._subscribers:
            for callback in self._subscribers:
                callback()
        else:
            await conn.execute("SELECT pg_notify('outbox', '')")


class Connection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection that takes itself out of service when asyncpg finds its protocol in a state it cannot
    continue from (``InternalClientError``, e.g. "another operation is in progress" after the server killed the
    session mid-statement behind a proxy that kept the socket open). The error still reaches the caller (every
    caller treats it as a transient database error); the pool then opens a fresh connection instead of handing
    the broken one out again (https://github.com/MagicStack/asyncpg/issues/784).

    It also notes whether it ran an outbox insert (``wrote_outbox``), for ``OutboxSignal``."""

    wrote_outbox = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held_xact_locks: set[str] = set()  # see hold_advisory_xact_locks

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        if args and OUTBOX_INSERT in args[0]:
            self.wrote_outbox = True
        try:
            return await super().execute(*args, **kwargs)
        except asyncpg.InternalClientError:
            self.terminate()
            raise

    async def _do_execute(self, *args: Any, **kwargs: Any) -> Any:
        # every statement with arguments (execute, fetch*, executemany) comes through here
        if args and isinstance(args[0], str) and OUTBOX_INSERT in args[0]:
            self.wrote_outbox = True
        try:
            return await super()._do_execute(*args, **kwargs)
        except asyncpg.InternalClientError:
            self.terminate()
            raise


async def advisory_xact_lock(conn: asyncpg.Connection, name: str) -> None:
    """Take the transaction-scoped advisory lock ``name`` (its key: ``hashtextextended(name, 7031)``; released at
    commit or rollback); nothing to do when the transaction took it already with ``hold_advisory_xact_locks``."""
    if name in getattr(conn, "held_xact_locks", ()):
        return
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7031))", name)


@contextlib.asynccontextmanager
async def hold_advisory_xact_locks(conn: asyncpg.Connection, names: Iterable[str]) -> AsyncIterator[None]:
    """Inside a transaction: take every advisory lock in ``names`` in one statement, in name order (two
    transactions taking overlapping sets never wait on each other crosswise), so that ``advisory_xact_lock`` on
    any of them costs no round trip until the block ends. The locks themselves last until the transaction ends."""
    todo = sorted(set(names))
    if todo:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 7031))) FROM unnest($1::text[]) AS k", todo
        )
    held: set[str] = getattr(conn, "held_xact_locks", set())  # a plain asyncpg connection keeps no record
    held.update(todo)
    try:
        yield
    finally:
        held.difference_update(todo)


def _on_release(signal: OutboxSignal) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    async def on_release(conn: asyncpg.Connection) -> None:
        """Pooled connections keep no session state here (no LISTEN, no SET, no advisory locks outside a
        transaction; the relay listens on its own connection), so the default reset (RESET ALL, UNLISTEN *...) is
        a wasted round trip on every release: asyncpg still rolls back an open transaction before this runs, and
        this only tells the relay about outbox rows the connection wrote."""
        if conn.wrote_outbox:
            conn.wrote_outbox = False
            try:
                await signal.written(conn)
            except DATABASE_ERRORS as exc:  # the write itself is done: the relays' poll finds its rows
                log.warning("outbox NOTIFY failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    return on_release


async def create_pool(
    dsn: str, min_size: int = 2, max_size: int = 10, outbox_signal: OutboxSignal | None = None
) -> asyncpg.Pool:
    """A pool of ``Connection``s. Outbox rows its connections write are announced through ``outbox_signal`` (the
    process's relay subscribes to it); without one, or with no relay subscribed, by ``NOTIFY outbox``."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            command_timeout=30,
            reset=_on_release(outbox_signal or OutboxSignal()),
            connection_class=Connection,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConnectionError(f"PostgreSQL unreachable at {redact(dsn)}: {exc}") from exc
    assert pool is not None
    return pool


def redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn


def _database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def _maintenance_dsn(dsn: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/postgres"))


async def ensure_database(dsn: str, template: str | None = None) -> bool:
    """Create the database named in ``dsn`` if it does not exist. Returns True when it was created."""
    name = _database_name(dsn)
    try:
        conn = await asyncpg.connect(_maintenance_dsn(dsn))
    except (OSError, asyncpg.PostgresError) as exc:
        raise ConnectionError(f"PostgreSQL unreachable at {redact(dsn)}: {exc}") from exc
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        ident = '"' + name.replace('"', '""') + '"'
        tmpl = f' TEMPLATE "{template}"' if template else ""
        try:
            await conn.execute(f"CREATE DATABASE {ident}{tmpl}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def drop_database(dsn: str) -> None:
    name = _database_name(dsn)
    conn = await asyncpg.connect(_maintenance_dsn(dsn))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(*directories: Path) -> list[Migration]:
    """Shared plumbing migrations first (``shared:0001``), then the service's own (``0001``)."""
    found: list[Migration] = []
    for directory in directories:
        ns = "shared:" if directory.resolve() == SHARED_MIGRATIONS.resolve() else ""
        for path in sorted(directory.glob("*.sql")):
            number = path.name.split("_", 1)[0]
            found.append(Migration(f"{ns}{number}", path.stem, path.read_text()))
    return found


async def migrate(dsn: str, migrations_dir: Path) -> list[str]:
    """Apply pending migrations in order, each in its own transaction, under an advisory lock so several
    replicas starting at once apply each migration exactly once. Returns the versions applied."""
    await ensure_database(dsn)
    migrations = load_migrations(SHARED_MIGRATIONS, migrations_dir)
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock(724311)")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for m in migrations:
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise RuntimeError(f"migration {m.name} was changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            applied_now.append(m.version)
            log.info("applied migration", extra={"migration": m.name})
    finally:
        await conn.execute("SELECT pg_advisory_unlock(724311)")
        await conn.close()
    return applied_now
