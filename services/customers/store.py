"""The customers service's SQL, in one place."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from shared.outbox import insert_from

COLUMNS = (
    "id, full_name, email, company_name, phone, kind, standing, portal_access, account_id, version, created_at, "
    "updated_at, erased_at"
)


class DuplicateEmail(Exception):
    pass


async def insert_customer(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    customer_id: uuid.UUID,
    full_name: str,
    email: str,
    company_name: str | None,
    phone: str | None,
    history: tuple[str, str | None, dict[str, Any], str | None],
    event: tuple[object, ...],
) -> asyncpg.Record:
    """Insert the customer (a contact in good standing, version 1: what ``event`` says), its ``created`` history
    row (``history``: actor type, actor id, details, correlation id) and its event's outbox row (``event``: its
    ``outbox_row``) in one statement: atomic without a transaction, so creating a customer is one
    round trip to the database."""
    actor_type, actor_id, details, correlation_id = history
    try:
        return await conn.fetchrow(
            f"""WITH c AS (
                    INSERT INTO customers (id, full_name, email, company_name, phone, kind, standing, version)
                    VALUES ($1, $2, $3, $4, $5, 'contact', 'active', 1) RETURNING {COLUMNS}
                ), h AS (
                    INSERT INTO customer_history (customer_id, action, actor_type, actor_id, details, correlation_id)
                    SELECT id, 'created', $6::text, $7::text, $8::jsonb, $9::text FROM c
                ), o AS ({insert_from("c", 10)})
                SELECT * FROM c""",
            customer_id,
            full_name,
            email,
            company_name,
            phone,
            actor_type,
            actor_id,
            details,
            correlation_id,
            *event,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "customers_email_key":
            raise DuplicateEmail(email) from None
        raise


async def get_customer(conn: asyncpg.Connection | asyncpg.Pool, customer_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM customers WHERE id = $1", customer_id)


DOCUMENT_COLUMNS = ", ".join(f"{c}::text AS {c}" if c in ("id", "account_id") else c for c in COLUMNS.split(", "))
"""``COLUMNS`` with the UUIDs as text: what a response document needs, without making UUID objects to write out."""


def get_customer_document(
    conn: asyncpg.Connection | asyncpg.Pool, customer_id: uuid.UUID
) -> Awaitable[asyncpg.Record | None]:
    """The customer's row as the read route answers it (``DOCUMENT_COLUMNS``). The query itself is returned to be
    awaited, not awaited in a coroutine of its own: one frame less to suspend and resume on every read."""
    return conn.fetchrow(_GET_DOCUMENT, customer_id)


_GET_DOCUMENT = f"SELECT {DOCUMENT_COLUMNS} FROM customers WHERE id = $1"


SORTS = {
    "created_at": ("created_at", "ASC"),
    "-created_at": ("created_at", "DESC"),
    "full_name": ("lower(full_name)", "ASC"),
    "-full_name": ("lower(full_name)", "DESC"),
}


def encode_search_cursor(sort: str, row: Any) -> str:
    key = row["created_at"].isoformat() if "created_at" in sort else row["full_name"].lower()
    return base64.urlsafe_b64encode(orjson.dumps([sort, key, str(row["id"])])).decode().rstrip("=")


def decode_search_cursor(cursor: str, sort: str) -> tuple[Any, uuid.UUID]:
    """Raises ValueError for anything that is not a cursor of this sort."""
    try:
        got_sort, key, row_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError("not a cursor") from exc
    if got_sort != sort or not isinstance(key, str):
        raise ValueError("cursor of another sort")
    if "created_at" in sort:
        when = datetime.fromisoformat(key)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when.astimezone(UTC), uuid.UUID(row_id)
    if "\x00" in key:
        raise ValueError("bad key")
    return key, uuid.UUID(row_id)


async def search_customers(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    q: str | None = None,
    email: str | None = None,
    kind: str | None = None,
    standing: str | None = None,
    has_user_account: bool | None = None,
    team_id: uuid.UUID | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    sort: str = "created_at",
    after: tuple[Any, uuid.UUID] | None = None,
    limit: int = 50,
) -> list[asyncpg.Record]:
    """Keyset pagination on (sort key, id): rows committed before a listing began are neither skipped nor
    repeated however many rows are inserted meanwhile."""
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        p = arg(pattern)
        where.append(f"(full_name ILIKE {p} OR email ILIKE {p} OR coalesce(company_name, '') ILIKE {p})")
    if email is not None:
        where.append(f"lower(email) = lower({arg(email)})")
    if kind is not None:
        where.append(f"kind = {arg(kind)}")
    if standing is not None:
        where.append(f"standing = {arg(standing)}")
    if has_user_account is not None:
        where.append("portal_access <> 'none'" if has_user_account else "portal_access = 'none'")
    if team_id is not None:
        where.append(
            f"id IN (SELECT customer_id FROM team_memberships WHERE team_id = {arg(team_id)} AND left_at IS NULL)"
        )
    if created_after is not None:
        where.append(f"created_at >= {arg(created_after)}")
    if created_before is not None:
        where.append(f"created_at < {arg(created_before)}")
    column, direction = SORTS[sort]
    if after is not None:
        op = ">" if direction == "ASC" else "<"
        where.append(f"({column}, id) {op} ({arg(after[0])}, {arg(after[1])})")
    sql = f"SELECT {COLUMNS} FROM customers"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {column} {direction}, id {direction} LIMIT {arg(limit + 1)}"
    return await conn.fetch(sql, *args)


def plain(row: Any) -> dict[str, Any]:
    """A row as JSON-ready values: ids and dates as strings."""
    out = dict(row)
    for k, v in out.items():
        if isinstance(v, uuid.UUID):
            out[k] = str(v)
        elif hasattr(v, "isoformat"):
            out[k] = v.isoformat()
    return out
