"""Revoked portal access, honoured by every service: accounts' revoked/restored events feed a small table in each
service's database (the consumer's transaction, sequence-guarded), and the auth middleware refuses tokens of a
revoked account, or issued before its latest revocation. Lookups are cached for ``ttl_s`` per account, so a
revocation takes effect within that time plus event delivery."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import asyncpg

from shared.consumer import Handler
from shared.events import AccountRestoredV1, AccountRevokedV1, Envelope


async def on_account_revoked(conn: asyncpg.Connection, env: Envelope, event: AccountRevokedV1) -> None:
    await _apply(conn, env, event.account_id, event.revoked_at, restored=False)


async def on_account_restored(conn: asyncpg.Connection, env: Envelope, event: AccountRestoredV1) -> None:
    await _apply(conn, env, event.account_id, event.revoked_at, restored=True)


async def _apply(
    conn: asyncpg.Connection, env: Envelope, account_id: uuid.UUID, revoked_at: datetime, restored: bool
) -> None:
    await conn.execute(
        """INSERT INTO revoked_accounts (account_id, revoked_at, restored, sequence) VALUES ($1, $2, $3, $4)
           ON CONFLICT (account_id) DO UPDATE SET revoked_at = excluded.revoked_at, restored = excluded.restored,
               sequence = excluded.sequence
           WHERE revoked_accounts.sequence < excluded.sequence""",
        account_id,
        revoked_at,
        restored,
        env.sequence,
    )


HANDLERS: dict[str, Handler] = {
    AccountRevokedV1.routing_key(): Handler(AccountRevokedV1, on_account_revoked),
    AccountRestoredV1.routing_key(): Handler(AccountRestoredV1, on_account_restored),
}


class RevocationCheck:
    """``await check(account_id, issued_at)`` is True when the token must be refused."""

    def __init__(self, pool_getter: object, ttl_s: float = 1.0, sql: str | None = None) -> None:
        self._pool_getter = pool_getter
        self.ttl_s = ttl_s
        self.sql = sql or "SELECT revoked_at, restored FROM revoked_accounts WHERE account_id = $1"
        self._cache: dict[uuid.UUID, tuple[float, datetime | None, bool]] = {}

    def known(self, account_id: uuid.UUID, issued_at: datetime | None) -> bool | None:
        """``await self(...)`` without awaiting, when the account's state is cached and fresh; None otherwise."""
        hit = self._cache.get(account_id)
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return None
        return self._refused(hit, issued_at)

    async def __call__(self, account_id: uuid.UUID, issued_at: datetime | None) -> bool:
        now = time.monotonic()
        hit = self._cache.get(account_id)
        if hit is None or now - hit[0] > self.ttl_s:
            pool: asyncpg.Pool = self._pool_getter()  # type: ignore[operator]
            row = await pool.fetchrow(self.sql, account_id)
            hit = (now, row["revoked_at"] if row else None, bool(row["restored"]) if row else True)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[account_id] = hit
        return self._refused(hit, issued_at)

    @staticmethod
    def _refused(hit: tuple[float, datetime | None, bool], issued_at: datetime | None) -> bool:
        _, revoked_at, restored = hit
        if revoked_at is None:
            return False
        return not restored or issued_at is None or issued_at <= revoked_at  # no issue time: as if before
