"""Thin HTTP handlers of the accounts service."""

from __future__ import annotations

import asyncio
import hmac
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.accounts import security, store, throttle
from services.accounts.handlers import WelcomeConfig, emit_revoked, issue_invitation, issue_password_reset
from shared.auth import OPEN, OPERATOR, policy, principal, roles
from shared.events import AccountActivatedV1, AccountRestoredV1, AccountSuspendedV1
from shared.http import REQUEST_ID, Problem, json_response, parse_body, parse_query, parse_uuid
from shared.openapi import describe
from shared.outbox import emit
from shared.service import RUNTIME
from shared.text import SINGLE_LINE

SERVICE = "accounts"
routes = web.RouteTableDef()
ACCOUNTS_CFG = web.AppKey("accounts_cfg", dict)
WELCOME_KEY = web.AppKey("welcome_cfg", WelcomeConfig)
PASSWORD_PAGE = (Path(__file__).parent / "static" / "password-page.html").read_text()


def password_page(title: str, endpoint: str, done: str) -> bytes:
    """The page a set-password or reset link opens: it posts the link's token and the new password to ``endpoint``."""
    return (
        PASSWORD_PAGE.replace("__TITLE__", title).replace("__ENDPOINT__", endpoint).replace("__DONE__", done).encode()
    )


ACTIVATE_PAGE = password_page("Set your password", "/v1/activations", "Your password is set. You can now log in.")
RESET_PAGE = password_page(
    "Choose a new password",
    "/v1/password-resets/confirm",
    "Your new password is set. You can now log in with it.",
)

Password = Annotated[str, StringConstraints(max_length=security.MAX_PASSWORD_LENGTH)]


class ActivationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Annotated[str, StringConstraints(min_length=1, max_length=200), SINGLE_LINE] = Field(
        description="The token from the set-password link"
    )
    password: Password = Field(description="The new password")


class TokenRequest(BaseModel):
    """A person logging in (OAuth2's password grant)."""

    model_config = ConfigDict(extra="forbid")
    grant_type: Literal["password"] | None = None
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320), SINGLE_LINE]
    password: Password


class ClientCredentials(BaseModel):
    """Another internal service (OAuth2's client credentials grant)."""

    model_config = ConfigDict(extra="forbid")
    grant_type: Literal["client_credentials"]
    client_id: uuid.UUID
    client_secret: Annotated[str, StringConstraints(min_length=1, max_length=200), SINGLE_LINE]


class RefreshGrant(BaseModel):
    """A person's app renewing its access token (OAuth2's refresh token grant); the refresh token rotates."""

    model_config = ConfigDict(extra="forbid")
    grant_type: Literal["refresh_token"]
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200), SINGLE_LINE]


class LogoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200), SINGLE_LINE] = Field(
        description="The refresh token of the session to end"
    )


class AccountQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: uuid.UUID | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: uuid.UUID | None = None


class Account(BaseModel):
    id: uuid.UUID
    customer_id: uuid.UUID | None = Field(description="None for operator accounts")
    email: str
    full_name: str
    role: Literal["admin", "member", "contact"]
    status: Literal["invited", "active", "suspended", "revoked"]
    version: int
    created_at: datetime
    updated_at: datetime
    activated_at: datetime | None


class AccountPage(BaseModel):
    items: list[Account]
    next_cursor: str | None


class Activated(BaseModel):
    account_id: uuid.UUID
    status: Literal["active", "suspended"]


class TokenGrant(BaseModel):
    access_token: str = Field(description="ES256 JWT: sub (account), customer_id, role, standing, exp")
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds")
    refresh_token: str | None = Field(
        None,
        description="People only: single-use, exchanged with grant_type refresh_token for a new grant (rotated)",
    )


class Jwks(BaseModel):
    keys: list[dict[str, Any]] = Field(description="Public keys (JWK: kty EC, crv P-256, kid, alg ES256)")


class PasswordResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320), SINGLE_LINE] = Field(
        description="The account's login email"
    )


class PasswordResetAccepted(BaseModel):
    status: Literal["accepted"] = Field(
        description="Always the same: if the email belongs to an account that can log in, a link is on its way"
    )


class PasswordResetConfirmation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Annotated[str, StringConstraints(min_length=1, max_length=200), SINGLE_LINE] = Field(
        description="The token from the password-reset link"
    )
    password: Password = Field(description="The new password")


class PasswordChanged(BaseModel):
    status: Literal["password_changed"]


class InvitationSent(BaseModel):
    account_id: uuid.UUID
    invitation_expires_at: datetime


INVALID_LINK = Problem(
    400,
    "Invalid or expired link",
    "This set-password link is invalid, has expired or was already used. Ask for a new one.",
    type_="urn:problem:invalid-token",
)
INVALID_RESET_LINK = Problem(
    400,
    "Invalid or expired link",
    "This password-reset link is invalid, has expired or was already used. Ask for a new one.",
    type_="urn:problem:invalid-token",
)
INVALID_LOGIN = Problem(
    401,
    "Invalid credentials",
    "The email or password is wrong, or the account is not activated.",
    type_="urn:problem:invalid-credentials",
    error="invalid_grant",
)


def _account(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k in ("id", "customer_id"):
        out[k] = str(out[k]) if out[k] else None
    for k in ("created_at", "updated_at", "activated_at"):
        out[k] = out[k].isoformat() if out[k] else None
    return out


def _check_password(request: web.Request, password: str) -> None:
    """422 naming ``password`` when it is too short, too long, blank or one of the most common passwords."""
    problems = security.password_problems(password, request.app[ACCOUNTS_CFG]["password_min_length"])
    if problems:
        raise Problem(
            422,
            "Invalid request",
            "Invalid fields: password",
            type_="urn:problem:validation",
            errors=[{"field": "password", "message": m, "type": "password_policy"} for m in problems],
        )


async def _hashing(request: web.Request, fn: Any, *args: Any) -> Any:
    """argon2 work runs on the service's own small thread pool: at most ``password_hash_concurrency`` hashes
    (19 MiB each) at once, however many logins arrive, so memory and CPU stay bounded; the rest queue."""
    pool = request.app[ACCOUNTS_CFG]["hash_pool"]
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


@routes.get("/activate")
@describe(tag="activation")
@policy(OPEN)
async def activate_page(request: web.Request) -> web.Response:
    """The page the welcome email links to: a form that posts the token (read from the URL fragment) and the
    new password to ``POST /v1/activations``."""
    return web.Response(
        body=ACTIVATE_PAGE,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@routes.post("/v1/activations")
@describe(body=ActivationRequest, response=Activated, tag="activation")
@policy(OPEN)
async def activate(request: web.Request) -> web.Response:
    """Set the password with a set-password token; the token stops working and the account can log in. It
    becomes active, or suspended (login works, with a suspended standing) when its customer is suspended: then
    ``accounts.account.activated.v1`` is followed by ``accounts.account.suspended.v1``, one version later."""
    body = await parse_body(request, ActivationRequest)
    _check_password(request, body.password)
    # hash first, whatever the token: same cost for valid and invalid tokens, and no lock held while hashing
    password_hash = await _hashing(request, security.hash_password, body.password)
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        invitation = await store.use_invitation(conn, security.token_hash(body.token))
        if invitation is None:
            raise INVALID_LINK
        account = await store.activate_account(conn, invitation["account_id"], password_hash)
        suspended = account["status"] == "suspended"
        await emit(
            conn,
            AccountActivatedV1(account_id=account["id"], customer_id=account["customer_id"], status="active"),
            producer=SERVICE,
            subject=account["id"],
            sequence=account["version"] - 1 if suspended else account["version"],
            correlation_id=request[REQUEST_ID],
            causation_id=request[REQUEST_ID],
        )
        if suspended:
            await emit(
                conn,
                AccountSuspendedV1(
                    account_id=account["id"],
                    customer_id=account["customer_id"],
                    role=account["role"],
                    status="suspended",
                ),
                producer=SERVICE,
                subject=account["id"],
                sequence=account["version"],
                correlation_id=request[REQUEST_ID],
                causation_id=request[REQUEST_ID],
            )
    return json_response({"account_id": str(account["id"]), "status": account["status"]})


@routes.post("/v1/tokens")
@describe(body=TokenRequest, response=TokenGrant, errors=(400, 401, 429), tag="login")
@policy(OPEN)
async def login(request: web.Request) -> web.Response:
    """Log in with email and password; answers like OAuth2's token endpoint, with a refresh token:
    ``{grant_type: "refresh_token", refresh_token}`` rotates it (a reused one revokes its family: 400).

    Failed logins are throttled per email and per client address (by default 5 and 50 within 15 minutes, a
    sliding window): beyond that a 429 with ``Retry-After`` (seconds), whether or not the email has an account
    and even for the right password; refused attempts do not extend it, and a successful login clears the
    email's failures."""
    raw_grant = await parse_body(request, GrantPeek)
    if raw_grant.grant_type == "client_credentials":
        return await _client_credentials(request)
    if raw_grant.grant_type == "refresh_token":
        return await _refresh(request)
    body = await parse_body(request, TokenRequest)
    cfg = request.app[ACCOUNTS_CFG]
    db = request.app[RUNTIME].db
    attempt = await throttle.begin(db, cfg["throttle"], body.email, request.remote)
    if attempt.retry_after_s is not None:
        raise Problem(
            429,
            "Too many failed logins",
            "Too many failed logins for this email or from this address. Try again later.",
            type_="urn:problem:too-many-attempts",
            headers={"Retry-After": str(attempt.retry_after_s)},
            error="invalid_grant",
        )
    row = await store.find_for_login(db, body.email)
    ok = await _hashing(
        request, security.verify_password, row["password_hash"] if row else security.DUMMY_HASH, body.password
    )
    if row is None or not ok:
        await throttle.failed(db, cfg["throttle"])
        raise INVALID_LOGIN
    await throttle.succeeded(db, attempt, body.email)
    refresh_token = security.new_token()
    await store.insert_refresh_token(
        db,
        family_id=uuid.uuid4(),
        account_id=row["id"],
        token_hash=security.token_hash(refresh_token),
        expires_at=datetime.now(UTC) + cfg["refresh_token_ttl"],
    )
    return _person_grant(request, row, refresh_token)


def _person_grant(request: web.Request, account: Any, refresh_token: str) -> web.Response:
    cfg = request.app[ACCOUNTS_CFG]
    common = request.app[RUNTIME].settings.common
    token = security.issue_access_token(
        cfg["signing_key"],
        account_id=account["id"],
        customer_id=account["customer_id"],
        role=account["role"],
        standing="suspended" if account["status"] == "suspended" else "active",
        issuer=common.jwt_issuer,
        audience=common.jwt_audience,
        ttl_s=cfg["access_token_ttl_s"],
    )
    return json_response(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": cfg["access_token_ttl_s"],
            "refresh_token": refresh_token,
        },
        headers={"Cache-Control": "no-store"},
    )


INVALID_REFRESH = Problem(
    400,
    "Invalid refresh token",
    "The refresh token is invalid, expired, revoked or was already used. Log in again.",
    type_="urn:problem:invalid-refresh-token",
    error="invalid_grant",
)


async def _refresh(request: web.Request) -> web.Response:
    """Rotate a refresh token: it is marked used and a new one of the same family is returned with a fresh
    access token (role and standing as of now). A used token presented again revokes its whole family."""
    body = await parse_body(request, RefreshGrant)
    cfg = request.app[ACCOUNTS_CFG]
    new_token = security.new_token()
    granted = None
    async with request.app[RUNTIME].db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT r.id AS token_id, r.family_id, r.used_at IS NOT NULL AS used,
                      r.revoked_at IS NULL AND r.expires_at > now() AS live,
                      a.id, a.customer_id, a.role, a.status
               FROM refresh_tokens r JOIN accounts a ON a.id = r.account_id
               WHERE r.token_hash = $1 FOR UPDATE OF r""",
            security.token_hash(body.refresh_token),
        )
        if row is not None and row["used"]:
            await store.revoke_refresh_tokens(conn, family_id=row["family_id"])
        elif row is not None and row["live"] and row["status"] in ("active", "suspended"):
            await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", row["token_id"])
            await store.insert_refresh_token(
                conn,
                family_id=row["family_id"],
                account_id=row["id"],
                token_hash=security.token_hash(new_token),
                expires_at=datetime.now(UTC) + cfg["refresh_token_ttl"],
            )
            granted = row
    if granted is None:
        raise INVALID_REFRESH
    return _person_grant(request, granted, new_token)


@routes.post("/v1/logout")
@describe(body=LogoutRequest, status=204, tag="login")
@policy(OPEN)
async def logout(request: web.Request) -> web.Response:
    """Log out: the refresh token and every token rotated from the same login stop working (access tokens
    already issued live out their few minutes). Always 204, whether or not the token was valid."""
    body = await parse_body(request, LogoutRequest)
    db = request.app[RUNTIME].db
    family_id = await db.fetchval(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", security.token_hash(body.refresh_token)
    )
    if family_id is not None:
        await store.revoke_refresh_tokens(db, family_id=family_id)
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


class GrantPeek(BaseModel):
    model_config = ConfigDict(extra="allow")
    grant_type: str | None = None


INVALID_CLIENT = Problem(
    401,
    "Invalid client",
    "The client id or secret is wrong, or the client was revoked.",
    type_="urn:problem:invalid-client",
    error="invalid_client",
)


async def _client_credentials(request: web.Request) -> web.Response:
    body = await parse_body(request, ClientCredentials)
    row = await request.app[RUNTIME].db.fetchrow(
        "SELECT id, scopes, secret_hash FROM service_clients WHERE id = $1 AND revoked_at IS NULL", body.client_id
    )
    if row is None or not hmac.compare_digest(bytes(row["secret_hash"]), security.token_hash(body.client_secret)):
        raise INVALID_CLIENT
    cfg = request.app[ACCOUNTS_CFG]
    common = request.app[RUNTIME].settings.common
    token = security.issue_access_token(
        cfg["signing_key"],
        account_id=row["id"],
        customer_id=None,
        role="service",
        standing="active",
        issuer=common.jwt_issuer,
        audience=common.jwt_audience,
        ttl_s=cfg["access_token_ttl_s"],
        scope=" ".join(row["scopes"]),
    )
    return json_response(
        {"access_token": token, "token_type": "Bearer", "expires_in": cfg["access_token_ttl_s"]},
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/reset-password")
@describe(tag="password reset")
@policy(OPEN)
async def reset_password_page(request: web.Request) -> web.Response:
    """The page the password-reset email links to: a form that posts the token (read from the URL fragment) and
    the new password to ``POST /v1/password-resets/confirm``."""
    return web.Response(
        body=RESET_PAGE,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@routes.post("/v1/password-resets")
@describe(body=PasswordResetRequest, response=PasswordResetAccepted, status=202, tag="password reset")
@policy(OPEN)
async def request_password_reset(request: web.Request) -> web.Response:
    """Ask for a password-reset link by email. Always the same 202, whether or not the email has an account:
    an active or suspended account gets an email with a single-use link (valid for an hour by default; earlier
    unused reset links stop working); any other email gets nothing."""
    body = await parse_body(request, PasswordResetRequest)
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        account = await conn.fetchrow(
            """SELECT id, customer_id, email, full_name, version FROM accounts
               WHERE lower(email) = lower($1) AND status IN ('active', 'suspended') AND password_hash IS NOT NULL
               FOR UPDATE""",
            body.email,
        )
        await issue_password_reset(
            conn,
            request.app[WELCOME_KEY],
            account=account,
            sequence=account["version"] if account is not None else 0,
            correlation_id=request[REQUEST_ID],
            causation_id=request[REQUEST_ID],
        )
    return json_response({"status": "accepted"}, status=202, headers={"Cache-Control": "no-store"})


@routes.post("/v1/password-resets/confirm")
@describe(body=PasswordResetConfirmation, response=PasswordChanged, errors=(400,), tag="password reset")
@policy(OPEN)
async def confirm_password_reset(request: web.Request) -> web.Response:
    """Set a new password with the token from a password-reset link: the token stops working (and so do the
    account's other unused reset links), the old password no longer logs in, the account's failed-login
    throttle is cleared and its version goes up. 400 for any invalid, expired or used token; 422 for a
    password that is too short or too common."""
    body = await parse_body(request, PasswordResetConfirmation)
    _check_password(request, body.password)
    password_hash = await _hashing(request, security.hash_password, body.password)
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        reset = await store.use_invitation(conn, security.token_hash(body.token), purpose="password_reset")
        if reset is None:
            raise INVALID_RESET_LINK
        account = await store.set_password(conn, reset["account_id"], password_hash)
        if account is None:
            raise INVALID_RESET_LINK
        await conn.execute(
            """UPDATE invitations SET expires_at = now()
               WHERE account_id = $1 AND purpose = 'password_reset' AND used_at IS NULL AND expires_at > now()""",
            account["id"],
        )
        await throttle.forget_email(conn, account["email"])
        await store.revoke_refresh_tokens(conn, account_id=account["id"])
    return json_response({"status": "password_changed"}, headers={"Cache-Control": "no-store"})


@routes.get("/.well-known/jwks.json")
@describe(response=Jwks, tag="login")
@policy(OPEN)
async def jwks(request: web.Request) -> web.Response:
    """Public keys that verify access tokens (current and, during a rotation, previous)."""
    return json_response({"keys": request.app[ACCOUNTS_CFG]["jwks"]}, headers={"Cache-Control": "max-age=300"})


class AccountExportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: uuid.UUID


class AccountExport(BaseModel):
    accounts: list[dict[str, Any]] = Field(description="The customer's account (at most one), as stored")
    links: list[dict[str, Any]] = Field(description="Set-password and reset links issued (no tokens)")
    logins: list[dict[str, Any]] = Field(description="Refresh tokens issued by logins (no tokens)")


@routes.get("/v1/accounts/export")
@describe(query=AccountExportQuery, response=AccountExport, tag="privacy")
@policy(OPERATOR)
async def export_accounts(request: web.Request) -> web.Response:
    """Everything accounts holds about one customer (right of access): their account, the links and logins it
    had, without any secret (no password hash, no token or hash)."""
    q = parse_query(request, AccountExportQuery)
    db = request.app[RUNTIME].db
    rows = await db.fetch(
        f"SELECT {store.ACCOUNT_COLUMNS}, revoked_at, erased_at FROM accounts WHERE customer_id = $1", q.customer_id
    )
    ids = [r["id"] for r in rows]
    links = await db.fetch(
        """SELECT id, account_id, purpose, created_at, expires_at, used_at FROM invitations
           WHERE account_id = ANY($1::uuid[]) ORDER BY created_at""",
        ids,
    )
    logins = await db.fetch(
        """SELECT id, account_id, family_id, created_at, expires_at, used_at, revoked_at FROM refresh_tokens
           WHERE account_id = ANY($1::uuid[]) ORDER BY created_at""",
        ids,
    )

    def plain(r: Any) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, uuid.UUID) else v.isoformat() if isinstance(v, datetime) else v)
            for k, v in dict(r).items()
        }

    return json_response(
        {"accounts": [plain(r) for r in rows], "links": [plain(r) for r in links], "logins": [plain(r) for r in logins]}
    )


@routes.get("/v1/accounts/{id}")
@describe(response=Account, tag="accounts")
@policy(roles("admin", "member", "contact"))
async def get_account(request: web.Request) -> web.Response:
    account_id = parse_uuid(request.match_info["id"])
    who = principal(request)
    if who.role != "admin" and who.account_id != account_id:
        raise Problem(404, "Not found", f"No account {account_id}")
    row = await store.get_account(request.app[RUNTIME].db, account_id)
    if row is None:
        raise Problem(404, "Not found", f"No account {account_id}")
    return json_response(_account(row), headers={"ETag": f'"{row["version"]}"'})


@routes.get("/v1/accounts")
@describe(query=AccountQuery, response=AccountPage, tag="accounts")
@policy(OPERATOR)
async def list_accounts(request: web.Request) -> web.Response:
    q = parse_query(request, AccountQuery)
    rows = await store.list_accounts(request.app[RUNTIME].db, customer_id=q.customer_id, limit=q.limit, after=q.cursor)
    items = rows[: q.limit]
    next_cursor = str(items[-1]["id"]) if len(rows) > q.limit else None
    return json_response({"items": [_account(r) for r in items], "next_cursor": next_cursor})


@routes.post("/v1/accounts/{id}/invitations")
@describe(response=InvitationSent, status=202, errors=(409,), tag="accounts")
@policy(OPERATOR)
async def resend_invitation(request: web.Request) -> web.Response:
    """Send a new set-password link to an account that has not set its password yet (the earlier link stops
    working). An active, suspended or revoked account has nothing to accept: 409."""
    account_id = parse_uuid(request.match_info["id"])
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        account = await conn.fetchrow(
            "SELECT id, customer_id, email, full_name, status, version FROM accounts WHERE id = $1 FOR UPDATE",
            account_id,
        )
        if account is None:
            raise Problem(404, "Not found", f"No account {account_id}")
        if account["status"] != "invited":
            raise Problem(
                409,
                "Not awaiting a password",
                f"The account is {account['status']}: only invited accounts get a new set-password link",
                type_="urn:problem:account-not-invited",
                account_status=account["status"],
            )
        expires_at = await issue_invitation(
            conn,
            request.app[WELCOME_KEY],
            account_id=account["id"],
            customer_id=account["customer_id"],
            email=account["email"],
            full_name=account["full_name"],
            sequence=account["version"],
            correlation_id=request[REQUEST_ID],
            causation_id=request[REQUEST_ID],
        )
    return json_response({"account_id": str(account_id), "invitation_expires_at": expires_at.isoformat()}, status=202)


async def _locked_account(conn: Any, account_id: uuid.UUID) -> Any:
    row = await conn.fetchrow("SELECT * FROM accounts WHERE id = $1 FOR UPDATE", account_id)
    if row is None:
        raise Problem(404, "Not found", f"No account {account_id}")
    return row


@routes.post("/v1/accounts/{id}/revocation")
@describe(response=Account, errors=(409,), tag="accounts")
@policy(OPERATOR)
async def revoke(request: web.Request) -> web.Response:
    """Revoke portal access: the account cannot log in, its unused set-password links stop working, and every
    access token issued until now is refused by every service (within seconds). Already revoked: 409."""
    account_id = parse_uuid(request.match_info["id"])
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        row = await _locked_account(conn, account_id)
        if row["status"] == "revoked":
            raise Problem(
                409, "Already revoked", "The account's access is already revoked", type_="urn:problem:revoked"
            )
        if row["role"] == "admin":
            raise Problem(
                409, "Operator account", "Operator accounts are not revoked here", type_="urn:problem:operator-account"
            )
        row = await conn.fetchrow(
            """UPDATE accounts SET status = 'revoked', revoked_at = now(), version = version + 1, updated_at = now()
               WHERE id = $1 RETURNING *""",
            account_id,
        )
        await conn.execute(
            """UPDATE invitations SET expires_at = now()
               WHERE account_id = $1 AND used_at IS NULL AND expires_at > now()""",
            account_id,
        )
        await store.revoke_refresh_tokens(conn, account_id=account_id)
        await emit_revoked(conn, row, correlation_id=request[REQUEST_ID], causation_id=request[REQUEST_ID])
    return json_response(_account(row))


@routes.delete("/v1/accounts/{id}/revocation")
@describe(response=Account, errors=(409,), tag="accounts")
@policy(OPERATOR)
async def restore(request: web.Request) -> web.Response:
    """Restore revoked portal access: the account is active again (suspended if the customer is, invited if no
    password was ever set; send it a new link then). Tokens from before the revocation stay refused. Not revoked:
    409."""
    account_id = parse_uuid(request.match_info["id"])
    rt = request.app[RUNTIME]
    async with rt.db.acquire() as conn, conn.transaction():
        row = await _locked_account(conn, account_id)
        if row["status"] != "revoked":
            raise Problem(409, "Not revoked", "The account's access is not revoked", type_="urn:problem:not-revoked")
        if row["erased_at"] is not None:
            raise Problem(
                409,
                "Customer erased",
                "The account's customer was erased: it stays revoked",
                type_="urn:problem:erased",
            )
        if row["password_hash"] is None:
            status = "invited"
        else:
            status = "suspended" if row["customer_standing"] == "suspended" else "active"
        row = await conn.fetchrow(
            """UPDATE accounts SET status = $2, version = version + 1, updated_at = now() WHERE id = $1 RETURNING *""",
            account_id,
            status,
        )
        await emit(
            conn,
            AccountRestoredV1(
                account_id=account_id,
                customer_id=row["customer_id"],
                role=row["role"],
                status=status,  # type: ignore[arg-type]
                revoked_at=row["revoked_at"],
            ),
            producer=SERVICE,
            subject=account_id,
            sequence=row["version"],
            correlation_id=request[REQUEST_ID],
            causation_id=request[REQUEST_ID],
        )
    return json_response(_account(row))
