"""The visitors service's SQL, in one place."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

VIEW = """SELECT v.id, v.visitor_id, v.host_customer_id, v.purpose, v.expected_at, v.expected_departure_at, v.notes,
                 v.check_in_code, v.status, v.checked_in_at, v.checked_out_at, v.cancelled_at, v.cancellation_reason,
                 v.no_show_at, v.ended_at, v.registered_by_type, v.version, v.created_at, v.updated_at,
                 p.full_name AS visitor_full_name, p.email AS visitor_email, p.company_name AS visitor_company_name,
                 p.phone AS visitor_phone, p.anonymised_at AS visitor_anonymised_at,
                 h.full_name AS host_name, h.email AS host_email
          FROM visits v JOIN visitors p ON p.id = v.visitor_id
               LEFT JOIN hosts h ON h.customer_id = v.host_customer_id"""

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


class CodeTaken(Exception):
    """The drawn check-in code belongs to another open visit."""


async def get_host(conn: Conn, customer_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT customer_id, full_name, email, kind, standing FROM hosts WHERE customer_id = $1", customer_id
    )


async def upsert_visitor(
    conn: asyncpg.Connection, *, full_name: str, email: str, company_name: str | None, phone: str | None
) -> uuid.UUID:
    """The visitor with this email (any case), created if new. A returning visitor's details become the ones of
    this registration: the latest registration is what the visitors service holds about the person (and no host
    sees details that another host entered)."""
    return await conn.fetchval(
        """INSERT INTO visitors AS p (id, full_name, email, company_name, phone) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (lower(email)) WHERE email IS NOT NULL DO UPDATE SET
               full_name = excluded.full_name, email = excluded.email, company_name = excluded.company_name,
               phone = excluded.phone, updated_at = clock_timestamp()
           RETURNING p.id""",
        uuid.uuid4(),
        full_name,
        email,
        company_name,
        phone,
    )


async def insert_visit(conn: asyncpg.Connection, **values: Any) -> None:
    """Insert a visit; ``CodeTaken`` when its check-in code is used by another open visit (the caller draws
    again). Runs in a savepoint so that the caller's transaction survives the conflict."""
    columns = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    try:
        async with conn.transaction():
            await conn.execute(f"INSERT INTO visits ({columns}) VALUES ({params})", *values.values())
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "visits_open_check_in_code":
            raise CodeTaken() from None
        raise


async def get_visit(conn: Conn, visit_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"{VIEW} WHERE v.id = $1", visit_id)


async def lock_visit(conn: asyncpg.Connection, visit_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM visits WHERE id = $1 FOR UPDATE", visit_id)


async def lock_open_visit_by_code(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM visits WHERE check_in_code = $1 AND status IN ('expected', 'checked_in') FOR UPDATE", code
    )


async def update_visit(conn: asyncpg.Connection, visit_id: uuid.UUID, **changes: Any) -> asyncpg.Record:
    """Apply column changes and increment the version; returns the visit row after the change."""
    sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(changes, start=2))
    return await conn.fetchrow(
        f"""UPDATE visits SET {sets}, version = version + 1, updated_at = clock_timestamp()
            WHERE id = $1 RETURNING *""",
        visit_id,
        *changes.values(),
    )


async def list_visits(
    conn: Conn,
    *,
    host_customer_ids: list[uuid.UUID],
    status: str | None,
    starts: list[datetime],
    ends: list[datetime],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Visits in expected order, keyset-paginated on (expected_at, id): a listing neither skips nor repeats a visit
    however many are registered meanwhile. Every host id, start and end given must hold (AND)."""
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    for host in host_customer_ids:
        where.append(f"v.host_customer_id = {arg(host)}")
    if status is not None:
        where.append(f"v.status = {arg(status)}")
    for start in starts:
        where.append(f"v.expected_at >= {arg(start)}")
    for end in ends:
        where.append(f"v.expected_at < {arg(end)}")
    if after is not None:
        where.append(f"(v.expected_at, v.id) > ({arg(after[0])}, {arg(after[1])})")
    sql = VIEW
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY v.expected_at, v.id LIMIT {arg(limit + 1)}"
    return await conn.fetch(sql, *args)
