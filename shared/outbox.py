"""Transactional outbox: ``enqueue`` writes the message in the caller's transaction; the relay publishes
committed rows (confirms + mandatory) and marks them published.

A relay round is two statements and no open transaction: it claims due rows with a lease (``next_attempt_at``
moved past the publish timeout, rows chosen with ``FOR UPDATE SKIP LOCKED`` and committed at once, so replicas
never claim the same row), publishes them, then marks the confirmed ones published (failed ones get a backoff).
A crash between the broker's confirm and the mark republishes the row once its lease ends, which the consumers'
inbox absorbs (at-least-once). A round cut short without a crash (the claim's reply or the mark lost with the
database connection) leaves its rows marked with this relay's id, and its next round takes them again at once
(a row whose publish had failed in that round is then tried again without its backoff: the mark that would have
set it is what was lost).

Under load the mark waits for the next round, which comes within ``min_round_interval_s``, and goes in the same
statement as its claim: one statement a round instead of two. A round is followed by another at once when a commit
woke the relay while it published, or when it took a full batch; a round with nothing after it marks at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import orjson

from shared.broker import Broker, Outgoing
from shared.db import DATABASE_ERRORS, OutboxSignal
from shared.events import Envelope, Message, make_envelope
from shared.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISHED, RELAY_BATCH
from shared.tracing import current_traceparent

log = logging.getLogger(__name__)


OUTBOX_COLUMNS = "event_id, exchange, routing_key, body, correlation_id, traceparent"


def outbox_row(envelope: Envelope, exchange: str) -> tuple[object, ...]:
    """The values of ``OUTBOX_COLUMNS`` for ``envelope``: for a statement that writes the outbox row itself (a
    single-statement write needs no transaction round trips)."""
    return (
        envelope.event_id,
        exchange,
        envelope.routing_key,
        orjson.dumps(envelope.model_dump(mode="json")),
        envelope.correlation_id,
        current_traceparent(),
    )


_CASTS = ("::uuid", "::text", "::text", "::bytea", "::text", "::text")


def _params(first: int) -> str:
    return ", ".join(f"${first + i}{cast}" for i, cast in enumerate(_CASTS))


def insert_from(source: str, first: int) -> str:
    """SQL inserting one outbox row, whose values (``outbox_row``) are the parameters ``$first`` to ``$first+5``, for
    each row of ``source`` (a CTE of the same statement): the event is written with the change it reports, or not
    at all."""
    return f"INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT {_params(first)} FROM {source}"


def insert_values(first: int, rows: int) -> str:
    """SQL inserting ``rows`` outbox rows whose values (``outbox_row`` each, one after the other) are the parameters
    from ``$first`` on: to write events in the statement of the change they report."""
    groups = ", ".join(f"({_params(first + 6 * r)})" for r in range(rows))
    return f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES {groups}"


async def enqueue(conn: asyncpg.Connection, envelope: Envelope, exchange: str) -> None:
    """Write one message to the outbox inside the caller's transaction."""
    await conn.execute(
        f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)", *outbox_row(envelope, exchange)
    )


async def emit(
    conn: asyncpg.Connection,
    message: Message,
    *,
    producer: str,
    subject: object,
    sequence: int,
    correlation_id: str | None,
    causation_id: str | None = None,
) -> Envelope:
    """Build the envelope for ``message`` and enqueue it on the exchange its model names."""
    envelope = make_envelope(
        message,
        subject=str(subject),
        sequence=sequence,
        producer=producer,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
    await enqueue(conn, envelope, message.EXCHANGE)
    return envelope


def backoff_s(attempts: int) -> float:
    """Wait before the next publish attempt of a row that failed ``attempts`` times before: 1, 2, 4... 60 s."""
    return float(min(2 ** min(attempts, 6), 60))


_CLAIM_SQL = """UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $2), claimed_by = $3
               WHERE id IN (SELECT id FROM outbox
                            WHERE published_at IS NULL AND (next_attempt_at <= now() OR claimed_by = $3){unmarked}
                            ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING id, event_id, exchange, routing_key, body, correlation_id, traceparent, attempts"""

_MARK_SQL = """UPDATE outbox o SET published_at = CASE WHEN f.error IS NULL THEN now() END, claimed_by = NULL,
                      attempts = o.attempts + (f.error IS NOT NULL)::int,
                      last_error = coalesce(left(f.error, 1000), o.last_error),
                      next_attempt_at = CASE WHEN f.error IS NULL THEN o.next_attempt_at
                                             ELSE now() + make_interval(secs => f.delay) END
               FROM unnest(${ids}::bigint[], ${errors}::text[], ${delays}::float8[]) AS f(id, error, delay)
               WHERE o.id = f.id"""

_CLAIM = _CLAIM_SQL.format(unmarked="")
"""Claim up to $1 due rows (and this relay's own unfinished ones) for $2 seconds as relay $3."""
_MARK = _MARK_SQL.replace("${ids}", "$1").replace("${errors}", "$2").replace("${delays}", "$3")
"""Mark a round's rows: $1 ids, $2 errors (NULL: confirmed, now published), $3 seconds until a failed one is due."""
_MARK_AND_CLAIM = (
    "WITH marked AS ("
    + _MARK_SQL.replace("${ids}", "$4").replace("${errors}", "$5").replace("${delays}", "$6")
    + " RETURNING o.id) "
    + _CLAIM_SQL.format(unmarked=" AND id <> ALL($4::bigint[])")
)
"""The last round's mark ($4-$6) and this round's claim, one statement. The claim sees the rows as they were before
the mark (one snapshot) and so leaves the marked rows out itself: still claimed by this relay, it would take them
again."""


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        broker: Broker,
        *,
        batch_size: int = 200,
        poll_interval_s: float = 1.0,
        min_round_interval_s: float = 0.005,
        lease_s: float | None = None,
        retention_s: float = 7 * 24 * 3600,
        inbox_retention_s: float = 14 * 24 * 3600,
        extra_cleanup: tuple[str, ...] = (),
        signal: OutboxSignal | None = None,
    ) -> None:
        self.pool = pool
        self.signal = signal
        """This process's writers announce committed rows through it (``shared.db.OutboxSignal``); other processes'
        by ``NOTIFY outbox``, which the relay listens for; ``poll_interval_s`` is the last resort."""
        self.dsn = dsn
        self.broker = broker
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.min_round_interval_s = min_round_interval_s
        self.lease_s = lease_s if lease_s is not None else 2 * broker.publish_timeout_s
        """A claimed row is due again (for another replica, or this one after a crash) only after this long:
        longer than any publish of the round can take (each has ``publish_timeout_s``)."""
        """Rounds start at most this often: a wake-up soon after a round waits out the rest of the interval, so that
        under load the rows of many commits go in one round (one claim, one update, one commit) instead of one
        round each; a wake-up after a quiet moment starts a round at once (no added latency when idle)."""
        self.retention_s = retention_s
        self.inbox_retention_s = inbox_retention_s
        self.extra_cleanup = extra_cleanup
        self.relay_id = uuid.uuid4()
        """Written on the rows this relay claims: rows it claimed in a round that did not finish (the claim's reply
        lost, the mark failed) are its own to take again at once; another replica's wait for their lease."""
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._last_cleanup = 0.0
        self.rounds = 0
        """Rounds the loop finished (published or not): "nothing more went out for two rounds" can be waited for."""
        self._unmarked: tuple[list[int], list[str | None], list[float]] | None = None
        """The marks of the last round when it left them to the next round's claim: ids, errors, backoffs."""

    def start(self) -> None:
        if self.signal is not None:
            self.signal.subscribe(self._wake.set)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop the loop, then make one last bounded attempt to publish what the final moments committed (what
        does not make it stays in the outbox for the next start or another replica). Nothing if never started."""
        if self._task is None:
            return
        if self.signal is not None:  # from now on this process's writes NOTIFY the other replicas' relays
            self.signal.unsubscribe(self._wake.set)
        self._stop.set()
        self._wake.set()
        try:
            await asyncio.wait_for(self._task, timeout=10)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.broker.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.relay_once(), timeout=5)
        with contextlib.suppress(Exception):  # not written: the rows come back when their lease ends
            await asyncio.wait_for(self.flush_marks(), timeout=5)
        await self._close_listener()

    async def _close_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            with contextlib.suppress(Exception):
                await self._listener.close()
        self._listener = None

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self.dsn)
            await self._listener.add_listener("outbox", lambda *_: self._wake.set())
        except DATABASE_ERRORS as exc:  # polled meanwhile; tried again before the next round
            log.warning("outbox LISTEN unavailable, polling", extra={"error": f"{type(exc).__name__}: {exc}"})
            if self._listener is not None:
                self._listener.terminate()
            self._listener = None

    async def _run(self) -> None:
        await self.broker.wait_connected()
        last_round = 0.0
        while not self._stop.is_set():
            try:
                await self._listen()
            except Exception:  # never let the relay die for want of its wake-ups: it polls
                log.exception("outbox LISTEN failed unexpectedly")
            wait = last_round + self.min_round_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            # cleared before the round, not after: a wake-up arriving during the round starts the next one at once
            self._wake.clear()
            last_round = time.monotonic()
            try:
                published = await self.relay_once(defer_mark=True)
                if time.monotonic() - self._last_cleanup > 600:
                    await self.cleanup()
            except DATABASE_ERRORS as exc:
                log.warning("outbox relay round failed", extra={"error": str(exc)})
                published = 0
                await asyncio.sleep(min(self.poll_interval_s, 1.0))
            except Exception:  # never let the relay die: log, back off, go on
                log.exception("outbox relay round failed unexpectedly")
                published = 0
                await asyncio.sleep(1.0)
            self.rounds += 1
            if published >= self.batch_size or self._unmarked is not None:
                continue  # more may be waiting, or the marks wait for the next round
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)

    async def relay_once(self, *, defer_mark: bool = False) -> int:
        """Publish one batch of due rows. Returns how many were published. The marks an earlier round left (see
        ``defer_mark``) are written by this round's claim, in the same statement. With ``defer_mark``, this round's
        own mark is left to the next round when one is bound to follow anyway (a wake-up came meanwhile, or a full
        batch was published); only the relay's loop asks for it, which runs the next round while marks wait."""
        pending = self._unmarked
        rows = await self.pool.fetch(
            _CLAIM if pending is None else _MARK_AND_CLAIM,
            self.batch_size,
            self.lease_s,
            self.relay_id,
            *(() if pending is None else pending),
        )
        self._unmarked = None  # written with the claim
        if not rows:
            return 0
        rows = sorted(rows, key=lambda r: r["id"])  # RETURNING keeps no order: publish in commit order
        RELAY_BATCH.observe(len(rows))
        messages = [
            Outgoing(
                exchange=r["exchange"],
                routing_key=r["routing_key"],
                body=bytes(r["body"]),
                message_id=str(r["event_id"]),
                correlation_id=r["correlation_id"],
                headers={"traceparent": r["traceparent"]} if r["traceparent"] else None,
            )
            for r in rows
        ]
        results: list[BaseException | None]
        try:
            results = await self.broker.publish_many(messages)
        except Exception as exc:  # nothing sent (not connected): every row failed, as each would have alone
            results = [exc] * len(rows)
        ok: list[int] = []
        failed: list[tuple[int, str, float]] = []  # (id, error, seconds until the next attempt)
        for r, res in zip(rows, results, strict=True):
            if res is not None:
                failed.append((r["id"], f"{type(res).__name__}: {res}", backoff_s(r["attempts"])))
            else:
                ok.append(r["id"])
                OUTBOX_PUBLISHED.labels(routing_key=r["routing_key"]).inc()
        if failed:
            log.warning("outbox publish failed", extra={"count": len(failed), "error": failed[0][1][:300]})
        marks = (
            [*ok, *(f[0] for f in failed)],
            [*([None] * len(ok)), *(f[1] for f in failed)],
            [*([0.0] * len(ok)), *(f[2] for f in failed)],
        )
        if defer_mark and (self._wake.is_set() or len(ok) >= self.batch_size):
            self._unmarked = marks
            return len(ok)
        # the confirmed rows are marked whatever happens to the failures' bookkeeping (else they would be published
        # again when their lease ends); the write is retried while the lease runs (the database away for a moment),
        # and if it still fails the lease brings the rows back (the inbox absorbs the second copy)
        await self._retrying(self.pool.execute, _MARK, *marks)
        return len(ok)

    async def flush_marks(self) -> None:
        """Write the marks a round left for the next one, when no round is coming (the relay stopping)."""
        if self._unmarked is not None:
            await self._retrying(self.pool.execute, _MARK, *self._unmarked)
            self._unmarked = None

    async def _retrying(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """``fn(*args)``, tried again on database errors until half the lease has passed."""
        give_up = time.monotonic() + self.lease_s / 2
        delay = 0.1
        while True:
            try:
                await fn(*args)
                return
            except DATABASE_ERRORS:
                if time.monotonic() + delay > give_up:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def backlog(self) -> int:
        n = await self.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        OUTBOX_BACKLOG.set(n)
        return int(n)

    async def cleanup(self) -> None:
        """Delete outbox rows published longer ago than their retention, and inbox rows older than theirs (far
        beyond any redelivery or retry window, so deduplication still holds), plus the service's own expired
        rows (``extra_cleanup``). Safe in several replicas: deletes are idempotent."""
        self._last_cleanup = time.monotonic()
        await self.pool.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)", self.retention_s
        )
        await self.pool.execute(
            "DELETE FROM inbox WHERE received_at < now() - make_interval(secs => $1)", self.inbox_retention_s
        )
        for sql in self.extra_cleanup:
            await self.pool.execute(sql)
