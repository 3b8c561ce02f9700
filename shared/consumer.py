"""The consumer wrapper: parse, dedupe (inbox), handle, commit, ack; retry with backoff; dead-letter.

- Not JSON, not an envelope, unknown event type/version, payload failing its schema: straight to
  ``<queue>.dlq`` with the reason (retrying cannot help).
- The handler raising ``PermanentError``: to the DLQ as well.
- Any other exception (database down, a bug): the message is copied to the retry queue of the next delay
  (``x-attempt`` header counts attempts) and acked; after the last delay it goes to the DLQ with the error.
- Success: the inbox row ``(consumer, event_id)`` and the handler's writes commit in one transaction, then ack.
  A redelivered or duplicated message finds its inbox row and is acked without effect.

Batches: messages that arrive while the consumer's ``workers`` are busy wait and are then handled together, up
to ``batch_max`` in one transaction (one inbox insert for all, each handler in turn, one commit, then each ack).
Under light load every message is its own batch (no added wait); under load the per-transaction cost (pool,
BEGIN, inbox, COMMIT) is shared. If anything in a batch fails, the batch is rolled back and each of its
messages is handled alone, so one bad message never decides the fate of another.

Statement handlers (:class:`Statement`: the whole effect as one SQL statement that also inserts the inbox row)
need no transaction: a batch of them travels as one pipeline (asyncpg's ``fetchmany``, its statements sent
together and committed together, one round trip whatever its size), a run of consecutive messages with the same
statement at a time. If a run fails it is rolled back as a whole and each of its messages is handled alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustQueue
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from shared.broker import Broker
from shared.db import hold_advisory_xact_locks
from shared.events import Envelope, Message, UnknownMessage, lookup
from shared.logging import correlation_id_var, event_id_var
from shared.metrics import CONSUMER_BATCH, EVENTS_CONSUMED
from shared.tracing import continued_span

log = logging.getLogger(__name__)

HandlerFn = Callable[[asyncpg.Connection, Envelope, Any], Awaitable[None]]


class PermanentError(Exception):
    """Raised by a handler when the message can never succeed: it goes to the dead-letter queue."""


@dataclass(frozen=True)
class Statement:
    """A handler's whole effect as one SQL statement: ``ctes`` are data-modifying common table expressions
    (``name AS (INSERT ...), other AS (UPDATE ...)``) with parameters from ``$3`` on (``args``). Every one of them
    must act only when the CTE ``fresh`` has a row (``... SELECT ... FROM fresh``, ``WHERE EXISTS (SELECT FROM
    fresh)``): ``fresh`` is the message's inbox row, inserted by the same statement, and empty for a duplicate."""

    ctes: str
    args: tuple[Any, ...]


StatementFn = Callable[[Envelope, Any], Statement]
LocksFn = Callable[[Envelope, Any], Iterable[str]]


@dataclass(frozen=True)
class Handler:
    """What a queue does with one message type: ``fn`` runs in the consumer's transaction (after the inbox
    insert), or ``statement`` gives the whole effect as one statement. A statement handler needs no transaction:
    the inbox row and the effect commit together as one statement (one round trip instead of BEGIN, inbox, the
    effect and COMMIT); in a batch that also holds transactional handlers it runs inside the transaction."""

    message: type[Message]
    fn: HandlerFn | None = None
    statement: StatementFn | None = None
    locks: LocksFn | None = None
    """The advisory locks ``fn`` takes (``advisory_xact_lock``): a batch takes all its messages' in one statement
    before its handlers run, instead of one round trip each."""

    def __post_init__(self) -> None:
        if (self.fn is None) == (self.statement is None):
            raise TypeError("a handler has either fn or statement")


_INBOX_INSERT = "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING event_id"
_INBOX_DONE = "SELECT $2::uuid AS event_id, $1::text AS consumer"  # in a transaction that inserted it already


NOTHING = Statement("nothing AS (SELECT)", ())
"""A statement handler's answer when the message asks for nothing here: only its inbox row is written."""


async def execute_statement(conn: asyncpg.Connection, st: Statement) -> None:
    """Run a :class:`Statement` from a transactional handler, whose consumer took the inbox row already."""
    await conn.execute(statement_sql(st, inbox=False), "", None, *st.args)


def statement_sql(st: Statement, *, inbox: bool) -> str:
    """The statement a :class:`Statement` runs as: with its own inbox insert (``inbox``), or inside a
    transaction whose batch insert took the inbox row already."""
    return f"WITH fresh AS ({_INBOX_INSERT if inbox else _INBOX_DONE}), {st.ctes} SELECT count(*) FROM fresh"


@dataclass(frozen=True)
class _Parsed:
    message: AbstractIncomingMessage
    envelope: Envelope
    handler: Handler
    event: Any


class Consumer:
    def __init__(
        self,
        *,
        queue: str,
        handlers: dict[str, Handler],
        pool: asyncpg.Pool,
        broker: Broker,
        retry_delays_ms: list[int] | tuple[int, ...],
        prefetch: int = 50,
        workers: int = 1,
        batch_max: int = 50,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self.queue_name = queue  # logical name, e.g. "accounts.customer-events"
        self.handlers = handlers  # routing key -> handler
        self.pool = pool
        self.broker = broker
        self.retry_delays_ms = sorted(set(retry_delays_ms))
        self.prefetch = prefetch
        self.after_commit = after_commit
        self.workers = workers
        self.batch_max = batch_max
        self._pending: deque[tuple[AbstractIncomingMessage, asyncio.Future[None]]] = deque()
        self._active = 0
        self._channel: AbstractRobustChannel | None = None
        self._consumer_tag: str | None = None
        self._queue: AbstractRobustQueue | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self.retried = 0
        """Messages sent to a retry queue since the process started (also ``events_consumed_total``)."""
        self.dead_lettered = 0

    @property
    def attached(self) -> bool:
        ch = self._channel
        return bool(self._consumer_tag and ch is not None and not ch.is_closed and self.broker.connected)

    def start(self) -> None:
        self._task = asyncio.create_task(self._attach_until_attached(), name=f"consumer-{self.queue_name}")

    async def _attach_until_attached(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._attach()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "could not attach consumer, retrying",
                    extra={"queue": self.queue_name, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay},
                )
                if self._channel is not None and not self._channel.is_closed:
                    with contextlib.suppress(Exception):
                        await self._channel.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _attach(self) -> None:
        self._channel = await self.broker.channel(self.prefetch)
        # declared (passively) on this robust channel so that the queue and its consumer are restored after a
        # reconnect; a queue from get_queue(ensure=False) would silently not be
        self._queue = await self._channel.declare_queue(self.broker.topology.queue(self.queue_name), passive=True)
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consuming", extra={"queue": self.queue_name})

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking messages, let in-flight ones finish (unfinished ones are redelivered), close."""
        if self._task and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._queue is not None and self._consumer_tag and self._channel and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=grace_s)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()
        self._consumer_tag = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """aio-pika runs this in a task of its own per delivered message. The message joins the pending ones; if
        fewer than ``workers`` are busy, this task becomes one and handles batches until none is pending; either
        way it returns once its message is settled."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._pending.append((message, settled))
            if self._active < self.workers:
                await self._work()
            await settled
        except asyncio.CancelledError:
            raise
        except Exception:
            # messages are settled (acked, retried, dead-lettered) by the worker; reaching here means that failed
            # (e.g. the channel closed). Hand it back; the broker redelivers it, or dead-letters it past the
            # delivery limit.
            log.exception("message could not be settled", extra={"queue": self.queue_name})
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _work(self) -> None:
        self._active += 1
        batch: list[tuple[AbstractIncomingMessage, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(self.batch_max, len(self._pending)))]
                await self._settle_batch(batch)
                batch = []
        finally:
            self._active -= 1
            # only left over when this worker was cancelled: the messages stay unacked (redelivered later)
            leftovers = batch + (list(self._pending) if self._active == 0 else [])
            if self._active == 0:
                self._pending.clear()
            for _, settled in leftovers:
                if not settled.done():
                    settled.cancel()

    async def _settle_batch(self, batch: list[tuple[AbstractIncomingMessage, asyncio.Future[None]]]) -> None:
        parsed: list[tuple[_Parsed, asyncio.Future[None]]] = []
        for message, settled in batch:
            try:
                p = await self._parse(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # dead-lettering it failed
                settled.set_exception(exc)
                continue
            if p is None:
                settled.set_result(None)
            else:
                parsed.append((p, settled))
        if parsed and all(p.handler.statement is not None for p, _ in parsed):
            await self._settle_statements(parsed)  # one pipeline, no transaction
            return
        if len(parsed) > 1:
            try:
                fresh = await self._handle_together([p for p, _ in parsed])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # rolled back as a whole: each message gets its own chance (and its own retry or dead letter)
                log.info(
                    "batch failed, handling its messages one by one",
                    extra={
                        "queue": self.queue_name,
                        "size": len(parsed),
                        "event_ids": [str(p.envelope.event_id) for p, _ in parsed],
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
            else:
                CONSUMER_BATCH.labels(self.queue_name).observe(len(parsed))
                await self._ack_batch([p for p, _ in parsed], fresh, [s for _, s in parsed])
                if any(fresh) and self.after_commit is not None:
                    self.after_commit()
                return
        for p, settled in parsed:
            CONSUMER_BATCH.labels(self.queue_name).observe(1)
            await _settling(settled, self._handle_alone(p))

    async def _settle_statements(self, parsed: list[tuple[_Parsed, asyncio.Future[None]]]) -> None:
        CONSUMER_BATCH.labels(self.queue_name).observe(len(parsed))
        outcomes = await self._run_statements([p for p, _ in parsed])
        done = [(p, s, fresh) for (p, s), fresh in zip(parsed, outcomes, strict=True) if fresh is not None]
        if len(done) == len(parsed):
            await self._ack_batch([p for p, _, _ in done], [bool(f) for _, _, f in done], [s for _, s, _ in done])
        else:
            for (p, s), fresh in zip(parsed, outcomes, strict=True):
                await _settling(s, self._handle_alone(p) if fresh is None else self._acked(p, fresh))
        if any(outcomes) and self.after_commit is not None:
            self.after_commit()

    async def _parse(self, message: AbstractIncomingMessage) -> _Parsed | None:
        """The message's envelope, handler and payload; None when it was dead-lettered (it can never succeed)."""
        try:
            envelope = Envelope.model_validate(orjson.loads(message.body))
            handler = self.handlers.get(envelope.routing_key)
            if handler is None:
                lookup(envelope.event_type, envelope.event_version)  # unknown version -> UnknownMessage
                raise UnknownMessage(f"no handler in {self.queue_name} for {envelope.routing_key}")
            event = handler.message.model_validate(envelope.payload)
        except orjson.JSONDecodeError as exc:
            await self._dead_letter(message, f"invalid JSON: {exc}")
            return None
        except ValidationError as exc:
            await self._dead_letter(message, f"schema validation failed: {_short(exc)}")
            return None
        except UnknownMessage as exc:
            await self._dead_letter(message, str(exc))
            return None
        return _Parsed(message, envelope, handler, event)

    @contextlib.contextmanager
    def _handling(self, p: _Parsed) -> Any:
        """The message's ids in the log context and its span (continuing the publisher's trace), for as long as
        the block runs: a line logged after it (about a batch, or the next message) does not carry them."""
        traceparent = (p.message.headers or {}).get("traceparent")
        with (
            _log_ids(str(p.envelope.event_id), p.envelope.correlation_id),
            continued_span(
                f"consume {p.message.routing_key}",
                str(traceparent) if traceparent else None,
                SpanKind.CONSUMER,
                {"messaging.destination": self.queue_name, "messaging.message.id": p.message.message_id or ""},
            ),
        ):
            yield

    async def _run_handler(self, conn: asyncpg.Connection, p: _Parsed) -> None:
        """The handler, in a transaction that holds the message's inbox row already."""
        with self._handling(p):
            if p.handler.statement is not None:
                await execute_statement(conn, p.handler.statement(p.envelope, p.event))
            else:
                assert p.handler.fn is not None
                await p.handler.fn(conn, p.envelope, p.event)

    async def _run_statements(self, batch: list[_Parsed]) -> list[bool | None]:
        """A batch of statement handlers, each message one statement with its inbox insert, no transaction: each run
        of consecutive messages with the same statement goes in one pipeline (``fetchmany``: one round trip, one
        commit, all or nothing). Per message whether it was new, or None when its run failed or never ran (its
        messages are then handled alone, where a failure is retried or dead-lettered as usual; nothing of them was
        written). The runs that went through before a failure keep their outcomes."""
        out: list[bool | None] = [None] * len(batch)
        calls: list[tuple[int, str, tuple[Any, ...]]] = []  # (index in the batch, SQL, arguments)
        for i, p in enumerate(batch):
            assert p.handler.statement is not None
            try:
                with self._handling(p):
                    st = p.handler.statement(p.envelope, p.event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # handled alone, where it fails again and is retried or dead-lettered
                with _message_log_ids(p.message):
                    log.info(
                        "statement failed, handling the message alone",
                        extra={"queue": self.queue_name, "error": f"{type(exc).__name__}: {exc}"},
                    )
                continue
            calls.append((i, statement_sql(st, inbox=True), (self.queue_name, p.envelope.event_id, *st.args)))
        try:
            async with self.pool.acquire() as conn:
                for sql, run in itertools.groupby(calls, key=lambda c: c[1]):
                    run_ = list(run)
                    try:
                        if len(run_) == 1:
                            fresh = [await conn.fetchval(sql, *run_[0][2])]
                        else:
                            fresh = [r[0] for r in await conn.fetchmany(sql, [args for _, _, args in run_])]
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        log.info(
                            "statements failed, handling their messages alone",
                            extra={
                                "queue": self.queue_name,
                                "size": len(run_),
                                "event_ids": [str(batch[i].envelope.event_id) for i, _, _ in run_],
                                "error": f"{type(exc).__name__}: {exc}",
                            },
                        )
                        continue
                    for (i, _, _), f in zip(run_, fresh, strict=True):
                        out[i] = bool(f)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info(
                "statements failed, handling the rest alone",
                extra={"queue": self.queue_name, "error": f"{type(exc).__name__}: {exc}"},
            )
        return out

    async def _handle_together(self, batch: list[_Parsed]) -> list[bool]:
        """One transaction for the batch: one inbox insert for all, then each new message's handler. Returns, per
        message, whether it was new (False: handled before, or a second copy within the batch)."""
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = set(
                await conn.fetchval(
                    """WITH ins AS (INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])
                                    ON CONFLICT DO NOTHING RETURNING event_id)
                       SELECT coalesce(array_agg(event_id), '{}') FROM ins""",
                    self.queue_name,
                    [p.envelope.event_id for p in batch],
                )
            )
            out: list[bool] = []
            # statement handlers wait to go to the server together: consecutive ones with the same SQL in one
            # executemany (one round trip for all); a transactional handler runs in turn, in delivery order
            waiting: list[tuple[str, tuple[Any, ...]]] = []

            async def send_waiting() -> None:
                for sql, group in itertools.groupby(waiting, key=lambda w: w[0]):
                    await conn.executemany(sql, [args for _, args in group])
                waiting.clear()

            locks = [
                name
                for p in batch
                if p.handler.locks is not None and p.envelope.event_id in fresh
                for name in p.handler.locks(p.envelope, p.event)
            ]
            async with hold_advisory_xact_locks(conn, locks if len(set(locks)) > 1 else ()):
                for p in batch:
                    new = p.envelope.event_id in fresh
                    fresh.discard(p.envelope.event_id)
                    if new and p.handler.statement is not None:
                        with self._handling(p):
                            st = p.handler.statement(p.envelope, p.event)
                        waiting.append(
                            (statement_sql(st, inbox=False), (self.queue_name, p.envelope.event_id, *st.args))
                        )
                    elif new:
                        await send_waiting()
                        await self._run_handler(conn, p)
                    out.append(new)
                await send_waiting()
        return out

    async def _handle_alone(self, p: _Parsed) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                inserted = await conn.fetchval(
                    """INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)
                       ON CONFLICT DO NOTHING RETURNING true""",
                    self.queue_name,
                    p.envelope.event_id,
                )
                if inserted:
                    await self._run_handler(conn, p)
        except PermanentError as exc:
            await self._dead_letter(p.message, f"rejected by handler: {exc}")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._retry(p.message, exc)
            return
        await self._acked(p, bool(inserted))
        if inserted and self.after_commit is not None:
            self.after_commit()

    async def _ack_batch(self, batch: list[_Parsed], fresh: list[bool], settled: list[asyncio.Future[None]]) -> None:
        """Ack a committed batch. With one worker, every message delivered on the channel before the batch's last
        is settled by now (batches are taken in delivery order, one at a time, and each message is settled before
        the next batch starts), so one ack with ``multiple`` settles the whole batch: one frame instead of one
        per message, for this process and for the broker. Otherwise each message is acked on its own."""
        channels = {id(p.message.channel) for p in batch}
        if self.workers == 1 and len(channels) == 1:
            last = max(batch, key=lambda p: p.message.delivery_tag or 0)
            try:
                await last.message.ack(multiple=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                for s in settled:
                    s.set_exception(exc)
                return
            for p, inserted, s in zip(batch, fresh, settled, strict=True):
                self._count(p, inserted)
                s.set_result(None)
            return
        for p, inserted, s in zip(batch, fresh, settled, strict=True):
            await _settling(s, self._acked(p, inserted))

    async def _acked(self, p: _Parsed, inserted: bool) -> None:
        await p.message.ack()
        self._count(p, inserted)

    def _count(self, p: _Parsed, inserted: bool) -> None:
        routing_key = p.message.routing_key or ""
        EVENTS_CONSUMED.labels(self.queue_name, routing_key, "handled" if inserted else "duplicate").inc()
        if not inserted:
            with _message_log_ids(p.message):
                log.info("duplicate ignored", extra={"queue": self.queue_name, "routing_key": routing_key})

    async def _retry(self, message: AbstractIncomingMessage, exc: Exception) -> None:
        attempt = attempts_of(message) + 1
        error = f"{type(exc).__name__}: {exc}"
        if attempt > len(self.retry_delays_ms):
            await self._dead_letter(message, f"gave up after {attempt} attempts: {error}")
            return
        delay = self.retry_delays_ms[attempt - 1]
        with _message_log_ids(message):
            log.warning(
                "handler failed, will retry",
                extra={"queue": self.queue_name, "attempt": attempt, "retry_in_ms": delay, "error": error},
            )
        headers = dict(message.headers or {})
        headers.update({"x-attempt": attempt, "x-last-error": error[:500]})
        await self._republish(message, self.broker.topology.retry_queue(self.queue_name, delay), headers)
        EVENTS_CONSUMED.labels(self.queue_name, message.routing_key or "", "retried").inc()
        self.retried += 1

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        with _message_log_ids(message):
            log.error("dead-lettered", extra={"queue": self.queue_name, "reason": reason[:500]})
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-dead-letter-reason": reason[:1000],
                "x-original-routing-key": message.routing_key or "",
                "x-original-exchange": message.exchange or "",
                "x-dead-lettered-at": datetime.now(UTC).isoformat(),
            }
        )
        await self._republish(message, self.broker.topology.dlq(self.queue_name), headers)
        EVENTS_CONSUMED.labels(self.queue_name, message.routing_key or "", "dead_lettered").inc()
        self.dead_lettered += 1

    async def _republish(self, message: AbstractIncomingMessage, queue: str, headers: dict[str, Any]) -> None:
        # Publish (confirmed) first, then ack: a crash in between redelivers the original, and the copy is
        # absorbed by the inbox. If publishing fails the original is requeued rather than lost.
        try:
            await self.broker.publish(
                exchange=None,
                routing_key=queue,
                body=message.body,
                message_id=message.message_id or "",
                headers=_plain_headers(headers),
                correlation_id=message.correlation_id,
            )
        except Exception:
            log.exception("could not move message", extra={"to": queue})
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        await message.ack()


@contextlib.contextmanager
def _log_ids(event_id: str | None, correlation_id: str | None) -> Iterator[None]:
    """``event_id`` and ``correlation_id`` in the log context inside the block, what was there before after it."""
    tokens = event_id_var.set(event_id), correlation_id_var.set(correlation_id)
    try:
        yield
    finally:
        event_id_var.reset(tokens[0])
        correlation_id_var.reset(tokens[1])


def _message_log_ids(message: AbstractIncomingMessage) -> contextlib.AbstractContextManager[None]:
    """A line about one message outside its handling (retried, dead-lettered, a duplicate) names that message: its
    event id and correlation id as the relay publishes them (message properties), also when its body is not an
    event at all."""
    return _log_ids(message.message_id or None, message.correlation_id or None)


async def _settling(settled: asyncio.Future[None], work: Awaitable[None]) -> None:
    """Run ``work`` (what settles one message) and resolve the message's future with its outcome."""
    try:
        await work
        settled.set_result(None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        settled.set_exception(exc)


def attempts_of(message: AbstractIncomingMessage) -> int:
    try:
        return max(0, int(str((message.headers or {}).get("x-attempt", 0))))
    except ValueError:  # a header we did not write: count from zero
        return 0


def _plain_headers(headers: dict[str, Any]) -> dict[str, Any]:
    # x-death and other broker-set headers are kept only as strings so they can be re-published
    out: dict[str, Any] = {}
    for k, v in headers.items():
        out[k] = v if isinstance(v, (str, int, float, bool)) else str(v)
    return out


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
