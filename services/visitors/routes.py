"""Thin HTTP handlers of the visitors service: parse -> lock/store/outbox in one transaction -> respond.

Who may do what:
- operators register visits for any host (also a suspended one) or for none (an operator-led tour), and see and
  act on every visit;
- members and contacts register visits with themselves as host (``host_customer_id`` omitted or their own id;
  another id is a 403 whether or not it exists), and see, check in, check out and cancel only their own visits
  (anyone else's: 404). While suspended they can read and change nothing (403 ``customer-suspended``, from the
  hosts replica, whatever the token says);
- the kiosk (``POST /v1/check-ins``, by check-in code) runs with an operator's token: an open route would let
  anyone guess codes and learn who is expected.
"""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel

from services.visitors import domain, store, visits
from services.visitors.models import (
    Cancellation,
    KioskCheckIn,
    NoBody,
    Visit,
    VisitCreate,
    VisitPage,
    VisitQuery,
    visit_json,
)
from services.visitors.visits import By, InvalidTransition, Place
from shared.auth import CUSTOMER_ROLES, OPERATOR, Principal, policy, principal, roles
from shared.clock import Clock
from shared.events import VisitRegisteredV1
from shared.http import (
    REQUEST_ID,
    Problem,
    decode_cursor,
    encode_cursor,
    field_problem,
    json_response,
    parse_body,
    parse_query,
    parse_uuid,
)
from shared.idempotency import Idempotency
from shared.openapi import IDEMPOTENCY_KEY, describe
from shared.service import RUNTIME

CLOCK = web.AppKey("clock", Clock)
TIMEZONE = web.AppKey("timezone", ZoneInfo)
PLACE = web.AppKey("place", Place)
NO_SHOW_AFTER = web.AppKey("no_show_after", timedelta)

SERVICE = "visitors"
MAX_CODE_DRAWS = 20
routes = web.RouteTableDef()
M = TypeVar("M", bound=BaseModel)

HOSTS_AND_OPERATORS = roles("admin", *CUSTOMER_ROLES)
HOSTS_AND_OPERATORS_CHANGING = roles("admin", *CUSTOMER_ROLES, changes_state=True)


def _own_customer_id(who: Principal) -> uuid.UUID:
    if who.customer_id is None:  # a member or contact token always names its customer; refuse one that does not
        raise Problem(403, "Forbidden", "The access token names no customer")
    return who.customer_id


def _acting_as(who: Principal) -> By:
    return "operator" if who.role == "admin" else "host"


def _etag(row: Any) -> dict[str, str]:
    return {"ETag": f'"{row["version"]}"'}


def _not_found(visit_id: object) -> NoReturn:
    raise Problem(404, "Not found", f"No visit {visit_id}")


def _visible(who: Principal, row: Any | None) -> bool:
    """Operators see every visit; a member or contact only the visits they host."""
    if row is None:
        return False
    if who.role not in CUSTOMER_ROLES:
        return True
    return who.customer_id is not None and row["host_customer_id"] == who.customer_id


def _conflict(exc: InvalidTransition) -> Problem:
    return Problem(
        409,
        "Invalid transition",
        str(exc),
        type_="urn:problem:visit-status",
        visit_status=exc.status,
    )


async def _optional_body(request: web.Request, model: type[M]) -> M:
    """Action routes take no body, an empty JSON object, or their few optional fields."""
    if not request.body_exists:
        return model()
    return await parse_body(request, model)


@routes.post("/v1/visits")
@describe(body=VisitCreate, response=Visit, status=201, errors=(409,), tag="visits", headers=IDEMPOTENCY_KEY)
@policy(HOSTS_AND_OPERATORS_CHANGING)
async def register_visit(request: web.Request) -> web.Response:
    """Register a visit: the visitor (found again by email, or created), the host, purpose and times. The visitor
    receives the registration email with the check-in code. Accepts ``Idempotency-Key``."""
    body = await parse_body(request, VisitCreate)
    who = principal(request)
    idempotency = Idempotency.from_request(request, route="POST /v1/visits", body=body)
    host_id = body.host_customer_id
    if who.role in CUSTOMER_ROLES:
        own = _own_customer_id(who)
        if host_id is None:
            host_id = own
        elif host_id != own:
            raise field_problem(
                403,
                "Forbidden",
                "host_customer_id",
                "members and contacts register visits only for themselves: omit it or send your own id",
                "urn:problem:not-your-visit",
            )
    now = request.app[CLOCK].now()
    if body.expected_departure_at is not None and body.expected_departure_at <= body.expected_at:
        raise field_problem(
            422, "Invalid request", "expected_departure_at", "must be after expected_at", "urn:problem:validation"
        )
    if body.expected_at < now - request.app[NO_SHOW_AFTER]:
        raise field_problem(
            422,
            "Invalid request",
            "expected_at",
            "is so far in the past that the visit would already be a no-show",
            "urn:problem:validation",
        )
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        if (replay := await idempotency.claim(conn)) is not None:
            return replay
        if host_id is not None:
            host = await store.get_host(conn, host_id)
            if host is None or host["email"] is None:
                # unknown, a visitor's id, or a customer whose creation has not reached this service yet
                raise field_problem(
                    422,
                    "Unknown host",
                    "host_customer_id",
                    "no member or contact with this id is known",
                    "urn:problem:unknown-host",
                )
        visitor_id = await store.upsert_visitor(
            conn,
            full_name=body.visitor.full_name,
            email=str(body.visitor.email),
            company_name=body.visitor.company_name,
            phone=body.visitor.phone,
        )
        visit_id = uuid.uuid4()
        for _ in range(MAX_CODE_DRAWS):
            try:
                await store.insert_visit(
                    conn,
                    id=visit_id,
                    visitor_id=visitor_id,
                    host_customer_id=host_id,
                    purpose=body.purpose,
                    expected_at=body.expected_at,
                    expected_departure_at=body.expected_departure_at,
                    notes=body.notes or None,
                    check_in_code=domain.new_code(),
                    registered_by_type=_acting_as(who),
                    registered_by_account=who.account_id,
                )
                break
            except store.CodeTaken:
                continue
        else:  # pragma: no cover - a billion codes: only with a broken random source
            raise RuntimeError("no free check-in code after several draws")
        view = await store.get_visit(conn, visit_id)
        assert view is not None
        await visits.announce(
            conn,
            view,
            VisitRegisteredV1(
                **visits.state(view),
                expected_departure_at=view["expected_departure_at"],
                registered_by=_acting_as(who),
            ),
            request[REQUEST_ID],
            request[REQUEST_ID],
        )
        await visits.request_registration_email(conn, view, request.app[PLACE], request[REQUEST_ID])
        visit = visit_json(view)
        location = f"/v1/visits/{visit_id}"
        await idempotency.remember(conn, 201, visit, location)
    return json_response(visit, status=201, headers={"Location": location, **_etag(view)})


@routes.get("/v1/visits/{id}")
@describe(response=Visit, tag="visits")
@policy(HOSTS_AND_OPERATORS)
async def get_visit(request: web.Request) -> web.Response:
    """One visit: operators any, members and contacts those they host (also while suspended)."""
    visit_id = parse_uuid(request.match_info["id"])
    row = await store.get_visit(request.app[RUNTIME].db, visit_id)
    if not _visible(principal(request), row):
        _not_found(visit_id)
    return json_response(visit_json(row), headers=_etag(row))


@routes.get("/v1/visits")
@describe(query=VisitQuery, response=VisitPage, errors=(400,), tag="visits")
@policy(HOSTS_AND_OPERATORS)
async def list_visits(request: web.Request) -> web.Response:
    """Visits in expected order: ``date`` (expected that day in the space's time zone), ``host_customer_id``,
    ``status``, ``from``/``to`` (expected arrival), ``limit``, ``cursor``. Members and contacts list only the
    visits they host."""
    q = parse_query(request, VisitQuery)
    who = principal(request)
    hosts = [q.host_customer_id] if q.host_customer_id is not None else []
    if who.role in CUSTOMER_ROLES:
        hosts.append(_own_customer_id(who))
    starts: list[datetime] = [q.from_] if q.from_ is not None else []
    ends: list[datetime] = [q.to] if q.to is not None else []
    if q.date is not None:
        tz = request.app[TIMEZONE]
        starts.append(datetime.combine(q.date, time(0), tzinfo=tz))
        ends.append(datetime.combine(q.date + timedelta(days=1), time(0), tzinfo=tz))
    rows = await store.list_visits(
        request.app[RUNTIME].db,
        host_customer_ids=hosts,
        status=q.status,
        starts=starts,
        ends=ends,
        after=decode_cursor(q.cursor) if q.cursor else None,
        limit=q.limit,
    )
    items = rows[: q.limit]
    next_cursor = encode_cursor(items[-1]["expected_at"], items[-1]["id"]) if len(rows) > q.limit else None
    return json_response({"items": [visit_json(r) for r in items], "next_cursor": next_cursor})


async def _act(request: web.Request, action: str) -> web.Response:
    """Check in, check out or cancel the visit in the path, under its row lock."""
    visit_id = parse_uuid(request.match_info["id"])
    who = principal(request)
    cancellation = await _optional_body(request, Cancellation) if action == "cancel" else None
    if cancellation is None:
        await _optional_body(request, NoBody)
    now = request.app[CLOCK].now()
    rid = request[REQUEST_ID]
    by = _acting_as(who)
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction():
        visit = await store.lock_visit(conn, visit_id)
        if not _visible(who, visit):
            _not_found(visit_id)
        try:
            if action == "check_in":
                view = await visits.check_in(conn, visit, now, by, request.app[PLACE], rid)
            elif action == "check_out":
                view = await visits.check_out(conn, visit, now, by, rid)
            else:
                assert cancellation is not None
                view = await visits.cancel(conn, visit, now, by, cancellation.reason or None, rid)
        except InvalidTransition as exc:
            raise _conflict(exc) from None
    return json_response(visit_json(view), headers=_etag(view))


@routes.post("/v1/visits/{id}/check-in")
@describe(response=Visit, errors=(409,), tag="arrival")
@policy(HOSTS_AND_OPERATORS_CHANGING)
async def check_in(request: web.Request) -> web.Response:
    """The visitor arrived: expected -> checked_in (anything else: 409). The host is emailed, unless they checked
    the visitor in themselves."""
    return await _act(request, "check_in")


@routes.post("/v1/visits/{id}/check-out")
@describe(response=Visit, errors=(409,), tag="arrival")
@policy(HOSTS_AND_OPERATORS_CHANGING)
async def check_out(request: web.Request) -> web.Response:
    """The visitor left: checked_in -> checked_out (anything else, e.g. not checked in yet: 409)."""
    return await _act(request, "check_out")


@routes.post("/v1/visits/{id}/cancellation")
@describe(body=Cancellation, response=Visit, errors=(409,), tag="visits")
@policy(HOSTS_AND_OPERATORS_CHANGING)
async def cancel(request: web.Request) -> web.Response:
    """Cancel an expected visit, with an optional ``reason``: expected -> cancelled (anything else: 409)."""
    return await _act(request, "cancel")


@routes.post("/v1/check-ins")
@describe(body=KioskCheckIn, response=Visit, errors=(404, 409), tag="arrival")
@policy(OPERATOR)
async def kiosk_check_in(request: web.Request) -> web.Response:
    """The kiosk: check in the open visit with this code (``{"code": "K7M2QX"}``; case, spaces and dashes do not
    matter). No open visit has it: 404; already checked in: 409. Needs an operator's token."""
    body = await parse_body(request, KioskCheckIn)
    code = domain.normalise_code(body.code)
    if code is None:
        raise field_problem(
            422,
            "Invalid request",
            "code",
            f"a check-in code is {domain.CODE_LENGTH} letters and digits",
            "urn:problem:validation",
        )
    now = request.app[CLOCK].now()
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction():
        visit = await store.lock_open_visit_by_code(conn, code)
        if visit is None:
            raise Problem(
                404, "Not found", "No expected visit has this check-in code", type_="urn:problem:unknown-code"
            )
        try:
            view = await visits.check_in(conn, visit, now, "kiosk", request.app[PLACE], request[REQUEST_ID])
        except InvalidTransition as exc:
            raise _conflict(exc) from None
    return json_response(visit_json(view), headers=_etag(view))
