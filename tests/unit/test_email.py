"""The fast email validation (shared.text.Email) accepts, refuses and normalizes exactly as pydantic's EmailStr:
same result, or the same error, for every address hypothesis and the edge cases below come up with."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, EmailStr, TypeAdapter, ValidationError

from shared import text
from shared.text import Email

SLOW = TypeAdapter(EmailStr)
FAST = TypeAdapter(Email)


def outcome(adapter: TypeAdapter[Any], value: str) -> tuple[str, str]:
    try:
        return "ok", adapter.validate_python(value)
    except ValidationError as exc:
        (error,) = exc.errors()
        return error["type"], error["msg"]


def same(value: str) -> None:
    text._valid_domains.clear()  # the first sight of a domain (slow, then remembered) and the second (fast)
    first, second = outcome(FAST, value), outcome(FAST, value)
    assert first == second == outcome(SLOW, value), value


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
LABELS = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=0, max_size=70)
TLDS = st.sampled_from(
    [
        "com",
        "org",
        "COM",
        "io",
        "test",
        "localhost",
        "invalid",
        "local",
        "onion",
        "arpa",
        "123",
        "x",
        "xn--p1ai",
        "museum",
        "example",
        "co.uk",
        "-com",
        "com-",
        "c0m",
        "a" * 64,
    ]
)
DOMAINS = st.one_of(
    st.builds(lambda ls, t: ".".join([*ls, t]), st.lists(LABELS, min_size=0, max_size=4), TLDS),
    st.text(min_size=0, max_size=30),
)
LOCALS = st.one_of(st.text(ATEXT + ".", min_size=0, max_size=80), st.text(min_size=0, max_size=20))


@settings(max_examples=3000, deadline=None)
@given(local=LOCALS, domain=DOMAINS)
def test_every_generated_address_gets_what_emailstr_gives(local: str, domain: str) -> None:
    same(f"{local}@{domain}")


@pytest.mark.parametrize(
    "value",
    [
        "ada@example.com",
        "Ada.Lovelace@Example.COM",
        "a" * 64 + "@example.com",
        "a" * 65 + "@example.com",
        "a@" + ".".join(["b" * 63] * 3) + ".com",  # 200 characters
        "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".example.com",  # longer than 254
        "x@" + "y" * 63 + ".com",
        "x@" + "y" * 64 + ".com",
        ".ada@example.com",
        "ada.@example.com",
        "a..da@example.com",
        "ada@example",
        "ada@localhost",
        "ada@example.test",
        "ada@-example.com",
        "ada@example-.com",
        "ada@exa_mple.com",
        "ada@123.456",
        "ada@[127.0.0.1]",
        "Ada <ada@example.com>",
        " ada@example.com ",
        "ada@example.com\n",
        "ada@EXAMPLE.com",
        '"ada"@example.com',
        "ädä@example.com",
        "ada@exämple.com",
        "ada@xn--exmple-cua.com",
        "",
        "@",
        "ada@@example.com",
    ],
)
def test_edge_cases_get_what_emailstr_gives(value: str) -> None:
    same(value)


def test_the_schema_is_emailstrs_and_models_keep_a_plain_str() -> None:
    class M(BaseModel):
        email: Email

    assert FAST.json_schema() == SLOW.json_schema() == {"type": "string", "format": "email"}
    assert type(M(email="ada@Example.com").email) is str
    assert M(email="ada@Example.com").email == "ada@example.com"
