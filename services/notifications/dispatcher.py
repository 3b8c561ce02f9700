"""Sends due deliveries after their intent has committed, and records each outcome with its event.

A round claims due deliveries with a lease (``next_attempt_at`` moved past the longest SMTP conversation, chosen
with ``FOR UPDATE SKIP LOCKED`` and committed at once), so replicas never send the same delivery at once and no
transaction stays open during SMTP. Each delivery is then sent and its outcome committed in its own short
transaction. The one duplicate window left: the process dies (or the outcome cannot be recorded) after the server
accepted the message; when the lease runs out the delivery is sent again, with the same Message-ID (receivers
can deduplicate on it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from opentelemetry.trace import SpanKind

from services.notifications.mail import (
    PermanentFailure,
    Renderer,
    Sender,
    TemporaryFailure,
    build_message,
)
from shared.events import EmailFailedV1, EmailSentV1
from shared.logging import correlation_id_var
from shared.metrics import EMAIL_DELIVERIES
from shared.outbox import emit
from shared.sealing import SealError, unseal
from shared.tracing import continued_span

log = logging.getLogger(__name__)
SERVICE = "notifications"


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        sender: Sender,
        renderer: Renderer,
        *,
        seal_key: bytes,
        mail_from: str,
        space_name: str,
        retry_delays_s: list[float],
        batch_size: int = 50,
        concurrency: int = 10,
        poll_interval_s: float = 1.0,
        lease_s: float = 60.0,
    ) -> None:
        self.pool = pool
        self.sender = sender
        self.renderer = renderer
        self.seal_key = seal_key
        self.mail_from = mail_from
        self.space_name = space_name
        self.retry_delays_s = retry_delays_s
        self.batch_size = batch_size
        self.semaphore = asyncio.Semaphore(concurrency)
        self.poll_interval_s = poll_interval_s
        self.lease_s = lease_s
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="email-dispatcher")

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task:
            try:
                await asyncio.wait_for(self._task, timeout=20)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            # cleared before the round, not after: a wake-up arriving during the round starts the next one at once
            self._wake.clear()
            try:
                n = await self.dispatch_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("dispatch round failed", extra={"error": str(exc)})
                n = 0
                await asyncio.sleep(1)
            except Exception:  # never let the dispatcher die: log, back off, go on
                log.exception("dispatch round failed unexpectedly")
                n = 0
                await asyncio.sleep(1)
            if n >= self.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)

    async def dispatch_once(self) -> int:
        rows = await self.pool.fetch(
            """UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2)
               WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()
                            ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING id, template, to_email, to_name, customer_id, account_id, context, sealed_context,
                         attempts, correlation_id, traceparent""",
            self.batch_size,
            self.lease_s,
        )
        await asyncio.gather(*(self._deliver(r) for r in rows))
        return len(rows)

    async def _deliver(self, row: asyncpg.Record) -> None:
        with continued_span(
            f"send email {row['template']}", row["traceparent"], SpanKind.PRODUCER, {"delivery.id": str(row["id"])}
        ):
            await self._deliver_in_span(row)

    async def _deliver_in_span(self, row: asyncpg.Record) -> None:
        outcome, subject, error = await self._send(row)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self._record(conn, row, outcome, subject, error)
        except Exception:
            log.exception(
                "could not record a delivery outcome; it is retried when its lease ends",
                extra={"delivery_id": str(row["id"]), "outcome": outcome},
            )

    async def _send(self, row: asyncpg.Record) -> tuple[str, str | None, str | None]:
        async with self.semaphore:
            try:
                context: dict[str, Any] = {"space_name": self.space_name, **row["context"]}
                if row["sealed_context"]:
                    context.update(unseal(self.seal_key, row["sealed_context"]))
                subject, text, html = self.renderer.render(row["template"], context)
                message = build_message(
                    delivery_id=row["id"],
                    mail_from=self.mail_from,
                    to_email=row["to_email"],
                    to_name=row["to_name"],
                    subject=subject,
                    text=text,
                    html=html,
                    now=datetime.now(UTC),
                )
            except (SealError, Exception) as exc:  # a message we can never build: fail it, do not retry
                return "permanent", None, f"cannot build the email: {type(exc).__name__}: {exc}"
            try:
                await self.sender.send(message)
            except PermanentFailure as exc:
                return "permanent", subject, str(exc)
            except TemporaryFailure as exc:
                return "temporary", subject, str(exc)
            return "sent", subject, None

    async def _record(
        self, conn: asyncpg.Connection, row: asyncpg.Record, outcome: str, subject: str | None, error: str | None
    ) -> None:
        delivery_id: uuid.UUID = row["id"]
        attempts = row["attempts"] + 1
        correlation_id_var.set(row["correlation_id"])
        EMAIL_DELIVERIES.labels(row["template"], outcome).inc()
        if outcome == "sent":
            done = await conn.execute(
                """UPDATE deliveries SET status = 'sent', attempts = $2, subject = $3, sent_at = now(),
                          sealed_context = NULL, last_error = NULL, updated_at = now()
                   WHERE id = $1 AND status = 'pending'""",
                delivery_id,
                attempts,
                subject,
            )
            if done != "UPDATE 1":
                return  # settled meanwhile by another replica whose lease had taken over
            await emit(
                conn,
                EmailSentV1(
                    delivery_id=delivery_id,
                    template=row["template"],
                    customer_id=row["customer_id"],
                    account_id=row["account_id"],
                    attempts=attempts,
                ),
                producer=SERVICE,
                subject=delivery_id,
                sequence=attempts,
                correlation_id=row["correlation_id"],
            )
            log.info("email sent", extra={"delivery_id": str(delivery_id), "template": row["template"]})
            return
        if outcome == "temporary" and attempts <= len(self.retry_delays_s):
            delay = self.retry_delays_s[attempts - 1]
            await conn.execute(
                """UPDATE deliveries SET attempts = $2, last_error = $3, updated_at = now(),
                          next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1 AND status = 'pending'""",
                delivery_id,
                attempts,
                error,
                delay,
            )
            log.warning(
                "email temporarily failed",
                extra={"delivery_id": str(delivery_id), "attempt": attempts, "retry_in_s": delay, "error": error},
            )
            return
        permanent = outcome == "permanent"
        done = await conn.execute(
            """UPDATE deliveries SET status = 'failed', attempts = $2, last_error = $3, subject = coalesce($4, subject),
                      failed_at = now(), sealed_context = NULL, updated_at = now()
               WHERE id = $1 AND status = 'pending'""",
            delivery_id,
            attempts,
            error,
            subject,
        )
        if done != "UPDATE 1":
            return
        await emit(
            conn,
            EmailFailedV1(
                delivery_id=delivery_id,
                template=row["template"],
                customer_id=row["customer_id"],
                account_id=row["account_id"],
                attempts=attempts,
                permanent=permanent,
                reason=(error or "")[:1000],
            ),
            producer=SERVICE,
            subject=delivery_id,
            sequence=attempts,
            correlation_id=row["correlation_id"],
        )
        log.error("email failed", extra={"delivery_id": str(delivery_id), "permanent": permanent, "error": error})
