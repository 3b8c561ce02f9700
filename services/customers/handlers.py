"""Event consumers of the customers service, all listed in HANDLERS: what accounts reports about portal access."""

from __future__ import annotations

import asyncpg

from services.customers import lifecycle
from shared import revocation
from shared.consumer import Handler
from shared.events import AccountActivatedV1, AccountCreatedV1, AccountRestoredV1, AccountRevokedV1, Envelope


async def _portal_access(
    conn: asyncpg.Connection, env: Envelope, customer_id: object, account_id: object, access: str
) -> None:
    if customer_id is None:
        return  # operator accounts belong to no customer
    # the portal access and its history row in one statement (nothing when the event is older than what we hold)
    await conn.execute(
        """WITH c AS (
               UPDATE customers SET portal_access = $2, account_id = $3, account_sequence = $4
               WHERE id = $1 AND account_sequence < $4 RETURNING id
           )
           INSERT INTO customer_history (customer_id, action, actor_type, actor_id, details, correlation_id)
           SELECT id, $5, $6, $7, $8::jsonb, $9 FROM c""",
        customer_id,
        access,
        account_id,
        env.sequence,
        f"account.{access}",
        ACCOUNTS.type,
        ACCOUNTS.id,
        {"account_id": str(account_id)},
        env.correlation_id,
    )


ACCOUNTS = lifecycle.Actor("service", "accounts")


async def on_account_created(conn: asyncpg.Connection, env: Envelope, event: AccountCreatedV1) -> None:
    await _portal_access(conn, env, event.customer_id, event.account_id, "invited")


async def on_account_activated(conn: asyncpg.Connection, env: Envelope, event: AccountActivatedV1) -> None:
    await _portal_access(conn, env, event.customer_id, event.account_id, "active")


async def on_account_revoked(conn: asyncpg.Connection, env: Envelope, event: AccountRevokedV1) -> None:
    await revocation.on_account_revoked(conn, env, event)  # this service refuses the account's old tokens too
    await _portal_access(conn, env, event.customer_id, event.account_id, "revoked")


async def on_account_restored(conn: asyncpg.Connection, env: Envelope, event: AccountRestoredV1) -> None:
    await revocation.on_account_restored(conn, env, event)
    await _portal_access(conn, env, event.customer_id, event.account_id, event.status)


HANDLERS: dict[str, dict[str, Handler]] = {
    "customers.account-events": {
        AccountCreatedV1.routing_key(): Handler(AccountCreatedV1, on_account_created),
        AccountActivatedV1.routing_key(): Handler(AccountActivatedV1, on_account_activated),
        AccountRevokedV1.routing_key(): Handler(AccountRevokedV1, on_account_revoked),
        AccountRestoredV1.routing_key(): Handler(AccountRestoredV1, on_account_restored),
    }
}
