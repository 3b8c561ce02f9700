"""OpenAPI 3.1 documents generated from each service's route table: the policy of every route (security), the
pydantic models of its body, query and response (``@describe``), and the handler's docstring. Served at
``/openapi.json``; the committed copies under docs/openapi/ are checked for drift by a test."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from shared.auth import policy_of
from shared.http import Handler

REF = "#/components/schemas/{model}"
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Each invalid field and why",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}, "type": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["type", "title", "status"],
}
ERROR_TEXT = {
    400: "Malformed request",
    401: "No valid access token",
    403: "Not allowed (role, ownership, or the customer is suspended)",
    404: "Not found",
    409: "Conflicts with the current state",
    412: "Stale If-Match version",
    413: "Body too large",
    414: "Request target (URL) too long",
    415: "Body is not JSON",
    422: "Invalid fields (each named in `errors`)",
    428: "If-Match required",
    503: "A dependency is unavailable; retry",
}


IDEMPOTENCY_KEY = {"Idempotency-Key": "Retry-safe creation: a retry with the same key gets the first response"}
IF_MATCH = {"If-Match": "The ETag of the version being changed (required)"}
IF_MATCH_OPTIONAL = {"If-Match": "The ETag of the version being changed; a stale one gets 412"}
IDEMPOTENCY_KEY_REQUIRED = {
    "Idempotency-Key": "Retry-safe: a retry with the same key gets the first response, never a second effect (required)"
}


def describe(
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
    tag: str | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[Handler], Handler]:
    """Document a handler: its JSON body, query parameters, success response and the 4xx it may answer."""

    def mark(fn: Handler) -> Handler:
        fn.__openapi__ = {  # type: ignore[attr-defined]
            "body": body,
            "query": query,
            "response": response,
            "status": status,
            "errors": errors,
            "tag": tag,
            "headers": headers or {},
        }
        return fn

    return mark


def _schema(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": REF.format(model=model.__name__)}


def build(app: web.Application, *, title: str, version: str, description: str) -> dict[str, Any]:
    components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, Any] = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue  # a GET's HEAD; the route of unmatched paths (404/405)
        path = route.resource.canonical
        handler = route.handler
        doc: dict[str, Any] = getattr(handler, "__openapi__", {})
        pol = policy_of(handler)
        text = inspect.getdoc(handler) or ""
        summary, _, details = text.partition("\n\n")
        op: dict[str, Any] = {
            "operationId": handler.__name__,
            "summary": summary.replace("\n", " ") or handler.__name__.replace("_", " "),
        }
        if details:
            op["description"] = details
        if doc.get("tag"):
            op["tags"] = [doc["tag"]]
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
            for name in re.findall(r"{(\w+)}", path)
        ]
        if doc.get("query") is not None:
            qschema = doc["query"].model_json_schema(ref_template=REF)
            for name, prop in qschema.get("properties", {}).items():
                for sub_name, sub in qschema.get("$defs", {}).items():
                    components[sub_name] = sub
                params.append(
                    {"name": name, "in": "query", "required": name in qschema.get("required", []), "schema": prop}
                )
        for header, text_ in doc.get("headers", {}).items():
            params.append(
                {
                    "name": header,
                    "in": "header",
                    "required": text_.endswith("(required)"),
                    "schema": {"type": "string"},
                    "description": text_,
                }
            )
        if params:
            op["parameters"] = params
        if doc.get("body") is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(doc["body"], components, "validation")}},
            }
        status = str(doc.get("status", 200))
        success: dict[str, Any] = {"description": "Success"}
        if doc.get("response") is not None:
            success["content"] = {"application/json": {"schema": _schema(doc["response"], components, "serialization")}}
        responses: dict[str, Any] = {status: success}
        codes = set(doc.get("errors", ())) | {414}
        if pol is not None and not pol.open:
            op["security"] = [{"bearer": []}]
            codes |= {401, 403}
            op["x-roles"] = sorted(pol.roles)
            if pol.scope:
                op["x-service-scope"] = pol.scope
            if pol.changes_state:
                op["x-refused-while-suspended"] = True
        if doc.get("body") is not None:
            codes |= {400, 413, 415, 422}
        if doc.get("query") is not None:
            codes.add(422)
        if params and any(p["in"] == "path" for p in params):
            codes.add(404)
        for code in sorted(codes):
            responses[str(code)] = {
                "description": ERROR_TEXT.get(code, "Error"),
                "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}},
            }
        op["responses"] = responses
        paths.setdefault(path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Access token from accounts' POST /v1/tokens (ES256; keys: /.well-known/jwks.json)",
                }
            },
        },
    }
