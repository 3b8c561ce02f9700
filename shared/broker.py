"""The RabbitMQ connection of a service: robust (reconnects by itself), the topology declared on connect (or, for
a least-privilege user that may not declare it, checked to exist: ``python -m services setup-broker`` declares
it), and a publisher channel with confirms and ``mandatory`` so an unroutable or unconfirmed message is an error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import ChannelFrame
from pamqp.encode import field_table

from shared.topology import Topology

log = logging.getLogger(__name__)

_FRAME_END = b"\xce"
_BASIC_PUBLISH = struct.pack(">HHH", 60, 40, 0)  # class basic, method publish, reserved ticket
_JSON = b"\x10application/json"
_PERSISTENT_PRIORITY_0 = b"\x02\x00"  # delivery_mode 2, priority 0 (as aio-pika sends it)
# content header property flags (AMQP 0-9-1 basic class): content_type, headers, delivery_mode, priority,
# correlation_id, message_id
_FLAGS = 0x8000 | 0x2000 | 0x1000 | 0x0800 | 0x0080
_CORRELATION_ID = 0x0400


_CHANNEL_PARTS = (
    "number",
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "write_queue",
    "max_content_size",
    "lock",
    "closing",
    "is_closed",
    "_raise_on_channel_close",
)


def _writes_frames(channel: object) -> TypeGuard[aiormq.Channel]:
    """Whether ``channel`` is the aiormq channel ``Broker.publish`` writes frames to (aiormq 7.2: confirms on, the
    parts of its ``basic_publish`` it repeats); an aiormq that changed them gets its own ``basic_publish``."""
    return (
        isinstance(channel, aiormq.Channel)
        and channel.publisher_confirms
        and all(hasattr(channel, name) for name in _CHANNEL_PARTS)
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for ``Broker.publish_many`` (the arguments of ``Broker.publish``)."""

    exchange: str | None
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] | None = None
    correlation_id: str | None = None


def _shortstr(value: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(data),)) + data


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    message_id: str,
    correlation_id: str | None,
    headers: dict[str, Any],
    max_content: int,
) -> bytes:
    """The AMQP 0-9-1 frames of one persistent, mandatory ``basic.publish`` of a JSON ``body``: method, content
    header (content type, headers, delivery mode 2, priority 0, correlation and message ids) and body frames of at
    most ``max_content`` bytes; byte for byte what aiormq and pamqp send for the same message."""
    if not message_id:
        raise ValueError("a message needs its message_id")
    method = _BASIC_PUBLISH + _shortstr(exchange) + _shortstr(routing_key) + b"\x01"  # mandatory, not immediate
    flags = _FLAGS | _CORRELATION_ID if correlation_id else _FLAGS  # an empty one is not sent (as pamqp does)
    header = b"".join(
        (
            struct.pack(">HHQH", 60, 0, len(body), flags),
            _JSON,
            field_table(headers),
            _PERSISTENT_PRIORITY_0,
            _shortstr(correlation_id) if correlation_id else b"",
            _shortstr(message_id),
        )
    )
    out = [struct.pack(">BHI", 1, channel, len(method)), method, _FRAME_END]
    out += [struct.pack(">BHI", 2, channel, len(header)), header, _FRAME_END]
    for start in range(0, len(body), max_content):
        chunk = body[start : start + max_content]
        out += [struct.pack(">BHI", 3, channel, len(chunk)), chunk, _FRAME_END]
    return b"".join(out)


class Broker:
    def __init__(self, url: str, topology: Topology, service: str, publish_timeout_s: float = 10.0) -> None:
        self.url = url
        self.topology = topology
        self.service = service
        self.publish_timeout_s = publish_timeout_s
        self.connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.declares_topology = True
        """False once the broker refused a declaration: the user has no configure permission (deploy/ gives each
        service such a user), so the topology is only checked passively, which needs no permission."""

    @property
    def connected(self) -> bool:
        c = self.connection
        return bool(c and not c.is_closed and c.connected.is_set())

    async def wait_connected(self) -> None:
        await self._ready.wait()
        assert self.connection is not None
        await self.connection.connected.wait()

    def start(self) -> None:
        """Connect in the background, retrying until the broker answers: a service starts (and keeps taking
        requests, writing to its outbox) while RabbitMQ is down."""
        self._task = asyncio.create_task(self._connect_loop(), name="broker-connect")

    async def _connect_loop(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                await self.connect()
                return
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                # the broker is there, but a queue or exchange exists with other arguments than ours
                log.error(
                    "RabbitMQ topology conflict: an existing queue or exchange was declared with different "
                    "arguments (by an older version?). Delete it, or use a new AMQP_PREFIX.",
                    extra={"error": str(exc)},
                )
                await asyncio.sleep(10)
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                # checked, not declared (least-privilege user): the setup has not declared everything yet
                log.warning(
                    "RabbitMQ topology incomplete: waiting for `python -m services setup-broker` to declare it",
                    extra={"error": str(exc), "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                log.warning("RabbitMQ unreachable, retrying", extra={"error": str(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def connect(self) -> None:
        while True:
            connection = await aio_pika.connect_robust(
                self.url, client_properties={"connection_name": self.service}, timeout=10
            )
            try:
                publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
                if self.declares_topology:
                    await self.topology.declare(publisher)
                else:
                    await self.topology.verify(publisher)
            except aiormq.exceptions.ChannelAccessRefused as exc:
                await connection.close()
                if not self.declares_topology:
                    raise
                self.declares_topology = False
                log.info(
                    "not allowed to declare the RabbitMQ topology (a least-privilege user): checking that "
                    "`python -m services setup-broker` declared it",
                    extra={"error": str(exc)},
                )
                continue
            except BaseException:
                await connection.close()
                raise
            break
        self.connection = connection
        self._publisher = publisher  # type: ignore[assignment]
        self._ready.set()
        log.info("connected to RabbitMQ")

    async def queue_depths(self, names: list[str]) -> dict[str, int | None]:
        """Messages ready in each queue (full names), by passive declarations on a channel of their own (a
        missing queue closes the channel it is asked on; a passive declaration needs no permission). None: not
        known (not connected, or no such queue)."""
        out: dict[str, int | None] = dict.fromkeys(names)
        if self.connection is None or not self.connected:
            return out
        channel = None
        try:
            for name in names:
                if channel is None or channel.is_closed:
                    channel = await self.connection.channel()
                try:
                    q = await channel.declare_queue(name, passive=True)
                    out[name] = int(q.declaration_result.message_count or 0)
                except aio_pika.exceptions.AMQPError:
                    continue
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        return out

    async def channel(self, prefetch: int) -> AbstractRobustChannel:
        await self.wait_connected()
        assert self.connection is not None
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel  # type: ignore[return-value]

    async def publish(
        self,
        *,
        exchange: str | None,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Publish persistently and wait for the broker's confirm. ``exchange`` is a logical name (the topology
        prefix is applied) or None for the default exchange (``routing_key`` is then a queue name).
        Raises when the message is returned (unroutable), nacked, or not confirmed in time."""
        (error,) = await self.publish_many([Outgoing(exchange, routing_key, body, message_id, headers, correlation_id)])
        if error is not None:
            raise error

    async def publish_many(self, messages: Sequence[Outgoing]) -> list[BaseException | None]:
        """Publish each message as ``publish`` does, all in one write to the socket, and wait for the broker's
        confirms: for each message None (confirmed) or what went wrong (returned, nacked, channel closed, not
        confirmed within the publish timeout). Raises only when nothing could be sent (not connected)."""
        if not messages:
            return []
        if not self._ready.is_set() or self._publisher is None:
            raise ConnectionError("not connected to RabbitMQ")
        if self._publisher.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("the publishing channel is closed")
        channel = await self._publisher.get_underlay_channel()
        if not _writes_frames(channel):  # pragma: no cover  (an aiormq whose channel is not what this knows)
            results = await asyncio.gather(*(self._basic_publish(channel, m) for m in messages), return_exceptions=True)
            return [r if isinstance(r, BaseException) else None for r in results]
        # what aiormq's Channel.basic_publish(mandatory=True, wait=False) does for each message, with the frames
        # built here (publish_frames: the same bytes, compared in tests/unit/test_amqp_frames.py) instead of through
        # pamqp's generic objects (~28 us a message, 5 here), and one write to the socket for them all instead of one
        # each (a system call, and a task, per message). Confirms, returns and nacks are aiormq's; a closed channel is
        # watched below.
        errors: list[BaseException | None] = [None] * len(messages)
        frames: list[tuple[int, bytes]] = []
        for i, m in enumerate(messages):
            try:
                frames.append(
                    (
                        i,
                        publish_frames(
                            channel.number,
                            "" if m.exchange is None else self.topology.exchange(m.exchange),
                            m.routing_key,
                            m.body,
                            message_id=m.message_id,
                            correlation_id=m.correlation_id,
                            headers=m.headers or {},
                            max_content=channel.max_content_size,
                        ),
                    )
                )
            except ValueError as exc:  # a name too long for AMQP: that message only
                errors[i] = exc
        if not frames:
            return errors
        # each confirm a plain future that aiormq settles (ack, nack, return); one callback each counts them down,
        # instead of the five event-loop callbacks of aiormq's own futures (its future store, twice, the exception
        # reader, the forgetting of the message id); a channel that closes meanwhile is watched once for the round
        loop = asyncio.get_running_loop()
        all_settled = loop.create_future()
        unsettled = len(frames)

        def settled(_: asyncio.Future[Any]) -> None:
            nonlocal unsettled
            unsettled -= 1
            if unsettled == 0 and not all_settled.done():
                all_settled.set_result(None)

        registered: list[tuple[int, int, str, asyncio.Future[Any]]] = []  # (message, tag, message id, confirm)
        async with channel._raise_on_channel_close(), asyncio.timeout(self.publish_timeout_s), channel.lock:
            for i, _ in frames:
                channel.delivery_tag += 1
                tag, message_id = channel.delivery_tag, messages[i].message_id
                confirmation = loop.create_future()
                confirmation.add_done_callback(settled)
                channel.confirmations[tag] = confirmation
                channel.message_id_delivery_tag[message_id] = tag
                registered.append((i, tag, message_id, confirmation))
            try:
                payload = b"".join(frame for _, frame in frames)
                await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
            except BaseException:  # not sent: the broker never saw these tags, so they are reused
                for _, tag, message_id, confirmation in registered:
                    channel.confirmations.pop(tag, None)
                    if channel.message_id_delivery_tag.get(message_id) == tag:
                        channel.message_id_delivery_tag.pop(message_id)
                    confirmation.cancel()
                channel.delivery_tag -= len(registered)
                raise
        # every confirm, the channel's closing, or the deadline (a confirm that comes later is logged by aiormq)
        closing = channel.closing
        try:
            await asyncio.wait(
                [all_settled, closing], timeout=self.publish_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            closed = closing.exception() if closing.done() and not closing.cancelled() else None
        finally:
            closing.cancel()  # the observer only: detaches it from the channel
        for i, tag, message_id, confirmation in registered:
            if channel.message_id_delivery_tag.get(message_id) == tag:  # as aiormq does once a publish is settled
                channel.message_id_delivery_tag.pop(message_id)
            if confirmation.done():  # acked (None), or nacked or returned (aiormq's error)
                errors[i] = confirmation.exception()
                continue
            confirmation.cancel()
            if channel.is_closed:  # why, as aiormq tells its own futures
                channel.confirmations.pop(tag, None)
                errors[i] = (
                    closed
                    if isinstance(closed, Exception)
                    else ConnectionError("the publishing channel closed before the broker confirmed")
                )
            else:
                errors[i] = TimeoutError(f"not confirmed within {self.publish_timeout_s}s")
        return errors

    async def _basic_publish(self, channel: Any, m: Outgoing) -> None:  # pragma: no cover  (see publish_many)
        await channel.basic_publish(
            m.body,
            exchange="" if m.exchange is None else self.topology.exchange(m.exchange),
            routing_key=m.routing_key,
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json",
                delivery_mode=2,
                priority=0,
                message_id=m.message_id,
                correlation_id=m.correlation_id,
                headers=m.headers or {},
            ),
            mandatory=True,
            timeout=self.publish_timeout_s,
            wait=False,
        )

    async def close(self) -> None:
        self._closing = True
        if self._task and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.connection is not None:
            await self.connection.close()
