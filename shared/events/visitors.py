"""Events of the visitors service. Each is about one visit (envelope ``subject`` = the visit id, ``sequence`` = the
visit's version after the change) and says what the visit is *after* the change.

No personal data of the visitor travels in them (no name, email, phone, company, notes): a subscriber that needs
the visitor's details asks the visitors service. Ids, purpose, times, the host's customer id and the status
suffice for everything broadcast."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.events.base import Message, register

Purpose = Literal["tour", "meeting", "event", "other"]
VisitStatus = Literal["expected", "checked_in", "checked_out", "cancelled", "no_show"]


class VisitStateMixin(Message):
    """What every ``visitors.visit.*`` event carries."""

    visit_id: uuid.UUID = Field(description="The visit's id (also the envelope subject)")
    visitor_id: uuid.UUID = Field(description="The visitor's id (a person known to visitors only; never a customer)")
    host_customer_id: uuid.UUID | None = Field(
        description="The host's customer id; null for a visit without a host (an operator-led tour)"
    )
    purpose: Purpose = Field(description="Why the visitor comes: tour, meeting, event or other")
    expected_at: datetime = Field(description="Expected arrival (UTC)")
    status: VisitStatus = Field(description="The visit's status after the change")


@register
class VisitRegisteredV1(VisitStateMixin):
    """A visit was registered by an operator or by its host; the visitor is expected."""

    EVENT_TYPE = "visitors.visit.registered"
    EVENT_VERSION = 1

    expected_departure_at: datetime | None = Field(None, description="Expected departure (UTC), if given")
    registered_by: Literal["operator", "host"] = Field(description="Who registered it: an operator, or the host")


@register
class VisitCheckedInV1(VisitStateMixin):
    """The visitor arrived and was checked in (at the desk, by the host, or at the kiosk with the check-in code)."""

    EVENT_TYPE = "visitors.visit.checked_in"
    EVENT_VERSION = 1

    checked_in_at: datetime = Field(description="When the visitor was checked in (UTC)")
    by: Literal["operator", "host", "kiosk"] = Field(
        description="operator (by visit id), host (by visit id), or kiosk (by check-in code)"
    )


@register
class VisitCheckedOutV1(VisitStateMixin):
    """The visitor left and was checked out."""

    EVENT_TYPE = "visitors.visit.checked_out"
    EVENT_VERSION = 1

    checked_in_at: datetime = Field(description="When the visitor was checked in (UTC)")
    checked_out_at: datetime = Field(description="When the visitor was checked out (UTC)")
    by: Literal["operator", "host"] = Field(description="Who checked the visitor out")


@register
class VisitCancelledV1(VisitStateMixin):
    """An expected visit was cancelled by its host or an operator."""

    EVENT_TYPE = "visitors.visit.cancelled"
    EVENT_VERSION = 1

    cancelled_at: datetime = Field(description="When it was cancelled (UTC)")
    by: Literal["operator", "host"] = Field(description="Who cancelled it")


@register
class VisitNoShowV1(VisitStateMixin):
    """The visitor had not arrived some time (``VISITORS_NO_SHOW_AFTER_MINUTES``) after the expected arrival."""

    EVENT_TYPE = "visitors.visit.no_show"
    EVENT_VERSION = 1

    marked_at: datetime = Field(description="When the scheduler marked the visit as a no-show (UTC)")
