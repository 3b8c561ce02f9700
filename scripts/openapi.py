"""Generate docs/openapi/<service>.json (OpenAPI 3.1) from each service's routes and models.

python scripts/openapi.py          # rewrite the documents
python scripts/openapi.py --check  # fail if a committed document differs (a test does the same)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "openapi"
SERVICES = ("customers", "accounts", "visitors", "notifications")


def build_all() -> dict[str, dict[str, Any]]:
    from services.accounts import security
    from services.accounts.app import create_app as accounts_app
    from services.accounts.settings import AccountsSettings
    from services.customers.app import create_app as customers_app
    from services.customers.settings import CustomersSettings
    from services.notifications.app import create_app as notifications_app
    from services.notifications.settings import NotificationsSettings
    from services.visitors.app import create_app as visitors_app
    from services.visitors.settings import VisitorsSettings
    from shared.sealing import new_key
    from shared.service import openapi_of

    with tempfile.TemporaryDirectory() as tmp:  # throwaway keys: nothing of them reaches the documents
        key = Path(tmp) / "k.pem"
        key.write_bytes(security.generate_private_key_pem())
        seal = new_key()
        apps = {
            "customers": customers_app(CustomersSettings()),
            "accounts": accounts_app(AccountsSettings(jwt_private_key_file=key, seal_key=seal)),
            "visitors": visitors_app(VisitorsSettings()),
            "notifications": notifications_app(NotificationsSettings(seal_key=seal)),
        }
        return {name: openapi_of(app) for name, app in apps.items()}


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


if __name__ == "__main__":
    docs = build_all()
    if "--check" in sys.argv:
        stale = [
            n
            for n, d in docs.items()
            if not (OUT / f"{n}.json").exists() or (OUT / f"{n}.json").read_text() != render(d)
        ]
        if stale:
            sys.exit(f"stale OpenAPI documents: {', '.join(stale)}: run `python scripts/openapi.py`")
        print("docs/openapi is up to date")
    else:
        OUT.mkdir(parents=True, exist_ok=True)
        for name, doc in docs.items():
            (OUT / f"{name}.json").write_text(render(doc))
        print(f"wrote {', '.join(f'docs/openapi/{n}.json' for n in docs)}")
