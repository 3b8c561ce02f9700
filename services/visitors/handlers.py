"""Event consumers of the visitors service, all listed in HANDLERS."""

from __future__ import annotations

import asyncpg

from shared.consumer import Handler
from shared.events import CustomerCreatedV1, Envelope


async def on_customer_created(conn: asyncpg.Connection, env: Envelope, event: CustomerCreatedV1) -> None:
    await conn.execute(
        """INSERT INTO hosts (customer_id, full_name, email, kind, standing, sequence)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (customer_id) DO UPDATE SET full_name = excluded.full_name, email = excluded.email,
               kind = excluded.kind, standing = excluded.standing, sequence = excluded.sequence, updated_at = now()
           WHERE hosts.sequence < excluded.sequence""",
        event.customer_id,
        event.full_name,
        event.email,
        event.kind,
        event.standing,
        env.sequence,
    )


HANDLERS: dict[str, dict[str, Handler]] = {
    "visitors.customer-events": {
        CustomerCreatedV1.routing_key(): Handler(CustomerCreatedV1, on_customer_created),
    }
}
