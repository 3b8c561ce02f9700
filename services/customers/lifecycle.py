"""State changes of a customer, each with its events and its history row, in the caller's transaction.

Every function here expects the customer row to be locked (``lock_customer``) so that concurrent requests and
scheduler replicas serialise per customer; each change bumps the customer's version, which is the ``sequence``
of the event it causes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
import orjson

from services.customers import access, credit, domain
from shared.events import (
    ContractEndedV1,
    ContractStartedV1,
    CustomerBecameContactV1,
    CustomerBecameMemberV1,
    CustomerReactivatedV1,
    Message,
)
from shared.outbox import emit

SERVICE = "customers"


@dataclass(frozen=True)
class Actor:
    type: str  # operator | customer | system | service
    id: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls("system", None)


async def lock_customer(conn: asyncpg.Connection, customer_id: uuid.UUID, skip_locked: bool = False) -> Any:
    # NO KEY UPDATE: serialises changes of the customer, and still lets other transactions insert rows that refer
    # to it (foreign-key checks take KEY SHARE), so a consumption writing ledger rows never waits on it in a cycle
    sql = "SELECT * FROM customers WHERE id = $1 FOR NO KEY UPDATE" + (" SKIP LOCKED" if skip_locked else "")
    return await conn.fetchrow(sql, customer_id)


async def record(
    conn: asyncpg.Connection,
    customer_id: uuid.UUID,
    action: str,
    actor: Actor,
    details: dict[str, Any],
    correlation_id: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO customer_history (customer_id, action, actor_type, actor_id, details, correlation_id)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        customer_id,
        action,
        actor.type,
        actor.id,
        orjson.loads(orjson.dumps(details, default=str)),
        correlation_id,
    )


async def bump(conn: asyncpg.Connection, customer_id: uuid.UUID, **changes: Any) -> Any:
    """Apply column changes to the customer and increment its version; returns the row after the change."""
    sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(changes, start=2))
    sql = f"UPDATE customers SET {sets}{', ' if sets else ''}version = version + 1, updated_at = now() WHERE id = $1"
    return await conn.fetchrow(sql + " RETURNING *", customer_id, *changes.values())


async def emit_customer_event(
    conn: asyncpg.Connection, row: Any, message: Message, correlation_id: str | None, causation_id: str | None
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


async def advance(
    conn: asyncpg.Connection,
    customer: Any,
    today: date,
    actor: Actor,
    correlation_id: str | None,
    causation_id: str | None = None,
) -> Any:
    """Process every contract transition due on ``today`` for a locked customer (start, end, both after
    downtime), then derive the kind and announce a change of it. Returns the customer row afterwards."""
    customer_id = customer["id"]
    # credit first: a contract that ended while the service was down still gets the periods it ran
    await credit.grant_plan_periods(conn, customer_id, today, correlation_id)
    contracts = await conn.fetch(
        """SELECT * FROM contracts WHERE customer_id = $1 AND state IN ('scheduled', 'active')
           ORDER BY starts_on, created_at FOR UPDATE""",
        customer_id,
    )
    last_started: uuid.UUID | None = None
    last_ended: uuid.UUID | None = None
    for c in contracts:
        contract = domain.Contract(c["starts_on"], c["ends_on"], c["state"], c["cancelled_at"] is not None)
        for step in domain.transitions(contract, today):
            if step == "started":
                row = await conn.fetchrow(
                    """UPDATE contracts SET state = 'active', version = version + 1, updated_at = now()
                       WHERE id = $1 RETURNING version""",
                    c["id"],
                )
                await emit(
                    conn,
                    ContractStartedV1(
                        contract_id=c["id"],
                        customer_id=customer_id,
                        plan_id=c["plan_id"],
                        starts_on=c["starts_on"],
                        ends_on=c["ends_on"],
                    ),
                    producer=SERVICE,
                    subject=c["id"],
                    sequence=row["version"],
                    correlation_id=correlation_id,
                    causation_id=causation_id,
                )
                await record(conn, customer_id, "contract.started", actor, {"contract_id": c["id"]}, correlation_id)
                last_started = c["id"]
            else:
                state = domain.end_state(contract)
                reason = "cancelled" if contract.cancelled else "expired"
                row = await conn.fetchrow(
                    """UPDATE contracts SET state = $2, version = version + 1, updated_at = now()
                       WHERE id = $1 RETURNING version""",
                    c["id"],
                    state,
                )
                await emit(
                    conn,
                    ContractEndedV1(
                        contract_id=c["id"],
                        customer_id=customer_id,
                        plan_id=c["plan_id"],
                        ended_on=c["ends_on"],
                        reason=reason,
                    ),
                    producer=SERVICE,
                    subject=c["id"],
                    sequence=row["version"],
                    correlation_id=correlation_id,
                    causation_id=causation_id,
                )
                await record(
                    conn,
                    customer_id,
                    "contract.ended",
                    actor,
                    {"contract_id": c["id"], "reason": reason},
                    correlation_id,
                )
                last_ended = c["id"]
    active = await conn.fetchval(
        "SELECT count(*) FROM contracts WHERE customer_id = $1 AND state = 'active'", customer_id
    )
    kind = domain.derive_kind(active)
    if kind == customer["kind"]:
        return customer
    customer = await bump(conn, customer_id, kind=kind)
    if kind == "member":
        cause = last_started or await _any_active(conn, customer_id)
        message: Message = CustomerBecameMemberV1(
            customer_id=customer_id, kind="member", standing=customer["standing"], contract_id=cause
        )
    else:
        cause = last_ended or await _last_ended(conn, customer_id)
        message = CustomerBecameContactV1(
            customer_id=customer_id, kind="contact", standing=customer["standing"], contract_id=cause
        )
    await emit_customer_event(conn, customer, message, correlation_id, causation_id)
    await record(conn, customer_id, f"became_{kind}", actor, {"contract_id": cause}, correlation_id)
    await access.refresh_around(conn, customer_id, correlation_id, causation_id)
    return customer


async def _any_active(conn: asyncpg.Connection, customer_id: uuid.UUID) -> uuid.UUID:
    return await conn.fetchval(
        "SELECT id FROM contracts WHERE customer_id = $1 AND state = 'active' ORDER BY starts_on DESC LIMIT 1",
        customer_id,
    )


async def _last_ended(conn: asyncpg.Connection, customer_id: uuid.UUID) -> uuid.UUID:
    return await conn.fetchval(
        """SELECT id FROM contracts WHERE customer_id = $1 AND state IN ('ended', 'cancelled')
           ORDER BY updated_at DESC LIMIT 1""",
        customer_id,
    )


async def lift_suspension(
    conn: asyncpg.Connection, customer: Any, actor: Actor, correlation_id: str | None, causation_id: str | None
) -> Any:
    """End the open suspension of a locked, suspended customer; announce the reactivation."""
    customer_id = customer["id"]
    suspension_id = await conn.fetchval(
        """UPDATE suspensions SET lifted_at = now(), lifted_by = $2
           WHERE customer_id = $1 AND lifted_at IS NULL RETURNING id""",
        customer_id,
        actor.id or actor.type,
    )
    row = await bump(conn, customer_id, standing="active")
    by = "system" if actor.type == "system" else "operator"
    await emit_customer_event(
        conn,
        row,
        CustomerReactivatedV1(
            customer_id=customer_id, kind=row["kind"], standing="active", suspension_id=suspension_id, by=by
        ),
        correlation_id,
        causation_id,
    )
    await record(conn, customer_id, "reactivated", actor, {"suspension_id": suspension_id}, correlation_id)
    await access.refresh_around(conn, customer_id, correlation_id, causation_id)
    return row
