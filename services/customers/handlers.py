"""Event consumers of the customers service, all listed in HANDLERS: what accounts reports about portal access."""

from __future__ import annotations

import asyncpg

from services.customers import lifecycle
from shared import revocation
from shared.consumer import NOTHING, Handler, Statement, execute_statement
from shared.events import AccountActivatedV1, AccountCreatedV1, AccountRestoredV1, AccountRevokedV1, Envelope


def _portal_access(env: Envelope, customer_id: object, account_id: object, access: str) -> Statement:
    """The customer's portal access and its history row, as one statement (nothing when the event is older than
    what we hold, or about an operator account, which belongs to no customer)."""
    if customer_id is None:
        return NOTHING
    return Statement(
        """c AS (
               UPDATE customers SET portal_access = $4, account_id = $5, account_sequence = $6
               WHERE id = $3 AND account_sequence < $6 AND EXISTS (SELECT FROM fresh) RETURNING id
           ),
           h AS (
               INSERT INTO customer_history (customer_id, action, actor_type, actor_id, details, correlation_id)
               SELECT id, $7, $8, $9, $10::jsonb, $11 FROM c
           )""",
        (
            customer_id,
            access,
            account_id,
            env.sequence,
            f"account.{access}",
            ACCOUNTS.type,
            ACCOUNTS.id,
            {"account_id": str(account_id)},
            env.correlation_id,
        ),
    )


ACCOUNTS = lifecycle.Actor("service", "accounts")


def on_account_created(env: Envelope, event: AccountCreatedV1) -> Statement:
    return _portal_access(env, event.customer_id, event.account_id, "invited")


def on_account_activated(env: Envelope, event: AccountActivatedV1) -> Statement:
    return _portal_access(env, event.customer_id, event.account_id, "active")


async def on_account_revoked(conn: asyncpg.Connection, env: Envelope, event: AccountRevokedV1) -> None:
    await revocation.on_account_revoked(conn, env, event)  # this service refuses the account's old tokens too
    await execute_statement(conn, _portal_access(env, event.customer_id, event.account_id, "revoked"))


async def on_account_restored(conn: asyncpg.Connection, env: Envelope, event: AccountRestoredV1) -> None:
    await revocation.on_account_restored(conn, env, event)
    await execute_statement(conn, _portal_access(env, event.customer_id, event.account_id, event.status))


HANDLERS: dict[str, dict[str, Handler]] = {
    "customers.account-events": {
        AccountCreatedV1.routing_key(): Handler(AccountCreatedV1, statement=on_account_created),
        AccountActivatedV1.routing_key(): Handler(AccountActivatedV1, statement=on_account_activated),
        AccountRevokedV1.routing_key(): Handler(AccountRevokedV1, on_account_revoked),
        AccountRestoredV1.routing_key(): Handler(AccountRestoredV1, on_account_restored),
    }
}
