"""The accounts service's SQL, in one place."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared.db import advisory_xact_lock

ACCOUNT_COLUMNS = "id, customer_id, email, full_name, role, status, version, created_at, updated_at, activated_at"


class EmailTaken(Exception):
    pass


def email_taken(exc: asyncpg.UniqueViolationError) -> bool:
    """Whether the violation is of the unique login email (another account has it)."""
    return exc.constraint_name == "accounts_email_key"


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
    customer_sequence: int = 0,
    customer_standing: str = "active",
) -> asyncpg.Record | None:
    """Returns None when the customer already has an account (a duplicate request). ``customer_sequence`` is
    the sequence of the customer event the account is made from: its kind, standing, email and name are as of
    that event."""
    try:
        return await conn.fetchrow(
            f"""INSERT INTO accounts (id, customer_id, email, full_name, role, status, password_hash,
                                      activated_at, customer_sequence, profile_sequence, customer_standing)
                VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'active' THEN now() END, $8, $8, $9)
                ON CONFLICT (customer_id) DO NOTHING
                RETURNING {ACCOUNT_COLUMNS}""",
            account_id,
            customer_id,
            email,
            full_name,
            role,
            status,
            password_hash,
            customer_sequence,
            customer_standing,
        )
    except asyncpg.UniqueViolationError as exc:
        if email_taken(exc):
            raise EmailTaken(email) from None
        raise


CUSTOMER_FACTS_CLEANUP_SQL = "DELETE FROM customer_facts WHERE updated_at < now() - interval '1 day'"


def customer_lock(customer_id: uuid.UUID) -> str:
    """The name of the advisory lock ``lock_customer`` takes (a consumer's batch takes its customers' at once)."""
    return f"customer:{customer_id}"


async def lock_customer(conn: asyncpg.Connection, customer_id: uuid.UUID) -> None:
    """Serialise, until the end of the transaction, the handling of events about one customer: making its account
    and applying a later event then see each other (whichever runs first)."""
    await advisory_xact_lock(conn, customer_lock(customer_id))


async def remember_customer_facts(
    conn: asyncpg.Connection,
    *,
    customer_id: uuid.UUID,
    sequence: int,
    kind: str,
    standing: str,
    email: str | None,
    full_name: str | None,
) -> None:
    """Keep what an event says about a customer without an account, unless newer facts are already kept."""
    await conn.execute(
        """INSERT INTO customer_facts AS f (customer_id, sequence, kind, standing, profile_sequence, email, full_name)
           VALUES ($1, $2, $3, $4, CASE WHEN $5::text IS NULL THEN 0 ELSE $2 END, $5, $6)
           ON CONFLICT (customer_id) DO UPDATE SET
               sequence = GREATEST(f.sequence, EXCLUDED.sequence),
               kind = CASE WHEN EXCLUDED.sequence > f.sequence THEN EXCLUDED.kind ELSE f.kind END,
               standing = CASE WHEN EXCLUDED.sequence > f.sequence THEN EXCLUDED.standing ELSE f.standing END,
               profile_sequence = GREATEST(f.profile_sequence, EXCLUDED.profile_sequence),
               email = CASE WHEN EXCLUDED.profile_sequence > f.profile_sequence THEN EXCLUDED.email ELSE f.email END,
               full_name = CASE WHEN EXCLUDED.profile_sequence > f.profile_sequence
                                THEN EXCLUDED.full_name ELSE f.full_name END,
               updated_at = now()""",
        customer_id,
        sequence,
        kind,
        standing,
        email,
        full_name,
    )


async def insert_invitation(
    conn: asyncpg.Connection,
    *,
    invitation_id: uuid.UUID,
    account_id: uuid.UUID,
    token_hash: bytes,
    expires_at: datetime,
    purpose: str = "invitation",
) -> None:
    await conn.execute(
        "INSERT INTO invitations (id, account_id, token_hash, expires_at, purpose) VALUES ($1, $2, $3, $4, $5)",
        invitation_id,
        account_id,
        token_hash,
        expires_at,
        purpose,
    )


async def use_invitation(
    conn: asyncpg.Connection, token_hash: bytes, purpose: str = "invitation"
) -> asyncpg.Record | None:
    """Mark the invitation (or password reset: ``purpose``) used and return its account, if the token is valid,
    unused and unexpired. The UPDATE is the single-use guarantee: of two concurrent uses of one token, only one
    gets a row."""
    return await conn.fetchrow(
        """UPDATE invitations SET used_at = now()
           WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
           RETURNING id, account_id""",
        token_hash,
        purpose,
    )


async def activate_account(conn: asyncpg.Connection, account_id: uuid.UUID, password_hash: str) -> asyncpg.Record:
    """Set the password. An invited account becomes active, or suspended when its customer is suspended: that
    is two changes (activated, then suspended), so the version goes up by two and the caller announces both."""
    return await conn.fetchrow(
        f"""UPDATE accounts SET password_hash = $2,
                   status = CASE WHEN status <> 'invited' THEN status
                                 WHEN customer_standing = 'suspended' THEN 'suspended'
                                 ELSE 'active' END,
                   version = version + CASE WHEN status = 'invited' AND customer_standing = 'suspended'
                                            THEN 2 ELSE 1 END,
                   activated_at = coalesce(activated_at, now()), updated_at = now()
            WHERE id = $1 RETURNING {ACCOUNT_COLUMNS}""",
        account_id,
        password_hash,
    )


async def apply_customer_state(
    conn: asyncpg.Connection,
    *,
    customer_id: uuid.UUID,
    sequence: int,
    kind: str,
    standing: str,
    email: str | None = None,
    full_name: str | None = None,
) -> asyncpg.Record | None:
    """Apply what a customer event says about the customer after the change, in one conditional UPDATE (no
    read-then-write): kind -> role (never for an admin) and standing -> status ('active' <-> 'suspended'; an
    invited or revoked account keeps its status, the standing is remembered) only when ``sequence`` is above
    ``customer_sequence``; email and full name (when the event carries them) only when it is above
    ``profile_sequence``. The version goes up by one per change: profile, then role, then status.

    Returns None when nothing applies (no account, or a stale event), else the account after the change with
    ``old_role``, ``old_status``, ``old_version`` and ``profile_changed``. Raises ``EmailTaken`` when the new
    email belongs to another account."""
    try:
        return await conn.fetchrow(
            """WITH old AS (
                   SELECT id, role, status, email, full_name, version,
                          customer_sequence < $2 AS state_newer,
                          ($5::text IS NOT NULL AND profile_sequence < $2) AS profile_newer
                   FROM accounts
                   WHERE customer_id = $1
                     AND (customer_sequence < $2 OR ($5::text IS NOT NULL AND profile_sequence < $2))
                   FOR UPDATE
               ), new AS (
                   SELECT id, state_newer, profile_newer, version AS old_version,
                          role AS old_role, status AS old_status,
                          CASE WHEN state_newer AND role <> 'admin' THEN $3::text ELSE role END AS role,
                          CASE WHEN NOT state_newer THEN status
                               WHEN status = 'active' AND $4::text = 'suspended' THEN 'suspended'
                               WHEN status = 'suspended' AND $4::text = 'active' THEN 'active'
                               ELSE status END AS status,
                          CASE WHEN profile_newer THEN $5::text ELSE email END AS email,
                          CASE WHEN profile_newer THEN $6::text ELSE full_name END AS full_name,
                          profile_newer AND ($5::text IS DISTINCT FROM email OR $6::text IS DISTINCT FROM full_name)
                              AS profile_changed
                   FROM old
               )
               UPDATE accounts a
               SET role = n.role, status = n.status, email = n.email, full_name = n.full_name,
                   customer_standing = CASE WHEN n.state_newer THEN $4::text ELSE a.customer_standing END,
                   customer_sequence = CASE WHEN n.state_newer THEN $2 ELSE a.customer_sequence END,
                   profile_sequence = CASE WHEN n.profile_newer THEN $2 ELSE a.profile_sequence END,
                   version = a.version + n.profile_changed::int + (n.role <> n.old_role)::int
                             + (n.status <> n.old_status)::int,
                   updated_at = CASE WHEN n.profile_changed OR n.role <> n.old_role OR n.status <> n.old_status
                                     THEN now() ELSE a.updated_at END
               FROM new n
               WHERE a.id = n.id
               RETURNING a.id, a.customer_id, a.role, a.status, a.version,
                         n.old_role, n.old_status, n.old_version, n.profile_changed""",
            customer_id,
            sequence,
            kind,
            standing,
            email,
            full_name,
        )
    except asyncpg.UniqueViolationError as exc:
        if email_taken(exc):
            raise EmailTaken(email) from None
        raise


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


async def set_password(conn: asyncpg.Connection, account_id: uuid.UUID, password_hash: str) -> asyncpg.Record | None:
    """A new password for an account that can log in (active or suspended); its version goes up. None when the
    account cannot (revoked in the meantime)."""
    return await conn.fetchrow(
        f"""UPDATE accounts SET password_hash = $2, version = version + 1, updated_at = now()
            WHERE id = $1 AND status IN ('active', 'suspended') RETURNING {ACCOUNT_COLUMNS}""",
        account_id,
        password_hash,
    )


async def insert_refresh_token(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    family_id: uuid.UUID,
    account_id: uuid.UUID,
    token_hash: bytes,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO refresh_tokens (id, family_id, account_id, token_hash, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        uuid.uuid4(),
        family_id,
        account_id,
        token_hash,
        expires_at,
    )


async def revoke_refresh_tokens(
    conn: asyncpg.Connection | asyncpg.Pool, *, family_id: uuid.UUID | None = None, account_id: uuid.UUID | None = None
) -> None:
    """Revoke a family, or every refresh token of an account."""
    await conn.execute(
        """UPDATE refresh_tokens SET revoked_at = now()
           WHERE revoked_at IS NULL AND (family_id = $1 OR account_id = $2)""",
        family_id,
        account_id,
    )
