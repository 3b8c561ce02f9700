"""The command line every service shares: ``python -m services.<name> serve|migrate``; services add their own."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from shared.db import migrate
from shared.logging import configure_logging
from shared.service import run
from shared.settings import ServiceSettings


def main(
    service: str,
    settings_cls: type[ServiceSettings],
    create_app: Callable[[Any], web.Application],
    migrations_dir: Path,
    extra: Mapping[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[Any, argparse.Namespace], int]]]
    | None = None,
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API, consumers and outbox relay (applies migrations first)")
    sub.add_parser("migrate", help="create the database if needed and apply pending migrations")
    for name, (helptext, configure, _) in (extra or {}).items():
        configure(sub.add_parser(name, help=helptext))
    args = parser.parse_args(argv)
    settings = settings_cls()
    configure_logging(service, settings.common.log_level, settings.common.log_format)
    if args.command == "serve":
        run(create_app(settings), settings.host, settings.port)
        return 0
    if args.command == "migrate":
        applied = asyncio.run(migrate(settings.database_url, migrations_dir))
        print(f"{service}: applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
        return 0
    assert extra is not None
    return extra[args.command][2](settings, args)
