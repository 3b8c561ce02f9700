"""Sends due deliveries after their intent has committed, and records each outcome with its event.

Deliveries are claimed with ``FOR UPDATE SKIP LOCKED`` so replicas never send the same delivery at once. The
row lock is held during the SMTP conversation; the outcome commits right after. The one duplicate window left:
the process dies after the server accepted the message and before that commit; the delivery is then sent again
with the same Message-ID (receivers can deduplicate on it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

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
                await asyncio.wait_for(self._task, timeout=30)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
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
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)

    async def dispatch_once(self) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, template, to_email, to_name, customer_id, account_id, context, sealed_context,
                          attempts, correlation_id
                   FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self.batch_size,
            )
            if not rows:
                return 0
            outcomes = await asyncio.gather(*(self._send(r) for r in rows))
            for row, (outcome, subject, error) in zip(rows, outcomes, strict=True):
                await self._record(conn, row, outcome, subject, error)
            return len(rows)

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
            await conn.execute(
                """UPDATE deliveries SET status = 'sent', attempts = $2, subject = $3, sent_at = now(),
                          sealed_context = NULL, last_error = NULL, updated_at = now() WHERE id = $1""",
                delivery_id,
                attempts,
                subject,
            )
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
                          next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1""",
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
        await conn.execute(
            """UPDATE deliveries SET status = 'failed', attempts = $2, last_error = $3, subject = coalesce($4, subject),
                      failed_at = now(), sealed_context = NULL, updated_at = now() WHERE id = $1""",
            delivery_id,
            attempts,
            error,
            subject,
        )
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
