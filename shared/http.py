"""HTTP plumbing: the request pipeline every route runs in (request ids, the access check, problem+json errors
(RFC 9457), metrics and access lines per route), body parsing with pydantic, JSON responses."""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from random import getrandbits
from typing import Any, TypeVar

import orjson
from aiohttp import web
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, ValidationError

from shared.logging import correlation_id_var, log_fields, request_id_var
from shared.metrics import HTTP
from shared.tracing import current_ids, open_server_span

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T", bound=BaseModel)


class Problem(Exception):
    """Raise anywhere in a request to answer with an RFC 9457 problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def response(self, instance: str | None = None) -> web.Response:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return web.Response(status=self.status, body=orjson.dumps(body), content_type=PROBLEM, headers=self.headers)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=_default), status=status, content_type="application/json", headers=headers
    )


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def field_problem(status: int, title: str, field: str, message: str, type_: str = "urn:problem:validation") -> Problem:
    """A problem about one named field (``errors[0].field``), e.g. a 409 for a name in use."""
    return Problem(
        status,
        title,
        f"{field}: {message}",
        type_=type_,
        errors=[{"field": field, "message": message, "type": type_.rsplit(":", 1)[-1]}],
    )


def validation_problem(exc: ValidationError) -> Problem:
    errors = []
    for e in exc.errors(include_url=False):
        loc = [str(p) for p in e["loc"]]
        field = ".".join(loc) or "<body>"
        message = e["msg"]
        if e["type"] == "extra_forbidden":
            message = "unknown field"
        errors.append({"field": field, "message": message, "type": e["type"]})
    fields = ", ".join(sorted({err["field"] for err in errors}))
    return Problem(422, "Invalid request", f"Invalid fields: {fields}", type_="urn:problem:validation", errors=errors)


async def parse_body(request: web.Request, model: type[T]) -> T:
    """Read a JSON body and validate it against ``model``; every failure is a 4xx naming what is wrong."""
    if request.content_type != "application/json":
        raise Problem(
            415, "Unsupported media type", "Send the body as application/json", type_="urn:problem:media-type"
        )
    raw = await request.read()  # aiohttp enforces client_max_size (413)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Malformed JSON", str(exc), type_="urn:problem:malformed-json") from None
    if not isinstance(data, dict):
        raise Problem(
            422,
            "Invalid request",
            "The body must be a JSON object",
            type_="urn:problem:validation",
            errors=[{"field": "<body>", "message": "must be a JSON object", "type": "object_type"}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from None


def parse_query(request: web.Request, model: type[T]) -> T:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_problem(exc) from None


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    """An opaque keyset cursor: the (created_at, id) of the last row of a page."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of ``encode_cursor``; anything else is a 400 naming the cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, row_id = raw.partition("|")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive time")
        return when.astimezone(UTC), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise Problem(
            400,
            "Invalid cursor",
            "The cursor is not one this API returned",
            type_="urn:problem:validation",
            errors=[{"field": "cursor", "message": "not a cursor from this API", "type": "cursor"}],
        ) from None


def parse_uuid(value: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Problem(404, "Not found", f"No resource with {field} {value!r}") from None


def route_name_of(path: str) -> str:
    """A route's name in metrics, logs and spans: its path template as aiohttp shows it (``/v1/customers/{id}``),
    "unmatched" for the route of paths no other route has."""
    if path == UNMATCHED_PATH:
        return "unmatched"
    return web.DynamicResource(path).canonical if "{" in path else path


Authorize = Callable[[web.Request], Awaitable[None] | None]
"""Decides whether the request may reach its handler: returns None (yes), raises a ``Problem`` (no), or returns
an awaitable that does one of the two once it has waited for what it needs (see shared.auth)."""
Authorizer = Callable[[Any], Authorize | None]
"""Makes a route's ``Authorize`` from its handler (its policy); None for a route open to anyone."""


def pipelined(handler: Handler, authorize: Authorize | None, path: str, lines: AccessLines | None = None) -> Handler:
    """``handler`` inside the request pipeline every route of every service runs in: the request id, the span, the
    access check, the problem document for whatever the handler raised, metrics and the access line. Wrapped
    around each route when it is added (shared.service.add_routes) rather than as an aiohttp middleware: the
    middleware machinery (a partial and a coroutine per layer, aiohttp's own layer for sub-applications) was a
    measurable share of a read's CPU. Unmatched paths get a route of their own (``unmatched``) so that they too
    answer with a problem document. What is the same for every request of the route (its name, whether its
    requests are logged, its access check) is worked out here, once. ``lines`` decides which requests get an
    access line (``AccessLines``); without it, every one."""
    route_name = route_name_of(path)
    logged = route_name not in QUIET_ROUTES
    wanted = lines.wanted if lines is not None else None

    @functools.wraps(handler)
    async def route(request: web.Request) -> web.StreamResponse:
        headers = request.headers
        request_id = headers.get("X-Request-ID")
        if request_id is None or not _TOKEN_CHARS.fullmatch(request_id):  # 1-128 printable ASCII, else a new one
            request_id = new_request_id()
        request_id_var.set(request_id)
        correlation_id_var.set(request_id)
        request[REQUEST_ID] = request_id
        started = time.perf_counter()
        method = request.method
        span, close_span = open_server_span(method, route_name, headers.get("traceparent"))
        try:
            try:
                if len(request.raw_path) > MAX_URL_BYTES:
                    raise Problem(414, "URI too long", f"The request target is longer than {MAX_URL_BYTES} bytes")
                if authorize is not None:
                    waiting = authorize(request)
                    if waiting is not None:
                        await waiting
                response = await handler(request)
                status = response.status
            except Problem as p:
                response, status = p.response(request.path), p.status
            except web.HTTPException as exc:
                response, status = _http_exception(request, exc), exc.status
            except Exception:
                log.exception("unhandled error", extra={"method": request.method, "path": request.path})
                problem = Problem(500, "Internal server error", "The error was logged with the request id")
                response, status = problem.response(request.path), 500
            if span is not None and span.is_recording():
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            elapsed = time.perf_counter() - started
            response.headers["X-Request-ID"] = request_id
            HTTP.observe(method, route_name, status, elapsed)
            if logged and access_log.isEnabledFor(logging.INFO) and (wanted is None or wanted(status, elapsed)):
                # the route template, never the path or query: no personal data (emails in filters) reaches the logs
                fields = {"method": method, "route": route_name, "status": status, "ms": round(elapsed * 1000, 1)}
                log_fields(access_log, logging.INFO, "request", fields, current_ids())
        finally:
            close_span()
        return response

    route.__pipelined__ = True  # type: ignore[attr-defined]
    return route


class AccessLines:
    """Which requests of one route (a method and path template; HEAD counts with GET, which answers it) get an
    access line: every one that failed (status 400 and up) or took ``SLOW_S`` or more, and of the others the first
    ``burst`` in a window of a second (0: all of them). The others are counted, and at the window's end (or when
    the next window starts, whichever comes first) one line, "requests not logged", gives the method, the route,
    their ``count`` and the slowest one's ``ms_max``. A window starts with the first request counted after the last
    one ended.

    Why not a line for every request: a line cost about as much CPU as the rest of what the pipeline adds to a
    read, and thousands of identical lines a second are more than anyone reads or a log shipper wants, while the
    metrics count and time every request exactly (the same reasoning as zap's production sampling: the first 100
    a second, then a sample). What an operator looks for in access lines, errors and slow requests, is always
    there. The price: a successful request past the burst has no line with its request id (the metrics still count
    it; with an exporter its span is exported as ever); ``ACCESS_LOG_BURST=0`` writes a line for every request."""

    SLOW_S = 1.0

    def __init__(self, method: str, route: str, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.method = method
        self.route = route
        self.burst = burst
        self._clock = clock
        self._window_end = -1.0
        self._in_window = 0
        self._unlogged = 0
        self._slowest = 0.0
        self._report: asyncio.TimerHandle | None = None

    def wanted(self, status: int, seconds: float) -> bool:
        """Whether this request (its status, its duration) gets an access line; if not, it is counted."""
        if status >= 400 or seconds >= self.SLOW_S or self.burst <= 0:
            return True
        now = self._clock()
        if now >= self._window_end:
            if self._unlogged:  # the last window's count, before this one counts (its timer had no turn yet)
                self.report()
            self._window_end, self._in_window = now + 1.0, 0
        self._in_window += 1
        if self._in_window <= self.burst:
            return True
        self._unlogged += 1
        if seconds > self._slowest:
            self._slowest = seconds
        if self._report is None:
            # in a context of its own: the line is about no request (not about the one that scheduled it)
            self._report = asyncio.get_running_loop().call_later(
                self._window_end - now, self.report, context=contextvars.Context()
            )
        return False

    def report(self) -> None:
        """Write the "requests not logged" line of what was counted (at the window's end, and at shutdown)."""
        if self._report is not None:
            self._report.cancel()
            self._report = None
        if self._unlogged:
            fields = {
                "method": self.method,
                "route": self.route,
                "count": self._unlogged,
                "ms_max": round(self._slowest * 1000, 1),
            }
            self._unlogged, self._slowest = 0, 0.0
            log_fields(access_log, logging.INFO, "requests not logged", fields)


def is_pipelined(handler: Any) -> bool:
    return getattr(handler, "__pipelined__", False) is True


UNMATCHED_PATH = "/{unmatched:.*}"
"""The route of every path no other route matches (indexed under "/", so aiohttp tries it last)."""


async def unmatched(request: web.Request) -> web.StreamResponse:
    """No route here: 405 with the methods allowed when another route has this path, else 404."""
    allowed: set[str] = set()
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not own:
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def new_request_id() -> str:
    """A random version-4 UUID as text, for a request that brought no id of its own, without ``uuid.uuid4()``'s
    system call for 16 random bytes and its UUID object on every request (a request id is unique, not secret)."""
    h = "%032x" % ((getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits, as uuid.UUID(version=4) sets them
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _http_exception(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    """What aiohttp raised (the router's 404 and 405, 413 for a body too large), as a problem document."""
    if exc.status < 400:
        return exc  # redirects and the like, as aiohttp would send them
    detail = None
    if exc.status == 413:
        detail = f"The body is larger than {request.app.get(MAX_BODY_KEY, MAX_BODY_BYTES)} bytes"
    elif exc.status == 405:
        detail = f"{request.method} is not allowed here"
    headers = {"Allow": exc.headers.get("Allow", "")} if exc.status == 405 else None
    return Problem(exc.status, exc.reason, detail, headers=headers).response(request.path)


MAX_URL_BYTES = 8190
"""Longest request target answered (414 problem above). The HTTP parser itself accepts up to PARSER_MAX_LINE, so
that a long URL gets this documented answer rather than the parser's plain-text 400."""
PARSER_MAX_LINE = 65536

QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}
ACCESS_LOGGER = "coworking.access"
access_log = logging.getLogger(ACCESS_LOGGER)


_TOKEN_CHARS = re.compile(r"[\x21-\x7e]{1,128}")
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
MAX_BODY_KEY = web.AppKey("max_body", int)
REQUEST_ID = web.RequestKey("request_id", str)
