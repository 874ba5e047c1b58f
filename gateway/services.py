"""What the Anthropic-compatible endpoint does, in plain synchronous functions.

The endpoint (``gateway.app``) is a thin asyncio layer over these: it reads the HTTP request,
runs these in a worker thread, and writes what they return. Every call goes the one path —
``queueing.services.submit_request``: the request rules, quota admission, the fair scheduler,
the limiter, retries, the cache planner and ``audit_log`` — and the answer is rebuilt as the
body Anthropic would have sent.

Errors are Anthropic's shape and chosen for the official SDKs, which retry 429 and 5xx on
their own: a refusal that waiting cannot cure (bad body, exhausted quota, a key that may not
use the model) is a 4xx the SDKs do not retry, never a bare 429.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections

from llm_calls.types import API_ERROR_STATUS
from llm_calls.validation import InvalidRequest
from queueing import auth, conf, services
from queueing.models import ApiToken, LLMRequest
from queueing.services import SESSION_ID_RE

PRIORITY_HEADER = "x-gateway-priority"
SESSION_HEADER = "x-gateway-session"
# A person is waiting on a synchronous call unless the key or the caller says otherwise.
DEFAULT_PRIORITY = "interactive"


class GatewayError(Exception):
    """An error answered in Anthropic's shape: ``{"type": "error", "error": {type, message}}``."""

    def __init__(self, error_type: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status if status is not None else API_ERROR_STATUS.get(error_type, 500)

    def body(self, *, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": self.error_type, "message": self.message},
        }
        if request_id:
            body["request_id"] = request_id
        return body


@dataclass(frozen=True)
class Accepted:
    """A request the queue took, and what to tell the caller about its place."""

    request: LLMRequest
    position: int | None
    estimated_wait_s: float | None


def fresh_connections() -> None:
    """Endpoint functions run in a thread pool outside Django's request cycle, which is what
    normally drops a broken or expired database connection; do it before each use."""
    close_old_connections()


def authenticate(*, headers: Mapping[str, str]) -> ApiToken:
    """The gateway key presented as ``x-api-key`` or ``Authorization: Bearer``."""
    fresh_connections()
    raw = headers.get("x-api-key") or auth.bearer_value(headers.get("authorization", ""))
    if not raw:
        raise GatewayError(
            "authentication_error",
            "x-api-key header is required (a gateway key, or Authorization: Bearer <key>)",
        )
    token, problem = auth.token_for_key(raw)
    if token is None:
        raise GatewayError("authentication_error", problem)
    return token


def check_model(*, token: ApiToken, model: object) -> None:
    allowed = token.allowed_models or []
    if allowed and isinstance(model, str) and model not in allowed:
        raise GatewayError(
            "permission_error",
            f"this gateway key may not use model {model!r}; it may use: {', '.join(allowed)}",
        )


def _priority(*, token: ApiToken, headers: Mapping[str, str]) -> str:
    priority = headers.get(PRIORITY_HEADER) or token.default_priority or DEFAULT_PRIORITY
    if priority in conf.batch_priority_classes():
        raise GatewayError(
            "invalid_request_error",
            f"{PRIORITY_HEADER}: {priority!r} is answered through the Message Batches route, "
            "not by a waiting call; choose one of: "
            + ", ".join(
                n for n in conf.priority_class_names() if n not in conf.batch_priority_classes()
            ),
        )
    return priority


def _session(*, token: ApiToken, headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """``x-gateway-session``, else ``metadata.user_id``, else one session per key."""
    given = headers.get(SESSION_HEADER)
    if given is not None:
        return given  # checked by submit_request, which names the problem
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    if isinstance(user_id, str) and user_id:
        if SESSION_ID_RE.fullmatch(user_id):
            return user_id
        # An opaque end-user id (an email, a UUID with braces…): one stable session per value.
        return "u-" + hashlib.sha256(user_id.encode()).hexdigest()[:32]
    return f"key-{token.prefix}"


def submit(
    *, token: ApiToken, body: dict[str, Any], headers: Mapping[str, str], live_events: bool = False
) -> Accepted:
    """Queue ``body`` (a Messages body without ``stream``) for the key's user; with
    ``live_events`` its worker relays the API's stream events as they arrive."""
    fresh_connections()
    check_model(token=token, model=body.get("model"))
    try:
        request = services.submit_request(
            user=token.user,
            session_id=_session(token=token, headers=headers, body=body),
            priority=_priority(token=token, headers=headers),
            idempotency_key=headers.get("idempotency-key"),
            api_token=token,
            live_events=live_events,
            **body,  # type: ignore[arg-type]  # a JSON object, validated there
        )
    except InvalidRequest as exc:
        raise GatewayError("invalid_request_error", str(exc)) from None
    except services.QuotaExceeded as exc:
        # What Anthropic answers when an organization's own spend limit is reached: a 400 the
        # SDKs do not retry (a 429 would be retried in vain until the quota resets).
        raise GatewayError("invalid_request_error", str(exc)) from None
    except services.IdempotencyKeyReused as exc:
        raise GatewayError("invalid_request_error", f"Idempotency-Key: {exc}") from None
    # The position submit_request saw: asking the scheduler again would read the whole queue
    # ahead a second time (the proxy benchmark measured it).
    return Accepted(
        request=request,
        position=request.queue_position,
        estimated_wait_s=request.predicted_wait_s,
    )


def reload(*, request_id: int) -> LLMRequest:
    fresh_connections()
    return LLMRequest.objects.get(pk=request_id)


def abandon(*, request_id: int) -> bool:
    """The caller went away: cancel the request if it is still queued (its quota comes back).
    A call already sent runs to the end and is recorded — it is being billed."""
    fresh_connections()
    request = LLMRequest.objects.select_related("user").get(pk=request_id)
    try:
        services.cancel_request(request=request, by_user=request.user)
    except services.CannotCancel:
        return False
    return True


def message_body(request: LLMRequest) -> dict[str, Any]:
    """The Messages API response for a succeeded request, as Anthropic sent it."""
    result = request.result or {}
    envelope = dict(result.get("message") or {})
    if not envelope:
        # Rows recorded before the envelope was kept: rebuild it from what was stored.
        envelope = {
            "id": result.get("message_id", ""),
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "stop_reason": result.get("stop_reason"),
            "stop_sequence": None,
            "usage": result.get("usage") or {},
        }
    return {**envelope, "content": list(result.get("content") or [])}


def failure(request: LLMRequest) -> GatewayError:
    """What a caller is told about a request that ended without an answer."""
    if request.status == LLMRequest.Status.CANCELLED:
        return GatewayError("invalid_request_error", f"request {request.pk} was cancelled")
    if request.status == LLMRequest.Status.REJECTED:
        return GatewayError("invalid_request_error", request.error_message)
    kind = request.error_type
    if kind in API_ERROR_STATUS:
        if kind == "authentication_error":
            # The organization's own Anthropic key was refused: the caller's key is fine.
            return GatewayError("api_error", "the gateway's upstream API key was refused")
        return GatewayError(kind, request.error_message)
    return GatewayError("api_error", request.error_message or f"request {request.pk} failed")
