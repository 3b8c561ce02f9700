"""The customer document is built without a model round trip (it is on every read): it must stay exactly what the
``Customer`` model documents, for every shape of row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.customers.models import Customer
from services.customers.routes import _customer


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
    row = {
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
    assert _customer(row) == Customer.model_validate(row).model_dump(mode="json")
