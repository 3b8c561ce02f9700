"""What every service's application has in common: the database pool, the broker connection, the outbox relay,
the consumers, token verification, health and metrics, and a graceful stop. A service builds its app with
``create_service_app`` and adds its own routes and background workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import docs_page, openapi, revocation, tracing
from shared.auth import OPEN, REVOCATION_CHECK, VERIFIER_KEY, JwksVerifier, TokenVerifier, make_authorizer, policy
from shared.broker import Broker
from shared.consumer import Consumer, Handler
from shared.db import OutboxSignal, create_pool, migrate
from shared.http import (
    MAX_BODY_BYTES,
    MAX_BODY_KEY,
    PARSER_MAX_LINE,
    QUIET_ROUTES,
    UNMATCHED_PATH,
    AccessLines,
    Authorizer,
    is_pipelined,
    json_response,
    pipelined,
    route_name_of,
    unmatched,
)
from shared.metrics import DEAD_LETTERS
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.topology import Topology

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The live resources of one service process, reachable from handlers via ``request.app[RUNTIME]``."""

    name: str
    settings: ServiceSettings
    migrations_dir: Path
    consumers_spec: dict[str, dict[str, Handler]]
    topology: Topology
    pool: asyncpg.Pool | None = None
    broker: Broker | None = None
    relay: OutboxRelay | None = None
    consumers: list[Consumer] = field(default_factory=list)
    after_commit: dict[str, Callable[[], None]] = field(default_factory=dict)
    outbox_signal: OutboxSignal = field(default_factory=OutboxSignal)
    """Fired when a pooled connection that wrote outbox rows is released: wakes this process's relay."""

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "database pool not started"
        return self.pool


RUNTIME = web.AppKey("runtime", Runtime)


def create_service_app(
    name: str,
    settings: ServiceSettings,
    *,
    migrations_dir: Path,
    consumers: dict[str, dict[str, Handler]] | None = None,
    verifier: TokenVerifier | None = None,
    migrate_on_start: bool = True,
    cleanup_sql: tuple[str, ...] = (),
    revocations_queue: str | None = None,
) -> web.Application:
    """``revocations_queue``: the service's queue bound to accounts' revoked/restored events; their handlers are
    added to it and tokens of revoked accounts are refused (accounts itself checks its own table instead)."""
    common = settings.common
    tracing.configure(name, common.otel_exporter_otlp_endpoint)
    app = web.Application(client_max_size=MAX_BODY_BYTES, handler_args={"max_line_size": PARSER_MAX_LINE})
    app[AUTHORIZE] = make_authorizer()
    app[MAX_BODY_KEY] = MAX_BODY_BYTES
    app[ACCESS_LOG_BURST] = common.access_log_burst
    app[ACCESS_LINES] = []
    # the first cleanup (the server has stopped: no request is left): the cleanup contexts run before callbacks
    # appended after them, and one that fails stops the rest, which would drop the counts
    app.on_cleanup.insert(0, _report_unlogged)
    topology = Topology(common.amqp_prefix, tuple(common.retry_delays_ms))
    consumers = {q: dict(h) for q, h in (consumers or {}).items()}
    if revocations_queue is not None:
        # the service's own handlers for these events (which must then call shared.revocation) take precedence
        consumers[revocations_queue] = {**revocation.HANDLERS, **consumers.get(revocations_queue, {})}
    rt = Runtime(name, settings, migrations_dir, consumers, topology)
    app[RUNTIME] = rt
    if revocations_queue is not None:
        app[REVOCATION_CHECK] = revocation.RevocationCheck(lambda: rt.db)
    app[VERIFIER_KEY] = verifier or JwksVerifier(common.jwks_url, common.jwt_issuer, common.jwt_audience)

    async def database(app: web.Application) -> AsyncIterator[None]:
        if migrate_on_start:
            await migrate(settings.database_url, migrations_dir)
        rt.pool = await create_pool(
            settings.database_url, settings.db_pool_min, settings.db_pool_max, outbox_signal=rt.outbox_signal
        )
        yield
        await rt.pool.close()

    async def messaging(app: web.Application) -> AsyncIterator[None]:
        rt.broker = Broker(common.amqp_url, topology, name)
        rt.broker.start()
        rt.relay = OutboxRelay(
            rt.db,
            settings.database_url,
            rt.broker,
            batch_size=common.relay_batch_size,
            poll_interval_s=common.relay_poll_interval_s,
            min_round_interval_s=common.relay_min_round_interval_ms / 1000,
            extra_cleanup=cleanup_sql,
            signal=rt.outbox_signal,
        )
        if common.relay_enabled:
            rt.relay.start()
        else:
            log.warning("outbox relay off (RELAY_ENABLED=false): another replica must publish this service's events")
        for queue, handlers in rt.consumers_spec.items():
            consumer = Consumer(
                queue=queue,
                handlers=handlers,
                pool=rt.db,
                broker=rt.broker,
                retry_delays_ms=common.retry_delays_ms,
                prefetch=common.prefetch,
                workers=common.consumer_workers,
                batch_max=common.consumer_batch_max,
                after_commit=rt.after_commit.get(queue),
            )
            consumer.start()
            rt.consumers.append(consumer)
        yield
        # stop taking work first, let in-flight messages finish, flush the outbox, then disconnect
        await asyncio.gather(*(c.stop(common.shutdown_grace_s) for c in rt.consumers))
        await rt.relay.stop()
        await rt.broker.close()

    async def verifier_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        v = app[VERIFIER_KEY]
        if isinstance(v, JwksVerifier):
            await v.close()

    app.cleanup_ctx.extend([database, messaging, verifier_ctx])
    system = web.RouteTableDef()
    system.get("/healthz")(healthz)
    system.get("/readyz")(readyz)
    system.get("/metrics")(metrics)
    system.get("/openapi.json")(openapi_document)
    system.get("/docs")(docs)
    system.route("*", UNMATCHED_PATH)(not_found)
    add_routes(app, system)
    app.on_startup.append(_check_pipelined)
    return app


AUTHORIZE: web.AppKey[Authorizer] = web.AppKey("authorize")
ACCESS_LOG_BURST = web.AppKey("access_log_burst", int)
ACCESS_LINES = web.AppKey("access_lines", list[AccessLines])


async def _report_unlogged(app: web.Application) -> None:
    """At shutdown, the "requests not logged" lines of windows not over yet (see ``AccessLines``)."""
    for lines in app[ACCESS_LINES]:
        lines.report()


def add_routes(app: web.Application, table: web.RouteTableDef) -> None:
    """Add a service's routes, each inside the request pipeline (shared.http.pipelined: request id, access check,
    problem documents, metrics, access line). The only way routes are added: a route added any other way would
    answer without an access check, so a service with one refuses to start (``_check_pipelined``)."""
    authorizer = app[AUTHORIZE]
    burst = app.get(ACCESS_LOG_BURST)  # None (an app not made by create_service_app): an access line each request
    # the routes of one path together (in the order the paths first appear), so that aiohttp makes one resource
    # of them: a path's methods spread over several resources made every request try each in turn
    first: dict[str, int] = {}
    for i, route in enumerate(table):
        assert isinstance(route, web.RouteDef), route
        first.setdefault(route.path, i)
    for route in sorted(table, key=lambda r: first[r.path]):  # type: ignore[attr-defined]
        assert isinstance(route, web.RouteDef), route
        lines = None
        name = route_name_of(route.path)
        if burst is not None and name not in QUIET_ROUTES:  # quiet routes have no access lines at all
            lines = AccessLines(route.method, name, burst)
            app[ACCESS_LINES].append(lines)
        handler = pipelined(route.handler, authorizer(route.handler), route.path, lines)
        # registered as aiohttp would register the route itself (a GET route answers HEAD too)
        web.RouteDef(route.method, route.path, handler, route.kwargs).register(app.router)


async def _check_pipelined(app: web.Application) -> None:
    bare = [
        f"{r.method} {r.resource.canonical if r.resource else '?'}"
        for r in app.router.routes()
        if not is_pipelined(r.handler)
    ]
    if bare:
        raise RuntimeError(f"routes added without the request pipeline (use shared.service.add_routes): {bare}")


@policy(OPEN)
async def not_found(request: web.Request) -> web.StreamResponse:
    """No route here: 404, or 405 with the methods allowed where another route has this path."""
    return await unmatched(request)


OPENAPI_INFO = web.AppKey("openapi_info", dict)


@policy(OPEN)
async def openapi_document(request: web.Request) -> web.Response:
    """This service's OpenAPI 3.1 document, generated from its routes and models."""
    return json_response(openapi_of(request.app))


@policy(OPEN)
async def docs(request: web.Request) -> web.Response:
    """The API reference for people: this service's OpenAPI document as a page."""
    return web.Response(text=docs_page.render(openapi_of(request.app)), content_type="text/html")


def openapi_of(app: web.Application) -> dict[str, Any]:
    rt = app[RUNTIME]
    info = app.get(OPENAPI_INFO, {})
    return openapi.build(
        app,
        title=f"Coworking {rt.name} API",
        version=info.get("version", "1.0.0"),
        description=info.get("description", f"The {rt.name} service of the coworking backend."),
    )


@policy(OPEN)
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok", "service": request.app[RUNTIME].name})


@policy(OPEN)
async def readyz(request: web.Request) -> web.Response:
    """Readiness: database reachable, broker connected, every consumer attached; outbox backlog reported."""
    rt = request.app[RUNTIME]
    checks: dict[str, Any] = {}
    ok = True
    try:
        async with asyncio.timeout(2):
            await rt.db.fetchval("SELECT 1")
        checks["database"] = "ok"
        if rt.relay is not None:
            checks["outbox_backlog"] = await rt.relay.backlog()
    except Exception as exc:
        ok = False
        checks["database"] = f"unavailable: {type(exc).__name__}"
    broker_ok = rt.broker is not None and rt.broker.connected
    checks["broker"] = "ok" if broker_ok else "disconnected"
    ok = ok and broker_ok
    consumers = {c.queue_name: ("attached" if c.attached else "detached") for c in rt.consumers}
    checks["consumers"] = consumers
    ok = ok and all(v == "attached" for v in consumers.values())
    if rt.consumers:
        # reported, never a reason to be unready: a dead letter waits for an operator, the service works on
        checks["dead_letters"] = await dead_letter_depths(rt)
        checks["retried_since_start"] = {c.queue_name: c.retried for c in rt.consumers}
    return json_response(
        {"status": "ready" if ok else "not ready", "service": rt.name, "checks": checks}, status=200 if ok else 503
    )


async def dead_letter_depths(rt: Runtime) -> dict[str, int | None]:
    """Each consumer queue's dead-letter depth (also the ``dead_letters`` gauge); None when it cannot be read."""
    if rt.broker is None:
        return {c.queue_name: None for c in rt.consumers}
    dlqs = {c.queue_name: rt.broker.topology.dlq(c.queue_name) for c in rt.consumers}
    try:
        async with asyncio.timeout(2):
            depths = await rt.broker.queue_depths(list(dlqs.values()))
    except Exception:
        depths = {}
    out = {queue: depths.get(dlq) for queue, dlq in dlqs.items()}
    for queue, n in out.items():
        if n is not None:
            DEAD_LETTERS.labels(queue).set(n)
    return out


@policy(OPEN)
async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if rt.relay is not None:
        with contextlib.suppress(Exception):
            await rt.relay.backlog()
    if rt.consumers:
        await dead_letter_depths(rt)
    resp = web.Response(body=generate_latest())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def run(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; aiohttp then stops accepting, finishes requests and runs the cleanups."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional on other platforms
        pass
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=15)
