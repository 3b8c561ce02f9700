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
    updated = await conn.fetchval(
        """UPDATE customers SET portal_access = $2, account_id = $3, account_sequence = $4
           WHERE id = $1 AND account_sequence < $4 RETURNING id""",
        customer_id,
        access,
        account_id,
        env.sequence,
    )
    if updated:
        await lifecycle.record(
            conn,
            customer_id,  # type: ignore[arg-type]
            f"account.{access}",
            lifecycle.Actor("service", "accounts"),
            {"account_id": account_id},
            env.correlation_id,
        )


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
