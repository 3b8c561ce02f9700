"""Pure rules of visits: the status machine and the check-in code."""

from __future__ import annotations

import re
import secrets

CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""32 characters that cannot be mistaken for one another when read aloud or typed at a kiosk: no 0/O, no 1/I."""
CODE_LENGTH = 6
"""32**6 (about a billion) codes; codes are unique among open visits only, and drawn again on a collision."""
_CODE = re.compile(f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}")

OPEN = ("expected", "checked_in")
FINAL = ("checked_out", "cancelled", "no_show")

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "check_in": ("expected",),
    "check_out": ("checked_in",),
    "cancel": ("expected",),
    "no_show": ("expected",),
}
"""The statuses each action may start from; any other status is a 409."""

WHY_NOT: dict[tuple[str, str], str] = {
    ("check_in", "checked_in"): "The visitor is already checked in",
    ("check_out", "expected"): "The visitor has not checked in yet",
    ("check_out", "checked_out"): "The visitor is already checked out",
    ("cancel", "cancelled"): "The visit is already cancelled",
    ("cancel", "checked_in"): "The visitor is already here: check them out instead",
}


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: str) -> str | None:
    """What a person types at a kiosk, as stored: upper case, without spaces or dashes. None when it cannot be a
    code at all."""
    code = re.sub(r"[\s\-]", "", raw).upper()
    return code if _CODE.fullmatch(code) else None


def allowed(action: str, status: str) -> bool:
    return status in TRANSITIONS[action]


def refusal(action: str, status: str) -> str:
    return WHY_NOT.get((action, status), f"A visit that is {status.replace('_', ' ')} cannot be changed that way")
