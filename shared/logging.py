"""JSON logs that carry the request id, correlation id and event id of the work being done."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import time
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # formatted once a second, not once a line
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._time(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in (
            ("request_id", request_id_var),
            ("correlation_id", correlation_id_var),
            ("event_id", event_id_var),
        ):
            value = var.get()
            if value:
                out[key] = value
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """For people at a terminal: one line, the extras as key=value."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")]
        return f"{line} {' '.join(extras)}" if extras else line


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The services' handler: one line per record on stderr. In an event loop, lines wait up to ``interval_s`` and
    are written together (under load one write for many requests' lines, not one each: each write was a system
    call); lines of WARNING or above, and lines logged outside an event loop, are written at once, after whatever
    waits. What waits is written at exit too (``logging.shutdown`` flushes every handler)."""

    interval_s = 0.01

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str | tuple[Any, ...]] = []  # lines, or what ``add_fields`` makes lines of
        self._write_on: asyncio.AbstractEventLoop | None = None  # the loop that will write what waits

    def emit(self, record: logging.LogRecord) -> None:  # called holding self.lock (Handler.handle)
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._waiting.append(line)
        if record.levelno >= logging.WARNING or not self._deferred():
            self._write()

    def add_fields(
        self, level: int, logger: str, msg: str, fields: dict[str, Any], trace: tuple[int, int] | None
    ) -> None:
        """The line of ``log_fields``, made into text (JSON, as ``JsonFormatter`` formats a record of the same
        content) only when written: the time and the context's ids are taken now."""
        ids = (request_id_var.get(), correlation_id_var.get(), event_id_var.get())
        row = (self.formatter, time.time(), logging.getLevelName(level), logger, msg, ids, trace, fields)
        with self.lock:  # type: ignore[union-attr]
            self._waiting.append(row)
            due = self._write_on is not None and self._write_on.is_running()  # a write is due on this loop
            if level >= logging.WARNING or (not due and not self._deferred()):
                self._write()

    def _deferred(self) -> bool:
        loop = self._write_on
        if loop is not None and loop.is_running():
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread to write later
            return False
        loop.call_later(self.interval_s, self._write_waiting)
        self._write_on = loop
        return True

    def _write_waiting(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_on = None
            self._write()

    def _write(self) -> None:
        if not self._waiting:
            return
        lines = [item if isinstance(item, str) else _fields_line(*item) for item in self._waiting]
        self._waiting.clear()
        lines.append("")
        # a stream gone (closed at exit, a broken pipe) leaves nowhere to report it: the lines are dropped
        with contextlib.suppress(OSError, ValueError):
            self.stream.write("\n".join(lines))
            self.stream.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()
        super().flush()


def _fields_line(
    formatter: JsonFormatter,
    created: float,
    levelname: str,
    logger: str,
    msg: str,
    ids: tuple[str | None, ...],
    trace: tuple[int, int] | None,
    fields: dict[str, Any],
) -> str:
    """The line ``JsonFormatter`` writes for a record of this content, made for less: what is the same on every
    line of a logger, level and message is JSON made once (``_MIDDLES``), and one dict of the rest goes through
    orjson."""
    key = (formatter.service, levelname, logger, msg)
    middle = _MIDDLES.get(key)
    if middle is None:
        fixed = {"level": levelname.lower(), "service": formatter.service, "logger": logger, "msg": msg}
        middle = _MIDDLES[key] = orjson.dumps(fixed).decode()[1:-1]
    rest: dict[str, Any] = {}
    request_id, correlation_id, event_id = ids
    if request_id:
        rest["request_id"] = request_id
    if correlation_id:
        rest["correlation_id"] = correlation_id
    if event_id:
        rest["event_id"] = event_id
    if trace is not None:
        rest["trace_id"] = f"{trace[0]:032x}"
        rest["span_id"] = f"{trace[1]:016x}"
    rest.update(fields)
    tail = orjson.dumps(rest, default=str).decode()
    ts = formatter._time(created)
    return f'{{"ts":"{ts}",{middle},{tail[1:]}' if rest else f'{{"ts":"{ts}",{middle}}}'


_MIDDLES: dict[tuple[str, str, str, str], str] = {}


def log_fields(
    logger: logging.Logger, level: int, msg: str, fields: dict[str, Any], trace: tuple[int, int] | None = None
) -> None:
    """``logger.log(level, msg, extra=fields)`` for lines written on every request (the access log), for a fraction
    of the cost, with ``trace`` the (trace id, span id) the line belongs to. When the line would reach nothing but
    the services' own handler (``configure_logging``: no other handler or filter on the way, JSON format), it
    goes straight to that handler and is formatted only when written, without a LogRecord; otherwise (a test's
    handler, a handler an operator added, text format) as a record copied from a template (``quick_record``)
    through ``Logger.handle``, so handlers, filters and levels apply as to any record. Either way the record
    factory is not called: ``trace`` stands for the ids it would add."""
    if not logger.isEnabledFor(level):
        return
    handler = _only_handler(logger, level)
    if handler is not None:
        handler.add_fields(level, logger.name, msg, fields, trace)
    else:
        logger.handle(quick_record(logger.name, level, msg, {**_trace_fields(trace), **fields} if trace else fields))


def _trace_fields(trace: tuple[int, int]) -> dict[str, str]:
    return {"trace_id": format(trace[0], "032x"), "span_id": format(trace[1], "016x")}


def _only_handler(logger: logging.Logger, level: int) -> LineHandler | None:
    """The JSON ``LineHandler`` that alone would handle ``logger``'s lines of ``level``, if so."""
    current: logging.Logger | None = logger
    while current is not None and not current.handlers:
        if current.filters or not current.propagate:
            return None
        current = current.parent
    if current is None or current.filters or current.parent is not None or len(current.handlers) != 1:
        return None
    handler = current.handlers[0]
    if type(handler) is not LineHandler or handler.filters or handler.level > level:
        return None
    return handler if type(handler.formatter) is JsonFormatter else None


_TEMPLATES: dict[tuple[str, int], dict[str, Any]] = {}


def quick_record(name: str, level: int, msg: str, fields: dict[str, Any]) -> logging.LogRecord:
    """The record ``logging.getLogger(name).log(level, msg, extra=fields)`` would make, without the factory: the
    attributes that are the same on every record of a logger and level are copied from a template made once,
    only the time and the fields are new."""
    template = _TEMPLATES.get((name, level))
    if template is None:
        model = logging.LogRecord(name, level, "(unknown file)", 0, msg, (), None, "(unknown function)")
        template = _TEMPLATES[(name, level)] = dict(model.__dict__)
    record = logging.LogRecord.__new__(logging.LogRecord)
    attrs = record.__dict__
    attrs.update(template)
    now = time.time()
    attrs["msg"] = msg
    attrs["created"] = now
    attrs["msecs"] = int((now - int(now)) * 1000) + 0.0
    attrs["relativeCreated"] = (now - _START) * 1000
    attrs.update(fields)
    return record


_START: float = logging._startTime  # type: ignore[attr-defined]


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    # what no line of ours shows, not looked up for every record (the logging HOWTO's "Optimization"): the caller's
    # file and line (a stack walk), the thread, the process and its multiprocessing name; a fifth of the cost of a
    # line such as the access log's, written once per request
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    _TEMPLATES.clear()  # made again under these settings
    handler = LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our middleware logs; aiormq is chatty on reconnects
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
