"""String types for request models that keep what PostgreSQL, email headers and logs cannot take out of the
database: NUL anywhere, and control or line-separator characters in single-line fields (names, emails, filters)."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

import email_validator
from pydantic import AfterValidator, BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.networks import validate_email as pydantic_validate_email
from pydantic_core import core_schema

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


# ------------------------------------------------------------------------------------------------------- email

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_EMAIL = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_LOCAL_MAX, _EMAIL_MAX, _DOMAINS_KEPT = 64, 254, 4096
_valid_domains: dict[str, str] = {}  # domain as written -> its normalized form, for domains email-validator accepted


def _normalized_domain(domain: str) -> str | None:
    """The normalized form of an ASCII ``domain`` if email-validator accepts it in an address, else None (the
    caller then validates the whole address the slow way, which says why it is refused)."""
    known = _valid_domains.get(domain)
    if known is None:
        try:
            known = email_validator.validate_email(f"a@{domain}", check_deliverability=False).domain
        except email_validator.EmailNotValidError:
            return None
        if len(_valid_domains) >= _DOMAINS_KEPT:
            _valid_domains.clear()
        _valid_domains[domain] = known
    return known


def normalize_email(value: str) -> str:
    """Exactly pydantic's ``EmailStr`` validation (email-validator, without deliverability checks), with a fast path
    for the common case: a plain ASCII address (dot-atom local part, letters-digits-hyphens domain) whose domain
    was accepted before. Only the domain can make such an address invalid, besides the lengths checked here, and
    email-validator's work on the domain (IDNA, special-use names, label rules) is most of its cost: ~35 us an
    address, a twentieth of creating a customer. Any other address takes pydantic's own path."""
    match = _PLAIN_EMAIL.fullmatch(value)
    if match is not None and len(value) <= _EMAIL_MAX and len(match[1]) <= _LOCAL_MAX:
        domain = _normalized_domain(match[2])
        if domain is not None:
            return f"{match[1]}@{domain}"
    return pydantic_validate_email(value)[1]


class Email(str):
    """An email address, validated and normalized as pydantic's ``EmailStr`` (same errors, same JSON schema:
    ``{"type": "string", "format": "email"}``), faster on the plain addresses almost everyone has."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(normalize_email, core_schema.str_schema())

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        field_schema = handler(schema)
        field_schema.update(type="string", format="email")
        return field_schema
