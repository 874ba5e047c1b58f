"""The Models API: ``GET /v1/models`` (paged, newest first) and ``GET /v1/models/{model_id}``.

Bodies follow the SDK's ``ModelInfo``. ``lifecycle[]`` filters the list (up to 3 of
``active | deprecated | retired``); without it the list holds the active and deprecated models,
and retired ones appear only when asked for. Retrieving a retired id still answers, with
``lifecycle: "retired"``: the catalogue keeps them as the record of their retirement, while
every inference route answers them 404.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from llm_calls.emulator.errors import ApiError, invalid
from llm_calls.emulator.http_layer import authenticate, json_response
from llm_calls.emulator.model_catalog import MODELS, ModelInfo, model_lookup

LIFECYCLES = ("active", "deprecated", "retired")
DEFAULT_LIFECYCLES = ("active", "deprecated")


def _rfc3339(day: dt.date | None) -> str | None:
    return None if day is None else f"{day.isoformat()}T00:00:00Z"


def model_body(info: ModelInfo) -> dict[str, Any]:
    return {
        "type": "model",
        "id": info.model_id,
        "display_name": info.display_name,
        "created_at": _rfc3339(info.created_on),
        "lifecycle": info.lifecycle,
        "deprecated_at": _rfc3339(info.deprecated_on),
        "retires_at": _rfc3339(info.retires_on),
        "line": info.line,
        "max_input_tokens": info.context_window,
        "max_tokens": info.max_output_tokens,
        "capabilities": info.capabilities(),
    }


def _newest_first(lifecycles: set[str]) -> list[ModelInfo]:
    chosen = [info for info in MODELS.values() if info.lifecycle in lifecycles]
    # sorted() is stable: models released the same day keep the table's order.
    return sorted(chosen, key=lambda info: info.created_on, reverse=True)


def _limit(query: Any) -> int:
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise invalid("limit: Input should be between 1 and 1000")
    return limit


def _lifecycles(query: Any) -> set[str]:
    asked = query.getall("lifecycle[]", []) + query.getall("lifecycle", [])
    if not asked:
        return set(DEFAULT_LIFECYCLES)
    if len(asked) > len(LIFECYCLES):
        raise invalid(f"lifecycle: at most {len(LIFECYCLES)} values")
    for value in asked:
        if value not in LIFECYCLES:
            raise invalid("lifecycle: Input should be 'active', 'deprecated' or 'retired'")
    return set(asked)


def _page(
    ordered: list[ModelInfo], *, before_id: str | None, after_id: str | None, limit: int
) -> tuple[list[ModelInfo], bool]:
    ids = [info.model_id for info in ordered]
    if after_id is not None:
        if after_id not in ids:
            raise invalid(f"after_id: unknown model id {after_id!r}")
        rest = ordered[ids.index(after_id) + 1 :]
        return rest[:limit], len(rest) > limit
    if before_id is not None:
        if before_id not in ids:
            raise invalid(f"before_id: unknown model id {before_id!r}")
        rest = ordered[: ids.index(before_id)]
        return rest[-limit:], len(rest) > limit
    return ordered[:limit], len(ordered) > limit


async def handle_model_list(request: web.Request) -> web.StreamResponse:
    authenticate(request)
    query = request.query
    limit = _limit(query)
    before_id, after_id = query.get("before_id") or None, query.get("after_id") or None
    if before_id and after_id:
        raise invalid("before_id and after_id cannot both be given")
    page, has_more = _page(
        _newest_first(_lifecycles(query)), before_id=before_id, after_id=after_id, limit=limit
    )
    return json_response(
        {
            "data": [model_body(info) for info in page],
            "has_more": has_more,
            "first_id": page[0].model_id if page else None,
            "last_id": page[-1].model_id if page else None,
        }
    )


async def handle_model_get(request: web.Request) -> web.StreamResponse:
    authenticate(request)
    model_id = request.match_info["model_id"]
    info = model_lookup(model_id)
    if info is None:
        raise ApiError(404, f"model: {model_id}")
    return json_response(model_body(info))
