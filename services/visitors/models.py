"""Request models of the visitors API (validated at the edge: unknown fields refused, single-line text without
control characters) and the JSON shape of a visit."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.text import ISO_TEXT, NO_NUL, SINGLE_LINE, Email

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), SINGLE_LINE]
Phone = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=40, pattern=r"^\+?[0-9 ().\-/]+$")
]
Notes = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), NO_NUL]
Purpose = Literal["tour", "meeting", "event", "other"]
Status = Literal["expected", "checked_in", "checked_out", "cancelled", "no_show"]


class VisitorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full_name: Name = Field(description="The visitor's full name")
    email: Email = Field(
        description="The visitor's email: the registration email goes there, and a later visit "
        "with the same email (any case) is the same visitor"
    )
    company_name: Name | None = Field(None, description="The visitor's company")
    phone: Phone | None = Field(None, description="The visitor's phone number")


class VisitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    visitor: VisitorIn = Field(description="Who comes")
    host_customer_id: uuid.UUID | None = Field(
        None,
        description="The host (a member or contact). Operators: any host, or none for an operator-led tour. "
        "Members and contacts: omitted or their own id",
    )
    purpose: Purpose = Field(description="tour, meeting, event or other")
    expected_at: Annotated[AwareDatetime, ISO_TEXT] = Field(description="Expected arrival, with a time zone")
    expected_departure_at: Annotated[AwareDatetime, ISO_TEXT] | None = Field(
        None, description="Expected departure, after the arrival"
    )
    notes: Notes | None = Field(None, description="Anything the front desk should know (several lines allowed)")


class Cancellation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500), NO_NUL] | None = Field(
        None, description="Why, in the canceller's words"
    )


class NoBody(BaseModel):
    """Check-in and check-out take no fields (an empty JSON object, or no body at all)."""

    model_config = ConfigDict(extra="forbid")


class KioskCheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Annotated[str, StringConstraints(max_length=20), SINGLE_LINE] = Field(
        description="The check-in code from the registration email (case, spaces and dashes do not matter)"
    )


class VisitQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    date: dt.date | None = Field(None, description="Visits expected that day in the space's time zone")
    host_customer_id: uuid.UUID | None = None
    status: Status | None = None
    from_: AwareDatetime | None = Field(None, alias="from", description="Expected at or after this time")
    to: AwareDatetime | None = Field(None, description="Expected before this time")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)


def visit_json(row: Any) -> dict[str, Any]:
    """A visit row (joined with its visitor and host) as the API shows it."""

    def t(name: str) -> str | None:
        value = row[name]
        return value.isoformat() if value is not None else None

    return {
        "id": str(row["id"]),
        "status": row["status"],
        "purpose": row["purpose"],
        "expected_at": t("expected_at"),
        "expected_departure_at": t("expected_departure_at"),
        "notes": row["notes"],
        "check_in_code": row["check_in_code"],
        "host_customer_id": str(row["host_customer_id"]) if row["host_customer_id"] else None,
        "host_name": row["host_name"],
        "visitor": {
            "id": str(row["visitor_id"]),
            "full_name": row["visitor_full_name"],
            "email": row["visitor_email"],
            "company_name": row["visitor_company_name"],
            "phone": row["visitor_phone"],
            "anonymised_at": t("visitor_anonymised_at"),
        },
        "checked_in_at": t("checked_in_at"),
        "checked_out_at": t("checked_out_at"),
        "cancelled_at": t("cancelled_at"),
        "cancellation_reason": row["cancellation_reason"],
        "no_show_at": t("no_show_at"),
        "registered_by": row["registered_by_type"],
        "version": row["version"],
        "created_at": t("created_at"),
        "updated_at": t("updated_at"),
    }


# Response documents (for the OpenAPI document; the handlers build them with visit_json)


class VisitorOut(BaseModel):
    id: uuid.UUID
    full_name: str | None = Field(description="None once anonymised")
    email: str | None
    company_name: str | None
    phone: str | None
    anonymised_at: dt.datetime | None


class Visit(BaseModel):
    id: uuid.UUID
    status: Literal["expected", "checked_in", "checked_out", "cancelled", "no_show"]
    purpose: Literal["tour", "meeting", "event", "other"]
    expected_at: dt.datetime
    expected_departure_at: dt.datetime | None
    notes: str | None
    check_in_code: str = Field(description="Short code for the kiosk")
    host_customer_id: uuid.UUID | None
    host_name: str | None
    visitor: VisitorOut
    checked_in_at: dt.datetime | None
    checked_out_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    cancellation_reason: str | None
    no_show_at: dt.datetime | None
    registered_by: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class VisitPage(BaseModel):
    items: list[Visit]
    next_cursor: str | None
