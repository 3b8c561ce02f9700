"""Effective space access, with the rule that decides it, and the events that keep door systems correct.

A customer has access when they are an active member (a running contract, not suspended), or when a team they
belong to shares access and has an active member; never while suspended or after erasure. The decision is
computed from the current rows; ``customer_access`` keeps what was last announced, so that every change that can
move someone's access (contract start or end, suspension, reactivation, erasure, a team's switch, a member joining
or leaving, a team deleted) calls :func:`refresh` for the customers it may affect, in its own transaction, and a
``customers.access.granted.v1`` / ``revoked.v1`` goes out exactly for those whose access changed.

Locking: :func:`refresh` is the last step of a transaction and locks the ``customer_access`` rows it needs in
customer-id order *before* reading the state it decides from, so two concurrent refreshes of the same customer
serialise, and the second decides from what the first committed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.events import AccessGrantedV1, AccessRevokedV1, Message
from shared.outbox import emit

SERVICE = "customers"

EXPLANATIONS = {
    "member": "An active member: a contract is running and the customer is not suspended",
    "team": "A team the customer belongs to shares access and has an active member",
    "suspended": "Suspended customers have no access, whatever their contracts or teams",
    "erased": "The customer was erased",
    "no_membership": "No running contract, and no team sharing access that has an active member",
}


@dataclass(frozen=True)
class Decision:
    granted: bool
    rule: str
    team_id: uuid.UUID | None = None

    def view(self, customer_id: uuid.UUID) -> dict[str, Any]:
        return {
            "customer_id": str(customer_id),
            "granted": self.granted,
            "rule": self.rule,
            "team_id": str(self.team_id) if self.team_id else None,
            "explanation": EXPLANATIONS[self.rule],
        }


SHARING_TEAM_SQL = """
    SELECT t.id FROM team_memberships m JOIN teams t ON t.id = m.team_id
    WHERE m.customer_id = $1 AND m.left_at IS NULL AND t.deleted_at IS NULL AND t.share_access
      AND EXISTS (SELECT 1 FROM team_memberships o JOIN customers c ON c.id = o.customer_id
                  WHERE o.team_id = t.id AND o.left_at IS NULL
                    AND c.kind = 'member' AND c.standing = 'active' AND c.erased_at IS NULL)
    ORDER BY m.joined_at, m.id LIMIT 1"""


async def decide(conn: asyncpg.Connection | asyncpg.Pool, customer_id: uuid.UUID) -> Decision | None:
    """The customer's access now, or None if there is no such customer."""
    c = await conn.fetchrow("SELECT kind, standing, erased_at FROM customers WHERE id = $1", customer_id)
    if c is None:
        return None
    return await _decide(conn, customer_id, c)


async def _decide(conn: Any, customer_id: uuid.UUID, c: Any) -> Decision:
    if c["erased_at"] is not None:
        return Decision(False, "erased")
    if c["standing"] == "suspended":
        return Decision(False, "suspended")
    if c["kind"] == "member":
        return Decision(True, "member")
    team_id = await conn.fetchval(SHARING_TEAM_SQL, customer_id)
    if team_id is not None:
        return Decision(True, "team", team_id)
    return Decision(False, "no_membership")


async def teammates(conn: asyncpg.Connection, customer_id: uuid.UUID) -> list[uuid.UUID]:
    """Current members of the access-sharing teams the customer belongs to (their access may hang on this
    customer being an active member)."""
    rows = await conn.fetch(
        """SELECT DISTINCT o.customer_id FROM team_memberships m
           JOIN teams t ON t.id = m.team_id AND t.deleted_at IS NULL AND t.share_access
           JOIN team_memberships o ON o.team_id = t.id AND o.left_at IS NULL
           WHERE m.customer_id = $1 AND m.left_at IS NULL""",
        customer_id,
    )
    return [r["customer_id"] for r in rows]


async def team_members(conn: asyncpg.Connection, team_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT customer_id FROM team_memberships WHERE team_id = $1 AND left_at IS NULL", team_id)
    return [r["customer_id"] for r in rows]


async def refresh_around(
    conn: asyncpg.Connection, customer_id: uuid.UUID, correlation_id: str | None, causation_id: str | None = None
) -> None:
    """After the customer's kind, standing or erasure changed: them and everyone sharing access with them."""
    await refresh(conn, [customer_id, *await teammates(conn, customer_id)], correlation_id, causation_id)


async def refresh(
    conn: asyncpg.Connection,
    customer_ids: Iterable[uuid.UUID],
    correlation_id: str | None,
    causation_id: str | None = None,
) -> list[tuple[uuid.UUID, Decision]]:
    """Decide the access of each customer again and announce each change; returns the changes."""
    ids = sorted(set(customer_ids))
    if not ids:
        return []
    await conn.execute(
        "INSERT INTO customer_access (customer_id) SELECT unnest($1::uuid[]) ORDER BY 1 ON CONFLICT DO NOTHING", ids
    )
    held = await conn.fetch(
        "SELECT * FROM customer_access WHERE customer_id = ANY($1::uuid[]) ORDER BY customer_id FOR UPDATE", ids
    )
    states = {
        r["id"]: r
        for r in await conn.fetch("SELECT id, kind, standing, erased_at FROM customers WHERE id = ANY($1::uuid[])", ids)
    }
    changed: list[tuple[uuid.UUID, Decision]] = []
    for row in held:
        customer_id = row["customer_id"]
        decision = await _decide(conn, customer_id, states[customer_id])
        if decision.granted == row["granted"]:
            if (decision.rule, decision.team_id) != (row["rule"], row["team_id"]):
                await conn.execute(
                    "UPDATE customer_access SET rule = $2, team_id = $3, updated_at = now() WHERE customer_id = $1",
                    customer_id,
                    decision.rule,
                    decision.team_id,
                )
            continue
        version = await conn.fetchval(
            """UPDATE customer_access SET granted = $2, rule = $3, team_id = $4, version = version + 1,
                   updated_at = now() WHERE customer_id = $1 RETURNING version""",
            customer_id,
            decision.granted,
            decision.rule,
            decision.team_id,
        )
        message: Message = (
            AccessGrantedV1(customer_id=customer_id, rule=decision.rule, team_id=decision.team_id)  # type: ignore[arg-type]
            if decision.granted
            else AccessRevokedV1(customer_id=customer_id, rule=decision.rule)  # type: ignore[arg-type]
        )
        await emit(
            conn,
            message,
            producer=SERVICE,
            subject=customer_id,
            sequence=version,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        changed.append((customer_id, decision))
    return changed
