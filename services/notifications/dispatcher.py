"""Sends due deliveries after their intent has committed, and records each outcome with its event.

The dispatcher claims due deliveries continuously, whenever fewer than ``batch_size`` are in flight, with a lease
(``next_attempt_at`` moved past the longest SMTP conversation, chosen with ``FOR UPDATE SKIP LOCKED`` and committed
at once), so replicas never send the same delivery at once and no transaction stays open during SMTP. Each delivery
is then sent (at most ``concurrency`` at once, over the sender's persistent SMTP connections) and its outcome
written with its event in one statement, together with those of the emails that finished while the previous write
was under way (group commit). The one duplicate window left: the process dies (or the outcome cannot be
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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

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
from shared.metrics import EMAIL_DELIVERIES, EMAIL_OUTCOME_BATCH
from shared.outbox import OUTBOX_COLUMNS, outbox_row
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
        self._recorder = _GroupWriter(self._write_outcomes)
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
        outcome = self._outcome(row, *await self._send(row))
        delay = 0.1
        while True:
            try:
                settled = await self._recorder.write(outcome)
                break
            except DATABASE_ERRORS as exc:
                # the database is away for a moment (a killed connection, a restart): the email is out, so keep
                # the outcome and try again rather than let the lease end and send it a second time
                if time.monotonic() + delay > record_until:
                    log.error(
                        "could not record a delivery outcome; it is retried when its lease ends",
                        extra={"delivery_id": str(row["id"]), "outcome": outcome.kind, "error": str(exc)},
                    )
                    self._unrecorded[row["id"]] = record_until + RECORD_MARGIN_S
                    return
                log.warning(
                    "recording a delivery outcome failed; retrying",
                    extra={
                        "delivery_id": str(row["id"]),
                        "outcome": outcome.kind,
                        "retry_in_s": delay,
                        "error": str(exc),
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:
                log.exception(
                    "could not record a delivery outcome; it is retried when its lease ends",
                    extra={"delivery_id": str(row["id"]), "outcome": outcome.kind},
                )
                self._unrecorded[row["id"]] = record_until + RECORD_MARGIN_S
                return
        self._log_outcome(outcome, settled)

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

    def _outcome(self, row: asyncpg.Record, kind: str, subject: str | None, error: str | None) -> _Outcome:
        """What to write for this attempt: the delivery's new state and, when it is settled, its event."""
        delivery_id: uuid.UUID = row["id"]
        attempts = row["attempts"] + 1
        correlation_id_var.set(row["correlation_id"])  # for the log lines; the event's traceparent is the span's
        EMAIL_DELIVERIES.labels(row["template"], kind).inc()
        if kind == "temporary" and attempts <= len(self.retry_delays_s):
            return _Outcome(delivery_id, kind, attempts, None, None, error, self.retry_delays_s[attempts - 1], None)
        event: Message
        if kind == "sent":
            status = "sent"
            event = EmailSentV1(
                delivery_id=delivery_id,
                template=row["template"],
                customer_id=row["customer_id"],
                account_id=row["account_id"],
                attempts=attempts,
            )
        else:
            status = "failed"
            event = EmailFailedV1(
                delivery_id=delivery_id,
                template=row["template"],
                customer_id=row["customer_id"],
                account_id=row["account_id"],
                attempts=attempts,
                permanent=kind == "permanent",
                reason=(error or "")[:1000],
            )
        envelope = make_envelope(
            event, subject=delivery_id, sequence=attempts, producer=SERVICE, correlation_id=row["correlation_id"]
        )
        return _Outcome(delivery_id, kind, attempts, status, subject, error, 0.0, outbox_row(envelope, event.EXCHANGE))

    @staticmethod
    def _log_outcome(outcome: _Outcome, settled: bool) -> None:
        extra: dict[str, object] = {"delivery_id": str(outcome.delivery_id)}
        if outcome.status is None:
            log.warning(
                "email temporarily failed",
                extra={**extra, "attempt": outcome.attempts, "retry_in_s": outcome.retry_in_s, "error": outcome.error},
            )
        elif not settled:  # settled meanwhile by another replica whose lease had taken over: nothing written
            return
        elif outcome.status == "sent":
            log.info("email sent", extra=extra)
        else:
            log.error("email failed", extra={**extra, "permanent": outcome.kind == "permanent", "error": outcome.error})

    async def _write_outcomes(self, outcomes: list[_Outcome]) -> set[uuid.UUID]:
        """Every outcome, and the events of the settled ones, in one statement (atomic without a transaction: one
        round trip for all the emails that finished while the previous write was under way). Returns the ids of
        the deliveries it changed: one settled meanwhile (by another replica whose lease had taken over) is left
        as it is, and its event is not written."""
        events = [(o.delivery_id, *o.event) for o in outcomes if o.event is not None]
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                _WRITE_OUTCOMES,
                [o.delivery_id for o in outcomes],
                [o.attempts for o in outcomes],
                [o.status for o in outcomes],
                [o.subject for o in outcomes],
                [o.error for o in outcomes],
                [o.retry_in_s for o in outcomes],
                *(list(column) for column in zip(*events, strict=True)) if events else ([],) * 7,
            )
        EMAIL_OUTCOME_BATCH.observe(len(outcomes))  # written: a failed write, tried again one by one, is not
        return {r["id"] for r in rows}


class _GroupWriter:
    """Group commit: ``await write(outcome)`` joins the next write, which takes everything that arrived while the
    previous one was under way (at most ``max_batch``): no added wait when idle, one round trip for many under
    load. A batch that fails is written again one outcome at a time, so that one bad outcome fails alone; each
    caller gets its own result or error (and retries as it sees fit)."""

    def __init__(self, write: Callable[[list[_Outcome]], Awaitable[set[uuid.UUID]]], max_batch: int = 100) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: list[tuple[_Outcome, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, outcome: _Outcome) -> bool:
        """True if the outcome was written; False if its delivery was settled already (nothing written)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="delivery-outcomes")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[_Outcome, asyncio.Future[bool]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                await self._settle(batch)
        finally:  # cancelled (shutdown): nobody is left waiting for ever
            for _, future in [*batch, *self._pending]:
                future.cancel()
            self._pending = []

    async def _settle(self, batch: list[tuple[_Outcome, asyncio.Future[bool]]]) -> None:
        try:
            written = await self._write([outcome for outcome, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                for one in batch:
                    await self._settle([one])
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return
        for outcome, future in batch:
            if not future.done():
                future.set_result(outcome.delivery_id in written)


class _Outcome(NamedTuple):
    delivery_id: uuid.UUID
    kind: str
    """sent, temporary, permanent"""
    attempts: int
    status: str | None
    """sent or failed; None: still pending, tried again in ``retry_in_s``"""
    subject: str | None
    error: str | None
    retry_in_s: float
    event: tuple[object, ...] | None
    """The settled delivery's event: ``shared.outbox.outbox_row``."""


_WRITE_OUTCOMES = f"""
WITH f AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::float8[])
                  AS f(id, attempts, status, subject, error, delay)),
d AS (UPDATE deliveries SET
          status = coalesce(f.status, deliveries.status),
          attempts = f.attempts,
          subject = coalesce(f.subject, deliveries.subject),
          last_error = f.error,
          sent_at = CASE WHEN f.status = 'sent' THEN now() ELSE deliveries.sent_at END,
          failed_at = CASE WHEN f.status = 'failed' THEN now() ELSE deliveries.failed_at END,
          sealed_context = CASE WHEN f.status IS NULL THEN deliveries.sealed_context END,
          claimed_by = CASE WHEN f.status IS NULL THEN NULL ELSE deliveries.claimed_by END,
          next_attempt_at = CASE WHEN f.status IS NULL THEN now() + make_interval(secs => f.delay)
                                 ELSE deliveries.next_attempt_at END,
          updated_at = now()
      -- "still pending" said as "neither sent nor failed": written status = 'pending' it matches deliveries_due's
      -- predicate, and the planner, whose statistics saw a handful of pending deliveries, reads every pending one
      -- through that index (the whole backlog, ever longer as a busy dispatcher falls behind) instead of looking up
      -- the few settled ones by primary key
      FROM f WHERE deliveries.id = f.id AND deliveries.status NOT IN ('sent', 'failed')
      RETURNING deliveries.id),
e AS (SELECT * FROM unnest($7::uuid[], $8::uuid[], $9::text[], $10::text[], $11::bytea[], $12::text[], $13::text[])
               WITH ORDINALITY AS e(delivery_id, {OUTBOX_COLUMNS}, ord)),
o AS (INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT {", ".join(f"e.{c.strip()}" for c in OUTBOX_COLUMNS.split(","))}
      FROM e JOIN d ON d.id = e.delivery_id ORDER BY e.ord)
SELECT id FROM d"""
