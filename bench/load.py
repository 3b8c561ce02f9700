"""Load generators (closed loop for the HTTP calls, open loop for the welcome flow) and their statistics."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson

from bench.system import AMQP_URL, Sampler, System, cpu_seconds, machine_busy_seconds

JSON = {"Content-Type": "application/json"}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``inf`` values (flows that never completed) sort last and count."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def ms(seconds: float) -> float | None:
    """Seconds to rounded milliseconds for the report; None for a value that does not exist (nan/inf)."""
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return None
    return round(seconds * 1000, 1)


def session_for(system: System, limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"Authorization": f"Bearer {system.token}"},
        timeout=aiohttp.ClientTimeout(total=30),
    )


# ---------------------------------------------------------------------------------------------- closed loop


async def closed_loop(
    request: Callable[[int, int], Awaitable[int]],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    ok: int,
    sampler: Sampler | None = None,
    label: str = "",
) -> dict[str, Any]:
    """``concurrency`` workers, each sending its next request as soon as the previous one answered. Requests
    started during the warm-up are not measured."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    async def worker(w: int) -> None:
        n = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            try:
                status: int | str = await request(w, n)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            t1 = time.perf_counter()
            n += 1
            if t0 < measure_from:
                continue
            if status == ok:
                latencies.append(t1 - t0)
            else:
                errors[str(status)] += 1

    async def window() -> None:  # CPU over the measured window, after the warm-up
        if sampler is not None:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            sampler.begin(label)

    await asyncio.gather(window(), *(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - measure_from
    if sampler is not None:
        sampler.end()
    return {
        "concurrency": concurrency,
        "duration_s": round(wall, 2),
        "requests": len(latencies),
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else math.nan),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "_latencies": latencies,  # for merge(); dropped from the result file
    }


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One closed-loop result from several slices of the same measurement (see the harness: ceiling and service
    alternate in ABBA order so that a change in the machine's load meanwhile hits both alike)."""
    latencies = [x for p in parts for x in p["_latencies"]]
    wall = sum(p["duration_s"] for p in parts)
    errors: Counter[str] = Counter()
    for p in parts:
        errors.update(p["error_kinds"])
    return {
        "concurrency": parts[0]["concurrency"],
        "duration_s": round(wall, 2),
        "slices": len(parts),
        "slice_rps": [p["rps"] for p in parts],
        "requests": len(latencies),
        "rps": round(len(latencies) / wall, 1) if wall else 0.0,
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else math.nan),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }


async def seed_customers(system: System, n: int, concurrency: int = 16) -> list[str]:
    """Customers for the read benchmark (no welcome)."""
    ids: list[str] = []
    url = f"{system.urls['customers']}/v1/customers"
    async with session_for(system, concurrency) as session:

        async def one(i: int) -> None:
            body = {"full_name": f"Seed {i}", "email": f"seed{i}-{system.run_id}@example.com", "send_welcome": False}
            async with session.post(url, data=orjson.dumps(body), headers=JSON) as r:
                if r.status != 201:
                    raise RuntimeError(f"seeding failed: {r.status} {await r.text()}")
                ids.append((await r.json())["id"])

        sem = asyncio.Semaphore(concurrency)

        async def bounded(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(bounded(i) for i in range(n)))
    return ids


async def authenticate(system: System) -> None:
    """One authenticated request to customers, so that it holds accounts' signing keys (JWKS) from then on."""
    url = f"{system.urls['customers']}/v1/customers?limit=1"
    async with session_for(system, 1) as session, session.get(url) as r:
        if r.status != 200:
            raise RuntimeError(f"customers refused the bench's token: {r.status} {await r.text()}")


async def read_phase(
    system: System,
    ids: list[str],
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    sampler: Sampler,
    ceiling: bool = False,
) -> dict[str, Any]:
    """GET one of ``ids`` at random; from the customers service, or (``ceiling``) from bench/ceiling.py."""
    base = f"{system.ceiling_url}/customers/" if ceiling else f"{system.urls['customers']}/v1/customers/"
    label = "read ceiling" if ceiling else "read"
    rng = random.Random(7)
    async with session_for(system, concurrency) as session:

        async def get(w: int, n: int) -> int:
            async with session.get(base + rng.choice(ids)) as r:
                await r.read()
                return r.status

        return await closed_loop(
            get, concurrency=concurrency, duration=duration, warmup=warmup, ok=200, sampler=sampler, label=label
        )


async def write_phase(
    system: System, *, concurrency: int, duration: float, warmup: float, sampler: Sampler, ceiling: bool = False
) -> dict[str, Any]:
    """POST new customers (no welcome); to the customers service, or (``ceiling``) to bench/ceiling.py."""
    url = f"{system.ceiling_url}/customers" if ceiling else f"{system.urls['customers']}/v1/customers"
    label, tag = ("write ceiling", "c") if ceiling else ("write", "w")
    tag += secrets.token_hex(3)  # each call its own emails (the measurement runs in slices)
    async with session_for(system, concurrency) as session:

        async def post(w: int, n: int) -> int:
            body = {
                "full_name": f"Writer {w} {n}",
                "email": f"{tag}{w}-{n}-{system.run_id}@example.com",
                "send_welcome": False,
            }
            async with session.post(url, data=orjson.dumps(body), headers=JSON) as r:
                await r.read()
                return r.status

        return await closed_loop(
            post, concurrency=concurrency, duration=duration, warmup=warmup, ok=201, sampler=sampler, label=label
        )


# ----------------------------------------------------------------------------------------- welcome, open loop


@dataclass
class Flow:
    email: str
    request_id: str
    scheduled: float = 0.0  # perf_counter: when the POST was due (latencies count from here)
    sent: float = 0.0  # when it actually left
    responded: float = 0.0
    status: int | str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 201


@dataclass
class WelcomeResult:
    rate: float
    flows: list[Flow]
    start: float
    end: float
    wall0: float  # time.time() at perf_counter() == perf0
    perf0: float
    summary: dict[str, Any] = field(default_factory=dict)

    def wall(self, perf: float) -> float:
        return self.wall0 + (perf - self.perf0)


_welcome_runs = itertools.count(1)


async def welcome_phase(
    system: System, rate: float, *, duration: float, drain: float, sampler: Sampler | None = None
) -> WelcomeResult:
    """POSTs with send_welcome on a fixed timetable (``rate`` a second for ``duration`` seconds) whatever the
    responses; each flow ends when the SMTP server accepts its recipient's email."""
    assert system.smtp is not None
    smtp = system.smtp
    n = max(1, round(rate * duration))
    tag = f"{system.run_id}-r{rate:g}-{next(_welcome_runs)}"  # each run its own customers (--repeat)
    flows = [Flow(email=f"f{i}-{tag}@example.com", request_id=f"bench-{tag}-{i}") for i in range(n)]
    url = f"{system.urls['customers']}/v1/customers"
    async with session_for(system, 2000) as session:

        async def send(i: int, flow: Flow) -> None:
            body = {"full_name": f"Flow {i}", "email": flow.email, "send_welcome": True}
            flow.sent = time.perf_counter()
            try:
                async with session.post(
                    url, data=orjson.dumps(body), headers={**JSON, "X-Request-ID": flow.request_id}
                ) as r:
                    await r.read()
                    flow.status = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                flow.status = type(exc).__name__
            flow.responded = time.perf_counter()

        smtp.max_active = smtp.active
        if sampler is not None:
            sampler.begin(f"welcome {rate:g}/s")  # CPU over the send window
        perf0, wall0 = time.perf_counter(), time.time()
        start = perf0 + 0.05
        tasks = []
        for i, flow in enumerate(flows):
            flow.scheduled = start + i / rate
            delay = flow.scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i, flow)))
        end = start + n / rate
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        if sampler is not None:
            sampler.end()
        await asyncio.gather(*tasks)
    # drain: wait (at most `drain` s after the end of the window) for the emails still on their way
    deadline = end + drain
    waiting = [f.email for f in flows if f.ok]
    while waiting and time.perf_counter() < deadline:
        waiting = [e for e in waiting if e not in smtp.accepted]
        if waiting:
            await asyncio.sleep(0.05)
    result = WelcomeResult(rate=rate, flows=flows, start=start, end=end, wall0=wall0, perf0=perf0)
    result.summary = summarize_welcome(result, smtp.accepted, drain)
    result.summary["smtp_max_open_transactions"] = smtp.max_active
    return result


def summarize_welcome(res: WelcomeResult, accepted: dict[str, float], drain: float) -> dict[str, Any]:
    ok = [f for f in res.flows if f.ok]
    errors = Counter(str(f.status) for f in res.flows if not f.ok)
    done = {f.email: accepted[f.email] for f in ok if f.email in accepted}
    latencies = [done.get(f.email, math.inf) - f.scheduled for f in ok]  # missing emails count as infinite
    times = sorted(done.values())
    in_window = [t for t in times if res.start <= t <= res.end]
    # achieved: emails accepted a second during the send window, from the first acceptance (so that the
    # pipeline's latency at the start of the window is not counted as lost throughput; p99 covers latency)
    achieved = len(in_window) / (res.end - times[0]) if times and times[0] < res.end else 0.0
    # once the POSTs stop, the emails still in the pipeline show what the tail of it can do on its own
    after = [t for t in times if t > res.end]
    drain_rate = len(after) / (after[-1] - res.end) if len(after) >= 20 and after[-1] - res.end >= 0.5 else None
    http = [f.responded - f.scheduled for f in res.flows if f.responded]
    lag = [f.sent - f.scheduled for f in res.flows if f.sent]
    return {
        "offered_per_s": res.rate,
        "flows": len(res.flows),
        "achieved_per_s": round(achieved, 1),
        "accepted_in_window_per_s": round(len(in_window) / (res.end - res.start), 1),
        "completed": len(done),
        "p50_ms": ms(percentile(latencies, 50)),
        "p95_ms": ms(percentile(latencies, 95)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else math.nan),
        "http_p50_ms": ms(percentile(http, 50)),
        "http_p99_ms": ms(percentile(http, 99)),
        "client_lag_max_ms": ms(max(lag) if lag else math.nan),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "missing_after_drain": len(ok) - len(done),
        "drain_limit_s": drain,
        "last_email_after_window_s": round(times[-1] - res.end, 2) if times else None,
        "emails_after_window": len(after),
        "after_window_per_s": round(drain_rate, 1) if drain_rate is not None else None,
    }


def saturation_rate(summaries: list[dict[str, Any]]) -> float | None:
    """Highest offered rate with achieved >= 95% of offered and p99 < 1 s (and no errors or missing emails), in
    every run of it (``--repeat``)."""

    def ok(s: dict[str, Any]) -> bool:
        return (
            s["achieved_per_s"] >= 0.95 * s["offered_per_s"]
            and s["p99_ms"] is not None
            and s["p99_ms"] < 1000
            and s["errors"] == 0
            and s["missing_after_drain"] == 0
        )

    rates = {s["offered_per_s"] for s in summaries}
    good = [r for r in rates if all(ok(s) for s in summaries if s["offered_per_s"] == r)]
    return max(good) if good else None


# ------------------------------------------------------------------------------------ where the time goes


STAGES = (
    ("post_to_tx", "POST sent -> customers transaction"),
    ("customers_relay", "customers outbox row -> relay claims it"),
    ("to_accounts", "relay claim -> accounts consumer transaction"),
    ("accounts_relay", "accounts transaction -> relay claims the send_email command"),
    ("to_notifications", "relay claim -> notifications consumer transaction"),
    ("to_smtp", "delivery inserted -> SMTP MAIL FROM (dispatcher wake-up, claim, render, connect, EHLO)"),
    ("smtp", "SMTP MAIL FROM -> message accepted (RCPT, DATA)"),
)


async def stage_breakdown(system: System, res: WelcomeResult) -> dict[str, dict[str, float | None]]:
    """Per-flow timestamps from the services' own tables, joined on the X-Request-ID the bench sent (it is the
    correlation id of every event and delivery the flow causes). PostgreSQL's now() is the start of the
    transaction: outbox.created_at is when the writing transaction began, published_at when the relay's claiming
    transaction began; inbox.received_at is the start of the consumer's transaction;
    start of the dispatcher's round that sent it. All on the same machine clock as the bench's time.time()."""
    assert system.smtp is not None
    like = res.flows[0].request_id.rsplit("-", 1)[0] + "-%"
    dbs = system.databases
    c = await asyncpg.connect(dbs["customers"])
    a = await asyncpg.connect(dbs["accounts"])
    n = await asyncpg.connect(dbs["notifications"])
    try:
        c_rows = await c.fetch(
            "SELECT correlation_id, event_id, created_at, published_at FROM outbox WHERE correlation_id LIKE $1",
            like,
        )
        a_in = await a.fetch(
            "SELECT event_id, received_at FROM inbox WHERE consumer = 'accounts.customer-events' "
            "AND event_id = ANY($1::uuid[])",
            [r["event_id"] for r in c_rows],
        )
        a_out = await a.fetch(
            "SELECT correlation_id, event_id, created_at, published_at FROM outbox "
            "WHERE correlation_id LIKE $1 AND routing_key LIKE 'notifications.send_email%'",
            like,
        )
        n_in = await n.fetch(
            "SELECT event_id, received_at FROM inbox WHERE consumer = 'notifications.send-email' "
            "AND event_id = ANY($1::uuid[])",
            [r["event_id"] for r in a_out],
        )
        deliveries = await n.fetch(
            "SELECT correlation_id, to_email, created_at FROM deliveries WHERE correlation_id LIKE $1", like
        )
    finally:
        await asyncio.gather(c.close(), a.close(), n.close())

    def ts(v: Any) -> float | None:
        return v.timestamp() if v is not None else None

    c_by = {r["correlation_id"]: r for r in c_rows}
    a_in_by = {r["event_id"]: ts(r["received_at"]) for r in a_in}
    a_out_by = {r["correlation_id"]: r for r in a_out}
    n_in_by = {r["event_id"]: ts(r["received_at"]) for r in n_in}
    d_by = {r["correlation_id"]: r for r in deliveries}
    samples: dict[str, list[float]] = {k: [] for k, _ in STAGES}
    for f in res.flows:
        co, ao, d = c_by.get(f.request_id), a_out_by.get(f.request_id), d_by.get(f.request_id)
        mail_at, smtp_at = system.smtp.mail_wall.get(f.email), system.smtp.accepted_wall.get(f.email)
        if co is None or ao is None or d is None or mail_at is None or smtp_at is None:
            continue
        points = [
            res.wall(f.scheduled),
            ts(co["created_at"]),
            ts(co["published_at"]),
            a_in_by.get(co["event_id"]),
            ts(ao["published_at"]),
            n_in_by.get(ao["event_id"]),
        ]
        if any(p is None for p in points):
            continue
        # the accounts relay stage starts at the accounts transaction (= inbox received_at = outbox created_at);
        # the dispatcher stage at the delivery's insert (clock_timestamp, inside the consumer transaction)
        bounds = [
            (points[0], points[1]),
            (points[1], points[2]),
            (points[2], points[3]),
            (points[3], points[4]),
            (points[4], points[5]),
            (ts(d["created_at"]), mail_at),
            (mail_at, smtp_at),
        ]
        for (key, _), (t0, t1) in zip(STAGES, bounds, strict=True):
            samples[key].append(t1 - t0)  # type: ignore[operator]
    out: dict[str, Any] = {
        key: {
            "n": len(v),
            "p50_ms": ms(percentile(v, 50)),
            "p99_ms": ms(percentile(v, 99)),
            "max_ms": ms(max(v) if v else math.nan),
        }
        for key, v in samples.items()
    }
    return out


# ---------------------------------------------------------------------------------------------- quiescence


async def settle(system: System, timeout: float, only_outbox_of: tuple[str, ...] | None = None) -> float:
    """Wait until every outbox is published and every main queue is empty (at most ``timeout`` s), so that one
    phase's leftovers do not load the next; with ``only_outbox_of``, only until those services' outboxes are
    published (the others are held). Returns the seconds it took."""
    t0 = time.perf_counter()
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    try:
        channel = await connection.channel()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            quiet = 0
            while time.perf_counter() - t0 < timeout:
                backlog = await system.backlogs(session, only_outbox_of)
                depths = await system.queue_depths(channel) if only_outbox_of is None else {}
                quiet = quiet + 1 if not any(backlog.values()) and not any(depths.values()) else 0
                if quiet >= 2:
                    break
                await asyncio.sleep(0.25)
    finally:
        await connection.close()
    return round(time.perf_counter() - t0, 1)


async def vacuum(system: System) -> float:
    """``VACUUM (ANALYZE)`` every database of the run, as PostgreSQL's autovacuum does on its own when it is on (the
    default; the CI machine's PostgreSQL runs with it off). Returns the seconds it took."""
    t0 = time.perf_counter()
    for url in system.databases.values():
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute("VACUUM (ANALYZE)")
        finally:
            await conn.close()
    return round(time.perf_counter() - t0, 1)


async def quiet(threshold: float = 0.2, window: float = 1.0, limit: float = 120.0) -> float:
    """Wait until the machine, this bench process aside, is quiet: under ``threshold`` of one core over a whole
    ``window`` (at most ``limit`` s). After ``settle`` every queue and outbox is empty, yet RabbitMQ may still be
    copying its quorum-queue write-ahead log into segment files and PostgreSQL vacuuming what the last phase wrote
    (seconds of a core after the write phase): a rate measured then would pay for the phase before it. Returns the
    seconds it waited."""
    t0 = time.perf_counter()
    while True:
        busy, mine = machine_busy_seconds(), cpu_seconds(os.getpid())
        await asyncio.sleep(window)
        others = machine_busy_seconds() - busy - (cpu_seconds(os.getpid()) - mine)
        waited = time.perf_counter() - t0
        if others < threshold * window or waited >= limit:
            return round(waited, 1)


_BATCH_METRICS = ("consumer_batch_messages", "outbox_relay_batch_rows", "email_outcome_batch_rows")


async def batch_counters(system: System) -> dict[str, tuple[float, float]]:
    """(sum, count) of each batch histogram of each service, from its /metrics: ``<service> <metric> <queue>``."""
    out: dict[str, tuple[float, float]] = {}
    async with aiohttp.ClientSession() as session:
        for name, url in system.urls.items():
            async with session.get(f"{url}/metrics") as r:
                text = await r.text()
            for line in text.splitlines():
                for metric in _BATCH_METRICS:
                    for part in ("_sum", "_count"):
                        if line.startswith(metric + part):
                            labels, _, value = line.rpartition(" ")
                            queue = labels.partition('queue="')[2].partition('"')[0]
                            key = f"{name} {metric} {queue}".strip()
                            s, c = out.get(key, (0.0, 0.0))
                            out[key] = (s + float(value), c) if part == "_sum" else (s, c + float(value))
    return out


def mean_batches(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean batch size of each histogram between two ``batch_counters`` readings."""
    means = {}
    for key, (s, c) in after.items():
        s0, c0 = before.get(key, (0.0, 0.0))
        if c > c0:
            means[key] = round((s - s0) / (c - c0), 2)
    return means
