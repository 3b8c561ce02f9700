"""Operator commands of the accounts service."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import uuid
from pathlib import Path

import asyncpg

from services.accounts import security, store
from services.accounts.settings import AccountsSettings
from shared.db import create_pool, migrate


def configure_create_operator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--email", required=True)
    p.add_argument("--name", required=True, help="the operator's full name")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (else OPERATOR_PASSWORD, else a prompt)",
    )


def create_operator(settings: AccountsSettings, args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif os.environ.get("OPERATOR_PASSWORD"):
        password = os.environ["OPERATOR_PASSWORD"]
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat: "):
            print("the passwords differ", file=sys.stderr)
            return 1
    problems = security.password_problems(password, settings.password_min_length)
    if problems:
        print("password " + "; ".join(problems), file=sys.stderr)
        return 1

    async def go() -> int:
        from services.accounts.app import MIGRATIONS

        await migrate(settings.database_url, MIGRATIONS)
        pool = await create_pool(settings.database_url, 1, 2)
        try:
            async with pool.acquire() as conn, conn.transaction():
                try:
                    row = await store.insert_account(
                        conn,
                        account_id=uuid.uuid4(),
                        customer_id=None,
                        email=args.email,
                        full_name=args.name,
                        role="admin",
                        status="active",
                        password_hash=security.hash_password(password),
                    )
                except store.EmailTaken:
                    print(f"an account with email {args.email} already exists", file=sys.stderr)
                    return 1
            assert row is not None
            print(f"operator account {row['id']} created for {args.email}")
            return 0
        finally:
            await pool.close()

    return asyncio.run(go())


def configure_generate_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="where to write the PEM private key (refuses to overwrite)")


def generate_signing_key(settings: AccountsSettings, args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.exists():
        print(f"{path} exists; not overwriting", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(security.generate_private_key_pem())
    print(f"wrote {path}")
    return 0


COMMANDS = {
    "create-operator": ("create an operator (admin) account", configure_create_operator, create_operator),
    "generate-signing-key": ("write a new EC P-256 token signing key", configure_generate_key, generate_signing_key),
}


def configure_resend_welcome(p: argparse.ArgumentParser) -> None:
    p.add_argument("--email", required=True, help="the invited account's email")


def resend_welcome(settings: AccountsSettings, args: argparse.Namespace) -> int:
    """A new set-password link for an invited account (the earlier link stops working), sent through the outbox:
    the running accounts service publishes it at once (or at its next start)."""
    if not settings.seal_key:
        print("ACCOUNTS_SEAL_KEY is not set", file=sys.stderr)
        return 1
    from datetime import timedelta

    from services.accounts.handlers import WelcomeConfig, issue_invitation
    from shared.sealing import load_key

    cfg = WelcomeConfig(
        seal_key=load_key(settings.seal_key),
        public_base_url=settings.public_base_url,
        invitation_ttl=timedelta(hours=settings.invitation_ttl_hours),
    )

    async def go() -> int:
        pool = await create_pool(settings.database_url, 1, 2)
        try:
            async with pool.acquire() as conn, conn.transaction():
                account = await conn.fetchrow(
                    """SELECT id, customer_id, email, full_name, status, version FROM accounts
                       WHERE lower(email) = lower($1) FOR UPDATE""",
                    args.email,
                )
                if account is None:
                    print(f"no account with email {args.email}", file=sys.stderr)
                    return 1
                if account["status"] != "invited":
                    print(f"the account is {account['status']}: only invited accounts get a new link", file=sys.stderr)
                    return 1
                expires_at = await issue_invitation(
                    conn,
                    cfg,
                    account_id=account["id"],
                    customer_id=account["customer_id"],
                    email=account["email"],
                    full_name=account["full_name"],
                    sequence=account["version"],
                    correlation_id=f"cli-resend-{uuid.uuid4()}",
                    causation_id=None,
                )
            until = f"{expires_at:%Y-%m-%d %H:%M} UTC"
            print(f"a new welcome email is on its way to {account['email']} (the link works until {until})")
            return 0
        finally:
            await pool.close()

    return asyncio.run(go())


COMMANDS["resend-welcome"] = (
    "send an invited account a new welcome email with a new set-password link",
    configure_resend_welcome,
    resend_welcome,
)


SCOPES = ("customers:read", "customers:write", "credits:read", "credits:write", "deliveries:read")


def configure_create_service_client(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="a unique name, e.g. billing")
    p.add_argument("--scope", action="append", required=True, choices=SCOPES, help="repeat for several scopes")


def create_service_client(settings: AccountsSettings, args: argparse.Namespace) -> int:
    """Credentials for another internal service: printed once (only a hash is kept)."""
    secret = security.new_token()

    async def go() -> int:
        from services.accounts.app import MIGRATIONS

        await migrate(settings.database_url, MIGRATIONS)
        pool = await create_pool(settings.database_url, 1, 2)
        try:
            client_id = uuid.uuid4()
            try:
                await pool.execute(
                    "INSERT INTO service_clients (id, name, scopes, secret_hash) VALUES ($1, $2, $3, $4)",
                    client_id,
                    args.name,
                    sorted(set(args.scope)),
                    security.token_hash(secret),
                )
            except asyncpg.UniqueViolationError:
                print(f"a service client named {args.name} exists", file=sys.stderr)
                return 1
            print(f"client_id={client_id}\nclient_secret={secret}\n(the secret is shown only now; keep it safe)")
            return 0
        finally:
            await pool.close()

    return asyncio.run(go())


COMMANDS["create-service-client"] = (
    "create credentials (client id and secret, with scopes) for another internal service",
    configure_create_service_client,
    create_service_client,
)
