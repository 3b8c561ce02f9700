"""Trace context (W3C ``traceparent``) across HTTP, the outbox and the bus, with OpenTelemetry.

An HTTP request continues the caller's trace (or starts one); an outbox row remembers the trace it was written
in and the relay sends it as the message's ``traceparent`` header; a consumer continues that trace while it
handles the message, so one customer's welcome flow is one trace across the four services, and every log line
carries its ``trace_id``. Spans are exported over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set;
otherwise only their ids are made (a trace a caller sampled is still recorded, and dropped)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()
_configured = False
_exporting = False


def configure(service: str, otlp_endpoint: str | None) -> None:
    """Install the process's tracer provider once (the first service of a process names it)."""
    global _configured, _exporting
    if _configured:
        return
    _exporting = bool(otlp_endpoint)
    resource = Resource.create({"service.name": f"coworking-{service}"})
    # without an exporter nothing reads the spans: keep the ids (trace context, log lines) and skip recording a
    # span nobody asked for (new traces); a caller's sampled trace is still recorded and its flag passed on
    sampler = None if otlp_endpoint else ParentBased(root=ALWAYS_OFF)
    provider = TracerProvider(resource=resource, sampler=sampler)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _install_log_ids()
    _configured = True


def _install_log_ids() -> None:
    """Stamp every log record, when it is made, with the trace and span it was logged in."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        for key, value in log_ids().items():
            setattr(record, key, value)
        return record

    logging.setLogRecordFactory(factory)


_tracer: trace.Tracer | None = None


def tracer() -> trace.Tracer:
    """The process's tracer, made once (the SDK builds a new one, through a deprecation wrapper, on every
    ``get_tracer``: a measurable share of a consumer's time per message)."""
    global _tracer
    if _tracer is None or not _configured:
        _tracer = trace.get_tracer("coworking")
    return _tracer


def current_traceparent() -> str | None:
    ids = _ids.get()
    if ids is not None:
        return f"00-{ids[0]:032x}-{ids[1]:016x}-00"
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def continued_span(
    name: str, traceparent: str | None, kind: SpanKind, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span | None]:
    """A span continuing the trace in ``traceparent`` (or a new trace without one), current while inside; an
    exception leaving the block is recorded on it (when it is recorded at all). None instead of a span when there
    would be nothing to record: see ``open_span``."""
    span, close = open_span(name, traceparent, kind, attributes)
    try:
        yield span
    except BaseException as exc:
        if span is not None and span.is_recording():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        close()


def open_span(
    name: str, traceparent: str | None, kind: SpanKind, attributes: Mapping[str, Any] | None = None
) -> tuple[Span | None, Callable[[], None]]:
    """``continued_span`` without the context manager, for the request path (one per request: the generator
    around it cost as much as the span): the span, current until ``close()`` is called, which also ends it.

    Without an exporter and without a caller's trace, nothing would record or export the span (a new trace, not
    sampled): only its ids are made (for log lines, ``current_ids``, and the traceparent passed on, unsampled),
    kept in a context variable of this module instead of an OpenTelemetry span and context (on every request
    and message: 0.5 us instead of 14 through the SDK); the span returned is then None."""
    if traceparent is None and _configured and not _exporting:
        return None, partial(_ids.reset, _ids.set((_new_id(128), _new_id(64))))
    parent = PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    span = tracer().start_span(name, context=parent, kind=kind, attributes=attributes)
    token = context.attach(trace.set_span_in_context(span))
    outer = _ids.set(None)  # inside this span, its ids are the current ones

    def close() -> None:
        _ids.reset(outer)
        context.detach(token)
        span.end()

    return span, close


def open_server_span(method: str, route: str, traceparent: str | None) -> tuple[Span | None, Callable[[], None]]:
    """``open_span`` for an HTTP request (name and attributes made only when a span is)."""
    if traceparent is None and _configured and not _exporting:
        return None, partial(_ids.reset, _ids.set((_new_id(128), _new_id(64))))
    attributes = {"http.request.method": method, "http.route": route}
    return open_span(f"{method} {route}", traceparent, SpanKind.SERVER, attributes)


_ids: ContextVar[tuple[int, int] | None] = ContextVar("coworking_trace_ids", default=None)
"""The (trace id, span id) of the current span that ``open_span`` made as ids only; None inside a real span."""


def current_ids() -> tuple[int, int] | None:
    """The current span's trace and span ids, or None outside any span."""
    ids = _ids.get()
    if ids is not None:
        return ids
    ctx = trace.get_current_span().get_span_context()
    return (ctx.trace_id, ctx.span_id) if ctx.is_valid else None


def _new_id(bits: int) -> int:
    """A random trace or span id, never 0 (invalid), as the SDK's ``RandomIdGenerator`` makes them."""
    return random.getrandbits(bits) or 1


def log_ids() -> dict[str, str]:
    ids = current_ids()
    if ids is None:
        return {}
    return {"trace_id": format(ids[0], "032x"), "span_id": format(ids[1], "016x")}
