"""The RabbitMQ connection of a service: robust (reconnects by itself), the topology declared on connect (or, for
a least-privilege user that may not declare it, checked to exist: ``python -m services setup-broker`` declares
it), and a publisher channel with confirms and ``mandatory`` so an unroutable or unconfirmed message is an error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection, DeliveryMode

from shared.topology import Topology

log = logging.getLogger(__name__)


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
        if not self._ready.is_set() or self._publisher is None:
            raise ConnectionError("not connected to RabbitMQ")
        # the AMQP properties themselves (aio-pika's Message would build the same object through ~20 validated
        # attribute writes: a tenth of a publish's client CPU)
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=int(DeliveryMode.PERSISTENT),
            priority=0,  # as aio-pika sends it: the same bytes on the wire
            message_id=message_id,
            correlation_id=correlation_id,
            headers=headers or {},
        )
        if self._publisher.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("the publishing channel is closed")
        channel = await self._publisher.get_underlay_channel()
        # straight to aiormq (what aio-pika's Exchange.publish does, minus its per-call checks), without waiting for
        # each frame to be written to the socket before the next publish may start (wait=False): the relay's
        # concurrent publishes then queue their frames instead of taking turns through the channel lock, one
        # event-loop turn each. Confirms, returns (mandatory: unroutable raises) and the deadline (aiormq's own
        # asyncio.timeout, no wait_for task per message) are as before.
        await channel.basic_publish(  # type: ignore[call-arg]  # wait: aiormq's Channel (>= 6.8), not its ABC
            body,
            exchange="" if exchange is None else self.topology.exchange(exchange),
            routing_key=routing_key,
            properties=properties,
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
