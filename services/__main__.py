"""One command line for what operators do by hand, across the services:

    python -m services migrate                       # every service's database and migrations
    python -m services create-operator --email E --name N [--password-stdin]
    python -m services create-service-client --name N --scope S [--scope S]   # prints its id and secret once
    python -m services resend-welcome --email E      # a new set-password link for an invited account
    python -m services outbox                        # unpublished events per service
    python -m services dead-letters [--show]         # dead letters per queue, with their reasons
    python -m services replay QUEUE [--message-id ID]

Each service's own command line (``python -m services.<name> serve|migrate|...``) stays the way to run it.
"""

from __future__ import annotations

import importlib
import sys

SERVICES = ("customers", "accounts", "visitors", "notifications")
ACCOUNTS = {"create-operator", "create-service-client", "generate-signing-key", "resend-welcome"}
OPS = {"outbox", "dead-letters", "replay"}


def _service_main(name: str, argv: list[str]) -> int:
    app = importlib.import_module(f"services.{name}.app")
    settings = importlib.import_module(f"services.{name}.settings")
    settings_cls = next(v for k, v in vars(settings).items() if k.endswith("Settings") and k != "ServiceSettings")
    from shared.cli import main as service_cli

    extra = importlib.import_module("services.accounts.commands").COMMANDS if name == "accounts" else None
    return service_cli(name, settings_cls, app.create_app, app.MIGRATIONS, extra, argv)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "migrate":
        return max(_service_main(name, ["migrate"]) for name in SERVICES)
    if command in ACCOUNTS:
        return _service_main("accounts", [command, *rest])
    if command in OPS:
        from shared.ops import main as ops_main

        return ops_main([command, *rest])
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
