"""Event consumers of the visitors service, all listed in HANDLERS.

The ``hosts`` table is the service's replica of the customers, fed by every ``customers.customer.*`` fact. It
converges whatever the delivery order, because each event says what the customer is *after* the change and its
envelope ``sequence`` is the customer's version:

- kind and standing travel in every event: they are applied when the event's sequence is above ``sequence``;
- full name and email travel only in created and updated: they are applied when the event's sequence is above
  ``profile_sequence`` (so an ``updated`` that arrives after a newer ``suspended`` still renames the host).

An event that arrives before the customer's ``created`` (out of order) is not skipped: it inserts what it
knows, and a host inserted by a kind or standing event has no name and email (NULL, ``profile_sequence`` 0)
until created or updated arrives. ``erased`` is final: it removes the name and email and lifts both watermarks
to the maximum, so no late event can bring them back. Each write is one upsert whose conditions compare
sequences, never a read then a write, so two events for one customer handled at once cannot undo each other.
"""

from __future__ import annotations

import uuid

import asyncpg

from shared.consumer import Handler, Statement
from shared.events import (
    CustomerBecameContactV1,
    CustomerBecameMemberV1,
    CustomerCreatedV1,
    CustomerErasedV1,
    CustomerReactivatedV1,
    CustomerSuspendedV1,
    CustomerUpdatedV1,
    Envelope,
)
from shared.events.customers import CustomerStateMixin


def upsert_host(
    env: Envelope,
    customer_id: uuid.UUID,
    kind: str,
    standing: str,
    *,
    full_name: str | None = None,
    email: str | None = None,
) -> Statement:
    """One customer event applied to its host row (see the module docstring); stale parts change nothing. One
    statement with the message's inbox row (see :class:`Statement`)."""
    return Statement(
        """host AS (
               INSERT INTO hosts AS h (customer_id, full_name, email, kind, standing, sequence, profile_sequence)
               SELECT $3::uuid, $4::text, $5::text, $6::text, $7::text, $8::int,
                      CASE WHEN $5::text IS NULL THEN 0 ELSE $8 END
               FROM fresh
               ON CONFLICT (customer_id) DO UPDATE SET
                   kind = CASE WHEN h.sequence < excluded.sequence THEN excluded.kind ELSE h.kind END,
                   standing = CASE WHEN h.sequence < excluded.sequence THEN excluded.standing ELSE h.standing END,
                   sequence = greatest(h.sequence, excluded.sequence),
                   full_name = CASE WHEN h.profile_sequence < excluded.profile_sequence
                                    THEN excluded.full_name ELSE h.full_name END,
                   email = CASE WHEN h.profile_sequence < excluded.profile_sequence
                                THEN excluded.email ELSE h.email END,
                   profile_sequence = greatest(h.profile_sequence, excluded.profile_sequence),
                   updated_at = now()
               WHERE h.sequence < excluded.sequence OR h.profile_sequence < excluded.profile_sequence
           )""",
        (customer_id, full_name, email, kind, standing, env.sequence),
    )


def on_customer_created(env: Envelope, event: CustomerCreatedV1) -> Statement:
    return upsert_host(env, event.customer_id, event.kind, event.standing, full_name=event.full_name, email=event.email)


def on_customer_updated(env: Envelope, event: CustomerUpdatedV1) -> Statement:
    return upsert_host(env, event.customer_id, event.kind, event.standing, full_name=event.full_name, email=event.email)


def on_customer_state(env: Envelope, event: CustomerStateMixin) -> Statement:
    """became_member, became_contact, suspended, reactivated: the kind and standing after the change."""
    return upsert_host(env, event.customer_id, event.kind, event.standing)


ERASED = 2**31 - 1  # erasure is final: no later (or late) event about the customer may apply after it


async def on_customer_erased(conn: asyncpg.Connection, env: Envelope, event: CustomerErasedV1) -> None:
    """Remove the host's copied details (name, email); their past visits stay, without them. Nobody can register
    a visit for them any more (an unknown host: 422). Published copies of emails this service requested that
    name them (a visitor's registration email says who the host is) are deleted from the outbox too."""
    known = await conn.fetchrow("SELECT full_name, email FROM hosts WHERE customer_id = $1", event.customer_id)
    details = [v for v in (known["full_name"], known["email"]) if v] if known else []
    if details:
        await conn.execute(
            """DELETE FROM outbox WHERE published_at IS NOT NULL
               AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS d
                           WHERE position(d IN convert_from(body, 'UTF8')) > 0)""",
            details,
        )
    await conn.execute(
        """INSERT INTO hosts AS h (customer_id, full_name, email, kind, standing, sequence, profile_sequence, erased_at)
           VALUES ($1, NULL, NULL, 'contact', 'active', $2, $2, $3)
           ON CONFLICT (customer_id) DO UPDATE SET full_name = NULL, email = NULL, sequence = $2,
               profile_sequence = $2, erased_at = coalesce(h.erased_at, $3), updated_at = now()""",
        event.customer_id,
        ERASED,
        event.erased_at,
    )


HANDLERS: dict[str, dict[str, Handler]] = {
    "visitors.customer-events": {
        CustomerCreatedV1.routing_key(): Handler(CustomerCreatedV1, statement=on_customer_created),
        CustomerUpdatedV1.routing_key(): Handler(CustomerUpdatedV1, statement=on_customer_updated),
        CustomerErasedV1.routing_key(): Handler(CustomerErasedV1, on_customer_erased),
        **{
            m.routing_key(): Handler(m, statement=on_customer_state)
            for m in (CustomerBecameMemberV1, CustomerBecameContactV1, CustomerSuspendedV1, CustomerReactivatedV1)
        },
    }
}
