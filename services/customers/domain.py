"""Pure rules of the customer lifecycle. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

Kind = Literal["member", "contact"]
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Contract:
    starts_on: date
    ends_on: date | None
    state: str  # scheduled | active | ended | cancelled (what has been processed so far)
    cancelled: bool


def transitions(contract: Contract, today: date) -> list[str]:
    """The transitions due for a contract on ``today``, in order: ``started`` and/or ``ended``.

    A contract runs from starts_on to ends_on, both included, so it ends once today is after ends_on. A contract
    cancelled to end before it started never starts. After downtime both may be due at once (catch-up)."""
    due: list[str] = []
    state = contract.state
    if state == "scheduled":
        if contract.ends_on is not None and contract.ends_on < contract.starts_on:
            return ["ended"]  # cancelled before it began
        if contract.starts_on <= today:
            due.append("started")
            state = "active"
    if state == "active" and contract.ends_on is not None and contract.ends_on < today:
        due.append("ended")
    return due


def end_state(contract: Contract) -> str:
    return "cancelled" if contract.cancelled else "ended"


def status_on(contract: Contract, today: date) -> str:
    """The status shown to users: where the contract stands on ``today``."""
    if contract.ends_on is not None and contract.ends_on < today:
        return end_state(contract)
    if contract.ends_on is not None and contract.ends_on < contract.starts_on:
        return "cancelled"
    if contract.starts_on > today:
        return "scheduled"
    return "active"


def derive_kind(active_contracts: int) -> Kind:
    """A customer is a member while at least one contract is active, otherwise a contact. Nobody sets it."""
    return "member" if active_contracts > 0 else "contact"


def cancellation_problem(contract: Contract, ends_on: date, today: date) -> str | None:
    """Why a cancellation ending on ``ends_on`` is refused, or None when it is allowed."""
    if contract.cancelled:
        return "the contract is already cancelled"
    if contract.state in ("ended", "cancelled") or (contract.ends_on is not None and contract.ends_on < today):
        return "the contract has already ended"
    if ends_on < contract.starts_on - _ONE_DAY:
        return "ends_on cannot be more than one day before the contract starts"
    if contract.ends_on is not None and ends_on > contract.ends_on:
        return "a cancellation cannot move the end later than the contract's end"
    return None
