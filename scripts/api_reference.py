#!/usr/bin/env python3
"""The HTTP API reference of ``docs/api.md``, generated from the OpenAPI document.

Every operation of ``/api/v1`` as the app describes it (``create_app().openapi()``):
method and path, who may call it, parameters, request body fields and the answers
with their status codes, one ``### METHOD /path`` section each, between two
marker lines of ``docs/api.md`` (the prose above them is written by hand)::

    python scripts/api_reference.py            # print the generated block
    python scripts/api_reference.py --write    # write it into docs/api.md
    python scripts/api_reference.py --check    # exit 1, naming the difference, if stale

``tests/web/test_api_reference.py`` runs the check.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.web import create_app

__all__ = ["BEGIN", "DOCUMENT", "END", "check", "generated_block", "main", "openapi", "splice"]

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "api.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE (scripts/api_reference.py) -->"
END = "<!-- END GENERATED REFERENCE -->"
_REGENERATE = "python scripts/api_reference.py --write"
_ROLES = {
    "none": "anyone (no token)",
    "viewer": "a viewer or an operator token",
    "operator": "an operator token (and, from a browser session, its CSRF token)",
}


def openapi() -> dict[str, Any]:
    """The API's OpenAPI document (an app over an unopened memory queue; nothing runs)."""
    document: dict[str, Any] = create_app(settings=DLQSettings(store="memory")).openapi()
    return document


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type(schema: dict[str, Any]) -> str:
    """A schema as a short type: ``string``, ``integer``, ``list of JobState``, …"""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        kinds = [_type(item) for item in schema["anyOf"] if item.get("type") != "null"]
        return " or ".join(kinds) + (" or null" if len(kinds) < len(schema["anyOf"]) else "")
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return ", ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = str(schema.get("type", "any"))
    if schema.get("format") == "date-time":
        kind = "date-time (ISO 8601; no offset: UTC)"
    return kind


def _bounds(schema: dict[str, Any]) -> str:
    found = {
        key: schema[key]
        for key in ("minimum", "maximum", "exclusiveMinimum", "maxLength", "minLength", "maxItems")
        if key in schema
    }
    for item in schema.get("anyOf", []):
        found.update(
            (key, item[key])
            for key in ("minimum", "maximum", "exclusiveMinimum", "maxLength", "maxItems")
            if key in item
        )
    words = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "maxLength": "at most {} characters",
        "minLength": "at least {} characters",
        "maxItems": "at most {} values",
    }
    parts = []
    for key, value in found.items():
        word = words[key]
        parts.append(word.format(value) if "{}" in word else f"{word} {value}")
    return "; ".join(parts)


def _fields(schema: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    if "$ref" in schema:
        schema = schemas[str(schema["$ref"]).rsplit("/", 1)[-1]]
    required = set(schema.get("required", []))
    lines = ["| field | type | required | default, bounds, meaning |", "|---|---|---|---|"]
    for name, field in schema.get("properties", {}).items():
        lines.append(
            f"| `{name}` | {_cell(_type(field))} | {'yes' if name in required else 'no'} "
            f"| {_notes(field, field.get('description'))} |"
        )
    return lines


def _notes(schema: dict[str, Any], description: str | None) -> str:
    """The last cell of a row: default, bounds and meaning."""
    notes = []
    if "default" in schema:
        notes.append(f"default `{schema['default']}`")
    if bounds := _bounds(schema):
        notes.append(bounds)
    if description:
        notes.append(description)
    return _cell("; ".join(notes))


def _operation(method: str, path: str, op: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    lines = [f"### {method.upper()} {path}", "", f"**{op.get('summary', '')}.**"]
    if op.get("description"):
        lines += ["", " ".join(str(op["description"]).split())]
    lines += ["", f"Who: {_ROLES[op.get('x-role', 'viewer')]}."]
    parameters = op.get("parameters", [])
    if parameters:
        lines += ["", "| parameter | in | type | required | default, bounds, meaning |"]
        lines.append("|---|---|---|---|---|")
        for parameter in parameters:
            schema = parameter.get("schema", {})
            repeat = " (repeat it for several)" if "array" in str(schema) else ""
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | {_cell(_type(schema))}{repeat} "
                f"| {'yes' if parameter.get('required') else 'no'} "
                f"| {_notes(schema, parameter.get('description'))} |"
            )
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    if body:
        name = _type(body["schema"])
        lines += ["", f"Body (JSON, `{name}`):", "", *_fields(body["schema"], schemas)]
    lines += ["", "| status | answer |", "|---|---|"]
    for status, response in op.get("responses", {}).items():
        lines.append(f"| {status} | {_cell(response.get('description', ''))} |")
    return [*lines, ""]


def generated_block(document: dict[str, Any] | None = None) -> str:
    """The block between the markers, for ``document`` (default: the app's own)."""
    document = openapi() if document is None else document
    schemas = document.get("components", {}).get("schemas", {})
    lines = [
        BEGIN,
        "",
        f"Generated from the OpenAPI document of version {document['info']['version']}.",
    ]
    lines.append("")
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            lines += _operation(method, path, op, schemas)
    lines.append("### Filter fields (`FilterBody`)")
    lines += ["", *_fields({"$ref": "#/components/schemas/FilterBody"}, schemas), ""]
    lines.append("### Error answers (`ErrorBody`)")
    lines += ["", *_fields({"$ref": "#/components/schemas/ErrorDetail"}, schemas), "", END]
    return "\n".join(lines) + "\n"


def splice(text: str, block: str) -> str:
    """``text`` with its generated block replaced by ``block``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{DOCUMENT.name} has no '{BEGIN}' … '{END}' block")
    return text[:start] + block + text[end + len(END) + 1 :]


def check(path: Path = DOCUMENT) -> list[str]:
    """The differences between ``path``'s block and the generated one (empty: current)."""
    text = path.read_text(encoding="utf-8")
    wanted = splice(text, generated_block())
    if wanted == text:
        return []
    diff = difflib.unified_diff(
        text.splitlines(), wanted.splitlines(), "docs/api.md", "generated", lineterm="", n=1
    )
    return [*list(diff)[:40], f"regenerate with: {_REGENERATE}"]


def main(argv: Sequence[str] | None = None) -> int:
    """Print, write or check the generated reference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write it into docs/api.md")
    action.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is stale")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            sys.stderr.write(line + "\n")
        return 1 if problems else 0
    if args.write:
        text = DOCUMENT.read_text(encoding="utf-8")
        DOCUMENT.write_text(splice(text, generated_block()), encoding="utf-8")
        return 0
    sys.stdout.write(generated_block())
    return 0


if __name__ == "__main__":
    sys.exit(main())
