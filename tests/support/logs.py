"""Log lines as the services write them (``JsonFormatter``), formatted when they are logged: the request, event and
correlation ids come from the context of the code that logged the line, as in production."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import orjson

from shared.logging import JsonFormatter


class JsonLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))

    def of_queue(self, queue: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if str(line.get("queue", "")).endswith(queue)]

    @classmethod
    @contextlib.contextmanager
    def of(cls, logger: str) -> Iterator[JsonLines]:
        """The lines ``logger`` (and the loggers under it) writes inside the block."""
        lines, log = cls(), logging.getLogger(logger)
        level = log.level
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)  # at least what the services log
        log.addHandler(lines)
        try:
            yield lines
        finally:
            log.removeHandler(lines)
            log.setLevel(level)
