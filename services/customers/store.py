"""The customers service's SQL, in one place."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

COLUMNS = "id, full_name, email, company_name, phone, kind, standing, version, created_at, updated_at"


class DuplicateEmail(Exception):
    pass


async def insert_customer(
    conn: asyncpg.Connection,
    *,
    customer_id: uuid.UUID,
    full_name: str,
    email: str,
    company_name: str | None,
    phone: str | None,
) -> asyncpg.Record:
    try:
        return await conn.fetchrow(
            f"""INSERT INTO customers (id, full_name, email, company_name, phone)
                VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}""",
            customer_id,
            full_name,
            email,
            company_name,
            phone,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "customers_email_key":
            raise DuplicateEmail(email) from None
        raise


async def get_customer(conn: asyncpg.Connection | asyncpg.Pool, customer_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {COLUMNS} FROM customers WHERE id = $1", customer_id)


async def list_customers(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    email: str | None,
    kind: str | None,
    standing: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    where: list[str] = []
    args: list[Any] = []
    if email is not None:
        args.append(email)
        where.append(f"lower(email) = lower(${len(args)})")
    if kind is not None:
        args.append(kind)
        where.append(f"kind = ${len(args)}")
    if standing is not None:
        args.append(standing)
        where.append(f"standing = ${len(args)}")
    if after is not None:
        args += [after[0], after[1]]
        where.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    sql = f"SELECT {COLUMNS} FROM customers"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at, id LIMIT ${len(args)}"
    return await conn.fetch(sql, *args)


async def claim_idempotency_key(
    conn: asyncpg.Connection, scope: str, key: str, request_hash: str
) -> asyncpg.Record | None:
    """Insert the key (inside the caller's transaction). Returns None when this request owns the key, else the
    stored first response. A concurrent request with the same key waits on the unique index until the first
    one commits, then sees its response."""
    inserted = await conn.fetchval(
        """INSERT INTO idempotency_keys (scope, key, request_hash, status, response)
           VALUES ($1, $2, $3, 0, '{}') ON CONFLICT DO NOTHING RETURNING true""",
        scope,
        key,
        request_hash,
    )
    if inserted:
        return None
    return await conn.fetchrow(
        "SELECT request_hash, status, response, location FROM idempotency_keys WHERE scope = $1 AND key = $2",
        scope,
        key,
    )


async def store_idempotent_response(
    conn: asyncpg.Connection, scope: str, key: str, status: int, response: Any, location: str | None
) -> None:
    await conn.execute(
        """UPDATE idempotency_keys SET status = $3, response = $4, location = $5
           WHERE scope = $1 AND key = $2""",
        scope,
        key,
        status,
        response,
        location,
    )
