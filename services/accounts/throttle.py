"""Login throttling, shared by every replica through PostgreSQL (``login_failures``).

Each password login first records a pending failure for its email and its client address, then counts the
failures of each key within the sliding window (committed rows of concurrent attempts included, so a burst of
parallel guesses cannot slip past the limit). Over a limit: the pending rows are removed again (refused attempts
do not extend the lockout, so it always ends by itself) and the caller answers 429 with ``Retry-After``. A wrong
password keeps the rows; a correct one removes them and every earlier failure of that email."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class ThrottleConfig:
    window_s: int
    max_per_email: int
    max_per_address: int


def email_key(email: str) -> bytes:
    return hashlib.sha256(b"email:" + email.strip().lower().encode()).digest()


def address_key(address: str | None) -> bytes:
    return hashlib.sha256(b"address:" + (address or "unknown").encode()).digest()


@dataclass(frozen=True)
class Attempt:
    ids: list[int]
    retry_after_s: int | None
    """None: the attempt may proceed; else seconds until the key over its limit has room again."""


async def begin(pool: asyncpg.Pool, cfg: ThrottleConfig, email: str, address: str | None) -> Attempt:
    keys = [(email_key(email), cfg.max_per_email), (address_key(address), cfg.max_per_address)]
    async with pool.acquire() as conn:
        ids = [
            r["id"]
            for r in await conn.fetch(
                "INSERT INTO login_failures (key) SELECT unnest($1::bytea[]) RETURNING id", [k for k, _ in keys]
            )
        ]
        retry: float | None = None
        for key, limit in keys:
            # the limit-th newest earlier failure: once it leaves the window, the key is under its limit again
            rows = await conn.fetch(
                """SELECT extract(epoch FROM at + make_interval(secs => $3) - now())::float8 AS left_s
                   FROM login_failures
                   WHERE key = $1 AND at > now() - make_interval(secs => $3) AND NOT id = ANY($4::bigint[])
                   ORDER BY at DESC LIMIT $2""",
                key,
                limit,
                float(cfg.window_s),
                ids,
            )
            if len(rows) >= limit:
                left = rows[-1]["left_s"]
                retry = left if retry is None else max(retry, left)
        if retry is not None:
            await conn.execute("DELETE FROM login_failures WHERE id = ANY($1::bigint[])", ids)
            return Attempt(ids=[], retry_after_s=max(1, math.ceil(retry)))
    return Attempt(ids=ids, retry_after_s=None)


async def failed(pool: asyncpg.Pool, cfg: ThrottleConfig) -> None:
    """The pending rows stay as failures; rows older than the window go."""
    await pool.execute("DELETE FROM login_failures WHERE at < now() - make_interval(secs => $1)", float(cfg.window_s))


async def succeeded(pool: asyncpg.Pool, attempt: Attempt, email: str) -> None:
    """A correct password: this attempt's rows and the email's earlier failures go (the address's stay)."""
    await pool.execute(
        "DELETE FROM login_failures WHERE id = ANY($1::bigint[]) OR key = $2", attempt.ids, email_key(email)
    )


async def forget_email(conn: asyncpg.Connection | asyncpg.Pool, email: str) -> None:
    await conn.execute("DELETE FROM login_failures WHERE key = $1", email_key(email))
