"""One command line for what operators do by hand, across the services:

    python -m services migrate                       # every service's database and migrations
    python -m services create-operator --email E --name N [--password-stdin]
    python -m services create-service-client --name N --scope S [--scope S]   # prints its id and secret once
    python -m services resend-welcome --email E      # a new set-password link for an invited account
    python -m services outbox                        # unpublished events per service
    python -m services dead-letters [--show]         # dead letters per queue, with their reasons
    python -m services replay QUEUE [--message-id ID]
    python -m services export --customer-id ID --token T   # everything held about a customer, as one JSON document

Deployment set-up, with administrator rights (deploy/ runs them before the services start):

    python -m services setup-broker                  # declare the whole RabbitMQ topology (AMQP_URL: an admin)
    python -m services rabbitmq-definitions --vhost / --user SERVICE NAME PASSWORD_FILE... [--admin NAME FILE]
    python -m services setup-databases --admin-url URL --password-file SERVICE FILE... [--prefix coworking_]

Each service's own command line (``python -m services.<name> serve|migrate|...``) stays the way to run it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import uuid
from typing import Any

import aiohttp
import orjson

SERVICES = ("customers", "accounts", "visitors", "notifications")
ACCOUNTS = {"create-operator", "create-service-client", "generate-signing-key", "resend-welcome"}
OPS = {"outbox", "dead-letters", "replay"}
SETUP = {"setup-broker", "rabbitmq-definitions", "setup-databases"}


def _service_main(name: str, argv: list[str]) -> int:
    app = importlib.import_module(f"services.{name}.app")
    settings = importlib.import_module(f"services.{name}.settings")
    settings_cls = next(v for k, v in vars(settings).items() if k.endswith("Settings") and k != "ServiceSettings")
    from shared.cli import main as service_cli

    extra = importlib.import_module("services.accounts.commands").COMMANDS if name == "accounts" else None
    return service_cli(name, settings_cls, app.create_app, app.MIGRATIONS, extra, argv)


DEFAULT_URLS = {
    "customers": "http://127.0.0.1:8001",
    "accounts": "http://127.0.0.1:8002",
    "visitors": "http://127.0.0.1:8003",
    "notifications": "http://127.0.0.1:8004",
}


def paths(customer_id: uuid.UUID) -> dict[str, str]:
    return {
        "customers": f"/v1/customers/{customer_id}/export",
        "accounts": f"/v1/accounts/export?customer_id={customer_id}",
        "visitors": f"/v1/visits?host_customer_id={customer_id}&limit=200",
        "notifications": f"/v1/deliveries/export?customer_id={customer_id}",
    }


async def export(customer_id: uuid.UUID, token: str, urls: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for service, path in paths(customer_id).items():
            async with http.get(urls[service].rstrip("/") + path) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise RuntimeError(f"{service}: {resp.status} {body}")
                if service == "visitors":  # every page of the visits they host
                    items = list(body["items"])
                    while body.get("next_cursor"):
                        async with http.get(
                            urls[service].rstrip("/") + path, params={"cursor": body["next_cursor"]}
                        ) as more:
                            body = await more.json(content_type=None)
                            items += body["items"]
                    body = {"visits": items}
                out[service] = body
    return out


def export_main(argv: list[str]) -> int:
    """``export``: everything the four services hold about one customer (right of access), fetched over HTTP
    with an operator's access token, printed as one JSON document ``{customers, accounts, visitors,
    notifications}``. Service URLs: ``CUSTOMERS_URL``, ``ACCOUNTS_URL``, ``VISITORS_URL``,
    ``NOTIFICATIONS_URL`` (default: the local ports 8001-8004)."""
    parser = argparse.ArgumentParser(prog="python -m services export", description="Export a customer's data")
    parser.add_argument("--customer-id", required=True, type=uuid.UUID)
    parser.add_argument("--token", required=True, help="an operator's access token")
    args = parser.parse_args(argv)
    urls = {s: os.environ.get(f"{s.upper()}_URL", u) for s, u in DEFAULT_URLS.items()}
    try:
        document = asyncio.run(export(args.customer_id, args.token, urls))
    except (RuntimeError, aiohttp.ClientError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        secret = f.read().strip()
    if not secret:
        raise SystemExit(f"{path} is empty")
    return secret


def setup_main(command: str, argv: list[str]) -> int:
    """``setup-broker``, ``rabbitmq-definitions``, ``setup-databases`` (see shared/provision.py)."""
    from shared.logging import configure_logging
    from shared.provision import (
        BrokerUser,
        DatabaseOwner,
        rabbitmq_definitions,
        setup_broker,
        setup_databases,
    )
    from shared.settings import CommonSettings
    from shared.topology import SERVICES, Topology

    common = CommonSettings()
    topology = Topology(common.amqp_prefix, tuple(common.retry_delays_ms))
    parser = argparse.ArgumentParser(prog=f"python -m services {command}")
    if command == "setup-broker":
        parser.description = "Declare the whole RabbitMQ topology with the administrator of AMQP_URL"
        parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the broker")
        args = parser.parse_args(argv)
        configure_logging("setup", common.log_level, common.log_format)
        asyncio.run(setup_broker(common.amqp_url, topology, args.wait))
        print(f"setup-broker: declared {len(topology.all_queue_names())} queues and their exchanges")
        return 0
    if command == "rabbitmq-definitions":
        parser.description = "Print the services' RabbitMQ users and permissions as definitions (JSON)"
        parser.add_argument("--vhost", default="/")
        parser.add_argument(
            "--user", nargs=3, action="append", default=[], metavar=("SERVICE", "NAME", "PASSWORD_FILE")
        )
        parser.add_argument("--admin", nargs=2, metavar=("NAME", "PASSWORD_FILE"))
        args = parser.parse_args(argv)
        unknown = {service for service, _, _ in args.user} - set(SERVICES)
        if unknown:
            parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
        users = {service: BrokerUser(name, _read_secret(path)) for service, name, path in args.user}
        admin = BrokerUser(args.admin[0], _read_secret(args.admin[1])) if args.admin else None
        document = rabbitmq_definitions(topology, args.vhost, users, admin)
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    parser.description = "Per service, a PostgreSQL role owning its own database (run as a superuser)"
    parser.add_argument("--admin-url", default=os.environ.get("DATABASE_ADMIN_URL"), help="a superuser's URL")
    parser.add_argument("--password-file", nargs=2, action="append", default=[], metavar=("SERVICE", "FILE"))
    parser.add_argument("--prefix", default="coworking_", help="of the role and database names")
    args = parser.parse_args(argv)
    if not args.admin_url:
        parser.error("--admin-url (or DATABASE_ADMIN_URL) is required")
    unknown = {service for service, _ in args.password_file} - set(SERVICES)
    if unknown:
        parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
    configure_logging("setup", common.log_level, common.log_format)
    owners = [
        DatabaseOwner(f"{args.prefix}{service}", f"{args.prefix}{service}", _read_secret(path))
        for service, path in args.password_file
    ]
    asyncio.run(setup_databases(args.admin_url, owners))
    print("setup-databases: " + ", ".join(f"{o.database} owned by {o.role}" for o in owners))
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "migrate":
        return max(_service_main(name, ["migrate"]) for name in SERVICES)
    if command in ACCOUNTS:
        return _service_main("accounts", [command, *rest])
    if command == "export":
        return export_main(rest)
    if command in SETUP:
        return setup_main(command, rest)
    if command in OPS:
        from shared.ops import main as ops_main

        return ops_main([command, *rest])
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
