"""HTTP plumbing every route shares: auth and version, JSON bodies, the API's error shape,
the request id and rate-limit headers on every response, and the /v1 request log."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .buckets import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS
from .errors import ApiError, error_body, invalid, new_id
from .ledger import key_fingerprint
from .state import COUNT_TOKENS_CLASS, STATE_KEY, EmulatorState

MAX_BODY_BYTES = 32 * 1024 * 1024
ACCEPTED_VERSIONS = ("2023-06-01", "2026-10-21")
# Whose buckets the headers of a response without a model describe (a batch or models call,
# or a body refused before its model was known): the tests' and the docs' usual Sonnet.
DEFAULT_HEADER_CLASS = "sonnet-4"


def _reset_time(now: float, seconds: float) -> str:
    moment = datetime.fromtimestamp(math.ceil(now + seconds), UTC)
    return moment.isoformat().replace("+00:00", "Z")


def ratelimit_headers(
    state: EmulatorState,
    fingerprint: str | None,
    model_class: str | None,
    now: float,
    *,
    token_class: str | None = None,
) -> dict[str, str]:
    """``anthropic-ratelimit-*`` for the caller's buckets (full ones if never used).

    Unlimited dimensions (limit 0) have no bucket and so no headers. For count_tokens the
    requests-* headers describe its own RPM bucket and the token headers the messages buckets
    of ``token_class`` (the counted model's class).
    """
    headers: dict[str, str] = {}
    message_class = model_class if model_class not in (None, COUNT_TOKENS_CLASS) else token_class
    token_set = state.bucket_set(fingerprint or "", message_class or DEFAULT_HEADER_CLASS, now)
    request_set = (
        state.bucket_set(fingerprint or "", COUNT_TOKENS_CLASS, now)
        if model_class == COUNT_TOKENS_CLASS
        else token_set
    )
    token_set.refill(now)
    request_set.refill(now)
    token_views: list[tuple[int, int, str]] = []
    for dimension, owner in (
        (REQUESTS, request_set),
        (INPUT_TOKENS, token_set),
        (OUTPUT_TOKENS, token_set),
    ):
        bucket = owner.buckets.get(dimension)
        if bucket is None:
            continue
        level = max(0, math.floor(bucket.level))
        remaining = level if dimension == REQUESTS else level // 1000 * 1000
        reset = _reset_time(now, bucket.seconds_until_full())
        prefix = f"anthropic-ratelimit-{dimension}"
        headers[f"{prefix}-limit"] = str(int(bucket.capacity))
        headers[f"{prefix}-remaining"] = str(remaining)
        headers[f"{prefix}-reset"] = reset
        if dimension != REQUESTS:
            token_views.append((remaining, int(bucket.capacity), reset))
    if token_views:
        remaining, limit, reset = min(token_views)
        headers["anthropic-ratelimit-tokens-limit"] = str(limit)
        headers["anthropic-ratelimit-tokens-remaining"] = str(remaining)
        headers["anthropic-ratelimit-tokens-reset"] = reset
    return headers


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def error_response(request: web.Request, error: ApiError) -> web.Response:
    request["error_type"] = error.error_type
    response = json_response(
        error_body(
            error_type=error.error_type,
            message=error.message,
            request_id=request["request_id"],
            details=error.details,
        ),
        status=error.status,
    )
    response.headers.update(error.headers)
    response.headers["x-should-retry"] = (
        "true" if error.status in (408, 409, 429) or error.status >= 500 else "false"
    )
    if error.details and error.details.get("error_code") == "enforced_spend_limit_reached":
        response.headers["x-should-retry"] = "false"
    return response


def _api_key(request: web.Request) -> str:
    key = request.headers.get("x-api-key")
    if not key:
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
    if not key:
        raise ApiError(401, "x-api-key or Authorization: Bearer header is required")
    if key.startswith("sk-bad"):
        raise ApiError(401, "invalid x-api-key")
    return key


def authenticate(request: web.Request) -> str:
    """Checks auth and version; returns the key fingerprint (the raw key goes no further)."""
    fingerprint = key_fingerprint(_api_key(request))
    request["fingerprint"] = fingerprint
    version = request.headers.get("anthropic-version")
    if not version:
        raise invalid("anthropic-version: header is required")
    if version not in ACCEPTED_VERSIONS:
        raise invalid(
            f"anthropic-version: {version!r} is not a valid version "
            f"(accepted: {', '.join(ACCEPTED_VERSIONS)})"
        )
    return fingerprint


async def read_json(request: web.Request) -> Any:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise ApiError(413, f"Request exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"Request exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from None


def _http_exception_error(request: web.Request, exc: web.HTTPException) -> ApiError:
    """aiohttp's own errors (no route, wrong method, body too large) in the API's error shape."""
    if exc.status == 404:
        return ApiError(404, f"no such endpoint: {request.method} {request.path}")
    if exc.status == 405:
        return ApiError(
            405,
            f"{request.method} is not allowed on {request.path}",
            error_type="invalid_request_error",
        )
    if exc.status == 413:
        return ApiError(413, f"Request exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes")
    return ApiError(exc.status, exc.reason or "HTTP error")


@web.middleware
async def api_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request id on every response, error bodies, rate-limit headers and the /v1 log."""
    state = request.app[STATE_KEY]
    request["request_id"] = new_id("req")
    request["error_type"] = None
    is_api = request.path.startswith("/v1/")
    try:
        response = await handler(request)
    except ApiError as error:
        response = error_response(request, error)
    except web.HTTPException as exc:
        response = error_response(request, _http_exception_error(request, exc))
    if not response.prepared:
        response.headers["request-id"] = request["request_id"]
        if is_api:
            response.headers.update(
                ratelimit_headers(
                    state,
                    request.get("fingerprint"),
                    request.get("model_class"),
                    state.now(),
                    token_class=request.get("token_class"),
                )
            )
    if is_api:
        state.log.add(
            time=state.now(),
            method=request.method,
            path=request.path,
            status=request.get("status_override", response.status),
            error_type=request["error_type"],
            request_id=request["request_id"],
            fingerprint=request.get("fingerprint"),
            client_request_id=request.headers.get("x-client-request-id"),
            stream=bool(request.get("stream")),
        )
    return response
