"""The services' log handler (``LineHandler``): in an event loop, lines wait a moment and go out together (one write
for many requests' access lines); warnings and errors go out at once with whatever waits before them, in order;
nothing waits outside a loop or past a flush. The access line's shortcut (``log_fields``) writes what the logging
machinery would have written, and steps aside when any other handler listens."""

from __future__ import annotations

import io
import logging

import orjson

from shared.logging import JsonFormatter, LineHandler, log_fields, request_id_var
from tests.support.logs import JsonLines
from tests.support.wait import wait_for


def logger_writing_to(stream: io.StringIO, name: str = "probe") -> logging.Logger:
    """A logger of its own (not under the process's root): its one handler is a JSON LineHandler."""
    log = logging.Logger(name, logging.INFO)
    handler = LineHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    log.addHandler(handler)
    return log


def lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


async def test_lines_logged_in_a_loop_are_written_together_a_moment_later_in_order():
    stream = io.StringIO()
    log = logger_writing_to(stream)
    request_id_var.set("req-1")
    log.info("first", extra={"n": 1})
    log_fields(log, logging.INFO, "request", {"method": "GET", "route": "/v1/x", "status": 200, "ms": 1.5})
    log.info("third", extra={"n": 3})
    assert stream.getvalue() == ""  # waiting for the write
    await wait_for(lambda: len(lines(stream)) == 3, timeout=2, what="the three lines")
    first, request, third = lines(stream)
    assert [first["msg"], request["msg"], third["msg"]] == ["first", "request", "third"]
    assert stream.getvalue().count("\n") == 3


async def test_the_shortcut_line_is_what_the_logging_machinery_writes():
    stream = io.StringIO()
    log = logger_writing_to(stream)
    request_id_var.set("req-2")
    fields = {"method": "GET", "route": "/v1/x", "status": 404, "ms": 2.0}
    log_fields(log, logging.INFO, "request", fields, (0xAB << 120, 0xCD))
    # the long way: a LogRecord with the ids the record factory adds (shared.tracing), then the formatter
    log.info("request", extra={"trace_id": "ab" + "0" * 30, "span_id": "0" * 14 + "cd", **fields})
    await wait_for(lambda: len(lines(stream)) == 2, timeout=2, what="both lines")
    short, long = lines(stream)
    assert short.pop("ts")[:19] == long.pop("ts")[:19]
    assert short == long
    assert short["request_id"] == "req-2" and short["status"] == 404


async def test_a_warning_is_written_at_once_after_what_waits():
    stream = io.StringIO()
    log = logger_writing_to(stream)
    log.info("waiting")
    log_fields(log, logging.INFO, "request", {"status": 200})
    log.warning("now")
    assert [line["msg"] for line in lines(stream)] == ["waiting", "request", "now"]


def test_outside_an_event_loop_a_line_is_written_at_once():
    stream = io.StringIO()
    log = logger_writing_to(stream)
    log.info("no loop here")
    log_fields(log, logging.INFO, "request", {"status": 201})
    assert [line["msg"] for line in lines(stream)] == ["no loop here", "request"]


async def test_a_flush_writes_what_waits():
    stream = io.StringIO()
    log = logger_writing_to(stream)
    log.info("at exit")  # logging.shutdown flushes every handler
    log.handlers[0].flush()
    assert [line["msg"] for line in lines(stream)] == ["at exit"]


async def test_with_another_handler_listening_the_shortcut_goes_through_the_logging_machinery():
    stream = io.StringIO()
    top = logger_writing_to(stream, "top")
    child = logging.Logger("top.access", logging.INFO)
    child.parent = top
    captured = JsonLines()
    child.addHandler(captured)
    log_fields(child, logging.INFO, "request", {"route": "/v1/y", "status": 500})
    assert [(line["msg"], line["route"], line["status"]) for line in captured.lines] == [("request", "/v1/y", 500)]
    await wait_for(lambda: lines(stream), timeout=2, what="the line on the top logger's handler too")
    assert lines(stream)[0]["route"] == "/v1/y"
    quiet = logging.Logger("top.quiet", logging.WARNING)
    quiet.parent = top
    quiet.addHandler(captured)
    log_fields(quiet, logging.INFO, "request", {"status": 200})
    assert len(captured.lines) == 1  # below the logger's level: nowhere
