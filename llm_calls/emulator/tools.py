"""Tool use: when the emulated model calls a tool, and the input it generates for it.

When a tool is called (deterministic, so tests can rely on it):

- ``tool_choice`` ``auto`` (the default): only when the last user message's text contains
  ``[[emulator:tool_use]]`` (the first custom tool) or ``[[emulator:tool_use=NAME]]`` (that
  tool; a name that is no custom tool of the request means no call);
- ``any``: always — the tool a directive names, else the first custom tool;
- ``tool``: always the named tool;
- ``none``: never.

The reply is then one ``tool_use`` block and ``stop_reason: "tool_use"``; whether parallel use is
disabled or not, the emulator calls exactly one tool. The input follows the tool's
``input_schema``: every required property gets a value (``default`` or ``const`` when given,
else the first ``enum`` value, else an example of its JSON type), recursing into objects,
arrays (``minItems`` items, at least one) and local ``$ref``s.

Server-side web search: with a ``web_search_*`` tool in ``tools``,
``[[emulator:web_search=N]]`` makes the reply perform N searches (capped by the tool's
``max_uses``), each a ``server_tool_use`` + ``web_search_tool_result`` pair, counted in
``usage.server_tool_use.web_search_requests`` (what billing needs).
"""

from __future__ import annotations

import re
from typing import Any

TOOL_DIRECTIVE = re.compile(r"\[\[emulator:tool_use(?:=([^\]\s]+))?\]\]")
WEB_SEARCH_DIRECTIVE = re.compile(r"\[\[emulator:web_search=(\d+)\]\]")
MAX_SCHEMA_DEPTH = 8

_EXAMPLE_STRINGS = {
    "date-time": "2026-12-01T00:00:00Z",
    "date": "2026-12-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _custom_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        tool
        for tool in body.get("tools") or []
        if tool.get("type") in (None, "custom") and isinstance(tool.get("input_schema"), dict)
    ]


def chosen_tool(body: dict[str, Any], prompt_text: str) -> dict[str, Any] | None:
    """The custom tool the reply calls, or None for a plain reply."""
    tools = _custom_tools(body)
    if not tools:
        return None
    choice = body.get("tool_choice") or {"type": "auto"}
    by_name = {tool["name"]: tool for tool in tools}
    if choice["type"] == "none":
        return None
    if choice["type"] == "tool":
        return by_name.get(choice["name"])
    match = TOOL_DIRECTIVE.search(prompt_text)
    named = by_name.get(match.group(1)) if match and match.group(1) else None
    if choice["type"] == "any":
        return named or tools[0]
    if match is None:
        return None
    return named if match.group(1) else tools[0]


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    return target if isinstance(target, dict) else {}


def _example_string(schema: dict[str, Any]) -> str:
    text = _EXAMPLE_STRINGS.get(str(schema.get("format")), "example")
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(text) < min_length:
        text = text + "x" * (min_length - len(text))
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and len(text) > max_length:
        text = text[:max_length]
    return text


def _example_number(schema: dict[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum")
    exclusive_low = schema.get("exclusiveMinimum")
    high = schema.get("maximum")
    step = 1 if integer else 0.5
    if isinstance(low, int | float):
        value: int | float = low
    elif isinstance(exclusive_low, int | float):
        value = exclusive_low + step
    elif isinstance(high, int | float) and high < 0:
        value = high
    else:
        value = 0
    return int(value) if integer else value


def example_value(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A deterministic value that satisfies ``schema`` for the usual JSON-schema keywords."""
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return None
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            return example_value(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else None
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {name: example_value(properties.get(name), root, depth + 1) for name in names}
    if kind == "array":
        min_items = schema.get("minItems")
        count = max(1, min_items) if isinstance(min_items, int) else 1
        items = schema.get("items")
        if not isinstance(items, dict):
            return []
        return [example_value(items, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return _example_string(schema)
    if kind in ("integer", "number"):
        return _example_number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    return None


def tool_input(tool: dict[str, Any]) -> dict[str, Any]:
    """The input the emulated model passes to ``tool``: always a JSON object."""
    value = example_value(tool["input_schema"])
    return value if isinstance(value, dict) else {}


def web_search_count(body: dict[str, Any], prompt_text: str) -> int:
    """How many web searches the reply performs (0 without a web search tool or directive)."""
    tool = next(
        (
            t
            for t in body.get("tools") or []
            if isinstance(t.get("type"), str) and t["type"].startswith("web_search_")
        ),
        None,
    )
    match = WEB_SEARCH_DIRECTIVE.search(prompt_text)
    if tool is None or match is None:
        return 0
    count = int(match.group(1))
    max_uses = tool.get("max_uses")
    return min(count, max_uses) if isinstance(max_uses, int) else count


def web_search_blocks(number: int, tool_use_id: str) -> list[dict[str, Any]]:
    """One search: the server_tool_use block and its result (a single made-up page)."""
    query = f"emulator search {number}"
    return [
        {
            "type": "server_tool_use",
            "id": tool_use_id,
            "name": "web_search",
            "input": {"query": query},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": tool_use_id,
            "content": [
                {
                    "type": "web_search_result",
                    "url": f"https://example.com/emulator/{number}",
                    "title": f"Emulated result {number}",
                    "encrypted_content": f"emulator-encrypted-{number}",
                    "page_age": None,
                }
            ],
        },
    ]
