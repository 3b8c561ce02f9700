"""String types for request models that keep what PostgreSQL, email headers and logs cannot take out of the
database: NUL anywhere, and control or line-separator characters in single-line fields (names, emails, filters)."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_FORBIDDEN_IN_LINE = {"Cc", "Zl", "Zp"}  # control characters (incl. NUL, CR, LF, TAB), line/paragraph separators


def _single_line(value: str) -> str:
    if any(unicodedata.category(ch) in _FORBIDDEN_IN_LINE for ch in value):
        raise ValueError("must be a single line without control characters")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


SINGLE_LINE = AfterValidator(_single_line)
SingleLine = Annotated[str, SINGLE_LINE]
"""One line of text: no control characters, no line or paragraph separators."""

NO_NUL = AfterValidator(_no_nul)
NoNul = Annotated[str, NO_NUL]
"""Free text (several lines allowed) without NUL, which PostgreSQL text cannot hold."""


# Put SINGLE_LINE after StringConstraints in an Annotated[...]: Annotated[SingleLine, StringConstraints(...)] would
# apply the length limits before stripping whitespace.


def _iso_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string")
    return value


ISO_TEXT = BeforeValidator(_iso_text)
"""Dates and times must come as ISO 8601 text: pydantic would otherwise read a number as a Unix time."""
