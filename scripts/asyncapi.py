"""Generate docs/asyncapi.json (AsyncAPI 3.0) from the event models in shared/ and the topology.

python scripts/asyncapi.py          # rewrite the document
python scripts/asyncapi.py --check  # fail if the committed document differs (CI runs this as a test)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.events import REGISTRY, Envelope  # noqa: E402
from shared.events.base import COMMANDS_EXCHANGE, EVENTS_EXCHANGE  # noqa: E402
from shared.topology import EVENT_LOG, QUEUES  # noqa: E402

OUT = ROOT / "docs" / "asyncapi.json"


EXAMPLE_ID = "3f2b8c1e-6d4a-4b7e-9c2f-1a5e8d7b6c40"


def _example_value(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A plausible value for a JSON schema: deterministic, so the document does not change between runs."""
    if "$ref" in schema:
        return _example_object(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return _example_value(next(s for s in schema["anyOf"] if s.get("type") != "null"), defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind, fmt = schema.get("type"), schema.get("format")
    if fmt == "uuid":
        return EXAMPLE_ID
    if fmt == "date-time":
        return "2026-11-25T09:30:00Z"
    if fmt == "date":
        return "2026-12-01"
    if kind == "string":
        return "..."
    if kind == "integer":
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example_value(schema.get("items", {}), defs)]
    if kind == "object":
        return _example_object(schema, defs)
    return None


def _example_object(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    return {name: _example_value(prop, defs) for name, prop in schema.get("properties", {}).items()}


def example_message(model: Any) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "event_id": "b7e1c2d4-5f60-4a1b-8c9d-0e1f2a3b4c5d",
        "event_type": model.EVENT_TYPE,
        "event_version": model.EVENT_VERSION,
        "occurred_at": "2026-11-25T09:30:00.123456Z",
        "producer": model.producer() if model.EXCHANGE == EVENTS_EXCHANGE else "accounts",
        "correlation_id": "5c0f3d2e-9b8a-4c7d-8e6f-1a2b3c4d5e6f",
        "causation_id": "5c0f3d2e-9b8a-4c7d-8e6f-1a2b3c4d5e6f",
        "subject": EXAMPLE_ID,
        "sequence": 2,
        "payload": _example_object(schema, schema.get("$defs", {})),
    }


def build() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Envelope": Envelope.model_json_schema()}
    for key, model in sorted(REGISTRY.items()):
        name = model.__name__
        schemas[name] = model.model_json_schema()
        exchange = model.EXCHANGE
        messages[name] = {
            "name": key,
            "title": name,
            "summary": (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
            "contentType": "application/json",
            "examples": [{"name": f"{key} example", "payload": example_message(model)}],
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "type": "object",
                        "properties": {
                            "event_type": {"const": model.EVENT_TYPE},
                            "event_version": {"const": model.EVENT_VERSION},
                            "payload": {"$ref": f"#/components/schemas/{name}"},
                        },
                    },
                ]
            },
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}},
        }
        consumers = [q.name for q in QUEUES if key in q.bindings]
        channels[key] = {
            "address": key,
            "description": f"Routing key {key} on the durable {exchange} exchange"
            + (f"; consumed by {', '.join(consumers)}" if consumers else "")
            + (f"; also kept in the {EVENT_LOG} stream" if exchange == EVENTS_EXCHANGE else ""),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic" if exchange == EVENTS_EXCHANGE else "direct",
                        "durable": True,
                        "autoDelete": False,
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[f"publish_{key}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"Published by {model.producer() if exchange == EVENTS_EXCHANGE else 'accounts'} "
            "through its transactional outbox (persistent, mandatory, confirmed)",
        }
        for q in consumers:
            operations[f"{q}_receives_{key}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"Queue {q} (quorum; retries in {q}.retry.<ms>ms; dead letters in {q}.dlq)",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Coworking backend events",
            "version": "1.0.0",
            "description": (
                "Every message is a JSON envelope (event_id = AMQP message_id = the consumers' inbox key) whose "
                "`payload` is the event's own schema. Domain events go to the topic exchange "
                f"`{EVENTS_EXCHANGE}`; commands to one service go to the direct exchange `{COMMANDS_EXCHANGE}`. "
                "Consumers must be idempotent (delivery is at least once) and use `sequence` to ignore stale events."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != render():
            sys.exit("docs/asyncapi.json is out of date: run `python scripts/asyncapi.py`")
        print("docs/asyncapi.json is up to date")
    else:
        OUT.write_text(render())
        print(f"wrote {OUT.relative_to(ROOT)}")
