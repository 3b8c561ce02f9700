"""Each service's OpenAPI document is generated from its routes, so it cannot drift from the code; the committed
copy under docs/openapi/ must match, and every route (but the plumbing ones) must be described."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shared.auth import policy_of

ROOT = Path(__file__).resolve().parents[2]
PLUMBING = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/{unmatched}"}


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("openapi_script", ROOT / "scripts" / "openapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def documents(generator):
    return generator.build_all()


@pytest.mark.parametrize("service", ["customers", "accounts", "visitors", "notifications"])
def test_the_committed_openapi_document_matches_the_code(generator, documents, service):
    committed = ROOT / "docs" / "openapi" / f"{service}.json"
    assert committed.exists(), "run python scripts/openapi.py"
    assert committed.read_text() == generator.render(documents[service]), "stale: run python scripts/openapi.py"


@pytest.mark.parametrize("service", ["customers", "accounts", "visitors", "notifications"])
def test_every_route_is_documented_with_its_security(documents, service):
    doc = documents[service]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if path in PLUMBING:
                continue
            assert op["summary"] and op["responses"], f"{service} {method} {path}"
            has_body = method in ("post", "put", "patch") and "requestBody" in op
            if method == "patch":
                assert has_body, f"{service} {method} {path} documents no body"
            if "security" in op:
                assert "401" in op["responses"] and "403" in op["responses"]
    assert doc["openapi"] == "3.1.0"


def test_handlers_of_the_four_services_carry_a_description(documents):
    from services.customers.app import create_app
    from services.customers.settings import CustomersSettings

    for route in create_app(CustomersSettings()).router.routes():
        if route.method == "HEAD" or route.resource.canonical in PLUMBING:
            continue
        assert hasattr(route.handler, "__openapi__"), f"{route.method} {route.resource.canonical}: add @describe"
        assert policy_of(route.handler) is not None
