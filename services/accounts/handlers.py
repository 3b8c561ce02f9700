"""Event consumers of the accounts service, all listed in HANDLERS."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.accounts import security, store, throttle
from shared.consumer import Handler, PermanentError
from shared.events import (
    AccountCreatedV1,
    AccountReactivatedV1,
    AccountRevokedV1,
    AccountRoleChangedV1,
    AccountSuspendedV1,
    CustomerBecameContactV1,
    CustomerBecameMemberV1,
    CustomerCreatedV1,
    CustomerErasedV1,
    CustomerReactivatedV1,
    CustomerSuspendedV1,
    CustomerUpdatedV1,
    CustomerUserAccountRequestedV1,
    Envelope,
    Message,
    SendEmailV1,
    make_envelope,
)
from shared.events.customers import CustomerStateMixin
from shared.outbox import emit, insert_from, insert_values, outbox_row
from shared.sealing import seal

SERVICE = "accounts"


@dataclass(frozen=True)
class WelcomeConfig:
    seal_key: bytes
    public_base_url: str
    invitation_ttl: timedelta
    password_reset_ttl: timedelta = timedelta(hours=1)


def set_password_url(base: str, token: str) -> str:
    # The token sits in the fragment: browsers never send it to a server, so it stays out of access logs.
    return f"{base.rstrip('/')}/activate#token={token}"


def reset_password_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/reset-password#token={token}"


async def issue_password_reset(
    conn: asyncpg.Connection,
    cfg: WelcomeConfig,
    *,
    account: asyncpg.Record | None,
    sequence: int,
    correlation_id: str | None,
    causation_id: str | None,
) -> None:
    """A password-reset link for ``account`` (None: an unknown email, for which the same token work is done and
    nothing is stored or sent): its earlier unused reset links stop working, only the new token's hash is kept,
    and the email is requested with the link sealed for notifications, like the welcome link."""
    token = security.new_token()
    digest = security.token_hash(token)
    invitation_id = uuid.uuid4()
    expires_at = datetime.now(UTC) + cfg.password_reset_ttl
    await conn.execute(
        """UPDATE invitations SET expires_at = now()
           WHERE account_id = $1 AND purpose = 'password_reset' AND used_at IS NULL AND expires_at > now()""",
        account["id"] if account is not None else None,
    )
    if account is None:
        return
    await store.insert_invitation(
        conn,
        invitation_id=invitation_id,
        account_id=account["id"],
        token_hash=digest,
        expires_at=expires_at,
        purpose="password_reset",
    )
    await emit(
        conn,
        SendEmailV1(
            request_key=f"password_reset:{invitation_id}",
            template="password_reset",
            to_email=account["email"],
            to_name=account["full_name"],
            customer_id=account["customer_id"],
            account_id=account["id"],
            context={"full_name": account["full_name"], "expires_at": expires_at.isoformat()},
            sealed_context=seal(cfg.seal_key, {"reset_password_url": reset_password_url(cfg.public_base_url, token)}),
        ),
        producer=SERVICE,
        subject=account["id"],
        sequence=sequence,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


NEW_ACCOUNT_VERSION = 1
"""The version of a freshly inserted account (the column's default): the sequence of its first events."""


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
    customer_sequence: int = 0,
    customer_standing: str = "active",
) -> tuple[uuid.UUID | None, dict[str, Any] | None]:
    """Account (invited) + invitation (token hash) + account.created event + the welcome email request, in the
    caller's transaction and in one statement, which also takes (deletes and returns) the customer facts kept for
    an account that did not exist yet (the caller holds the customer's lock). Returns the new account's id (None
    when the customer already has an account: then nothing is written) and those facts (None when there were
    none). ``customer_sequence`` and ``customer_standing`` come from the customer event the account is made
    from."""
    account_id = uuid.uuid4()
    invitation = prepare_invitation(
        cfg,
        account_id=account_id,
        customer_id=customer_id,
        email=email,
        full_name=full_name,
        sequence=NEW_ACCOUNT_VERSION,
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
    events = "".join(f", o{n} AS ({insert_from('a', 11 + 6 * n)})" for n in range(len(invitation.events)))
    try:
        row = await conn.fetchrow(
            f"""WITH f AS (DELETE FROM customer_facts WHERE customer_id = $2
                           RETURNING sequence, kind, standing, profile_sequence, email, full_name),
                a AS (INSERT INTO accounts (id, customer_id, email, full_name, role, status, customer_sequence,
                                            profile_sequence, customer_standing)
                      VALUES ($1, $2, $3, $4, $5, 'invited', $6, $6, $7)
                      ON CONFLICT (customer_id) DO NOTHING RETURNING version),
                i AS (INSERT INTO invitations (id, account_id, token_hash, expires_at, purpose)
                      SELECT $8, $1, $9, $10, 'invitation' FROM a){events}
                SELECT (SELECT version FROM a) AS version,
                       (SELECT to_jsonb(f) FROM f) AS facts""",
            account_id,
            customer_id,
            email,
            full_name,
            role,
            customer_sequence,
            customer_standing,
            invitation.invitation_id,
            invitation.token_hash,
            invitation.expires_at,
            *(value for event in invitation.events for value in event),
        )
    except asyncpg.UniqueViolationError as exc:
        if store.email_taken(exc):
            raise PermanentError("another account already uses this email address") from None
        raise
    if row["version"] is None:
        return None, row["facts"]
    if row["version"] != NEW_ACCOUNT_VERSION:  # the events were written with the wrong sequence: undo them
        raise RuntimeError(f"a new account has version {row['version']}, not {NEW_ACCOUNT_VERSION}")
    return account_id, row["facts"]


@dataclass(frozen=True)
class _Invitation:
    invitation_id: uuid.UUID
    token_hash: bytes
    expires_at: datetime
    events: list[tuple[object, ...]]
    """``outbox_row`` values: the announcement (if any), then the welcome email request."""


def prepare_invitation(
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
) -> _Invitation:
    """A new set-password link (only its token's hash is kept) and the events that go with it: the welcome email
    request with the link sealed for notifications, after ``announce``'s event if given."""
    token = security.new_token()
    invitation_id = uuid.uuid4()
    expires_at = datetime.now(UTC) + cfg.invitation_ttl
    messages: list[Message] = [] if announce is None else [announce(expires_at)]
    messages.append(
        SendEmailV1(
            request_key=f"welcome:{invitation_id}",
            template="welcome",
            to_email=email,
            to_name=full_name,
            customer_id=customer_id,
            account_id=account_id,
            context={"full_name": full_name, "expires_at": expires_at.isoformat()},
            sealed_context=seal(cfg.seal_key, {"set_password_url": set_password_url(cfg.public_base_url, token)}),
        )
    )
    events = [
        outbox_row(
            make_envelope(
                m,
                producer=SERVICE,
                subject=account_id,
                sequence=sequence,
                correlation_id=correlation_id,
                causation_id=causation_id,
            ),
            m.EXCHANGE,
        )
        for m in messages
    ]
    return _Invitation(invitation_id, security.token_hash(token), expires_at, events)


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
    """A new set-password link for an existing account: earlier unused links stop working, only the new token's
    hash is stored, and the welcome email is requested with the link sealed for notifications. ``announce`` builds
    an event to publish alongside."""
    await conn.execute(
        """UPDATE invitations SET expires_at = now()
           WHERE account_id = $1 AND used_at IS NULL AND expires_at > now()""",
        account_id,
    )
    invitation = prepare_invitation(
        cfg,
        account_id=account_id,
        customer_id=customer_id,
        email=email,
        full_name=full_name,
        sequence=sequence,
        correlation_id=correlation_id,
        causation_id=causation_id,
        announce=announce,
    )
    # the invitation (only the token's hash) and its events in one statement
    await conn.execute(
        f"""WITH i AS (INSERT INTO invitations (id, account_id, token_hash, expires_at, purpose)
                       VALUES ($1, $2, $3, $4, 'invitation'))
            {insert_values(5, len(invitation.events))}""",
        invitation.invitation_id,
        account_id,
        invitation.token_hash,
        invitation.expires_at,
        *(value for row in invitation.events for value in row),
    )
    return invitation.expires_at


async def apply_customer_state(
    conn: asyncpg.Connection,
    env: Envelope,
    customer_id: uuid.UUID,
    kind: str,
    standing: str,
    *,
    email: str | None = None,
    full_name: str | None = None,
) -> None:
    """Make the customer's account follow the customer as of ``env.sequence`` (the customer's version), in the
    caller's transaction. Every customer event after creation carries the kind and standing after the change,
    so every handler calls this with them, and the newest event wins whatever the delivery order:

    - kind -> role (not for an admin account); standing -> status: 'active' <-> 'suspended'. An invited account
      stays invited and a revoked one revoked; the standing is remembered for activation.
    - email and full name, from the events that carry them (updated, user_account_requested), under their own
      watermark: the login email follows the customer's email.
    - Nothing when the customer has no account, or the event is not newer than what the account holds.

    Each real change bumps the account's version; a role change is announced with ``accounts.account.
    role_changed.v1`` and a status change with ``accounts.account.suspended.v1`` / ``reactivated.v1``, each with
    the account version it produced as sequence. A profile change is not announced (it only bumps the version).
    A new email that belongs to another account is a PermanentError (the event goes to the dead-letter queue)."""
    await store.lock_customer(conn, customer_id)
    try:
        row = await store.apply_customer_state(
            conn,
            customer_id=customer_id,
            sequence=env.sequence,
            kind=kind,
            standing=standing,
            email=email,
            full_name=full_name,
        )
        if row is None and not await conn.fetchval("SELECT 1 FROM accounts WHERE customer_id = $1", customer_id):
            # no account yet: kept for the account an earlier event (handled later) may still make
            await store.remember_customer_facts(
                conn,
                customer_id=customer_id,
                sequence=env.sequence,
                kind=kind,
                standing=standing,
                email=email,
                full_name=full_name,
            )
    except store.EmailTaken:
        raise PermanentError(
            f"customer {customer_id}: another account already uses the new email address, so the login email "
            "cannot follow it"
        ) from None
    if row is None:
        return
    changes: list[Message] = []
    if row["role"] != row["old_role"]:
        changes.append(
            AccountRoleChangedV1(
                account_id=row["id"],
                customer_id=row["customer_id"],
                role=row["role"],
                status=row["old_status"],  # the status changes (if it does) right after, in its own event
                previous_role=row["old_role"],
            )
        )
    if row["status"] != row["old_status"]:
        status_event = AccountSuspendedV1 if row["status"] == "suspended" else AccountReactivatedV1
        changes.append(
            status_event(account_id=row["id"], customer_id=row["customer_id"], role=row["role"], status=row["status"])
        )
    version = row["old_version"] + int(row["profile_changed"])
    for message in changes:
        version += 1
        await emit(
            conn,
            message,
            producer=SERVICE,
            subject=row["id"],
            sequence=version,
            correlation_id=env.correlation_id,
            causation_id=str(env.event_id),
        )
    if version != row["version"]:  # cannot happen: the UPDATE bumps the version once per change
        raise RuntimeError(f"account {row['id']}: version {row['version']} after the changes, expected {version}")


ERASED = 2**31 - 1  # erasure is final: no later (or late) customer event may apply to the account after it


async def on_customer_erased(conn: asyncpg.Connection, env: Envelope, event: CustomerErasedV1) -> None:
    """The customer was erased: their account keeps its id and role, and loses everything personal. Its email
    and name become placeholders, the password hash, set-password and reset links, refresh tokens and login
    failures are deleted, and access is revoked for good (announced, so every service refuses its tokens);
    both watermarks go to the maximum so no late customer event brings anything back. The published copies of
    the events and email requests about it are deleted from the outbox, and emails not yet requested are not."""
    await conn.execute("DELETE FROM customer_facts WHERE customer_id = $1", event.customer_id)
    account = await conn.fetchrow(
        "SELECT id, email, status, erased_at FROM accounts WHERE customer_id = $1 FOR UPDATE", event.customer_id
    )
    if account is None or account["erased_at"] is not None:
        return
    account_id = account["id"]
    await conn.execute("DELETE FROM invitations WHERE account_id = $1", account_id)
    await conn.execute("DELETE FROM refresh_tokens WHERE account_id = $1", account_id)
    await conn.execute("DELETE FROM login_failures WHERE key = $1", throttle.email_key(account["email"]))
    row = await conn.fetchrow(
        """UPDATE accounts SET email = $2, full_name = 'erased', password_hash = NULL, status = 'revoked',
               revoked_at = now(), erased_at = $3, customer_sequence = $4, profile_sequence = $4,
               version = version + 1, updated_at = now()
           WHERE id = $1 RETURNING *""",
        account_id,
        f"erased-{account_id}@invalid",
        event.erased_at,
        ERASED,
    )
    await conn.execute(
        """DELETE FROM outbox WHERE (published_at IS NOT NULL OR routing_key LIKE 'notifications.send_email.%')
             AND (convert_from(body, 'UTF8')::jsonb ->> 'subject' = $1
                  OR convert_from(body, 'UTF8')::jsonb -> 'payload' ->> 'customer_id' = $2)""",
        str(account_id),
        str(event.customer_id),
    )
    await emit_revoked(conn, row, correlation_id=env.correlation_id, causation_id=str(env.event_id))


def make_handlers(cfg: WelcomeConfig) -> dict[str, dict[str, Handler]]:
    async def create_or_follow(
        conn: asyncpg.Connection, env: Envelope, event: CustomerCreatedV1 | CustomerUserAccountRequestedV1
    ) -> None:
        """An invited account with its welcome email, made from the customer as of this event; when the
        customer already has an account nothing is created or sent (a repeated request), and the account only
        follows the event if it is newer than what it holds. Then the account catches up with newer events
        handled while it did not exist yet (the welcome email goes out with this event's name and email)."""
        await store.lock_customer(conn, event.customer_id)
        # the facts kept for it are taken by the statement that makes the account (two round trips in all)
        created, facts = await create_invited_account(
            conn,
            cfg,
            customer_id=event.customer_id,
            email=event.email,
            full_name=event.full_name,
            role=event.kind,
            correlation_id=env.correlation_id,
            causation_id=str(env.event_id),
            customer_sequence=env.sequence,
            customer_standing=event.standing,
        )
        if created is None:
            await apply_customer_state(
                conn, env, event.customer_id, event.kind, event.standing, email=event.email, full_name=event.full_name
            )
        if facts is not None:
            if facts["profile_sequence"]:
                await apply_customer_state(
                    conn,
                    env.model_copy(update={"sequence": facts["profile_sequence"]}),
                    event.customer_id,
                    facts["kind"],
                    facts["standing"],
                    email=facts["email"],
                    full_name=facts["full_name"],
                )
            await apply_customer_state(
                conn,
                env.model_copy(update={"sequence": facts["sequence"]}),
                event.customer_id,
                facts["kind"],
                facts["standing"],
            )

    async def on_customer_created(conn: asyncpg.Connection, env: Envelope, event: CustomerCreatedV1) -> None:
        if event.send_welcome:
            await create_or_follow(conn, env, event)

    async def on_user_account_requested(
        conn: asyncpg.Connection, env: Envelope, event: CustomerUserAccountRequestedV1
    ) -> None:
        await create_or_follow(conn, env, event)

    async def on_customer_updated(conn: asyncpg.Connection, env: Envelope, event: CustomerUpdatedV1) -> None:
        await apply_customer_state(
            conn, env, event.customer_id, event.kind, event.standing, email=event.email, full_name=event.full_name
        )

    async def on_customer_state(conn: asyncpg.Connection, env: Envelope, event: CustomerStateMixin) -> None:
        """became_member, became_contact, suspended, reactivated: each carries the kind and standing after the
        change, which is all the account follows."""
        await apply_customer_state(conn, env, event.customer_id, event.kind, event.standing)

    state_events: tuple[type[CustomerStateMixin], ...] = (
        CustomerBecameMemberV1,
        CustomerBecameContactV1,
        CustomerSuspendedV1,
        CustomerReactivatedV1,
    )

    def customer(env: Envelope, event: Any) -> tuple[str, ...]:  # the lock every handler below takes but erasure
        return (store.customer_lock(event.customer_id),)

    def welcomed_customer(env: Envelope, event: CustomerCreatedV1) -> tuple[str, ...]:
        return customer(env, event) if event.send_welcome else ()

    return {
        "accounts.customer-events": {
            CustomerCreatedV1.routing_key(): Handler(CustomerCreatedV1, on_customer_created, locks=welcomed_customer),
            CustomerUserAccountRequestedV1.routing_key(): Handler(
                CustomerUserAccountRequestedV1, on_user_account_requested, locks=customer
            ),
            CustomerUpdatedV1.routing_key(): Handler(CustomerUpdatedV1, on_customer_updated, locks=customer),
            CustomerErasedV1.routing_key(): Handler(CustomerErasedV1, on_customer_erased),
            **{m.routing_key(): Handler(m, on_customer_state, locks=customer) for m in state_events},
        }
    }


async def emit_revoked(
    conn: asyncpg.Connection, row: Any, *, correlation_id: str | None, causation_id: str | None
) -> None:
    """Announce that the account (``row``, after the change) lost its portal access."""
    await emit(
        conn,
        AccountRevokedV1(
            account_id=row["id"],
            customer_id=row["customer_id"],
            role=row["role"],
            status="revoked",
            revoked_at=row["revoked_at"],
        ),
        producer=SERVICE,
        subject=row["id"],
        sequence=row["version"],
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
