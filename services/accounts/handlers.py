"""Event consumers of the accounts service, all listed in HANDLERS."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from services.accounts import security, store
from shared.consumer import Handler, PermanentError
from shared.events import AccountCreatedV1, CustomerCreatedV1, Envelope, Message, SendEmailV1
from shared.outbox import emit
from shared.sealing import seal

SERVICE = "accounts"


@dataclass(frozen=True)
class WelcomeConfig:
    seal_key: bytes
    public_base_url: str
    invitation_ttl: timedelta


def set_password_url(base: str, token: str) -> str:
    # The token sits in the fragment: browsers never send it to a server, so it stays out of access logs.
    return f"{base.rstrip('/')}/activate#token={token}"


async def create_invited_account(
    conn: asyncpg.Connection,
    cfg: WelcomeConfig,
    *,
    customer_id: uuid.UUID,
    email: str,
    full_name: str,
    role: str,
    correlation_id: str | None,
    causation_id: str | None,
) -> uuid.UUID | None:
    """Account (invited) + invitation (token hash) + account.created event + the welcome email request, in the
    caller's transaction. Returns None when the customer already has an account."""
    account_id = uuid.uuid4()
    try:
        account = await store.insert_account(
            conn,
            account_id=account_id,
            customer_id=customer_id,
            email=email,
            full_name=full_name,
            role=role,
            status="invited",
        )
    except store.EmailTaken:
        raise PermanentError("another account already uses this email address") from None
    if account is None:
        return None
    await issue_invitation(
        conn,
        cfg,
        account_id=account_id,
        customer_id=customer_id,
        email=email,
        full_name=full_name,
        sequence=account["version"],
        correlation_id=correlation_id,
        causation_id=causation_id,
        announce=lambda expires_at: AccountCreatedV1(
            account_id=account_id,
            customer_id=customer_id,
            role=role,  # type: ignore[arg-type]
            status="invited",
            invitation_expires_at=expires_at,
        ),
    )
    return account_id


async def issue_invitation(
    conn: asyncpg.Connection,
    cfg: WelcomeConfig,
    *,
    account_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    email: str,
    full_name: str,
    sequence: int,
    correlation_id: str | None,
    causation_id: str | None,
    announce: Callable[[datetime], Message] | None = None,
) -> datetime:
    """A new set-password link for the account: earlier unused links stop working, only the new token's hash is
    stored, and the welcome email is requested with the link sealed for notifications. ``announce`` builds an
    event to publish alongside (account.created on creation)."""
    await conn.execute(
        "UPDATE invitations SET expires_at = now() WHERE account_id = $1 AND used_at IS NULL AND expires_at > now()",
        account_id,
    )
    token = security.new_token()
    invitation_id = uuid.uuid4()
    expires_at = datetime.now(UTC) + cfg.invitation_ttl
    await store.insert_invitation(
        conn,
        invitation_id=invitation_id,
        account_id=account_id,
        token_hash=security.token_hash(token),
        expires_at=expires_at,
    )
    if announce is not None:
        await emit(
            conn,
            announce(expires_at),
            producer=SERVICE,
            subject=account_id,
            sequence=sequence,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
    await emit(
        conn,
        SendEmailV1(
            request_key=f"welcome:{invitation_id}",
            template="welcome",
            to_email=email,
            to_name=full_name,
            customer_id=customer_id,
            account_id=account_id,
            context={"full_name": full_name, "expires_at": expires_at.isoformat()},
            sealed_context=seal(cfg.seal_key, {"set_password_url": set_password_url(cfg.public_base_url, token)}),
        ),
        producer=SERVICE,
        subject=account_id,
        sequence=sequence,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
    return expires_at


def make_handlers(cfg: WelcomeConfig) -> dict[str, dict[str, Handler]]:
    async def on_customer_created(conn: asyncpg.Connection, env: Envelope, event: CustomerCreatedV1) -> None:
        if not event.send_welcome:
            return
        await create_invited_account(
            conn,
            cfg,
            customer_id=event.customer_id,
            email=event.email,
            full_name=event.full_name,
            role=event.kind,
            correlation_id=env.correlation_id,
            causation_id=str(env.event_id),
        )

    return {
        "accounts.customer-events": {
            CustomerCreatedV1.routing_key(): Handler(CustomerCreatedV1, on_customer_created),
        }
    }
