"""Event and command consumers of the notifications service, all listed in HANDLERS."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from shared.consumer import Handler, PermanentError, Statement
from shared.events import CustomerErasedV1, Envelope, SendEmailV1
from shared.tracing import current_traceparent


def make_handlers(templates: set[str]) -> dict[str, dict[str, Handler]]:
    def on_send_email(env: Envelope, cmd: SendEmailV1) -> Statement:
        """Record the intent (pending delivery) with the message's inbox row, one statement; the dispatcher
        sends it after commit. The request key makes a repeated request a no-op even if it carries a new event
        id."""
        if cmd.template not in templates:
            raise PermanentError(f"unknown template {cmd.template!r}")
        return Statement(
            """delivery AS (
                   INSERT INTO deliveries (id, request_key, template, to_email, to_name, customer_id, account_id,
                                           context, sealed_context, correlation_id, traceparent)
                   SELECT $3::uuid, $4::text, $5::text, $6::text, $7::text, $8::uuid, $9::uuid, $10::jsonb,
                          $11::text, $12::text, $13::text
                   FROM fresh
                   ON CONFLICT (request_key) DO NOTHING
               )""",
            (
                uuid.uuid4(),
                cmd.request_key,
                cmd.template,
                cmd.to_email,
                cmd.to_name,
                cmd.customer_id,
                cmd.account_id,
                cmd.context,
                cmd.sealed_context,
                env.correlation_id,
                current_traceparent(),  # sending it, later, continues the requester's trace
            ),
        )

    return {
        "notifications.customer-events": {
            CustomerErasedV1.routing_key(): Handler(CustomerErasedV1, on_customer_erased)
        },
        "notifications.send-email": {SendEmailV1.routing_key(): Handler(SendEmailV1, statement=on_send_email)},
    }


REDACTED_EMAIL = "redacted@invalid"
REDACTED = "redacted"


def _scrub(value: Any, needles: set[str]) -> Any:
    """``value`` (a JSON context) with every string that contains one of ``needles`` replaced by REDACTED."""
    if isinstance(value, dict):
        return {k: _scrub(v, needles) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, needles) for v in value]
    if isinstance(value, str) and any(n in value.lower() for n in needles):
        return REDACTED
    return value


async def on_customer_erased(conn: asyncpg.Connection, env: Envelope, event: CustomerErasedV1) -> None:
    """Redact the customer's deliveries: recipient, name, context and subject become placeholders (the template,
    status, attempts and times stay, so what was sent when remains known). A pending one is not sent any more
    (failed: recipient erased). Other deliveries that mention them (a visitor told who hosts them) lose those
    mentions, recognised by the customer's names and emails as their own deliveries recorded them."""
    own = await conn.fetch(
        "SELECT id, to_email, to_name FROM deliveries WHERE customer_id = $1 FOR UPDATE", event.customer_id
    )
    needles = {
        v.lower() for r in own for v in (r["to_email"], r["to_name"]) if v and v not in (REDACTED, REDACTED_EMAIL)
    }
    await conn.execute(
        """UPDATE deliveries SET to_email = $2, to_name = $3, context = '{}', subject = NULL, sealed_context = NULL,
               last_error = CASE WHEN status = 'pending' THEN 'recipient erased' ELSE NULL END,
               failed_at = CASE WHEN status = 'pending' THEN now() ELSE failed_at END,
               status = CASE WHEN status = 'pending' THEN 'failed' ELSE status END,
               updated_at = now()
           WHERE customer_id = $1""",
        event.customer_id,
        REDACTED_EMAIL,
        REDACTED,
    )
    if needles:
        patterns = [f"%{n}%" for n in needles]
        others = await conn.fetch(
            """SELECT id, to_email, to_name, context, subject, last_error FROM deliveries
               WHERE customer_id IS DISTINCT FROM $1
                 AND (lower(context::text) LIKE ANY($2::text[]) OR lower(coalesce(subject, '')) LIKE ANY($2::text[])
                      OR lower(coalesce(last_error, '')) LIKE ANY($2::text[]))
               FOR UPDATE""",
            event.customer_id,
            patterns,
        )
        for r in others:
            await conn.execute(
                "UPDATE deliveries SET context = $2, subject = $3, last_error = $4, updated_at = now() WHERE id = $1",
                r["id"],
                _scrub(r["context"], needles),
                _scrub(r["subject"], needles),
                _scrub(r["last_error"], needles),
            )
    await conn.execute(
        """DELETE FROM outbox WHERE published_at IS NOT NULL
             AND convert_from(body, 'UTF8')::jsonb -> 'payload' ->> 'customer_id' = $1""",
        str(event.customer_id),
    )
