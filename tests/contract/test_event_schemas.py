"""Every event's JSON schema is snapshotted: a change to a contract fails here until the snapshot is updated on
purpose (UPDATE_SNAPSHOTS=1), which is the moment to decide whether it needs a new major version."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.events import REGISTRY, Envelope

SNAPSHOTS = Path(__file__).parent / "snapshots"
SUBJECTS = {"envelope": Envelope, **REGISTRY}


@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_event_schema_matches_its_snapshot(name: str):
    schema = SUBJECTS[name].model_json_schema()
    path = SNAPSHOTS / f"{name}.json"
    rendered = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(rendered)
    assert path.exists(), f"no snapshot for {name}: run with UPDATE_SNAPSHOTS=1 once the contract is right"
    assert json.loads(path.read_text()) == schema, f"the {name} contract changed: is it still compatible?"


def test_no_snapshot_is_left_for_an_event_that_no_longer_exists():
    assert {p.stem for p in SNAPSHOTS.glob("*.json")} == set(SUBJECTS)


def test_every_field_of_every_event_is_described():
    for name, model in REGISTRY.items():
        for field, info in model.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


def test_the_committed_asyncapi_document_matches_the_event_models():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "asyncapi.py"
    spec = importlib.util.spec_from_file_location("asyncapi", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUT.read_text() == module.render(), "docs/asyncapi.json is stale: run python scripts/asyncapi.py"


def test_every_asyncapi_message_has_an_example_that_its_own_model_accepts():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "asyncapi.py"
    spec = importlib.util.spec_from_file_location("asyncapi_examples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.build()
    for name, message in doc["components"]["messages"].items():
        [example] = message["examples"]
        envelope = Envelope.model_validate(example["payload"])
        assert REGISTRY[envelope.routing_key].model_validate(envelope.payload), name
