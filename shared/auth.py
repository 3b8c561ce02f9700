"""Authentication and the per-route policy.

Access tokens are ES256 JWTs issued by accounts, with a ``kid``; other services verify them with the public keys
published at ``/.well-known/jwks.json`` (fetched once, cached, refetched when an unknown ``kid`` shows up, so a
key rotation needs no restart). Every route declares its policy with ``@policy(...)``; a route without one is
refused (fail closed) and a test walks every route table to prove none is missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import jwt
from aiohttp import web

from shared.http import Authorize, Authorizer, Handler, Problem

log = logging.getLogger(__name__)

ROLES = ("admin", "member", "contact", "service")


@dataclass(frozen=True)
class Principal:
    account_id: uuid.UUID
    role: str
    customer_id: uuid.UUID | None = None
    standing: str = "active"
    scopes: frozenset[str] = field(default_factory=frozenset)
    issued_at: datetime | None = None

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        cid = claims.get("customer_id")
        return cls(
            account_id=uuid.UUID(claims["sub"]),
            role=claims["role"],
            customer_id=uuid.UUID(cid) if cid else None,
            standing=claims.get("standing", "active"),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
        )


@dataclass(frozen=True)
class Policy:
    open: bool = False
    roles: frozenset[str] = frozenset()
    changes_state: bool = False
    """A suspended member or contact may not call it (403 that says so); operators and services may."""
    scope: str | None = None
    """The scope a service client needs (when ``service`` is among the roles)."""

    def describe(self) -> str:
        if self.open:
            return "open"
        text = "roles: " + ",".join(sorted(self.roles))
        if self.scope:
            text += f" (service clients with scope {self.scope})"
        return text + (" (not while suspended)" if self.changes_state else "")


OPEN = Policy(open=True)
OPERATOR = Policy(roles=frozenset({"admin"}))


def roles(*names: str, changes_state: bool = False, scope: str | None = None) -> Policy:
    """``scope``: service clients (role ``service``) holding this scope may call the route too."""
    unknown = set(names) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")
    allowed = frozenset(names) | ({"service"} if scope else frozenset())
    return Policy(roles=allowed, changes_state=changes_state, scope=scope)


def operator_or_service(scope: str) -> Policy:
    """Operators, and service clients holding ``scope``."""
    return roles("admin", scope=scope)


CUSTOMER_ROLES = ("member", "contact")

StandingLookup = Callable[[uuid.UUID], Awaitable[str | None]]
STANDING_LOOKUP = web.AppKey("standing_lookup", object)
"""Optional per service: the customer's current standing from the service's own data (its database or replica),
which wins over the standing in the token (a token issued before a suspension still says active)."""


class RevocationLookup(Protocol):
    """``await check(account_id, issued_at)``: True when the account's portal access was revoked after the token was
    issued; ``check.known(...)`` answers the same without awaiting when it can, else None (shared.revocation)."""

    def known(self, account_id: uuid.UUID, issued_at: datetime | None) -> bool | None: ...

    async def __call__(self, account_id: uuid.UUID, issued_at: datetime | None) -> bool: ...


REVOCATION_CHECK = web.AppKey("revocation_check", RevocationLookup)


def suspended_problem() -> Problem:
    return Problem(
        403,
        "Customer suspended",
        "The customer is suspended: they can log in and read their own data, and change nothing until reactivated",
        type_="urn:problem:customer-suspended",
    )


def policy(p: Policy) -> Callable[[Handler], Handler]:
    def mark(fn: Handler) -> Handler:
        fn.__policy__ = p  # type: ignore[attr-defined]
        return fn

    return mark


def policy_of(handler: Any) -> Policy | None:
    return getattr(handler, "__policy__", None)


class TokenVerifier:
    """Verifies access tokens against a set of public keys keyed by ``kid``."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._keys: dict[str, Any] = {}
        self._verified: dict[str, tuple[float, Principal]] = {}

    async def key_for(self, kid: str) -> Any | None:
        return self._keys.get(kid)

    def verified(self, token: str) -> Principal | None:
        """Who a token verified before (and not expired since) belongs to, without awaiting: the common case of
        ``verify``, taken first on every request."""
        hit = self._verified.get(token)
        if hit is not None:
            if hit[0] > time.time():
                return hit[1]
            self._verified.pop(token, None)
        return None

    async def verify(self, token: str) -> Principal:
        """A token verified once is remembered until it expires (checking an ES256 signature was a quarter of
        a read request's CPU); the cache is bounded, and revocation is checked on every request anyway."""
        principal = self.verified(token)
        if principal is not None:
            return principal
        principal, expires = await self._verify(token)
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[token] = (expires, principal)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("The access token is malformed") from None
        kid = header.get("kid")
        key = await self.key_for(kid) if isinstance(kid, str) else None
        if key is None:
            raise _unauthorized("The access token was not signed by a known key")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=["ES256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
            return Principal.from_claims(claims), float(claims["exp"])
        except jwt.ExpiredSignatureError:
            raise _unauthorized("The access token has expired") from None
        except (jwt.PyJWTError, KeyError, ValueError):
            raise _unauthorized("The access token is invalid") from None


class StaticKeyVerifier(TokenVerifier):
    def __init__(self, keys: dict[str, Any], issuer: str, audience: str) -> None:
        super().__init__(issuer, audience)
        self._keys = dict(keys)


class JwksVerifier(TokenVerifier):
    """Fetches the issuer's JWKS over HTTP; refetches (at most every ``min_refresh_s``) on an unknown kid."""

    def __init__(self, url: str, issuer: str, audience: str, min_refresh_s: float = 30.0) -> None:
        super().__init__(issuer, audience)
        self.url = url
        self.min_refresh_s = min_refresh_s
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def key_for(self, kid: str) -> Any | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            due = time.monotonic() - self._fetched_at >= self.min_refresh_s
            if kid not in self._keys and due and not await self._refresh() and not self._keys:
                # the issuer cannot be reached and no key is known yet: the token may well be valid
                raise Problem(
                    503,
                    "Cannot verify tokens now",
                    "The token issuer's public keys are unavailable; try again shortly",
                    type_="urn:problem:jwks-unavailable",
                    headers={"Retry-After": "1"},
                )
        return self._keys.get(kid)

    async def _refresh(self) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._session.get(self.url) as resp:
                resp.raise_for_status()
                data = await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("could not fetch JWKS", extra={"url": self.url, "error": str(exc)})
            self._fetched_at = time.monotonic() - self.min_refresh_s + 1.0  # try again in a second, not at once
            return False
        self._fetched_at = time.monotonic()
        keys = {}
        for jwk in data.get("keys", []):
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk).key
            except (jwt.PyJWTError, KeyError):
                continue
        self._keys = keys
        return True


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "Unauthorized",
        detail,
        type_="urn:problem:unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="coworking"'},
    )


VERIFIER_KEY = web.AppKey("token_verifier", TokenVerifier)
PRINCIPAL = web.RequestKey("principal", Principal)


def make_authorizer() -> Authorizer:
    """The access check of every request, made once per route from the route's policy (``authorizer(handler)``;
    None for an open route: nothing to check) and run by the request pipeline (shared.http) before the handler:
    the bearer token, revocation, role, scope and standing. ``authorize(request)`` raises the problem that refuses
    the request, returns None when it lets it through, or an awaitable finishing the check when that needs to
    wait (a token not verified yet, a revocation state to look up, a standing to read): most requests are decided
    without making a coroutine. Once let through, ``principal(request)`` is who is calling."""

    def authorizer(handler: Any) -> Authorize | None:
        p = policy_of(handler)
        if p is None:
            return _no_policy
        if p.open:
            return None

        def authorize(request: web.Request) -> Awaitable[None] | None:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise _unauthorized("Send an access token: Authorization: Bearer <token>")
            token = token.strip()
            app = request.app
            principal = app[VERIFIER_KEY].verified(token)
            if principal is None:
                return _authorize_waiting(request, p, token)
            check = app.get(REVOCATION_CHECK)
            revoked = check.known(principal.account_id, principal.issued_at) if check is not None else False
            if revoked is None or (_standing_lookup(app, p, principal) is not None):
                return _authorize_waiting(request, p, token)
            _admit(request, p, principal, revoked, principal.standing)
            return None

        return authorize

    return authorizer


def _no_policy(request: web.Request) -> None:
    log.error("route without a policy refused", extra={"path": request.path})
    raise Problem(403, "Forbidden", "This route declares no access policy")


async def _authorize_waiting(request: web.Request, p: Policy, token: str) -> None:
    app = request.app
    principal = await app[VERIFIER_KEY].verify(token)
    check = app.get(REVOCATION_CHECK)
    revoked = await check(principal.account_id, principal.issued_at) if check is not None else False
    standing = principal.standing
    lookup = _standing_lookup(app, p, principal)
    if lookup is not None and principal.role in p.roles:
        standing = await lookup(principal.customer_id) or standing  # type: ignore[operator]
    _admit(request, p, principal, revoked, standing)


def _standing_lookup(app: web.Application, p: Policy, principal: Principal) -> Any | None:
    """The service's standing lookup, when this request needs the caller's current standing: a member or contact
    changing state (a suspended customer may read, not write)."""
    if p.changes_state and principal.role in CUSTOMER_ROLES and principal.customer_id is not None:
        return app.get(STANDING_LOOKUP)
    return None


def _admit(request: web.Request, p: Policy, principal: Principal, revoked: bool, standing: str | None) -> None:
    """Let the request through as ``principal``, or raise the problem that refuses it."""
    if revoked:
        raise _unauthorized("The access token was revoked")
    if principal.role not in p.roles:
        raise Problem(403, "Forbidden", f"This needs the role {' or '.join(sorted(p.roles))}")
    if principal.role == "service" and (p.scope is None or p.scope not in principal.scopes):
        raise Problem(403, "Forbidden", f"This service client lacks the scope {p.scope}", type_="urn:problem:scope")
    if p.changes_state and principal.role in CUSTOMER_ROLES and standing == "suspended":
        raise suspended_problem()
    request[PRINCIPAL] = principal


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def route_policies(app: web.Application) -> Iterable[tuple[str, str, Policy | None]]:
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.canonical if route.resource is not None else "?"
        yield route.method, info, policy_of(route.handler)
