"""The example consumer (examples/consumer.py) on the test's broker prefix: its own queue, each event once, stale
events ignored, and a clean stop on SIGINT/SIGTERM when run as a program."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from datetime import UTC, datetime

import pytest
from consumer import Consumer
from coworking_client import Client, Envelope

from shared.events import CustomerCreatedV1, make_envelope
from tests.conftest import AMQP_URL
from tests.examples.conftest import EXAMPLES
from tests.support.bus import publish_raw
from tests.support.wait import wait_for

QUEUE = "my-app.customer-events"


@pytest.fixture
async def own_queue(amqp, prefix):
    """The consumer's queue name; the queue is deleted at the end (the test topology only knows its own)."""
    names: list[str] = []

    def name(queue: str = QUEUE) -> str:
        names.append(queue)
        return queue

    yield name
    channel = await amqp.channel()
    for queue in names:
        await channel.queue_delete(f"{prefix}{queue}", if_unused=False, if_empty=False)
    await channel.close()


@pytest.fixture
async def consumer(amqp, prefix, own_queue):
    handled: list[Envelope] = []
    consumer = Consumer(
        amqp, prefix=prefix, queue=own_queue(), bindings=["customers.customer.*.v1"], handle=handled.append
    )
    await consumer.start()
    yield consumer, handled
    await consumer.stop()


async def republish(amqp, prefix: str, envelope: Envelope) -> None:
    await publish_raw(
        amqp, f"{prefix}events", envelope.routing_key, envelope.model_dump_json().encode(), str(envelope.event_id)
    )


def of(handled: list[Envelope], routing_key: str, subject: object = None) -> list[Envelope]:
    return [e for e in handled if e.routing_key == routing_key and (subject is None or e.subject == str(subject))]


async def test_the_consumer_handles_each_created_customer_once_even_when_an_event_is_delivered_twice(
    system_factory, keys, amqp, prefix, consumer
):
    consumer, handled = consumer
    system = system_factory()
    await system.start("customers")
    async with Client(dict(system.urls), token=keys.token()) as api:
        customers = [
            await api.create_customer(f"Person {n}", f"p{n}-{uuid.uuid4().hex[:6]}@example.com") for n in "ABC"
        ]

    created = await wait_for(
        lambda: len(of(handled, "customers.customer.created.v1")) == 3 and of(handled, "customers.customer.created.v1"),
        what="three created events",
    )
    await republish(amqp, prefix, created[0])
    await republish(amqp, prefix, created[1])
    await wait_for(lambda: consumer.state.counts["duplicate"] == 2, what="the two duplicates to be skipped")

    created = of(handled, "customers.customer.created.v1")
    assert sorted(e.subject for e in created) == sorted(str(c.id) for c in customers)
    assert len({e.event_id for e in created}) == 3
    assert consumer.state.counts == {"applied": 3, "duplicate": 2, "stale": 0, "invalid": 0}


async def test_the_consumer_ignores_a_stale_event_and_keeps_the_newest_state(
    system_factory, keys, amqp, prefix, consumer
):
    consumer, handled = consumer
    system = system_factory()
    await system.start("customers")
    async with Client(dict(system.urls), token=keys.token()) as api:
        customer = await api.create_customer("Ada Lovelace", f"ada-{uuid.uuid4().hex[:6]}@example.com")
        await api.suspend(customer.id, "Unpaid invoices", category="overdue")
        await api.reactivate(customer.id)

    await wait_for(lambda: len(of(handled, "customers.customer.reactivated.v1", customer.id)) == 1, what="reactivated")
    [suspended] = of(handled, "customers.customer.suspended.v1", customer.id)
    # the suspension again, as a new event (another event_id) with its old sequence: older than what was applied
    await republish(amqp, prefix, suspended.model_copy(update={"event_id": uuid.uuid4()}))
    await wait_for(lambda: consumer.state.counts["stale"] == 1, what="the stale event to be skipped")

    mine = [e for e in handled if e.subject == str(customer.id)]
    assert [(e.event_type, e.sequence) for e in mine] == [
        ("customers.customer.created", 1),
        ("customers.customer.suspended", 2),
        ("customers.customer.reactivated", 3),
    ]
    assert mine[-1].payload["standing"] == "active"
    assert consumer.state.latest[("customers.customer", str(customer.id))] == 3


async def test_a_message_that_is_not_an_envelope_is_refused_and_consuming_goes_on(amqp, prefix, consumer):
    consumer, handled = consumer
    await publish_raw(amqp, f"{prefix}events", "customers.customer.created.v1", b"not json")
    event = created_event()
    await publish_raw(amqp, f"{prefix}events", "customers.customer.created.v1", body(event), str(event.event_id))
    await wait_for(lambda: handled, what="the valid event")
    assert consumer.state.counts["invalid"] == 1
    assert [e.event_id for e in handled] == [event.event_id]


async def test_a_handler_failure_leaves_the_event_to_be_delivered_again(amqp, prefix, own_queue):
    attempts: list[Envelope] = []

    def flaky(envelope: Envelope) -> None:
        attempts.append(envelope)
        if len(attempts) == 1:
            raise RuntimeError("database down")

    consumer = Consumer(amqp, prefix=prefix, queue=own_queue(), bindings=["customers.#"], handle=flaky)
    await consumer.start()
    try:
        event = created_event()
        await publish_raw(amqp, f"{prefix}events", event.routing_key, body(event), str(event.event_id))
        await wait_for(lambda: consumer.state.counts["applied"] == 1, what="the event, handled on its second try")
        assert [e.event_id for e in attempts] == [event.event_id] * 2
    finally:
        await consumer.stop()


def created_event():
    cid = uuid.uuid4()
    return make_envelope(
        CustomerCreatedV1(
            customer_id=cid,
            full_name="Ada",
            email="ada@example.com",
            kind="contact",
            standing="active",
            send_welcome=False,
        ),
        subject=cid,
        sequence=1,
        producer="customers",
    )


def body(envelope) -> bytes:
    return envelope.model_dump_json().encode()


async def start_program(prefix: str, queue: str, binding: str) -> asyncio.subprocess.Process:
    """``python examples/consumer.py`` as a reader runs it, once it has declared and bound its queue."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "consumer.py"),
        "--amqp-url",
        AMQP_URL,
        "--prefix",
        prefix,
        "--queue",
        queue,
        "--bind",
        binding,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        started = await asyncio.wait_for(proc.stderr.readline(), timeout=15)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert started.startswith(f"consuming {prefix}{queue}".encode()), started
    return proc


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_run_as_a_program_it_prints_one_line_per_event_and_stops_cleanly_on_a_signal(
    amqp, prefix, own_queue, stop_signal
):
    queue = own_queue("my-app.program")
    proc = await start_program(prefix, queue, "customers.customer.*.v1")
    try:
        event = created_event()
        for _ in range(2):  # the same event twice: one line
            await publish_raw(amqp, f"{prefix}events", event.routing_key, body(event), str(event.event_id))
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        assert f"customers.customer.created.v1 subject={event.subject} sequence=1".encode() in line
        assert b"Ada" not in line and b"@" not in line  # no personal data in the output
        skipped = await asyncio.wait_for(proc.stderr.readline(), timeout=10)
        assert b"duplicate" in skipped

        proc.send_signal(stop_signal)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
        rest_out, rest_err = await proc.stdout.read(), await proc.stderr.read()
        assert rest_out == b""
        assert b"stopped: 1 applied, 1 duplicate" in rest_err
        assert b"Traceback" not in rest_err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_door_system_bound_to_the_access_events_lets_a_team_member_in_then_out(
    system_factory, keys, prefix, own_queue
):
    """The consumer as a door system: a contact gains access through a team that shares it (its paying member
    has a running contract) and loses it when the team's share_access is switched off."""
    system = system_factory()
    await system.start("customers")
    proc = await start_program(prefix, own_queue("door-system.access"), "customers.access.*.v1")
    lines: list[str] = []

    async def read_stdout() -> None:
        while line := await proc.stdout.readline():
            lines.append(line.decode())

    reader = asyncio.create_task(read_stdout())
    try:
        async with Client(dict(system.urls), token=keys.token()) as api:
            payer = await api.create_customer("Ada Lovelace", f"ada-{uuid.uuid4().hex[:6]}@example.com")
            plan = await api.create_plan(f"Hot desk {uuid.uuid4().hex[:6]}", 19900, "EUR", "month")
            await api.create_contract(payer.id, plan.id, starts_on=datetime.now(UTC).date())
            contact = await api.create_customer("Charles Babbage", f"charles-{uuid.uuid4().hex[:6]}@example.com")
            team = await api.create_team("Acme Ltd", paying_member_id=payer.id, share_access=True)
            await api.add_team_member(team.id, contact.id)
            assert (await api.get_access(contact.id)).granted
            await wait_for(lambda: door(lines, contact.id), what="the contact's access granted, printed")
            await api.update_team(team.id, share_access=False)
            assert not (await api.get_access(contact.id)).granted

        printed = await wait_for(
            lambda: len(door(lines, contact.id)) == 2 and door(lines, contact.id), what="granted, then revoked"
        )
        assert printed == [
            ("customers.access.granted.v1", "1", f"rule=team team_id={team.id}"),
            ("customers.access.revoked.v1", "2", "rule=no_membership"),
        ]
        assert door(lines, payer.id) == [("customers.access.granted.v1", "1", "rule=member")]  # kept: a member
        assert all("customers.access." in line and "@" not in line for line in lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await reader
    assert b"stopped: 3 applied" in await proc.stderr.read()  # the payer's grant, the contact's grant and revocation


def door(lines: list[str], customer_id: uuid.UUID) -> list[tuple[str, str, str]]:
    """(routing key, sequence, details) of the lines the consumer printed about one customer, in order."""
    out = []
    for line in lines:
        _, routing_key, subject, sequence, *details = line.split()
        if subject == f"subject={customer_id}":
            out.append((routing_key, sequence.removeprefix("sequence="), " ".join(details)))
    return out
