"""API errors as the real service shapes them."""

from __future__ import annotations

import secrets
from typing import Any

ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

DEFAULT_MESSAGE_BY_STATUS = {
    400: "Invalid request",
    408: "Request timed out",
    409: "Conflict",
    429: "Rate limited",
    500: "Internal server error",
    503: "Service unavailable",
    504: "Gateway timeout",
    529: "Overloaded",
}


class ApiError(Exception):
    """An error response: ``status`` + ``error.type`` + ``error.message`` (+ optional extras)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type or ERROR_TYPE_BY_STATUS.get(status, "api_error")
        self.message = message
        self.headers = headers or {}
        self.details = details


def invalid(message: str) -> ApiError:
    return ApiError(400, message)


def error_body(
    *, error_type: str, message: str, request_id: str | None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        error["details"] = details
    body: dict[str, Any] = {"type": "error", "error": error}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def new_id(prefix: str) -> str:
    return f"{prefix}_01{secrets.token_hex(11)}"
