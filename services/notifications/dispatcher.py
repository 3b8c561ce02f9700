"""Sends due deliveries after their intent has committed, and records each outcome with its event.

The dispatcher claims due deliveries continuously, whenever fewer than ``batch_size`` are in flight, with a lease
(``next_attempt_at`` moved past the longest SMTP conversation, chosen with ``FOR UPDATE SKIP LOCKED`` and committed
at once), so replicas never send the same delivery at once and no transaction stays open during SMTP. Each delivery
is then sent (at most ``concurrency`` at once, over the sender's persistent SMTP connections) and its outcome
committed in its own short transaction. The one duplicate window left: the process dies (or the outcome cannot be
recorded) after the server accepted the message; when the lease runs out the delivery is sent again, with the same
Message-ID (receivers can deduplicate on it). Claimed deliveries carry the dispatcher's id: ones it claimed but is
not sending (a claim whose reply was lost with the connection) are taken again by its next claim, not left for
the lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
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
    compose,
)
from shared.db import DATABASE_ERRORS
from shared.events import EmailFailedV1, EmailSentV1, Message, make_envelope
from shared.logging import correlation_id_var
from shared.metrics import EMAIL_DELIVERIES
from shared.outbox import insert_from, outbox_row
from shared.sealing import SealError, unseal
from shared.tracing import continued_span

log = logging.getLogger(__name__)
RECORD_MARGIN_S = 10.0
"""Outcome writes are retried until this long before the delivery's lease ends."""
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
        # after a full claim, the next one waits until this many slots are free (one query claims several)
        self._refill = max(1, min(concurrency, batch_size // 2))
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: dict[asyncio.Task[None], uuid.UUID] = {}  # delivery task -> delivery id
        self.dispatcher_id = uuid.uuid4()
        """Written on the deliveries this dispatcher claims: those it claimed but is not sending (a claim whose
        reply was lost) are its own to take again at once; another replica's wait for their lease."""
        self._unrecorded: dict[uuid.UUID, float] = {}
        """Deliveries sent (or tried) whose outcome could not be written -> when their lease ends (monotonic): not
        taken again before then, although they are this dispatcher's (the lease is the only guard left)."""

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="email-dispatcher")

    async def stop(self) -> None:
        """Stop claiming; let the deliveries in flight finish and record their outcomes; close the sender."""
        self._stop.set()
        self._wake.set()
        self._space.set()
        if self._task:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=20)
            except TimeoutError:
                self._task.cancel()
                for t in list(self._in_flight):
                    t.cancel()
                await asyncio.gather(self._task, *self._in_flight, return_exceptions=True)
        close = getattr(self.sender, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def _run(self) -> None:
        """Continuous: claims due deliveries whenever fewer than ``batch_size`` are in flight, so that one slow
        email never holds up the next ones (no rounds); sleeps until a new delivery commits (``wake``), a slot
        frees after a full claim, or the poll interval passes (retries that come due)."""
        try:
            while not self._stop.is_set():
                # cleared before the claim, not after: a wake-up arriving meanwhile starts the next claim at once
                self._wake.clear()
                self._space.clear()
                free = self.batch_size - len(self._in_flight)
                try:
                    claimed = await self.claim(free) if free > 0 else 0
                except DATABASE_ERRORS as exc:
                    log.warning("dispatch claim failed", extra={"error": str(exc)})
                    await self._sleep(1.0)
                    continue
                except Exception:  # never let the dispatcher die: log, back off, go on
                    log.exception("dispatch claim failed unexpectedly")
                    await self._sleep(1.0)
                    continue
                if claimed >= free:
                    # more may be due: claim again as soon as enough slots are free
                    if len(self._in_flight) > self.batch_size - self._refill:
                        await self._space.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
        finally:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def claim(self, limit: int) -> int:
        """Claim up to ``limit`` due deliveries (leased) and start sending each. Returns how many."""
        rows = await self.pool.fetch(
            """UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $2), claimed_by = $3
               WHERE id IN (SELECT id FROM deliveries
                            WHERE status = 'pending'
                              AND (next_attempt_at <= now() OR (claimed_by = $3 AND id <> ALL($4::uuid[])))
                            ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING id, template, to_email, to_name, customer_id, account_id, context, sealed_context,
                         attempts, correlation_id, traceparent""",
            limit,
            self.lease_s,
            self.dispatcher_id,
            [*self._in_flight.values(), *self._unrecorded_now()],
        )
        for row in rows:
            task = asyncio.create_task(self._deliver(row))
            self._in_flight[task] = row["id"]
            task.add_done_callback(self._finished)
        return len(rows)

    def _unrecorded_now(self) -> list[uuid.UUID]:
        now = time.monotonic()
        for delivery_id, until in list(self._unrecorded.items()):
            if until <= now:
                del self._unrecorded[delivery_id]
        return list(self._unrecorded)

    def _finished(self, task: asyncio.Task[None]) -> None:
        delivery_id = self._in_flight.pop(task, None)
        if len(self._in_flight) <= self.batch_size - self._refill:
            self._space.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
            if delivery_id is not None:
                # nobody recorded its outcome: leave it to its lease, never straight back into the next claim
                self._unrecorded[delivery_id] = time.monotonic() + self.lease_s

    async def dispatch_once(self) -> int:
        """Claim one batch and send it to the end (for tools and tests; the service runs ``_run``)."""
        before = set(self._in_flight)
        n = await self.claim(self.batch_size)
        started = set(self._in_flight) - before
        if started:
            await asyncio.gather(*started, return_exceptions=True)
        return n

    async def _deliver(self, row: asyncpg.Record) -> None:
        with continued_span(
            f"send email {row['template']}", row["traceparent"], SpanKind.PRODUCER, {"delivery.id": str(row["id"])}
        ):
            await self._deliver_in_span(row)

    async def _deliver_in_span(self, row: asyncpg.Record) -> None:
        # the lease started when the row was claimed, a moment before this; stop retrying the outcome well before
        # it ends, so another replica never sends while this one may still record
        record_until = time.monotonic() + self.lease_s - RECORD_MARGIN_S
        outcome, subject, error = await self._send(row)
        delay = 0.1
        while True:
            try:
                async with self.pool.acquire() as conn:  # one statement: atomic on its own
                    await self._record(conn, row, outcome, subject, error)
                return
            except DATABASE_ERRORS as exc:
                # the database is away for a moment (a killed connection, a restart): the email is out, so keep
                # the outcome and try again rather than let the lease end and send it a second time
                if time.monotonic() + delay > record_until:
                    log.error(
                        "could not record a delivery outcome; it is retried when its lease ends",
                        extra={"delivery_id": str(row["id"]), "outcome": outcome, "error": str(exc)},
                    )
                    self._unrecorded[row["id"]] = record_until + RECORD_MARGIN_S
                    return
                log.warning(
                    "recording a delivery outcome failed; retrying",
                    extra={"delivery_id": str(row["id"]), "outcome": outcome, "retry_in_s": delay, "error": str(exc)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:
                log.exception(
                    "could not record a delivery outcome; it is retried when its lease ends",
                    extra={"delivery_id": str(row["id"]), "outcome": outcome},
                )
                self._unrecorded[row["id"]] = record_until + RECORD_MARGIN_S
                return

    async def _send(self, row: asyncpg.Record) -> tuple[str, str | None, str | None]:
        async with self.semaphore:
            try:
                context: dict[str, Any] = {"space_name": self.space_name, **row["context"]}
                if row["sealed_context"]:
                    context.update(unseal(self.seal_key, row["sealed_context"]))
                subject, text, html = self.renderer.render(row["template"], context)
                message = compose(
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
        """The outcome, and its event in the outbox, in one statement (atomic without a transaction: one round trip
        per email); nothing when the delivery was settled meanwhile (another replica whose lease had taken over)."""
        delivery_id: uuid.UUID = row["id"]
        attempts = row["attempts"] + 1
        correlation_id_var.set(row["correlation_id"])
        EMAIL_DELIVERIES.labels(row["template"], outcome).inc()
        event: Message
        if outcome == "sent":
            settle = """UPDATE deliveries SET status = 'sent', attempts = $2, subject = $3, sent_at = now(),
                               sealed_context = NULL, last_error = NULL, updated_at = now()
                        WHERE id = $1 AND status = 'pending' RETURNING id"""
            args: tuple[object, ...] = (delivery_id, attempts, subject)
            event = EmailSentV1(
                delivery_id=delivery_id,
                template=row["template"],
                customer_id=row["customer_id"],
                account_id=row["account_id"],
                attempts=attempts,
            )
        elif outcome == "temporary" and attempts <= len(self.retry_delays_s):
            delay = self.retry_delays_s[attempts - 1]
            await conn.execute(
                """UPDATE deliveries SET attempts = $2, last_error = $3, updated_at = now(), claimed_by = NULL,
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
        else:
            settle = """UPDATE deliveries SET status = 'failed', attempts = $2, last_error = $3,
                               subject = coalesce($4, subject), failed_at = now(), sealed_context = NULL,
                               updated_at = now()
                        WHERE id = $1 AND status = 'pending' RETURNING id"""
            args = (delivery_id, attempts, error, subject)
            event = EmailFailedV1(
                delivery_id=delivery_id,
                template=row["template"],
                customer_id=row["customer_id"],
                account_id=row["account_id"],
                attempts=attempts,
                permanent=outcome == "permanent",
                reason=(error or "")[:1000],
            )
        envelope = make_envelope(
            event, subject=delivery_id, sequence=attempts, producer=SERVICE, correlation_id=row["correlation_id"]
        )
        done = await conn.fetchval(
            f"WITH d AS ({settle}), o AS ({insert_from('d', len(args) + 1)}) SELECT count(*) FROM d",
            *args,
            *outbox_row(envelope, event.EXCHANGE),
        )
        if not done:
            return
        if outcome == "sent":
            log.info("email sent", extra={"delivery_id": str(delivery_id), "template": row["template"]})
        else:
            log.error(
                "email failed",
                extra={"delivery_id": str(delivery_id), "permanent": outcome == "permanent", "error": error},
            )
