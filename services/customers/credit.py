"""Booking and printing credit as ledgers: grants (a plan's allowance each billing period, or an operator's) and
consumptions are entries; a balance is the sum of a customer's entries of a kind.

``credit_balances`` holds that sum, written in the same transaction as the entries. A consumption locks every
balance row it may draw on, in customer-id order (so concurrent consumptions over overlapping team pools cannot
deadlock), then draws: the consumer's own balance first, then, for each team they belong to that shares the kind,
the paying member's balance and then the other members'. Two consumptions can never take the same credit: the
second waits for the first's locks and sees what is left. ``balance >= 0`` is also a CHECK in the table."""

from __future__ import annotations

import calendar
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg

from shared.events import CreditConsumedV1, CreditGrantedV1
from shared.outbox import emit

SERVICE = "customers"
KINDS = ("booking", "printing")
MAX_CATCH_UP_PERIODS = 400
"""Plan grants made for one contract in one pass (a daily plan after a year of downtime catches up in a pass)."""


def period_start(starts_on: date, billing_period: str, n: int) -> date:
    """The first day of a contract's ``n``-th billing period (0-based), counted from ``starts_on`` each time so
    that a month-end start stays on month ends (31 Jan, 28 Feb, 31 Mar), as PostgreSQL's date arithmetic does."""
    if billing_period == "day":
        return starts_on + timedelta(days=n)
    if billing_period == "week":
        return starts_on + timedelta(weeks=n)
    months = n if billing_period == "month" else 12 * n
    y, m = divmod(starts_on.month - 1 + months, 12)
    year, month = starts_on.year + y, m + 1
    return date(year, month, min(starts_on.day, calendar.monthrange(year, month)[1]))


PERIOD_SQL = """(c.starts_on + c.periods_credited * CASE p.billing_period WHEN 'day' THEN interval '1 day'
    WHEN 'week' THEN interval '7 days' WHEN 'month' THEN interval '1 month' ELSE interval '1 year' END)::date"""
"""The first day of the next period to credit, in SQL (the scheduler's query for due grants)."""

DUE_GRANTS_SQL = f"""
    SELECT DISTINCT c.customer_id FROM contracts c JOIN plans p ON p.id = c.plan_id
    WHERE c.state IN ('scheduled', 'active') AND c.starts_on <= $1 AND {PERIOD_SQL} <= $1
      AND (c.ends_on IS NULL OR {PERIOD_SQL} <= c.ends_on)
    LIMIT $2"""


async def grant(
    conn: asyncpg.Connection,
    customer_id: uuid.UUID,
    kind: str,
    amount: int,
    *,
    reason: str,
    reference: str | None,
    note: str | None = None,
    created_by: str | None = None,
    contract_id: uuid.UUID | None = None,
    period_start_on: date | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> dict[str, Any]:
    """Add a grant entry, raise the balance and announce it, in the caller's transaction."""
    entry_id = await conn.fetchval(
        """INSERT INTO credit_entries (customer_id, kind, amount, reason, reference, note, created_by, contract_id,
                                       period_start)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
        customer_id,
        kind,
        amount,
        reason,
        reference,
        note,
        created_by,
        contract_id,
        period_start_on,
    )
    balance = await conn.fetchval(
        """INSERT INTO credit_balances (customer_id, kind, balance) VALUES ($1, $2, $3)
           ON CONFLICT (customer_id, kind) DO UPDATE SET balance = credit_balances.balance + EXCLUDED.balance
           RETURNING balance""",
        customer_id,
        kind,
        amount,
    )
    await emit(
        conn,
        CreditGrantedV1(
            entry_id=entry_id,
            customer_id=customer_id,
            kind=kind,  # type: ignore[arg-type]
            amount=amount,
            reason=reason,  # type: ignore[arg-type]
            reference=reference,
            contract_id=contract_id,
            period_start=period_start_on,
            balance_after=balance,
        ),
        producer=SERVICE,
        subject=customer_id,
        sequence=entry_id,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
    return {"entry_id": entry_id, "customer_id": str(customer_id), "kind": kind, "amount": amount, "balance": balance}


async def grant_plan_periods(
    conn: asyncpg.Connection, customer_id: uuid.UUID, today: date, correlation_id: str | None
) -> int:
    """Grant the plan's credit for every billing period of the customer's running (or due to start) contracts
    that has begun by ``today`` and not been credited yet. Idempotent: each (contract, kind, period) is granted
    once (a unique index), and ``periods_credited`` records how far it got. Returns the entries made."""
    contracts = await conn.fetch(
        """SELECT c.id, c.starts_on, c.ends_on, c.periods_credited, p.billing_period, p.booking_credit,
                  p.printing_credit
           FROM contracts c JOIN plans p ON p.id = c.plan_id
           WHERE c.customer_id = $1 AND c.state IN ('scheduled', 'active') AND c.starts_on <= $2
           ORDER BY c.starts_on, c.id FOR UPDATE OF c""",
        customer_id,
        today,
    )
    made = 0
    for c in contracts:
        n = c["periods_credited"]
        for _ in range(MAX_CATCH_UP_PERIODS):
            start = period_start(c["starts_on"], c["billing_period"], n)
            if start > today or (c["ends_on"] is not None and start > c["ends_on"]):
                break
            for kind in KINDS:
                amount = c[f"{kind}_credit"]
                if amount > 0:
                    await grant(
                        conn,
                        customer_id,
                        kind,
                        amount,
                        reason="plan",
                        reference=f"contract {c['id']} period {start.isoformat()}",
                        created_by="system",
                        contract_id=c["id"],
                        period_start_on=start,
                        correlation_id=correlation_id,
                    )
                    made += 1
            n += 1
        if n != c["periods_credited"]:
            await conn.execute("UPDATE contracts SET periods_credited = $2 WHERE id = $1", c["id"], n)
    return made


@dataclass(frozen=True)
class Source:
    customer_id: uuid.UUID
    team_id: uuid.UUID | None


async def sources(conn: asyncpg.Connection, customer_id: uuid.UUID, kind: str) -> list[Source]:
    """Where a consumption by ``customer_id`` may draw, in order: their own balance; then, per team they belong
    to that shares this kind (the team they joined first first), the paying member's balance, then the other
    members' in the order they joined. A balance appears once (at its first place)."""
    column = "share_booking_credit" if kind == "booking" else "share_printing_credit"
    rows = await conn.fetch(
        f"""SELECT t.id AS team_id, o.customer_id
            FROM team_memberships m
            JOIN teams t ON t.id = m.team_id AND t.deleted_at IS NULL AND t.{column}
            JOIN team_memberships o ON o.team_id = t.id AND o.left_at IS NULL
            WHERE m.customer_id = $1 AND m.left_at IS NULL
            ORDER BY m.joined_at, m.id, (o.customer_id = t.paying_member_id) DESC, o.joined_at, o.id""",
        customer_id,
    )
    out = [Source(customer_id, None)]
    seen = {customer_id}
    for r in rows:
        if r["customer_id"] not in seen:
            seen.add(r["customer_id"])
            out.append(Source(r["customer_id"], r["team_id"]))
    return out


class InsufficientCredit(Exception):
    def __init__(self, available: int) -> None:
        super().__init__(f"{available} available")
        self.available = available


async def available(conn: asyncpg.Connection | asyncpg.Pool, customer_id: uuid.UUID, kind: str) -> dict[str, int]:
    """The customer's own balance and what they could consume now (own + shared team credit)."""
    srcs = await sources(conn, customer_id, kind)  # type: ignore[arg-type]
    rows = await conn.fetch(
        "SELECT customer_id, balance FROM credit_balances WHERE kind = $1 AND customer_id = ANY($2::uuid[])",
        kind,
        [s.customer_id for s in srcs],
    )
    balances = {r["customer_id"]: r["balance"] for r in rows}
    own = balances.get(customer_id, 0)
    return {"own": own, "available": sum(balances.values())}


async def consume(
    conn: asyncpg.Connection,
    customer_id: uuid.UUID,
    kind: str,
    amount: int,
    reference: str,
    *,
    created_by: str | None,
    correlation_id: str | None,
) -> dict[str, Any]:
    """Draw ``amount`` in the caller's transaction, or raise :class:`InsufficientCredit` (nothing written)."""
    srcs = await sources(conn, customer_id, kind)
    ids = [s.customer_id for s in srcs]
    await conn.execute(
        """INSERT INTO credit_balances (customer_id, kind)
           SELECT unnest($1::uuid[]), $2 ORDER BY 1 ON CONFLICT DO NOTHING""",
        sorted(ids),
        kind,
    )
    locked = await conn.fetch(
        """SELECT customer_id, balance FROM credit_balances WHERE kind = $1 AND customer_id = ANY($2::uuid[])
           ORDER BY customer_id FOR UPDATE""",
        kind,
        ids,
    )
    balances = {r["customer_id"]: r["balance"] for r in locked}
    total = sum(balances.values())
    if total < amount:
        raise InsufficientCredit(total)
    consumption_id = uuid.uuid4()
    left = amount
    paid_by: list[dict[str, Any]] = []
    for s in srcs:
        take = min(left, balances[s.customer_id])
        if take <= 0:
            continue
        left -= take
        await conn.execute(
            """INSERT INTO credit_entries (customer_id, kind, amount, reason, reference, consumption_id, consumer_id,
                                           team_id, created_by)
               VALUES ($1, $2, $3, 'consumption', $4, $5, $6, $7, $8)""",
            s.customer_id,
            kind,
            -take,
            reference,
            consumption_id,
            customer_id,
            s.team_id,
            created_by,
        )
        await conn.execute(
            "UPDATE credit_balances SET balance = balance - $3 WHERE customer_id = $1 AND kind = $2",
            s.customer_id,
            kind,
            take,
        )
        paid_by.append({"customer_id": s.customer_id, "team_id": s.team_id, "amount": take})
        if left == 0:
            break
    version = await conn.fetchval("SELECT max(id) FROM credit_entries WHERE consumption_id = $1", consumption_id)
    await emit(
        conn,
        CreditConsumedV1(
            consumption_id=consumption_id,
            customer_id=customer_id,
            kind=kind,  # type: ignore[arg-type]
            amount=amount,
            reference=reference,
            paid_by=paid_by,  # type: ignore[arg-type]
        ),
        producer=SERVICE,
        subject=customer_id,
        sequence=version,
        correlation_id=correlation_id,
    )
    return {
        "consumption_id": str(consumption_id),
        "customer_id": str(customer_id),
        "kind": kind,
        "amount": amount,
        "reference": reference,
        "paid_by": [
            {
                "customer_id": str(p["customer_id"]),
                "team_id": str(p["team_id"]) if p["team_id"] else None,
                "amount": p["amount"],
            }
            for p in paid_by
        ],
        "own_balance_after": balances[customer_id]
        - next((p["amount"] for p in paid_by if p["customer_id"] == customer_id), 0),
    }
