"""The customer document is built without a model round trip (it is on every read): it must stay exactly what the
``Customer`` model documents, for every shape of row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from services.customers import store
from services.customers.models import Customer
from services.customers.routes import _customer, _customer_json


def customer_row(**changes):
    """A customers row as asyncpg returns it (``store.COLUMNS``, in order), with ``changes``."""
    return {
        "id": uuid.uuid4(),
        "full_name": "Ada Lovelace",
        "email": "ada@example.com",
        "company_name": None,
        "phone": None,
        "kind": "contact",
        "standing": "active",
        "portal_access": "none",
        "account_id": None,
        "version": 1,
        "created_at": datetime.now(UTC),
        "updated_at": datetime.now(UTC),
        "erased_at": None,
        **changes,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"company_name": "Acme", "phone": "+44 20 7946 0000", "account_id": uuid.uuid4(), "portal_access": "active"},
        {"created_at": datetime(2027, 1, 1, tzinfo=UTC), "erased_at": datetime(2027, 2, 3, 4, 5, 6, 7, tzinfo=UTC)},
        {"kind": "member", "standing": "suspended", "version": 42, "account_sequence": 3},  # an extra column
    ],
)
def test_the_document_equals_the_models_serialisation(changes):
    row = customer_row(**changes)
    assert _customer(row) == Customer.model_validate(row).model_dump(mode="json")


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"company_name": 'Acme "quoted" \\ é', "account_id": uuid.uuid4(), "portal_access": "active"},
        {"created_at": datetime(2027, 1, 1, tzinfo=UTC), "erased_at": datetime(2027, 2, 3, 4, 5, 6, 7, tzinfo=UTC)},
    ],
)
def test_the_read_routes_json_is_the_documents_json(changes):
    """The read route writes its row (``store.DOCUMENT_COLUMNS``: UUIDs as text) straight to JSON: byte for byte
    what the document above serialises to."""
    row = customer_row(**{"updated_at": datetime.now(UTC).replace(microsecond=0), **changes})
    as_fetched = {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in row.items()}  # what ::text gives
    assert list(as_fetched) == [c.strip() for c in store.COLUMNS.split(",")]
    assert _customer_json(as_fetched) == orjson.dumps(_customer(row))
