"""A human-readable page of a service's OpenAPI document at ``/docs``, rendered on the server (no scripts, no
assets from elsewhere: it works offline and in any browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
)
_PAGE = _ENV.get_template("docs.html")


def _ref(holder: dict[str, Any]) -> str:
    for content in holder.get("content", {}).values():
        ref = content.get("schema", {}).get("$ref", "")
        return ref.rsplit("/", 1)[-1]
    return ""


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " | ".join(map(str, prop["enum"]))
    if "const" in prop:
        return repr(prop["const"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    return f"{kind}" + (f" ({prop['format']})" if "format" in prop else "")


def render(doc: dict[str, Any]) -> str:
    return _PAGE.render(doc=doc, ref=_ref, type_of=_type)
