"""Event and command consumers of the notifications service, all listed in HANDLERS."""

from __future__ import annotations

import uuid

import asyncpg

from shared.consumer import Handler, PermanentError
from shared.events import Envelope, SendEmailV1
from shared.tracing import current_traceparent


def make_handlers(templates: set[str]) -> dict[str, dict[str, Handler]]:
    async def on_send_email(conn: asyncpg.Connection, env: Envelope, cmd: SendEmailV1) -> None:
        """Record the intent (pending delivery) in the consumer's transaction; the dispatcher sends it after
        commit. The request key makes a repeated request a no-op even if it carries a new event id."""
        if cmd.template not in templates:
            raise PermanentError(f"unknown template {cmd.template!r}")
        await conn.execute(
            """INSERT INTO deliveries (id, request_key, template, to_email, to_name, customer_id, account_id,
                                       context, sealed_context, correlation_id, traceparent)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (request_key) DO NOTHING""",
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
        )

    return {
        "notifications.send-email": {SendEmailV1.routing_key(): Handler(SendEmailV1, on_send_email)},
    }
