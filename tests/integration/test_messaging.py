"""The messaging promises on the real broker and database: events leave through the outbox, duplicates have one
effect, poison goes to the dead-letter queue with its reason, transient failures retry with backoff and end in
the DLQ after a bounded number of attempts, and broker or database outages lose nothing."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import aiohttp
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from shared.events import CustomerCreatedV1, SendEmailV1, make_envelope
from tests.conftest import AMQP_URL
from tests.support.bus import EventRecorder, drain, publish_raw, queue_depth
from tests.support.logs import JsonLines
from tests.support.proxy import TcpProxy
from tests.support.wait import ticks_pass, wait_for


def customer_created(email: str, send_welcome: bool = True, name: str = "Ada Lovelace"):
    cid = uuid.uuid4()
    return make_envelope(
        CustomerCreatedV1(
            customer_id=cid,
            full_name=name,
            email=email,
            kind="contact",
            standing="active",
            send_welcome=send_welcome,
        ),
        subject=cid,
        sequence=1,
        producer="customers",
        correlation_id="test",
    )


def body(envelope) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


def consumed(queue: str, routing_key: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "events_consumed_total", {"queue": queue, "routing_key": routing_key, "outcome": outcome}
        )
        or 0.0
    )


async def count(system, service: str, sql: str, *args) -> int:
    return await system.runtime(service).db.fetchval(sql, *args)


async def test_an_http_only_replica_leaves_its_events_to_a_relaying_replica_which_its_writes_wake(
    system_factory, amqp, prefix, keys
):
    """RELAY_ENABLED=false: the replica serves HTTP and writes the outbox, publishes nothing itself (not even when it
    stops), and its writes NOTIFY the relay of another replica of the service, which publishes them at once (its
    fallback poll is a minute here)."""
    recorder = await EventRecorder(amqp, prefix).start()
    http_only = system_factory(relay_enabled=False, relay_poll_interval_s=60)
    await http_only.start("customers")
    unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:

        async def create(email: str) -> None:
            resp = await http.post(
                f"{http_only.urls['customers']}/v1/customers", json={"full_name": "Ada", "email": email}
            )
            assert resp.status == 201

        await create("before@example.com")
        assert await count(http_only, "customers", unpublished) == 1
        relaying = system_factory(relay_poll_interval_s=60)
        await relaying.start("customers")
        await wait_for(
            lambda: len(recorder.of_type("customers.customer.created.v1")) == 1,
            timeout=5,
            what="the waiting row, published by the relaying replica's first round",
        )
        await wait_for(lambda: relaying.runtime("customers").relay._listener is not None, what="the relay listening")
        await create("after@example.com")
        events = await wait_for(
            lambda: (e := recorder.of_type("customers.customer.created.v1")) and len(e) == 2 and e,
            timeout=5,
            what="the HTTP-only replica's next event, woken by its NOTIFY",
        )
    assert [e["payload"]["email"] for e in events] == ["before@example.com", "after@example.com"]
    await relaying.stop()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        resp = await http.post(
            f"{http_only.urls['customers']}/v1/customers", json={"full_name": "Ada", "email": "last@example.com"}
        )
        assert resp.status == 201
    await http_only.stop()
    db = await asyncpg.connect(http_only.databases["customers"])
    try:
        assert await db.fetchval(unpublished) == 1  # stopping did not publish it: it waits for a relaying replica
    finally:
        await db.close()


async def test_events_leave_through_the_outbox_in_the_documented_envelope(system_factory, amqp, prefix, keys):
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory()
    await system.start("customers")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        resp = await http.post(
            f"{system.urls['customers']}/v1/customers",
            json={"full_name": "Ada", "email": "ada@example.com", "send_welcome": True},
            headers={"X-Request-ID": "corr-1"},
        )
        customer = await resp.json()
    [event] = await wait_for(lambda: recorder.of_type("customers.customer.created.v1"), what="customer.created")
    assert event["event_type"] == "customers.customer.created"
    assert event["event_version"] == 1
    assert event["producer"] == "customers"
    assert event["subject"] == customer["id"]
    assert event["sequence"] == 1
    assert event["correlation_id"] == "corr-1"
    assert event["payload"]["send_welcome"] is True
    assert event["payload"]["email"] == "ada@example.com"
    message = recorder.messages[0]
    assert message.message_id == event["event_id"]
    assert message.delivery_mode == 2  # persistent
    assert await wait_for(
        lambda: count(system, "customers", "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"),
        what="outbox row marked published",
    )


async def test_the_relay_is_woken_by_its_own_process_writes_and_by_a_notify_from_other_processes(
    system_factory, amqp, prefix, keys
):
    """Committed outbox rows are published at once although no write sends a NOTIFY from its own transaction (that
    serializes every writing commit in the cluster): the service's pool wakes its relay when a connection that wrote
    the outbox is released, and a process without a relay (the command line) sends NOTIFY after its write. The
    fallback poll is a minute here: only the wake-ups can publish these within the deadline."""
    from shared.db import create_pool
    from shared.outbox import enqueue

    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(relay_poll_interval_s=60)
    await system.start("customers")
    runtime = system.runtime("customers")
    triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'outbox'::regclass AND NOT tgisinternal"
    assert await runtime.db.fetchval(triggers) == 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        for n in range(3):  # the relay asleep again between them
            resp = await http.post(
                f"{system.urls['customers']}/v1/customers",
                json={"full_name": "Ada", "email": f"wake{n}@example.com"},
            )
            assert resp.status == 201
            await wait_for(
                lambda n=n: len(recorder.of_type("customers.customer.created.v1")) == n + 1,
                timeout=5,
                what=f"customer {n}'s event, woken by the service's own write",
            )
    await wait_for(lambda: runtime.relay._listener is not None, what="the relay listening")
    cli = await create_pool(system.databases["customers"], 1, 1)  # no relay in this "process"
    try:
        async with cli.acquire() as conn:
            await enqueue(conn, customer_created("from-cli@example.com"), "events")
    finally:
        await cli.close()
    events = await wait_for(
        lambda: (e := recorder.of_type("customers.customer.created.v1")) and len(e) == 4 and e,
        timeout=5,
        what="the command line's event, woken by its NOTIFY",
    )
    assert events[3]["payload"]["email"] == "from-cli@example.com"


async def test_the_same_event_delivered_twice_creates_one_account_and_sends_one_email(
    system_factory, amqp, prefix, smtp
):
    system = system_factory(smtp_port=smtp.port)
    await system.start("accounts", "notifications")
    envelope = customer_created("twice@example.com")
    before = consumed("accounts.customer-events", "customers.customer.created.v1", "duplicate")
    for _ in range(2):
        await publish_raw(amqp, f"{prefix}events", envelope.routing_key, body(envelope), str(envelope.event_id))
    await wait_for(lambda: smtp.to("twice@example.com"), what="the welcome email")
    await wait_for(
        lambda: consumed("accounts.customer-events", "customers.customer.created.v1", "duplicate") > before,
        what="the duplicate to be consumed",
    )
    assert await count(system, "accounts", "SELECT count(*) FROM accounts WHERE customer_id IS NOT NULL") == 1
    assert await count(system, "accounts", "SELECT count(*) FROM invitations") == 1
    assert await count(system, "notifications", "SELECT count(*) FROM deliveries") == 1
    assert len(smtp.to("twice@example.com")) == 1


async def test_a_repeated_send_email_request_with_a_new_event_id_still_sends_once(system_factory, amqp, prefix, smtp):
    system = system_factory(smtp_port=smtp.port)
    await system.start("notifications")
    command = SendEmailV1(
        request_key="welcome:fixed",
        template="welcome",
        to_email="once@example.com",
        to_name="Once",
        context={"full_name": "Once", "expires_at": "2030-01-01T00:00:00+00:00"},
        sealed_context=None,
    )
    for _ in range(2):  # two distinct events carrying the same request
        env = make_envelope(command, subject="x", sequence=1, producer="accounts")
        await publish_raw(amqp, f"{prefix}commands", env.routing_key, body(env))
    # without the sealed link the template cannot render: the delivery fails permanently, still only once
    await wait_for(
        lambda: count(system, "notifications", "SELECT count(*) FROM deliveries WHERE status <> 'pending'"),
        what="the delivery to be settled",
    )
    assert await count(system, "notifications", "SELECT count(*) FROM deliveries") == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"event_id": "x"}', "schema validation failed"),
        ("payload", "schema validation failed"),
        ("version", "unknown event type or version"),
    ],
)
async def test_poison_messages_go_to_the_dead_letter_queue_with_their_reason_and_consumption_continues(
    system_factory, amqp, prefix, raw, reason
):
    system = system_factory()
    await system.start("accounts")
    good = customer_created("after-poison@example.com", send_welcome=True)
    if raw == "payload":
        bad = customer_created("x@example.com").model_dump(mode="json")
        del bad["payload"]["email"]
        raw = orjson.dumps(bad)
    elif raw == "version":
        bad = customer_created("x@example.com").model_dump(mode="json")
        bad["event_version"] = 9
        raw = orjson.dumps(bad)
    await publish_raw(amqp, f"{prefix}events", "customers.customer.created.v1", raw)
    await publish_raw(amqp, f"{prefix}events", good.routing_key, body(good), str(good.event_id))
    await wait_for(
        lambda: count(
            system, "accounts", "SELECT count(*) FROM accounts WHERE customer_id = $1", good.payload["customer_id"]
        ),
        what="the good message after the poison to be handled",
    )
    dlq = f"{prefix}accounts.customer-events.dlq"
    await wait_for(lambda: queue_depth(amqp, dlq), what="the poison message in the DLQ")
    # operators see it without the broker's tools: on /readyz (still ready) and as a metric
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{system.urls['accounts']}/readyz")
        ready = await resp.json()
        assert resp.status == 200 and ready["checks"]["dead_letters"]["accounts.customer-events"] == 1
        assert ready["checks"]["retried_since_start"]["accounts.customer-events"] == 0
        metrics = await (await http.get(f"{system.urls['accounts']}/metrics")).text()
    assert 'dead_letters{queue="accounts.customer-events"} 1.0' in metrics
    [dead] = await drain(amqp, dlq)
    assert reason in dead.headers["x-dead-letter-reason"]
    assert dead.headers["x-original-routing-key"] == "customers.customer.created.v1"
    assert dead.body == raw
    assert await queue_depth(amqp, f"{prefix}accounts.customer-events") == 0


async def test_database_outage_is_retried_with_backoff_and_the_event_is_handled_once_it_is_back(
    system_factory, amqp, prefix, databases
):
    """accounts reaches PostgreSQL through a proxy; the proxy refuses connections while the event arrives."""
    host, port = "127.0.0.1", 5432
    proxy = TcpProxy(host, port)
    await proxy.start()
    direct = databases["accounts"]
    system = system_factory(retry_delays_ms=[300, 600, 1200, 2400])
    system.databases["accounts"] = direct.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
    await system.start("accounts")
    await proxy.cut()
    envelope = customer_created("db-down@example.com")
    await publish_raw(amqp, f"{prefix}events", envelope.routing_key, body(envelope), str(envelope.event_id))
    await wait_for(
        lambda: consumed("accounts.customer-events", "customers.customer.created.v1", "retried") >= 1,
        what="a retry while the database is down",
    )
    async with aiohttp.ClientSession() as http:  # the retries are counted on /readyz
        ready = await (await http.get(f"{system.urls['accounts']}/readyz")).json()
    assert ready["checks"]["retried_since_start"]["accounts.customer-events"] >= 1
    await proxy.restore()
    conn = await asyncpg.connect(direct)
    try:
        await wait_for(
            lambda: conn.fetchval("SELECT count(*) FROM accounts WHERE email = 'db-down@example.com'"),
            timeout=15,
            what="the account once the database is back",
        )
        assert await conn.fetchval("SELECT count(*) FROM invitations") == 1
    finally:
        await conn.close()
        await proxy.close()
    assert await queue_depth(amqp, f"{prefix}accounts.customer-events.dlq") == 0


async def test_a_failure_that_never_clears_ends_in_the_dlq_after_bounded_attempts(system_factory, amqp, prefix):
    """The notifications database is gone for good: the command is retried len(retry_delays) times, then
    dead-lettered with the last error, never redelivered forever."""
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    system = system_factory(retry_delays_ms=[50, 100])
    system.databases["notifications"] = system.databases["notifications"].replace(
        "127.0.0.1:5432", f"127.0.0.1:{proxy.port}"
    )
    await system.start("notifications")
    await proxy.cut()
    env = make_envelope(
        SendEmailV1(request_key="k", template="welcome", to_email="a@example.com", to_name="A"),
        subject="x",
        sequence=1,
        producer="accounts",
    )
    await publish_raw(amqp, f"{prefix}commands", env.routing_key, body(env))
    dlq = f"{prefix}notifications.send-email.dlq"
    await wait_for(lambda: queue_depth(amqp, dlq), timeout=15, what="the message in the DLQ")
    [dead] = await drain(amqp, dlq)
    assert "gave up after 3 attempts" in dead.headers["x-dead-letter-reason"]
    assert dead.headers["x-attempt"] == 2
    await proxy.restore()
    await proxy.close()


async def test_a_customer_created_while_rabbitmq_is_unreachable_is_published_when_it_returns(
    system_factory, amqp, prefix, keys
):
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/?reconnect_interval=0.3")
    await system.start("customers")
    await proxy.cut()
    await wait_for(lambda: not system.runtime("customers").broker.connected, what="the broker to be seen down")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        resp = await http.post(
            f"{system.urls['customers']}/v1/customers", json={"full_name": "Offline", "email": "off@example.com"}
        )
        assert resp.status == 201
        ready = await http.get(f"{system.urls['customers']}/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["broker"] == "disconnected"
    assert await count(system, "customers", "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
    await proxy.restore()
    [event] = await wait_for(
        lambda: recorder.of_type("customers.customer.created.v1"), timeout=20, what="the event after the outage"
    )
    assert event["payload"]["email"] == "off@example.com"

    async def drained() -> bool:
        return await count(system, "customers", "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

    await wait_for(drained, what="the outbox to drain")
    assert len(recorder.of_type("customers.customer.created.v1")) == 1
    await proxy.close()


async def test_consumers_reattach_after_their_connection_is_cut(system_factory, amqp, prefix, smtp):
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    system = system_factory(
        amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/?reconnect_interval=0.3", smtp_port=smtp.port
    )
    await system.start("accounts", "notifications")
    for _ in range(3):
        await proxy.cut()
        await wait_for(lambda: not system.runtime("accounts").consumers[0].attached, what="consumer detached")
        await proxy.restore()
        await wait_for(lambda: system.runtime("accounts").consumers[0].attached, timeout=20, what="reattached")
    await system.wait_ready("accounts")
    await system.wait_ready("notifications")
    envelope = customer_created("after-cuts@example.com")
    await publish_raw(amqp, f"{prefix}events", envelope.routing_key, body(envelope), str(envelope.event_id))
    await wait_for(lambda: smtp.to("after-cuts@example.com"), timeout=15, what="the welcome email after the cuts")
    assert await count(system, "accounts", "SELECT count(*) FROM accounts WHERE customer_id IS NOT NULL") == 1
    await proxy.close()


async def test_cleanup_removes_old_outbox_and_inbox_rows_but_keeps_recent_and_unpublished_ones(system_factory):
    system = system_factory()
    await system.start("customers")
    db = system.runtime("customers").db
    await db.execute(
        """INSERT INTO outbox (event_id, exchange, routing_key, body, published_at, next_attempt_at) VALUES
           (gen_random_uuid(), 'events', 'k', '\\x00', now() - interval '8 days', now()),
           (gen_random_uuid(), 'events', 'k', '\\x00', now() - interval '1 day', now()),
           (gen_random_uuid(), 'events', 'k', '\\x00', NULL, now() + interval '1 hour')"""
    )
    await db.execute(
        """INSERT INTO inbox (consumer, event_id, received_at) VALUES
           ('q', gen_random_uuid(), now() - interval '15 days'), ('q', gen_random_uuid(), now() - interval '1 day')"""
    )
    await db.execute(
        """INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at) VALUES
           ('s', 'old', 'h', 201, '{}', now() - interval '25 hours'), ('s', 'new', 'h', 201, '{}', now())"""
    )
    await system.runtime("customers").relay.cleanup()
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
    assert await db.fetchval("SELECT count(*) FROM inbox") == 1
    assert await db.fetchval("SELECT array_agg(key) FROM idempotency_keys") == ["new"]


async def test_a_row_that_keeps_failing_never_makes_the_relay_republish_the_good_ones(system_factory, amqp, prefix):
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory()
    await system.start("customers")
    db = system.runtime("customers").db
    good = customer_created("good@example.com")
    # a row on a key no queue is bound to, that has failed for hours, next to a good one in the same batch
    await db.execute(
        """INSERT INTO outbox (event_id, exchange, routing_key, body, attempts) VALUES
           (gen_random_uuid(), 'commands', 'nobody.listens.v1', '{}', 50)"""
    )
    from shared.outbox import enqueue

    async with db.acquire() as conn:
        await enqueue(conn, good, "events")
    await wait_for(lambda: recorder.of_type("customers.customer.created.v1"), what="the good event")

    async def settled() -> bool:
        row = await db.fetchrow("SELECT attempts, next_attempt_at > now() AS later FROM outbox WHERE attempts > 0")
        return row is not None and row["attempts"] >= 51 and row["later"]

    await wait_for(settled, what="the failing row to be pushed back")
    assert await count(system, "customers", "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL") == 1
    await ticks_pass(
        lambda: system.runtime("customers").relay.rounds, what="relay rounds"
    )  # the good event must not be published again
    assert len(recorder.of_type("customers.customer.created.v1")) == 1


async def test_rows_claimed_by_a_relay_that_died_are_published_once_its_lease_ends(system_factory, amqp, prefix):
    """A relay claims rows with a lease and holds no transaction while it publishes. Rows another replica claimed
    just before it crashed (lease still running) are left alone until the lease ends, then published once."""
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory()
    await system.start("customers")
    db = system.runtime("customers").db
    orphan = customer_created("orphan@example.com")
    fresh = customer_created("fresh@example.com")
    from shared.outbox import OUTBOX_COLUMNS, outbox_row

    async with db.acquire() as conn:
        # as a crashed replica leaves it: claimed, its lease running for another 1.5 s
        await conn.execute(
            f"""INSERT INTO outbox ({OUTBOX_COLUMNS}, next_attempt_at)
                VALUES ($1, $2, $3, $4, $5, $6, now() + interval '1.5 seconds')""",
            *outbox_row(orphan, "events"),
        )
        leased_until = await conn.fetchval("SELECT next_attempt_at FROM outbox WHERE event_id = $1", orphan.event_id)
        await conn.execute(
            f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)", *outbox_row(fresh, "events")
        )
    [first] = await wait_for(lambda: recorder.of_type("customers.customer.created.v1"), what="the unclaimed row")
    assert first["event_id"] == str(fresh.event_id)
    events = await wait_for(
        lambda: (
            len(recorder.of_type("customers.customer.created.v1")) == 2
            and recorder.of_type("customers.customer.created.v1")
        ),
        what="the orphaned row after its lease",
    )
    assert events[1]["event_id"] == str(orphan.event_id)
    # the relay marks a row once the broker confirmed it, which can come after the recorder received the message
    published_at = await wait_for(
        lambda: db.fetchval("SELECT published_at FROM outbox WHERE event_id = $1", orphan.event_id),
        what="the orphaned row marked published",
    )
    assert published_at >= leased_until
    assert await count(system, "customers", "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_rows_a_relay_claimed_in_a_round_it_could_not_finish_are_its_own_to_publish_at_once(
    system_factory, amqp, prefix
):
    """When the database connection drops while a claim's reply is on its way (or before the mark), the claimed
    rows carry the relay's id: its next round takes them again instead of leaving them for the whole lease (20 s
    in production). Rows another replica holds still wait for their lease."""
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory()
    await system.start("customers")
    runtime = system.runtime("customers")
    db = runtime.db
    mine = customer_created("mine@example.com")
    theirs = customer_created("theirs@example.com")
    from shared.outbox import OUTBOX_COLUMNS, outbox_row

    async with db.acquire() as conn:
        for envelope, relay_id in ((mine, runtime.relay.relay_id), (theirs, uuid.uuid4())):
            # as a lost claim leaves them: leased for an hour, claimed by a relay
            await conn.execute(
                f"""INSERT INTO outbox ({OUTBOX_COLUMNS}, next_attempt_at, claimed_by)
                    VALUES ($1, $2, $3, $4, $5, $6, now() + interval '1 hour', $7)""",
                *outbox_row(envelope, "events"),
                relay_id,
            )
    [event] = await wait_for(lambda: recorder.of_type("customers.customer.created.v1"), what="this relay's row")
    assert event["event_id"] == str(mine.event_id)
    # marked once the broker confirmed it, which can come after the recorder received the message
    await wait_for(
        lambda: db.fetchval(
            "SELECT published_at IS NOT NULL AND claimed_by IS NULL FROM outbox WHERE event_id = $1", mine.event_id
        ),
        what="this relay's row marked published and unclaimed",
    )
    # a later round (it publishes a new row) leaves the other replica's row to its lease too
    later = customer_created("later@example.com")
    async with db.acquire() as conn:
        await conn.execute(
            f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)", *outbox_row(later, "events")
        )
    await wait_for(lambda: len(recorder.of_type("customers.customer.created.v1")) == 2, what="a later round")
    assert [e["event_id"] for e in recorder.of_type("customers.customer.created.v1")] == [
        str(mine.event_id),
        str(later.event_id),
    ]
    assert await db.fetchval("SELECT published_at FROM outbox WHERE event_id = $1", theirs.event_id) is None


async def test_under_load_a_round_leaves_its_mark_to_the_next_rounds_claim_and_no_row_goes_out_twice(
    system_factory, amqp, prefix
):
    """When a commit wakes the relay while it publishes, another round follows at once: the round leaves its mark
    to that round, whose claim writes it in the same statement (one statement a round instead of two). The rows
    waiting for their mark are not claimed again; a round with nothing after it marks at once; and marks left when
    no round follows (the relay stopping) are written by ``flush_marks``."""
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(relay_enabled=False)  # this test runs the rounds itself
    await system.start("customers")
    relay = system.runtime("customers").relay
    assert relay is not None
    db = system.runtime("customers").db
    from shared.outbox import OUTBOX_COLUMNS, outbox_row

    async def add(name: str):
        envelope = customer_created(f"{name}@example.com")
        await db.execute(
            f"INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)", *outbox_row(envelope, "events")
        )
        return envelope

    async def state(envelope) -> tuple[bool, bool]:
        row = await db.fetchrow("SELECT published_at, claimed_by FROM outbox WHERE event_id = $1", envelope.event_id)
        return row["published_at"] is not None, row["claimed_by"] == relay.relay_id

    async def round_(woken: bool) -> int:
        relay._wake.clear()  # as the relay's loop does before a round
        if woken:
            relay._wake.set()  # as a commit during the round does
        return await relay.relay_once(defer_mark=True)

    first = await add("first")
    assert await round_(woken=True) == 1
    assert await state(first) == (False, True)  # published, its mark waiting for the next round

    second = await add("second")
    assert await round_(woken=True) == 1  # the second row only: the first is not taken again
    assert await state(first) == (True, False)  # marked by this round's claim
    assert await state(second) == (False, True)

    third = await add("third")
    assert await round_(woken=False) == 1  # nothing after it: it marks at once
    assert await state(second) == (True, False)
    assert await state(third) == (True, False)

    fourth = await add("fourth")
    assert await round_(woken=True) == 1
    assert await state(fourth) == (False, True)
    await relay.flush_marks()
    assert await state(fourth) == (True, False)

    events = await wait_for(
        lambda: (
            len(recorder.of_type("customers.customer.created.v1")) >= 4
            and recorder.of_type("customers.customer.created.v1")
        ),
        what="the four events",
    )
    await asyncio.sleep(0.3)  # a late second copy would arrive by now
    assert [e["event_id"] for e in recorder.of_type("customers.customer.created.v1")] == [
        str(e.event_id) for e in (first, second, third, fourth)
    ]
    assert len(events) == 4
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL OR claimed_by IS NOT NULL") == 0


async def test_a_message_with_a_foreign_attempt_header_is_still_handled(system_factory, amqp, prefix):
    system = system_factory()
    await system.start("accounts")
    envelope = customer_created("odd-header@example.com")
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{prefix}events")
    import aio_pika

    await exchange.publish(
        aio_pika.Message(body(envelope), message_id=str(envelope.event_id), headers={"x-attempt": "lots"}),
        routing_key=envelope.routing_key,
    )
    await wait_for(
        lambda: count(system, "accounts", "SELECT count(*) FROM accounts WHERE email = 'odd-header@example.com'"),
        what="the account",
    )


async def test_operators_list_dead_letters_with_reasons_and_replay_them_once_the_cause_is_fixed(
    system_factory, amqp, prefix
):
    """A command dead-lettered while the notifications database was gone is replayed after it is back; replaying
    again changes nothing."""
    from shared import ops

    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    system = system_factory(retry_delays_ms=[50, 100])
    direct = system.databases["notifications"]
    system.databases["notifications"] = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    await system.start("notifications")
    common = system.common()
    await proxy.cut()
    env = make_envelope(
        SendEmailV1(request_key="replay-me", template="welcome", to_email="r@example.com", to_name="R"),
        subject="x",
        sequence=1,
        producer="accounts",
    )
    await publish_raw(amqp, f"{prefix}commands", env.routing_key, body(env), str(env.event_id))
    await wait_for(lambda: queue_depth(amqp, f"{prefix}notifications.send-email.dlq"), timeout=15, what="DLQ")
    counts = await ops.dead_letter_counts(common)
    assert counts["notifications.send-email"] == 1 and counts["accounts.customer-events"] == 0
    [dead] = await ops.peek_dead_letters(common, "notifications.send-email")
    assert dead.message_id == str(env.event_id) and "gave up after 3 attempts" in dead.reason
    assert (await ops.dead_letter_counts(common))["notifications.send-email"] == 1  # peeking keeps it

    await proxy.restore()
    assert await ops.replay(common, "notifications.send-email", {str(env.event_id)}) == 1

    async def recorded() -> int:
        conn = await asyncpg.connect(direct)
        try:
            return await conn.fetchval("SELECT count(*) FROM deliveries WHERE request_key = 'replay-me'")
        finally:
            await conn.close()

    await wait_for(recorded, timeout=15, what="the replayed command to be handled")
    assert await ops.replay(common, "notifications.send-email") == 0  # nothing left to replay
    # the same message replayed again (e.g. an operator replays a copy) has no second effect
    label = f"{prefix}notifications.send-email"  # published straight to the queue: its name is the routing key
    before = consumed("notifications.send-email", label, "duplicate")
    await publish_raw(amqp, "", f"{prefix}notifications.send-email", body(env), str(env.event_id))
    await wait_for(lambda: consumed("notifications.send-email", label, "duplicate") > before, what="the copy absorbed")
    assert await recorded() == 1
    await proxy.close()


def batch_histogram(queue: str) -> tuple[float, float]:
    """(batches, messages) the consumer of ``queue`` has handled in this process."""
    labels = {"queue": queue}
    return (
        REGISTRY.get_sample_value("consumer_batch_messages_count", labels) or 0.0,
        REGISTRY.get_sample_value("consumer_batch_messages_sum", labels) or 0.0,
    )


async def test_messages_waiting_together_are_handled_in_batches_and_one_bad_one_spoils_none_of_the_others(
    system_factory, amqp, prefix
):
    """Events wait in the queue before accounts starts (one worker, so they arrive while it is busy and are handled
    in batches). First 20 events, a duplicate and a poison message: one account each, some handled together (and
    acknowledged together), the poison in the dead-letter queue, nothing left unacknowledged. Then 10 more with an
    event whose email another account already has: its batch fails, each of its messages is handled alone, and
    only the conflicting one goes to the dead-letter queue, with its reason."""
    from shared.topology import Topology

    channel = await amqp.channel()
    await Topology(prefix, (100, 200, 400)).declare(channel)
    await channel.close()
    queue = "accounts.customer-events"
    system = system_factory(consumer_workers=1)

    async def handle(envelopes: list, *, stop: bool) -> None:
        for envelope in envelopes:
            if envelope is None:  # poison in the middle of a batch
                await publish_raw(amqp, f"{prefix}events", "customers.customer.created.v1", b"{not json")
                continue
            await publish_raw(amqp, f"{prefix}events", envelope.routing_key, body(envelope), str(envelope.event_id))
        envelopes = [e for e in envelopes if e is not None]
        await system.start("accounts")
        ids = [e.payload["customer_id"] for e in envelopes]

        async def accounts_made() -> bool:
            made = await count(system, "accounts", "SELECT count(*) FROM accounts WHERE customer_id = ANY($1)", ids)
            return made == len(set(ids)) - (clash in envelopes)

        await wait_for(accounts_made, what="an account for each good event")

        async def queue_empty() -> bool:
            return await queue_depth(amqp, f"{prefix}{queue}") == 0

        await wait_for(queue_empty, what="the queue to be empty")
        if stop:
            await system.stop("accounts")
            # nothing was left unacknowledged (it would be back in the queue now that the consumer is gone)
            assert await queue_depth(amqp, f"{prefix}{queue}") == 0

    first = [customer_created(f"batch{i}@example.com") for i in range(20)]
    batches_before, messages_before = batch_histogram(queue)
    duplicates_before = consumed(queue, "customers.customer.created.v1", "duplicate")
    clash = customer_created("batch3@example.com")  # another customer, an email an account already has
    await handle([*first[:10], first[5], None, *first[10:]], stop=True)
    assert consumed(queue, "customers.customer.created.v1", "duplicate") == duplicates_before + 1
    [poison] = await drain(amqp, f"{prefix}{queue}.dlq")
    assert "invalid JSON" in poison.headers["x-dead-letter-reason"]
    batches, messages = batch_histogram(queue)
    assert messages - messages_before == 21
    assert batches - batches_before < 21, "some messages were handled together"

    second = [customer_created(f"batch-two{i}@example.com") for i in range(10)]
    await handle([*second[:5], clash, *second[5:]], stop=False)
    dlq = f"{prefix}{queue}.dlq"
    [dead] = await drain(amqp, dlq)
    assert "another account already uses this email address" in dead.headers["x-dead-letter-reason"]
    assert orjson.loads(dead.body)["event_id"] == str(clash.event_id)
    assert (
        await count(
            system, "accounts", "SELECT count(*) FROM accounts WHERE customer_id = $1", clash.payload["customer_id"]
        )
        == 0
    )


async def test_one_statement_handlers_record_each_request_once_and_dead_letter_only_the_bad_one(
    system_factory, amqp, prefix
):
    """notifications records an email request as one statement with its inbox row. First 12 requests wait in
    the queue, one of them delivered twice: handled in batches (their statements pipelined in one transaction),
    one delivery each, the duplicate counted. Then more, among them a repeat under a new event id (same request
    key) and one naming a template that does not exist: one delivery per request key, only the unknown template
    in the dead-letter queue with its reason, nothing left unacknowledged."""
    from shared.topology import Topology

    channel = await amqp.channel()
    await Topology(prefix, (100, 200, 400)).declare(channel)
    await channel.close()
    queue = "notifications.send-email"
    system = system_factory(consumer_workers=1)

    def request(key: str, template: str = "welcome"):
        return make_envelope(
            SendEmailV1(request_key=key, template=template, to_email=f"{key}@example.com", to_name=key),
            subject="x",
            sequence=1,
            producer="accounts",
        )

    async def publish(envelopes) -> None:
        for envelope in envelopes:
            await publish_raw(amqp, f"{prefix}commands", envelope.routing_key, body(envelope), str(envelope.event_id))

    async def queue_empty() -> bool:
        return await queue_depth(amqp, f"{prefix}{queue}") == 0

    async def keys() -> list[str]:
        rows = await system.runtime("notifications").db.fetch("SELECT request_key FROM deliveries")
        return sorted(r["request_key"] for r in rows)

    good = [request(f"stmt{i:02}") for i in range(16)]
    await publish([*good[:6], good[2], *good[6:12]])
    batches_before, messages_before = batch_histogram(queue)
    duplicates_before = consumed(queue, "notifications.send_email.v1", "duplicate")
    await system.start("notifications")
    await wait_for(lambda: keys_are(keys, [f"stmt{i:02}" for i in range(12)]), what="one delivery per request")
    await wait_for(queue_empty, what="the queue to be empty")
    assert consumed(queue, "notifications.send_email.v1", "duplicate") == duplicates_before + 1
    batches, messages = batch_histogram(queue)
    assert messages - messages_before == 13
    assert batches - batches_before < 13, "some messages were handled together"

    unknown = request("stmt-unknown", template="no-such-template")
    await publish([good[12], unknown, request("stmt04"), *good[13:]])
    [dead] = await wait_for(lambda: drain(amqp, f"{prefix}{queue}.dlq"), what="the unknown template dead-lettered")
    assert "unknown template 'no-such-template'" in dead.headers["x-dead-letter-reason"]
    assert orjson.loads(dead.body)["event_id"] == str(unknown.event_id)
    await wait_for(queue_empty, what="the queue to be empty")
    await wait_for(lambda: keys_are(keys, [f"stmt{i:02}" for i in range(16)]), what="one delivery per request key")
    await system.stop("notifications")
    assert await queue_depth(amqp, f"{prefix}{queue}") == 0  # nothing was left unacknowledged


async def test_statement_handlers_waiting_together_commit_in_one_pipeline_and_one_the_database_refuses_fails_alone(
    system_factory, amqp, prefix
):
    """notifications' email requests are statement handlers: a batch of them goes to the database as one pipeline
    (one round trip, one commit). Here the database refuses one request (a trigger, as a constraint would): its
    pipeline is rolled back as a whole, every other request of it is then handled alone and delivered once, and
    only the refused one is retried and ends in the dead-letter queue with the database's error."""
    from shared.topology import Topology

    channel = await amqp.channel()
    await Topology(prefix, (100, 200, 400)).declare(channel)
    await channel.close()
    queue = "notifications.send-email"
    system = system_factory(consumer_workers=1)
    await system.start("notifications")  # its database, migrated
    await system.stop("notifications")
    db = await asyncpg.connect(system.databases["notifications"])
    try:
        await db.execute(
            """CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                   IF NEW.request_key = 'pipe-refused' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF;
                   RETURN NEW;
               END $$;
               CREATE TRIGGER refuse_one BEFORE INSERT ON deliveries FOR EACH ROW EXECUTE FUNCTION refuse_one();"""
        )
    finally:
        await db.close()

    def request(key: str):
        return make_envelope(
            SendEmailV1(request_key=key, template="welcome", to_email=f"{key}@example.com", to_name=key),
            subject="x",
            sequence=1,
            producer="accounts",
        )

    good = [request(f"pipe{i:02}") for i in range(12)]
    refused = request("pipe-refused")
    for envelope in [*good[:5], refused, *good[5:]]:
        await publish_raw(amqp, f"{prefix}commands", envelope.routing_key, body(envelope), str(envelope.event_id))
    batches_before, messages_before = batch_histogram(queue)
    with JsonLines.of("shared.consumer") as lines:
        await system.start("notifications")

        async def keys() -> list[str]:
            rows = await system.runtime("notifications").db.fetch("SELECT request_key FROM deliveries")
            return sorted(r["request_key"] for r in rows)

        await wait_for(lambda: keys_are(keys, [f"pipe{i:02}" for i in range(12)]), what="one delivery per good request")
        [dead] = await wait_for(lambda: drain(amqp, f"{prefix}{queue}.dlq"), what="the refused request dead-lettered")
    assert orjson.loads(dead.body)["event_id"] == str(refused.event_id)
    assert "refused by the test trigger" in dead.headers["x-dead-letter-reason"]
    batches, messages = batch_histogram(queue)
    assert batches - batches_before < messages - messages_before, "some requests went to the database together"
    # what an operator reads in the log: the failed pipeline names the messages in it (none of them as the line's
    # own event), and each retry and the dead letter name the refused request
    failed_runs = [line for line in lines.of_queue(queue) if line["msg"].startswith("statements failed")]
    assert failed_runs and all("event_id" not in line for line in failed_runs)
    assert str(refused.event_id) in failed_runs[0]["event_ids"]
    about_one = [line for line in lines.of_queue(queue) if line["msg"] != "consuming" and line not in failed_runs]
    assert [line["msg"] for line in about_one][-1] == "dead-lettered"
    assert {line["msg"] for line in about_one[:-1]} == {"handler failed, will retry"}
    assert {line.get("event_id") for line in about_one} == {str(refused.event_id)}

    async def queue_empty() -> bool:
        return await queue_depth(amqp, f"{prefix}{queue}") == 0

    await wait_for(queue_empty, what="the queue to be empty")
    assert await keys() == [f"pipe{i:02}" for i in range(12)]
    assert await count(system, "notifications", "SELECT count(*) FROM inbox") == 12


async def keys_are(read, expected) -> bool:
    return await read() == expected


async def test_the_broker_publishes_what_consumers_read_and_refuses_what_no_queue_takes(amqp, prefix):
    """Broker.publish writes its frames itself: concurrent publishes are each confirmed and arrive with their
    properties, a body larger than a frame arrives whole, and a message no queue is bound for raises (and the
    channel goes on publishing). publish_many (one write for many) says for each message how it went: the
    unroutable one and one whose routing key AMQP cannot carry fail alone."""
    import aiormq

    from shared.broker import Broker, Outgoing
    from shared.topology import Topology

    recorder = await EventRecorder(amqp, prefix).start()
    broker = Broker(AMQP_URL, Topology(prefix), "test-publisher", publish_timeout_s=5)
    await broker.connect()
    try:
        ids = [str(uuid.uuid4()) for _ in range(50)]
        big = {"event_type": "big", "event_version": 1, "blob": "x" * 300_000}  # RabbitMQ's frames: 128 KiB
        await asyncio.gather(
            *(
                broker.publish(
                    exchange="events",
                    routing_key="test.small.v1",
                    body=orjson.dumps({"event_type": "small", "event_version": 1, "n": n}),
                    message_id=message_id,
                    headers={"traceparent": f"00-{'a' * 32}-{'b' * 16}-01", "n": n},
                    correlation_id=f"req-{n}" if n % 2 else None,
                )
                for n, message_id in enumerate(ids)
            ),
            broker.publish(exchange="events", routing_key="test.big.v1", body=orjson.dumps(big), message_id="big"),
        )
        with pytest.raises(aiormq.exceptions.PublishError):
            await broker.publish(exchange="commands", routing_key="nobody.listens.v1", body=b"{}", message_id="lost")
        await broker.publish(
            exchange="events",
            routing_key="test.after.v1",
            body=orjson.dumps({"event_type": "after", "event_version": 1}),
            message_id="after",
        )
        many = [
            Outgoing("events", "test.many.v1", orjson.dumps({"event_type": "many", "event_version": 1}), f"m{n}")
            for n in range(6)
        ]
        many[2] = Outgoing("commands", "nobody.listens.v1", b"{}", "m2")
        many[4] = Outgoing("events", "k" * 256, b"{}", "m4")
        errors = await broker.publish_many(many)
        assert [type(e) if e else None for e in errors] == [
            None,
            None,
            aiormq.exceptions.PublishError,
            None,
            ValueError,
            None,
        ]

        # an exchange that does not exist: RabbitMQ closes the channel, and what it had not confirmed fails at once
        # (not after the publish timeout); the channel is opened again for the next publish
        gone = [
            Outgoing("events", "test.gone.v1", b"{}", "g0"),
            Outgoing("no-such-exchange", "test.gone.v1", b"{}", "g1"),
            Outgoing("events", "test.gone.v1", b"{}", "g2"),
        ]
        started = time.monotonic()
        errors = await broker.publish_many(gone)
        assert time.monotonic() - started < 4  # the publish timeout is 5 s
        assert [type(e) for e in errors[1:]] == [aiormq.exceptions.ChannelNotFoundEntity] * 2  # RabbitMQ's 404

        async def published_again() -> bool:
            try:
                await broker.publish(exchange="events", routing_key="test.again.v1", body=b"{}", message_id="again")
            except aiormq.exceptions.ChannelInvalidStateError:  # not open again yet
                return False
            return True

        await wait_for(published_again, what="a publish on the reopened channel")

        await wait_for(lambda: "again" in {m.message_id for m in recorder.messages}, what="the publish after the close")
        by_id = {m.message_id: m for m in recorder.messages}
        assert set(by_id) - {"g0"} == {*ids, "big", "after", "m0", "m1", "m3", "m5", "again"}
        for n, message_id in enumerate(ids):
            m = by_id[message_id]
            assert orjson.loads(m.body)["n"] == n and m.headers["n"] == n and m.content_type == "application/json"
            assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT and m.correlation_id == (
                f"req-{n}" if n % 2 else None
            )
        assert orjson.loads(by_id["big"].body) == big
    finally:
        await broker.close()


async def test_a_batch_takes_its_customers_locks_in_one_statement_and_other_transactions_wait_for_them(databases):
    """What a consumer batch does for accounts' customer events: every customer's lock in one statement, held
    against other transactions until the batch commits, and each handler's own lock_customer then costs no round
    trip (a customer outside the batch's set still takes one)."""
    import uuid as uuid_

    from services.accounts import store
    from shared.db import create_pool, hold_advisory_xact_locks

    a, b, c = (uuid_.uuid4() for _ in range(3))
    pool = await create_pool(databases["accounts"], 1, 1)
    other = await asyncpg.connect(databases["accounts"])
    queries: list[str] = []
    try:

        async def free(customer: uuid_.UUID) -> bool:
            async with other.transaction():
                return await other.fetchval(
                    "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 7031))", store.customer_lock(customer)
                )

        async def logged() -> int:
            await asyncio.sleep(0)  # not a wait: asyncpg calls query loggers with call_soon, this lets them run
            return len(queries)

        async with pool.acquire() as conn, conn.transaction():
            conn.add_query_logger(lambda record: queries.append(record.query))
            async with hold_advisory_xact_locks(conn, [store.customer_lock(x) for x in (b, a, b)]):
                assert await logged() == 1
                assert not await free(a) and not await free(b) and await free(c)
                for x in (a, b, a):
                    await store.lock_customer(conn, x)
                assert await logged() == 1  # already held: no round trip
                await store.lock_customer(conn, c)
                assert await logged() == 2
            await store.lock_customer(conn, a)  # after the block: asked again (still held until the commit)
            assert await logged() == 3 and not await free(a)
        assert await free(a) and await free(b) and await free(c)  # the commit released them all
    finally:
        await other.close()
        await pool.close()
