"""The accounts service's SQL, in one place."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

ACCOUNT_COLUMNS = "id, customer_id, email, full_name, role, status, version, created_at, updated_at, activated_at"


class EmailTaken(Exception):
    pass


async def insert_account(
    conn: asyncpg.Connection,
    *,
    account_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    email: str,
    full_name: str,
    role: str,
    status: str,
    password_hash: str | None = None,
) -> asyncpg.Record | None:
    """Returns None when the customer already has an account (a duplicate request)."""
    try:
        return await conn.fetchrow(
            f"""INSERT INTO accounts (id, customer_id, email, full_name, role, status, password_hash,
                                      activated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'active' THEN now() END)
                ON CONFLICT (customer_id) DO NOTHING
                RETURNING {ACCOUNT_COLUMNS}""",
            account_id,
            customer_id,
            email,
            full_name,
            role,
            status,
            password_hash,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "accounts_email_key":
            raise EmailTaken(email) from None
        raise


async def insert_invitation(
    conn: asyncpg.Connection,
    *,
    invitation_id: uuid.UUID,
    account_id: uuid.UUID,
    token_hash: bytes,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO invitations (id, account_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
        invitation_id,
        account_id,
        token_hash,
        expires_at,
    )


async def use_invitation(conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    """Mark the invitation used and return its account, if the token is valid, unused and unexpired. The UPDATE
    is the single-use guarantee: of two concurrent activations with one token, only one gets a row."""
    return await conn.fetchrow(
        """UPDATE invitations SET used_at = now()
           WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
           RETURNING id, account_id""",
        token_hash,
    )


async def activate_account(conn: asyncpg.Connection, account_id: uuid.UUID, password_hash: str) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""UPDATE accounts SET password_hash = $2,
                   status = CASE WHEN status = 'invited' THEN 'active' ELSE status END,
                   activated_at = coalesce(activated_at, now()), version = version + 1, updated_at = now()
            WHERE id = $1 RETURNING {ACCOUNT_COLUMNS}""",
        account_id,
        password_hash,
    )


async def find_for_login(conn: asyncpg.Connection | asyncpg.Pool, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT id, customer_id, role, status, password_hash FROM accounts
           WHERE lower(email) = lower($1) AND status IN ('active', 'suspended') AND password_hash IS NOT NULL""",
        email,
    )


async def get_account(conn: asyncpg.Connection | asyncpg.Pool, account_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1", account_id)


async def list_accounts(
    conn: asyncpg.Connection | asyncpg.Pool, *, customer_id: uuid.UUID | None, limit: int, after: uuid.UUID | None
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {ACCOUNT_COLUMNS} FROM accounts
            WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::uuid IS NULL OR id > $2)
            ORDER BY id LIMIT $3""",
        customer_id,
        after,
        limit + 1,
    )
