"""Changes of a visit, each with its event and (where someone must know) its email, in the caller's transaction.

Every function here expects the visit row to be locked (``store.lock_visit``) so that requests, the kiosk and
scheduler replicas serialise per visit; each change bumps the visit's version, which is the ``sequence`` of the
event it causes. Emails are ``notifications.send_email.v1`` commands written to the same outbox: notifications
renders the template and records the delivery."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg

from services.visitors import domain, store
from shared.events import (
    Message,
    SendEmailV1,
    VisitCancelledV1,
    VisitCheckedInV1,
    VisitCheckedOutV1,
    VisitNoShowV1,
)
from shared.outbox import emit

SERVICE = "visitors"
By = Literal["operator", "host"]


class InvalidTransition(Exception):
    def __init__(self, action: str, status: str) -> None:
        super().__init__(domain.refusal(action, status))
        self.action = action
        self.status = status


@dataclass(frozen=True)
class Place:
    """What the emails say about the space: its time zone (times are written in it) and its address."""

    tz: ZoneInfo
    address: str

    def human(self, when: datetime | None) -> str | None:
        if when is None:
            return None
        return when.astimezone(self.tz).strftime("%A %d %B %Y at %H:%M") + f" ({self.tz.key})"


def state(row: Any) -> dict[str, Any]:
    """The fields every visit event carries, from a visit row."""
    return {
        "visit_id": row["id"],
        "visitor_id": row["visitor_id"],
        "host_customer_id": row["host_customer_id"],
        "purpose": row["purpose"],
        "expected_at": row["expected_at"],
        "status": row["status"],
    }


async def announce(
    conn: asyncpg.Connection, row: Any, message: Message, correlation_id: str | None, causation_id: str | None = None
) -> None:
    await emit(
        conn,
        message,
        producer=SERVICE,
        subject=row["id"],
        sequence=row["version"],
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


async def request_registration_email(
    conn: asyncpg.Connection, view: Any, place: Place, correlation_id: str | None
) -> None:
    """The visitor's email: who hosts them, when, where, and the check-in code for the kiosk."""
    await emit(
        conn,
        SendEmailV1(
            request_key=f"visit-registered:{view['id']}",
            template="visit_registered",
            to_email=view["visitor_email"],
            to_name=view["visitor_full_name"],
            context={
                "visitor_name": view["visitor_full_name"],
                "host_name": view["host_name"],
                "purpose": view["purpose"],
                "expected_at": view["expected_at"].isoformat(),
                "expected_at_human": place.human(view["expected_at"]),
                "expected_departure_at_human": place.human(view["expected_departure_at"]),
                "check_in_code": view["check_in_code"],
                "space_address": place.address,
            },
        ),
        producer=SERVICE,
        subject=view["id"],
        sequence=view["version"],
        correlation_id=correlation_id,
    )


async def check_in(
    conn: asyncpg.Connection,
    visit: Any,
    now: datetime,
    by: Literal["operator", "host", "kiosk"],
    place: Place,
    correlation_id: str | None,
) -> Any:
    """expected -> checked_in. The host is emailed that their visitor arrived, unless they checked them in."""
    if not domain.allowed("check_in", visit["status"]):
        raise InvalidTransition("check_in", visit["status"])
    row = await store.update_visit(conn, visit["id"], status="checked_in", checked_in_at=now)
    await announce(conn, row, VisitCheckedInV1(**state(row), checked_in_at=now, by=by), correlation_id)
    view = await store.get_visit(conn, row["id"])
    assert view is not None
    if view["host_customer_id"] is not None and by != "host" and view["host_email"]:
        await emit(
            conn,
            SendEmailV1(
                request_key=f"visit-checked-in:{view['id']}",
                template="host_visitor_arrived",
                to_email=view["host_email"],
                to_name=view["host_name"] or view["host_email"],
                customer_id=view["host_customer_id"],
                context={
                    "host_name": view["host_name"],
                    "visitor_name": view["visitor_full_name"],
                    "visitor_company": view["visitor_company_name"],
                    "purpose": view["purpose"],
                    "checked_in_at": now.isoformat(),
                    "checked_in_at_human": place.human(now),
                },
            ),
            producer=SERVICE,
            subject=view["id"],
            sequence=view["version"],
            correlation_id=correlation_id,
        )
    return view


async def check_out(conn: asyncpg.Connection, visit: Any, now: datetime, by: By, correlation_id: str | None) -> Any:
    """checked_in -> checked_out."""
    if not domain.allowed("check_out", visit["status"]):
        raise InvalidTransition("check_out", visit["status"])
    row = await store.update_visit(conn, visit["id"], status="checked_out", checked_out_at=now, ended_at=now)
    await announce(
        conn,
        row,
        VisitCheckedOutV1(**state(row), checked_in_at=row["checked_in_at"], checked_out_at=now, by=by),
        correlation_id,
    )
    return await store.get_visit(conn, row["id"])


async def cancel(
    conn: asyncpg.Connection, visit: Any, now: datetime, by: By, reason: str | None, correlation_id: str | None
) -> Any:
    """expected -> cancelled."""
    if not domain.allowed("cancel", visit["status"]):
        raise InvalidTransition("cancel", visit["status"])
    row = await store.update_visit(
        conn, visit["id"], status="cancelled", cancelled_at=now, cancellation_reason=reason, ended_at=now
    )
    await announce(conn, row, VisitCancelledV1(**state(row), cancelled_at=now, by=by), correlation_id)
    return await store.get_visit(conn, row["id"])


async def mark_no_shows(
    conn: asyncpg.Connection, now: datetime, cutoff: datetime, limit: int, correlation_id: str
) -> list[uuid.UUID]:
    """expected -> no_show for up to ``limit`` visits expected before ``cutoff``. Rows another replica or a request
    holds are skipped (``SKIP LOCKED``): they are either being changed now or still due at the next tick."""
    rows = await conn.fetch(
        """UPDATE visits SET status = 'no_show', no_show_at = $1, ended_at = $1, version = version + 1,
                  updated_at = clock_timestamp()
           WHERE id IN (SELECT id FROM visits WHERE status = 'expected' AND expected_at <= $2
                        ORDER BY expected_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             AND status = 'expected'
           RETURNING *""",
        now,
        cutoff,
        limit,
    )
    for row in rows:
        await announce(conn, row, VisitNoShowV1(**state(row), marked_at=now), correlation_id)
    return [r["id"] for r in rows]


async def anonymise_visitors(conn: asyncpg.Connection, now: datetime, cutoff: datetime, limit: int) -> int:
    """Forget the personal data of up to ``limit`` visitors whose every visit ended before ``cutoff``: name, email,
    company and phone become NULL, and the notes of their visits (free text about them) are cleared. The visits
    stay, with status and times. A visitor registered again meanwhile holds a lock or has an open visit, so is
    skipped; the same email registered after anonymisation is a new visitor."""
    # 1. lock candidates (skipping those a registration or another replica holds); 2. with a fresh snapshot, taken
    # once the locks are held, keep only those still without a recent or open visit: a registration commits its
    # visit only after locking the visitor row (its upsert), so it is either seen here or waits for this commit
    candidates = await conn.fetch(
        """SELECT p.id FROM visitors p
           WHERE p.anonymised_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM visits x WHERE x.visitor_id = p.id
                             AND (x.ended_at IS NULL OR x.ended_at > $1))
           LIMIT $2 FOR UPDATE OF p SKIP LOCKED""",
        cutoff,
        limit,
    )
    if not candidates:
        return 0
    ids = await conn.fetch(
        """UPDATE visitors p SET full_name = NULL, email = NULL, company_name = NULL, phone = NULL,
                  anonymised_at = $1, updated_at = clock_timestamp()
           WHERE p.id = ANY($2::uuid[]) AND p.anonymised_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM visits x WHERE x.visitor_id = p.id
                             AND (x.ended_at IS NULL OR x.ended_at > $3))
           RETURNING p.id""",
        now,
        [r["id"] for r in candidates],
        cutoff,
    )
    if ids:
        await conn.execute(
            "UPDATE visits SET notes = NULL WHERE visitor_id = ANY($1::uuid[]) AND notes IS NOT NULL",
            [r["id"] for r in ids],
        )
    return len(ids)
