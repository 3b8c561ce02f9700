"""What the fault suite and the soak command drive and check, in one place (no pytest here: bench/soak.py uses it).

- ``drive_welcome``: creates customers through ``POST /v1/customers`` like a careful client (an
  ``Idempotency-Key`` per customer, retried on 5xx and connection errors until a deadline), half of them with
  ``send_welcome``, and renames some of them (``PATCH`` with ``If-Match``) so that per-customer state has
  several versions to converge on.
- ``wait_quiescent``: waits, with a deadline, until no outbox holds an unpublished row, no main or retry queue
  holds a message, no delivery is pending, and the outcomes below hold.
- ``check``: the outcomes a user cares about, read from the four databases, the bus and the SMTP server:
  every welcome customer has exactly one account and either exactly one received welcome email or one recorded
  permanent failure (only for recipients the mail server rejects); nobody without the flag got either; nothing is
  stuck in an outbox or a queue; the dead-letter queues hold exactly the expected poison; and every copy of a
  customer (accounts, visitors, customers' view of the account) is at the customer's newest version.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from aio_pika.abc import AbstractConnection

from shared.topology import QUEUES, Topology

SERVICES = ("customers", "accounts", "visitors", "notifications")
RETRYABLE = {500, 502, 503, 504}


@dataclass
class Customer:
    index: int
    email: str
    full_name: str
    welcome: bool
    id: str | None = None
    version: int = 0
    renamed: bool = False
    attempts: int = 0  # HTTP attempts it took (retries after faults)
    latency_s: float | None = None  # POST until the 201 (retries included)
    sent_at: float = 0.0  # time.perf_counter() when the first POST left


@dataclass
class DriveResult:
    customers: list[Customer]
    started: float
    ended: float
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def retried(self) -> int:
        return sum(1 for c in self.customers if c.attempts > 1)


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    deadline: float,
    errors: Counter[str],
) -> tuple[int, Any, int]:
    """One request, retried on 5xx and connection errors with backoff until ``deadline`` (monotonic).
    Returns (status, body, attempts)."""
    attempts, delay = 0, 0.1
    while True:
        attempts += 1
        try:
            async with session.request(method, url, json=json, headers=headers) as r:
                body = await r.json(content_type=None) if r.content_length != 0 else None
                if r.status not in RETRYABLE:
                    return r.status, body, attempts
                errors[f"{method} {r.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors[f"{method} {type(exc).__name__}"] += 1
        if time.monotonic() + delay > deadline:
            raise AssertionError(f"{method} {url} kept failing for {attempts} attempts: {errors}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def drive_welcome(
    session: aiohttp.ClientSession,
    customers_urls: list[str],
    *,
    n: int,
    tag: str,
    concurrency: int = 12,
    rate: float | None = None,
    rename_every: int = 8,
    op_timeout_s: float = 60.0,
    start_index: int = 0,
    on_created: Callable[[Customer], None] | None = None,
) -> DriveResult:
    """Create ``n`` customers (even indexes with ``send_welcome``), spread over ``customers_urls`` (replicas),
    at most ``concurrency`` at once and, if ``rate`` is given, started at that many a second (open loop).
    Two customers in every ``rename_every`` (one with the welcome flag) are renamed once, right after creation."""
    errors: Counter[str] = Counter()
    sem = asyncio.Semaphore(concurrency)
    out = [
        Customer(
            index=i,
            email=f"c{i}-{tag}@example.com",
            full_name=f"Customer {i} {tag}",
            welcome=i % 2 == 0,
        )
        for i in range(start_index, start_index + n)
    ]

    async def one(c: Customer) -> None:
        base = customers_urls[c.index % len(customers_urls)]
        async with sem:
            t0 = time.monotonic()
            c.sent_at = time.perf_counter()
            status, body, attempts = await _call(
                session,
                "POST",
                f"{base}/v1/customers",
                json={"full_name": c.full_name, "email": c.email, "send_welcome": c.welcome},
                headers={"Idempotency-Key": f"create-{tag}-{c.index}", "X-Request-ID": f"{tag}-{c.index}"},
                deadline=t0 + op_timeout_s,
                errors=errors,
            )
            assert status == 201, f"creating {c.email}: {status} {body}"
            c.id, c.version, c.attempts = body["id"], body["version"], attempts
            c.latency_s = time.monotonic() - t0
            if on_created is not None:
                on_created(c)
            if rename_every and c.index % rename_every in (0, 1):
                # right away: the update races the created event through every consumer
                await rename(session, base, c, deadline=t0 + op_timeout_s, errors=errors)

    started = time.monotonic()
    tasks = []
    for k, c in enumerate(out):
        if rate:
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(c)))
    await asyncio.gather(*tasks)
    return DriveResult(out, started, time.monotonic(), errors)


async def rename(
    session: aiohttp.ClientSession, base: str, c: Customer, *, deadline: float, errors: Counter[str]
) -> None:
    """PATCH the name with If-Match; after a lost response the retry sees 412, reads the customer, and stops if
    the change is already there."""
    new_name = f"{c.full_name} renamed"
    url = f"{base}/v1/customers/{c.id}"
    version = c.version
    while True:
        status, body, _ = await _call(
            session,
            "PATCH",
            url,
            json={"full_name": new_name},
            headers={"If-Match": f'"{version}"'},
            deadline=deadline,
            errors=errors,
        )
        if status == 200:
            break
        assert status == 412, f"renaming {c.email}: {status} {body}"
        status, body, _ = await _call(session, "GET", url, deadline=deadline, errors=errors)
        assert status == 200, f"reading {c.email}: {status} {body}"
        if body["full_name"] == new_name:
            break
        version = body["version"]
    c.full_name, c.version, c.renamed = new_name, body["version"], True


# ------------------------------------------------------------------------------------------------- observation


def mailbox_of(messages: Iterable[Any]) -> dict[str, list[str]]:
    """{recipient (lower case): [Message-ID of each message received for it]} from parsed email messages."""
    out: dict[str, list[str]] = {}
    for m in messages:
        for _, addr in email.utils.getaddresses([str(m["To"])]):
            out.setdefault(addr.lower(), []).append(str(m["Message-ID"]))
    return out


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self, limit: int = 25) -> str:
        extra = f"\n... and {len(self.violations) - limit} more" if len(self.violations) > limit else ""
        return "\n".join(self.violations[:limit]) + extra + f"\nstats: {self.stats}"


async def backlog(databases: Mapping[str, str]) -> dict[str, int]:
    """Unpublished outbox rows per service."""
    out = {}
    for name, dsn in databases.items():
        conn = await asyncpg.connect(dsn)
        try:
            out[name] = int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
        finally:
            await conn.close()
    return out


async def queue_depths(amqp: AbstractConnection, topology: Topology) -> dict[str, int]:
    """Ready messages in every main, retry and dead-letter queue of the topology."""
    out: dict[str, int] = {}
    channel = await amqp.channel()
    try:
        for spec in QUEUES:
            names = [topology.queue(spec.name), topology.dlq(spec.name)]
            names += [topology.retry_queue(spec.name, d) for d in sorted(set(topology.retry_delays_ms))]
            for name in names:
                q = await channel.declare_queue(name, passive=True)
                out[name] = int(q.declaration_result.message_count or 0)
    finally:
        await channel.close()
    return out


async def _state_violations(
    databases: Mapping[str, str],
    customers: list[Customer],
    mailbox: Mapping[str, list[str]],
    rejected: set[str],
    allow_resent: bool,
) -> tuple[list[str], dict[str, Any]]:
    ids = [uuid.UUID(c.id) for c in customers if c.id]
    problems: list[str] = []
    conns = {name: await asyncpg.connect(dsn) for name, dsn in databases.items()}
    try:
        rows_c = {
            str(r["id"]): r
            for r in await conns["customers"].fetch(
                "SELECT id, full_name, version, portal_access FROM customers WHERE id = ANY($1::uuid[])", ids
            )
        }
        accounts: dict[str, list[asyncpg.Record]] = {}
        for r in await conns["accounts"].fetch(
            "SELECT customer_id, full_name, customer_sequence, profile_sequence FROM accounts "
            "WHERE customer_id = ANY($1::uuid[])",
            ids,
        ):
            accounts.setdefault(str(r["customer_id"]), []).append(r)
        deliveries: dict[str, list[asyncpg.Record]] = {}
        for r in await conns["notifications"].fetch(
            "SELECT customer_id, status, template FROM deliveries WHERE customer_id = ANY($1::uuid[])", ids
        ):
            deliveries.setdefault(str(r["customer_id"]), []).append(r)
        hosts = {
            str(r["customer_id"]): r
            for r in await conns["visitors"].fetch(
                "SELECT customer_id, full_name, sequence FROM hosts WHERE customer_id = ANY($1::uuid[])", ids
            )
        }
        pending = await conns["notifications"].fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'")
        unpublished = {
            n: await c.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") for n, c in conns.items()
        }
    finally:
        for c in conns.values():
            await c.close()

    resent = 0
    outcomes: Counter[str] = Counter()
    for c in customers:
        if c.id is None:
            problems.append(f"{c.email}: never created")
            continue
        row = rows_c.get(c.id)
        if row is None:
            problems.append(f"{c.email}: not in customers")
            continue
        if row["full_name"] != c.full_name or row["version"] != c.version:
            problems.append(f"{c.email}: customers has {row['full_name']!r} v{row['version']}, client saw v{c.version}")
        acc = accounts.get(c.id, [])
        dels = deliveries.get(c.id, [])
        got = mailbox.get(c.email.lower(), [])
        host = hosts.get(c.id)
        if host is None or host["sequence"] != row["version"] or host["full_name"] != row["full_name"]:
            problems.append(f"{c.email}: visitors holds {host and dict(host)}, newest is v{row['version']}")
        if not c.welcome:
            if acc or dels or got or row["portal_access"] != "none":
                problems.append(
                    f"{c.email} (no welcome): {len(acc)} accounts, {len(dels)} deliveries, {len(got)} emails, "
                    f"portal access {row['portal_access']}"
                )
            continue
        if len(acc) != 1:
            problems.append(f"{c.email}: {len(acc)} accounts")
        else:
            a = acc[0]
            if a["full_name"] != row["full_name"] or a["customer_sequence"] != row["version"]:
                problems.append(
                    f"{c.email}: account holds {a['full_name']!r} seq {a['customer_sequence']}, "
                    f"newest is {row['full_name']!r} v{row['version']}"
                )
        if row["portal_access"] != "invited":
            problems.append(f"{c.email}: customers says portal access {row['portal_access']}")
        statuses = sorted(d["status"] for d in dels if d["template"] == "welcome")
        outcomes[",".join(statuses) or "none"] += 1
        if c.email.lower() in rejected:
            if statuses != ["failed"] or got:
                problems.append(f"{c.email} (rejected by the server): deliveries {statuses}, {len(got)} emails")
        else:
            distinct = set(got)
            if statuses != ["sent"] or len(distinct) != 1:
                problems.append(f"{c.email}: deliveries {statuses}, {len(got)} emails ({len(distinct)} distinct)")
            elif len(got) > 1:
                resent += len(got) - 1
                if not allow_resent:
                    problems.append(f"{c.email}: the same email ({got[0]}) received {len(got)} times")
    known = {c.email.lower() for c in customers}
    tags = {c.email.split("-", 1)[1] for c in customers}
    strangers = [a for a in mailbox if a not in known and any(a.endswith(t) for t in tags)]
    if strangers:
        problems.append(f"emails to addresses nobody created: {strangers[:5]}")
    if pending:
        problems.append(f"{pending} deliveries still pending")
    if any(unpublished.values()):
        problems.append(f"unpublished outbox rows: {unpublished}")
    stats = {
        "customers": len(customers),
        "welcome": sum(c.welcome for c in customers),
        "renamed": sum(c.renamed for c in customers),
        "delivery_outcomes": dict(outcomes),
        "emails_received": sum(len(mailbox.get(c.email.lower(), [])) for c in customers),
        "resent_same_message_id": resent,
    }
    return problems, stats


async def wait_quiescent(
    databases: Mapping[str, str],
    amqp: AbstractConnection,
    topology: Topology,
    customers: list[Customer],
    mailbox: Callable[[], Mapping[str, list[str]]],
    *,
    rejected: set[str] = frozenset(),  # type: ignore[assignment]
    allow_resent: bool = False,
    timeout: float = 60.0,
) -> float:
    """Wait until nothing is in flight (outboxes, main and retry queues, pending deliveries) and the outcomes hold,
    seen twice in a row; at most ``timeout`` seconds (then ``check`` says what is missing). Returns seconds."""
    t0 = time.monotonic()
    calm = 0
    while time.monotonic() - t0 < timeout:
        depths = await queue_depths(amqp, topology)
        in_flight = {k: v for k, v in depths.items() if v and not k.endswith(".dlq")}
        problems: list[str] = ["in flight"] if in_flight else []
        if not problems:
            problems, _ = await _state_violations(databases, customers, mailbox(), rejected, allow_resent)
        calm = 0 if problems else calm + 1
        if calm >= 2:
            break
        await asyncio.sleep(0.3)
    return round(time.monotonic() - t0, 1)


async def check(
    databases: Mapping[str, str],
    amqp: AbstractConnection,
    topology: Topology,
    customers: list[Customer],
    mailbox: Mapping[str, list[str]],
    *,
    expected_dead_letters: Mapping[str, Counter[bytes]] | None = None,
    rejected: set[str] = frozenset(),  # type: ignore[assignment]
    allow_resent: bool = False,
) -> Report:
    """Every outcome (see the module's docstring). Takes the dead letters out of their queues to compare them:
    run it once, at the end. ``expected_dead_letters``: {logical queue name: Counter of message bodies}."""
    problems, stats = await _state_violations(databases, customers, mailbox, rejected, allow_resent)
    depths = await queue_depths(amqp, topology)
    stuck = {k: v for k, v in depths.items() if v and not k.endswith(".dlq")}
    if stuck:
        problems.append(f"messages left in queues: {stuck}")
    expected = expected_dead_letters or {}
    dead: dict[str, Counter[bytes]] = {}
    channel = await amqp.channel()
    try:
        for spec in QUEUES:
            queue = await channel.declare_queue(topology.dlq(spec.name), passive=True)
            got: Counter[bytes] = Counter()
            while (message := await queue.get(fail=False, timeout=2)) is not None:
                await message.ack()
                got[message.body] += 1
            dead[spec.name] = got
            want = expected.get(spec.name, Counter())
            if got != want:
                missing, extra = want - got, got - want
                problems.append(
                    f"dead letters of {spec.name}: {sum(missing.values())} expected missing, "
                    f"{sum(extra.values())} unexpected: {[b[:120] for b in extra][:3]}"
                )
    finally:
        await channel.close()
    stats["dead_letters"] = {k: sum(v.values()) for k, v in dead.items() if v}
    return Report(problems, stats)


async def amqp_connect(url: str) -> aio_pika.abc.AbstractRobustConnection:
    return await aio_pika.connect_robust(url)
