"""A small typed async client for the four HTTP APIs (customers, accounts, visitors, notifications).

    async with Client({"customers": "http://127.0.0.1:8001", "accounts": "http://127.0.0.1:8002", ...}) as api:
        await api.login("ops@example.com", "a long operator passphrase")
        ada = await api.create_customer("Ada Lovelace", "ada@example.com", send_welcome=True)

Nothing is retried behind your back. The one exception is opt-in: ``retries=N`` on the creating POSTs, which
send an ``Idempotency-Key`` (yours, or a generated one) so that the server answers a repeat with the first
response instead of creating twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime
from types import TracebackType
from typing import Any, Literal, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from .errors import ApiError
from .models import (
    Access,
    Activated,
    Contract,
    CreditBalances,
    CreditConsumption,
    CreditGrant,
    CreditKind,
    Customer,
    Delivery,
    Page,
    Plan,
    Problem,
    Suspended,
    Team,
    TeamMember,
    TeamRole,
    TokenGrant,
    UserAccountRequested,
    Visit,
    VisitorIn,
)

Service = Literal["customers", "accounts", "visitors", "notifications"]
SERVICES: tuple[Service, ...] = ("customers", "accounts", "visitors", "notifications")
RETRYABLE_STATUSES = frozenset({502, 503, 504})
"""Answers a gateway or a starting service gives when the request may not have been handled (or its answer was
lost): safe to repeat only with the same Idempotency-Key."""

M = TypeVar("M", bound=BaseModel)
Id = uuid.UUID | str


class Client:
    """``base_urls``: one base URL per service, or a single gateway URL serving every path.

    ``token``: an access token (``Bearer``); ``login`` sets it. Use as ``async with``, or call ``close()``.
    """

    def __init__(
        self,
        base_urls: Mapping[str, str] | str,
        token: str | None = None,
        *,
        timeout_s: float = 10.0,
        retry_backoff_s: float = 0.2,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._bases: dict[str, str]
        if isinstance(base_urls, str):
            self._bases = {name: base_urls.rstrip("/") for name in SERVICES}
        else:
            self._bases = {name: url.rstrip("/") for name, url in base_urls.items()}
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._backoff = retry_backoff_s
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    # accounts --------------------------------------------------------------------------------------------------

    async def login(self, email: str, password: str) -> TokenGrant:
        """POST /v1/tokens; the token is kept and sent with every later call."""
        grant = await self._call(
            TokenGrant, "accounts", "POST", "/v1/tokens", json={"email": email, "password": password}, auth=False
        )
        self.token = grant.access_token
        return grant

    async def activate(self, token: str, password: str) -> Activated:
        """POST /v1/activations: set the password with the token from the set-password link (once)."""
        body = {"token": token, "password": password}
        return await self._call(Activated, "accounts", "POST", "/v1/activations", json=body, auth=False)

    # customers -------------------------------------------------------------------------------------------------

    async def create_customer(
        self,
        full_name: str,
        email: str,
        send_welcome: bool = False,
        idempotency_key: str | None = None,
        *,
        company_name: str | None = None,
        phone: str | None = None,
        retries: int = 0,
    ) -> Customer:
        """POST /v1/customers. With ``send_welcome`` the person gets a user account and the welcome email."""
        body = _without_none(
            full_name=full_name, email=email, company_name=company_name, phone=phone, send_welcome=send_welcome
        )
        return await self._create(Customer, "customers", "/v1/customers", body, idempotency_key, retries)

    async def get_customer(self, customer_id: Id) -> Customer:
        return await self._call(Customer, "customers", "GET", f"/v1/customers/{customer_id}")

    async def list_customers(
        self,
        *,
        q: str | None = None,
        email: str | None = None,
        kind: Literal["member", "contact"] | None = None,
        standing: Literal["active", "suspended"] | None = None,
        has_user_account: bool | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        sort: Literal["created_at", "-created_at", "full_name", "-full_name"] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Customer]:
        """GET /v1/customers, every page: ``async for customer in api.list_customers(kind="member"): ...``"""
        params = _without_none(
            q=q,
            email=email,
            kind=kind,
            standing=standing,
            has_user_account=has_user_account,
            created_after=created_after,
            created_before=created_before,
            sort=sort,
            limit=page_size,
        )
        async for customer in self._pages(Customer, "customers", "/v1/customers", params):
            yield customer

    async def update_customer(self, customer_id: Id, version: int, **changes: str | None) -> Customer:
        """PATCH /v1/customers/{id} with ``If-Match: "<version>"``; a stale version is ``ApiError`` 412.
        ``changes``: ``full_name``, ``email``, ``company_name``, ``phone``."""
        headers = {"If-Match": f'"{version}"'}
        return await self._call(
            Customer, "customers", "PATCH", f"/v1/customers/{customer_id}", json=changes, headers=headers
        )

    async def suspend(
        self,
        customer_id: Id,
        reason: str,
        category: Literal["manual", "overdue", "policy", "other"] = "manual",
        until: datetime | None = None,
    ) -> Suspended:
        body = _without_none(reason=reason, category=category, until=until)
        path = f"/v1/customers/{customer_id}/suspension"
        return await self._call(Suspended, "customers", "POST", path, json=body)

    async def reactivate(self, customer_id: Id) -> Customer:
        """DELETE /v1/customers/{id}/suspension: lift the suspension."""
        return await self._call(Customer, "customers", "DELETE", f"/v1/customers/{customer_id}/suspension")

    async def request_user_account(self, customer_id: Id) -> UserAccountRequested:
        """POST /v1/customers/{id}/user-account (202): accounts creates it and sends the welcome email."""
        path = f"/v1/customers/{customer_id}/user-account"
        return await self._call(UserAccountRequested, "customers", "POST", path)

    async def create_plan(
        self,
        name: str,
        price_minor: int,
        currency: str,
        billing_period: Literal["day", "week", "month", "year"],
        *,
        description: str = "",
        booking_credit: int = 0,
        printing_credit: int = 0,
    ) -> Plan:
        body = {
            "name": name,
            "description": description,
            "price_minor": price_minor,
            "currency": currency,
            "billing_period": billing_period,
            "booking_credit": booking_credit,
            "printing_credit": printing_credit,
        }
        return await self._call(Plan, "customers", "POST", "/v1/plans", json=body)

    async def create_contract(
        self, customer_id: Id, plan_id: Id, starts_on: date, ends_on: date | None = None
    ) -> Contract:
        """A contract running today makes the customer a member at once."""
        body = _without_none(plan_id=plan_id, starts_on=starts_on, ends_on=ends_on)
        return await self._call(Contract, "customers", "POST", f"/v1/customers/{customer_id}/contracts", json=body)

    async def cancel_contract(self, contract_id: Id, ends_on: date, reason: str) -> Contract:
        """The contract ends after ``ends_on`` (the day before its start: it never starts)."""
        body = _without_none(ends_on=ends_on, reason=reason)
        path = f"/v1/contracts/{contract_id}/cancellation"
        return await self._call(Contract, "customers", "POST", path, json=body)

    # customers: teams ------------------------------------------------------------------------------------------

    async def create_team(
        self,
        name: str,
        *,
        description: str = "",
        paying_member_id: Id | None = None,
        max_size: int | None = None,
        share_booking_credit: bool = False,
        share_printing_credit: bool = False,
        share_access: bool = False,
        idempotency_key: str | None = None,
        retries: int = 0,
    ) -> Team:
        """POST /v1/teams (operators). The paying member joins at once; their credit is drawn on first when the
        team shares credit. A name in use is ``ApiError`` 409."""
        body = _without_none(
            name=name,
            description=description,
            paying_member_id=paying_member_id,
            max_size=max_size,
            share_booking_credit=share_booking_credit,
            share_printing_credit=share_printing_credit,
            share_access=share_access,
        )
        return await self._create(Team, "customers", "/v1/teams", body, idempotency_key, retries)

    async def get_team(self, team_id: Id) -> Team:
        """GET /v1/teams/{id}: operators any team, a member their own (anyone else: 403)."""
        return await self._call(Team, "customers", "GET", f"/v1/teams/{team_id}")

    async def update_team(self, team_id: Id, version: int | None = None, **changes: Any) -> Team:
        """PATCH /v1/teams/{id} (operators); with ``version`` it sends ``If-Match`` and a stale one is
        ``ApiError`` 412. ``changes``: ``name``, ``description``, ``paying_member_id`` (a current member),
        ``max_size``, ``share_booking_credit``, ``share_printing_credit``, ``share_access``; ``None`` clears
        ``paying_member_id`` and ``max_size``. Switching ``share_access`` grants or revokes the members' access."""
        headers = {"If-Match": f'"{version}"'} if version is not None else None
        return await self._call(Team, "customers", "PATCH", f"/v1/teams/{team_id}", json=changes, headers=headers)

    async def delete_team(self, team_id: Id) -> None:
        """DELETE /v1/teams/{id} (operators): every membership ends now, and the shared credit and access with it."""
        await self._request("customers", "DELETE", f"/v1/teams/{team_id}")

    async def list_teams(self, *, q: str | None = None, page_size: int | None = None) -> AsyncIterator[Team]:
        """GET /v1/teams, every page, by name: ``async for team in api.list_teams(q="acme"): ...``"""
        params = _without_none(q=q, limit=page_size)
        async for team in self._pages(Team, "customers", "/v1/teams", params):
            yield team

    async def add_team_member(self, team_id: Id, customer_id: Id, role: TeamRole = "member") -> TeamMember:
        """POST /v1/teams/{id}/members (operators, or the team's admins). Already a member or the team full:
        ``ApiError`` 409."""
        body = {"customer_id": customer_id, "role": role}
        return await self._call(TeamMember, "customers", "POST", f"/v1/teams/{team_id}/members", json=body)

    async def remove_team_member(self, team_id: Id, customer_id: Id) -> None:
        """DELETE /v1/teams/{id}/members/{customer_id} (operators, the team's admins, or the member leaving). The
        membership ends now; its dates stay (see ``list_team_members(on=...)``)."""
        await self._request("customers", "DELETE", f"/v1/teams/{team_id}/members/{customer_id}")

    async def list_team_members(self, team_id: Id, on: date | None = None) -> AsyncIterator[TeamMember]:
        """GET /v1/teams/{id}/members: the current members in the order they joined, or with ``on`` everyone who
        was a member at any time that day (in the space's time zone)."""
        params = _without_none(on=on)
        async for member in self._pages(TeamMember, "customers", f"/v1/teams/{team_id}/members", params):
            yield member

    # customers: credit and access -------------------------------------------------------------------------------

    async def grant_credit(
        self,
        customer_id: Id,
        kind: CreditKind,
        amount: int,
        *,
        reference: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
        retries: int = 0,
    ) -> CreditGrant:
        """POST /v1/customers/{id}/credits/grants (operators): add credit to the customer's own balance."""
        body = _without_none(kind=kind, amount=amount, reference=reference, note=note)
        path = f"/v1/customers/{customer_id}/credits/grants"
        return await self._create(CreditGrant, "customers", path, body, idempotency_key, retries)

    async def consume_credit(
        self,
        customer_id: Id,
        kind: CreditKind,
        amount: int,
        reference: str,
        *,
        idempotency_key: str,
        retries: int = 0,
    ) -> CreditConsumption:
        """POST /v1/customers/{id}/credits/consumptions: the customer's own balance first, then the credit their
        teams share (the paying member's first); ``paid_by`` says who paid. The key is required (the server
        answers 428 without one): a repeat with it never consumes twice, so ``retries`` are safe. Not enough
        credit: ``ApiError`` 409 with ``e.problem.extensions["available"]``."""
        body = {"kind": kind, "amount": amount, "reference": reference}
        path = f"/v1/customers/{customer_id}/credits/consumptions"
        return await self._create(CreditConsumption, "customers", path, body, idempotency_key, retries)

    async def get_credits(self, customer_id: Id) -> CreditBalances:
        """GET /v1/customers/{id}/credits: per kind, the ``own`` balance and what is ``available`` (own and the
        credit of teams sharing it)."""
        return await self._call(CreditBalances, "customers", "GET", f"/v1/customers/{customer_id}/credits")

    async def get_access(self, customer_id: Id) -> Access:
        """GET /v1/customers/{id}/access: space access now, with the ``rule`` that granted or denied it."""
        return await self._call(Access, "customers", "GET", f"/v1/customers/{customer_id}/access")

    # notifications ---------------------------------------------------------------------------------------------

    async def list_deliveries(
        self,
        *,
        customer_id: Id | None = None,
        template: str | None = None,
        status: Literal["pending", "sent", "failed"] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Delivery]:
        """GET /v1/deliveries, every page: the emails sent (or not) and how it went."""
        params = _without_none(customer_id=customer_id, template=template, status=status, limit=page_size)
        async for delivery in self._pages(Delivery, "notifications", "/v1/deliveries", params):
            yield delivery

    # visitors --------------------------------------------------------------------------------------------------

    async def register_visit(
        self,
        visitor: VisitorIn,
        purpose: Literal["tour", "meeting", "event", "other"],
        expected_at: datetime,
        *,
        host_customer_id: Id | None = None,
        expected_departure_at: datetime | None = None,
        notes: str | None = None,
        idempotency_key: str | None = None,
        retries: int = 0,
    ) -> Visit:
        """POST /v1/visits; the visitor gets an email with the check-in code. ``expected_at`` needs a time zone."""
        body = _without_none(
            visitor=visitor.model_dump(exclude_none=True),
            host_customer_id=host_customer_id,
            purpose=purpose,
            expected_at=expected_at,
            expected_departure_at=expected_departure_at,
            notes=notes,
        )
        return await self._create(Visit, "visitors", "/v1/visits", body, idempotency_key, retries)

    async def check_in(self, visit_id: Id | None = None, *, code: str | None = None) -> Visit:
        """Check a visit in: by id at the desk (POST /v1/visits/{id}/check-in), or with the visitor's ``code``
        as the kiosk does (POST /v1/check-ins)."""
        if (visit_id is None) == (code is None):
            raise ValueError("give either visit_id or code")
        if code is not None:
            return await self._call(Visit, "visitors", "POST", "/v1/check-ins", json={"code": code})
        return await self._call(Visit, "visitors", "POST", f"/v1/visits/{visit_id}/check-in")

    # plumbing --------------------------------------------------------------------------------------------------

    async def _create(
        self, model: type[M], service: Service, path: str, body: dict[str, Any], key: str | None, retries: int
    ) -> M:
        """A creating POST. With ``retries`` it is repeated (same key, growing pauses) after a lost connection, a
        timeout or a 502/503/504, and never after any other answer."""
        if retries > 0 and key is None:
            key = str(uuid.uuid4())  # a retry without a key could create twice
        headers = {"Idempotency-Key": key} if key is not None else {}
        for attempt in range(retries + 1):
            try:
                return await self._call(model, service, "POST", path, json=body, headers=headers)
            except (aiohttp.ClientConnectionError, TimeoutError, ApiError) as exc:
                if (isinstance(exc, ApiError) and exc.status not in RETRYABLE_STATUSES) or attempt == retries:
                    raise
            await asyncio.sleep(self._backoff * 2**attempt)
        raise AssertionError("unreachable")

    async def _pages(self, model: type[M], service: Service, path: str, params: dict[str, Any]) -> AsyncIterator[M]:
        cursor: str | None = None
        while True:
            page_params = {**params, "cursor": cursor} if cursor else params
            page = await self._call(Page[model], service, "GET", path, params=page_params)  # type: ignore[valid-type]
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _call(
        self,
        model: type[M],
        service: Service,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> M:
        body = await self._request(service, method, path, json=json, params=params, headers=headers, auth=auth)
        return model.model_validate(body)

    async def _request(
        self,
        service: Service,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """The decoded JSON answer (``None`` for a 204), or ``ApiError``."""
        try:
            base = self._bases[service]
        except KeyError:
            raise ValueError(f"no base URL for the {service} service") from None
        headers = dict(headers or {})
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.request(
            method,
            base + path,
            json=_jsonable(json) if json is not None else None,
            params={k: _text(v) for k, v in (params or {}).items()},
            headers=headers,
        ) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, await _problem(resp), resp.headers.get("X-Request-ID"))
            if resp.status == 204:
                return None
            return await resp.json(content_type=None)


async def _problem(resp: aiohttp.ClientResponse) -> Problem:
    """The problem in the answer, or one made from the status when the answer is not a problem."""
    if resp.content_type in ("application/problem+json", "application/json"):
        try:
            return Problem.model_validate({"status": resp.status, **await resp.json(content_type=None)})
        except (ValueError, TypeError, ValidationError):
            pass
    text = (await resp.text(errors="replace"))[:500]
    return Problem(title=resp.reason or "HTTP error", status=resp.status, detail=text or None)


def _without_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return _text(value)


def _text(value: Any) -> str:
    """Query and JSON form of ids, days, times and booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)
