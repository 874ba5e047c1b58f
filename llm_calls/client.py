"""The one door to the Anthropic SDK: single HTTP attempts, translated into neutral types.

Only this module imports ``anthropic`` (ruff TID251 enforces it). Every function here makes
exactly ONE HTTP attempt (the SDK's own retries are off: ``max_retries=0``) and either returns a
:class:`ClientResponse` or raises :class:`AttemptFailure` — never an SDK or httpx exception — so
the retry policy in ``llm_calls.retry`` decides alone what is retried and how long to wait.

Nothing here knows about users, quotas or limits. The API key (and the Admin API key that reads
the usage and cost reports) never appears in any message, repr or log line produced here:
messages pass through :func:`redact_secrets`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anthropic
import httpx2

from llm_calls import conf

# One connection pool per process serves every thread (httpx clients are thread-safe). A
# worker running 256+ concurrent calls must not queue on the pool, and keeping that many idle
# connections alive avoids a TCP/TLS handshake per call under load.
POOL_MAX_CONNECTIONS = 1024
POOL_MAX_KEEPALIVE_CONNECTIONS = 512
CONNECT_TIMEOUT_S = 5.0

# Messages quoted from an error body are cut here so one bad request cannot flood a log line.
MAX_ERROR_MESSAGE_CHARS = 500

_T = TypeVar("_T")

_clients: dict[tuple[str, str, float], anthropic.Anthropic] = {}
# Clients holding the Admin API key (usage and cost reports), cached apart so ``get_client()``
# never hands one out for a Claude call.
_admin_clients: dict[tuple[str, str, float], anthropic.Anthropic] = {}
_clients_lock = threading.Lock()
# asyncio clients, one per event loop: an httpx async pool belongs to the loop that opened it.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, float], anthropic.AsyncAnthropic]
] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ClientResponse(Generic[_T]):
    """A successful HTTP attempt.

    ``value`` is plain data (dicts from the API's JSON), never an SDK object. ``billed`` says
    whether Anthropic bills tokens for this response (a completed message does; batch
    management calls do not — batch results are billed per request inside the batch).
    """

    value: _T
    status: int
    headers: Mapping[str, str] = field(repr=False)
    request_id: str | None
    billed: bool = False


class AttemptFailure(Exception):
    """One HTTP attempt that did not produce a usable response (the neutral error object).

    ``status`` is the HTTP status; 200 for an error event inside a stream that started fine;
    ``None`` when no response arrived (connection refused/reset, timeout, truncated stream).
    ``error_type`` is the API's ``error.type`` (``overloaded_error``, ``rate_limit_error``, …) or
    ``connection_error`` / ``timeout`` for network failures. ``retry_after_s`` comes from
    ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date). ``error_code`` is
    ``error.details.error_code`` (e.g. ``enforced_spend_limit_reached``).
    """

    def __init__(
        self,
        *,
        status: int | None,
        error_type: str | None,
        message: str,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after_s: float | None = None,
        error_code: str | None = None,
    ) -> None:
        self.status = status
        self.error_type = error_type
        self.message = redact_secrets(message)[:MAX_ERROR_MESSAGE_CHARS]
        self.request_id = request_id
        self.headers: Mapping[str, str] = dict(headers or {})
        self.retry_after_s = retry_after_s
        self.error_code = error_code
        super().__init__(self.describe())

    @property
    def got_response(self) -> bool:
        """True when the server answered, so ``headers`` are that response's headers (also for a
        stream cut off after its 200, whose ``status`` is ``None``)."""
        return self.status is not None or bool(self.headers)

    def describe(self) -> str:
        """One line for messages and logs, e.g. ``HTTP 529 overloaded_error: Overloaded (request req_1)``."""
        if self.status is None:
            head = "network error"
        elif self.status == 200:
            head = "HTTP 200 stream error"
        else:
            head = f"HTTP {self.status}"
        parts = [head]
        if self.error_type:
            parts.append(f" {self.error_type}")
        if self.error_code:
            parts.append(f" [{self.error_code}]")
        if self.message:
            parts.append(f": {self.message}")
        if self.request_id:
            parts.append(f" (request {self.request_id})")
        return "".join(parts)

    def __repr__(self) -> str:
        return (
            f"AttemptFailure(status={self.status!r}, error_type={self.error_type!r}, "
            f"error_code={self.error_code!r}, request_id={self.request_id!r}, "
            f"retry_after_s={self.retry_after_s!r})"
        )


# ---------------------------------------------------------------------------------------------
# Client construction


def get_client() -> anthropic.Anthropic:
    """The process-wide SDK client for the configured endpoint (built once, then shared).

    Cached per (key, base URL, timeout) so ``override_settings`` in tests gets its own client,
    while production threads share one connection pool. Raises ``ImproperlyConfigured`` when
    no endpoint is configured (see ``llm_calls.conf.endpoint``).
    """
    endpoint = conf.endpoint()
    cache_key = (endpoint.api_key, endpoint.base_url, endpoint.timeout_s)
    client = _clients.get(cache_key)
    if client is not None:
        return client
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            client = _build_client(endpoint)
            _clients[cache_key] = client
        return client


def get_async_client() -> anthropic.AsyncAnthropic:
    """The running event loop's SDK client for the configured endpoint: :func:`get_client`
    for code on an event loop (the worker host's call engine, ``queueing.engine``). Call it from
    a coroutine; each loop gets its own connection pool, shared by every call it holds."""
    endpoint = conf.endpoint()
    cache_key = (endpoint.api_key, endpoint.base_url, endpoint.timeout_s)
    clients = _async_clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(cache_key)
    if client is None:
        timeout, limits = _pool_settings(endpoint)
        client = clients[cache_key] = anthropic.AsyncAnthropic(
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            max_retries=0,
            timeout=timeout,
            # The SDK's aiohttp transport: measured at a third of the CPU per call of its
            # default httpx one at 256 calls in flight (whose pool walks every connection on
            # every request). aiohttp is a dependency already (the emulator serves with it).
            http_client=anthropic.DefaultAioHttpClient(timeout=timeout, limits=limits),
        )
    return client


async def aclose_clients() -> None:
    """Close the running loop's async clients (the call engine, when it stops)."""
    for client in _async_clients.pop(asyncio.get_running_loop(), {}).values():
        await client.close()


def get_admin_client() -> anthropic.Anthropic:
    """The process-wide SDK client holding the Admin API key (``ANTHROPIC_ADMIN_API_KEY``) for
    the usage and cost reports, at the same base URL as every call. Cached like
    :func:`get_client` but apart from it. Raises ``ImproperlyConfigured`` without an admin key
    (see ``llm_calls.conf.admin_endpoint``)."""
    endpoint = conf.admin_endpoint()
    cache_key = (endpoint.api_key, endpoint.base_url, endpoint.timeout_s)
    client = _admin_clients.get(cache_key)
    if client is not None:
        return client
    with _clients_lock:
        client = _admin_clients.get(cache_key)
        if client is None:
            client = _build_client(endpoint)
            _admin_clients[cache_key] = client
        return client


def close_clients() -> None:
    """Close every cached client's connection pool, admin ones too (tests, process shutdown)."""
    with _clients_lock:
        clients = [*_clients.values(), *_admin_clients.values()]
        _clients.clear()
        _admin_clients.clear()
    for client in clients:
        client.close()


def _pool_settings(endpoint: conf.Endpoint) -> tuple[httpx2.Timeout, httpx2.Limits]:
    timeout = httpx2.Timeout(endpoint.timeout_s, connect=min(CONNECT_TIMEOUT_S, endpoint.timeout_s))
    limits = httpx2.Limits(
        max_connections=POOL_MAX_CONNECTIONS,
        max_keepalive_connections=POOL_MAX_KEEPALIVE_CONNECTIONS,
    )
    return timeout, limits


def _build_client(endpoint: conf.Endpoint) -> anthropic.Anthropic:
    timeout, limits = _pool_settings(endpoint)
    # DefaultHttpxClient keeps the SDK's own transport defaults (TCP keepalive, redirects,
    # proxies from the environment); we only widen the pool.
    http_client = anthropic.DefaultHttpxClient(timeout=timeout, limits=limits)
    return anthropic.Anthropic(
        api_key=endpoint.api_key,
        base_url=endpoint.base_url,
        max_retries=0,
        timeout=timeout,
        http_client=http_client,
    )


def app_client(*, base_url: str, api_key: str, max_retries: int = 2) -> anthropic.Anthropic:
    """A plain SDK client, exactly as any app builds one, for code that PLAYS such an app: the
    demo's helpdesk app calling the gateway's own endpoint (``/v1/messages``), and the
    benchmarks' naive arm (``naive_client``). Application code never uses it to reach
    Anthropic: such calls would bypass every guarantee the gateway gives."""
    return anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=max_retries)


def async_app_client(
    *, base_url: str, api_key: str, max_retries: int = 2
) -> anthropic.AsyncAnthropic:
    """The asyncio twin of :func:`app_client`: a plain async SDK client, exactly as an asyncio
    app builds one, for code that PLAYS such an app — the ``proxy`` benchmark's thousand
    concurrent callers of the gateway's own endpoint. Application code never uses it to reach
    Anthropic: such calls would bypass every guarantee the gateway gives."""
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=max_retries)


def naive_client(*, base_url: str, api_key: str, max_retries: int = 2) -> anthropic.Anthropic:
    """BENCHMARK ONLY: a plain SDK client, exactly as an app without this gateway would build it.

    The SDK's own retries are left at its default (``max_retries=2``, honouring
    ``retry-after``); no limiter, no tracking, no cache planner. The loadtest scenarios compare
    the gateway against it (``utilization``'s naive arm) and time a bare call with it
    (``overhead``, ``max_retries=0``). Never use it in application code: calls made through it
    bypass every guarantee the gateway gives.
    """
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
    return app_client(base_url=base_url, api_key=api_key, max_retries=max_retries)


def redact_secrets(text: str) -> str:
    """Remove every API key this process knows — Claude keys and Admin API keys — from
    ``text`` (defence in depth for messages)."""
    secrets = {key for key, _url, _timeout in [*list(_clients), *list(_admin_clients)]}
    for configured in (conf.api_key().strip(), conf.admin_api_key().strip()):
        if configured:
            secrets.add(configured)
    for secret in secrets:
        if secret and len(secret) >= 6 and secret in text:
            text = text.replace(secret, "[redacted API key]")
    return text


# ---------------------------------------------------------------------------------------------
# Messages


def create_message(
    *, params: Mapping[str, Any], extra_headers: Mapping[str, str] | None = None
) -> ClientResponse[dict[str, Any]]:
    """POST /v1/messages once, non-streaming. ``params`` is the full Messages body.

    Returns the message as a dict (``id``, ``model``, ``content``, ``stop_reason``, ``usage``…).
    """
    client = get_client()
    required, body = _split_message_params(params)
    try:
        raw = client.messages.with_raw_response.create(
            **required,
            extra_body=body,
            extra_headers=dict(extra_headers or {}),
            timeout=client.timeout,
        )
        return _created(raw, raw.parse())
    except Exception as err:
        raise _translate(err) from err


async def acreate_message(
    *, params: Mapping[str, Any], extra_headers: Mapping[str, str] | None = None
) -> ClientResponse[dict[str, Any]]:
    """:func:`create_message` on the running event loop (``get_async_client``)."""
    client = get_async_client()
    required, body = _split_message_params(params)
    try:
        raw = await client.messages.with_raw_response.create(
            **required,
            extra_body=body,
            extra_headers=dict(extra_headers or {}),
            timeout=client.timeout,
        )
        return _created(raw, await raw.parse())
    except Exception as err:
        raise _translate(err) from err


def _created(raw: Any, message: Any) -> ClientResponse[dict[str, Any]]:
    return ClientResponse(
        value=_message_dict(message),
        status=raw.status_code,
        headers=_headers_dict(raw.headers),
        request_id=raw.request_id,
        billed=True,
    )


# The events the API itself sends; the SDK's stream adds derived ones ("text", "input_json"…).
API_STREAM_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
)


def stream_message(
    *,
    params: Mapping[str, Any],
    extra_headers: Mapping[str, str] | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> ClientResponse[dict[str, Any]]:
    """POST /v1/messages once with ``stream: true`` and accumulate the stream into one message.

    ``on_event(name, data)`` sees each of the API's events as it arrives, in the API's shape.

    An ``event: error`` after the HTTP 200 (e.g. ``overloaded_error``) becomes an
    :class:`AttemptFailure` with status 200 and that error type; a stream that ends without
    ``message_stop`` (connection dropped) becomes a network failure. Either way nothing was
    billed, so the caller may retry it.
    """
    client = get_client()
    required, body = _split_message_params(params)
    try:
        with client.messages.stream(
            **required,
            extra_body=body,
            extra_headers=dict(extra_headers or {}),
            timeout=client.timeout,
        ) as stream:
            completed = False
            for event in stream:
                if on_event is not None and event.type in API_STREAM_EVENTS:
                    on_event(event.type, _raw_event(event))
                completed = completed or event.type == "message_stop"
            return _streamed(stream, completed=completed)
    except AttemptFailure:
        raise
    except Exception as err:
        raise _translate(err) from err


async def astream_message(
    *,
    params: Mapping[str, Any],
    extra_headers: Mapping[str, str] | None = None,
    on_event: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
) -> ClientResponse[dict[str, Any]]:
    """:func:`stream_message` on the running event loop; ``on_event`` is awaited per event,
    so the events reach it in the API's order."""
    client = get_async_client()
    required, body = _split_message_params(params)
    try:
        async with client.messages.stream(
            **required,
            extra_body=body,
            extra_headers=dict(extra_headers or {}),
            timeout=client.timeout,
        ) as stream:
            completed = False
            async for event in stream:
                if on_event is not None and event.type in API_STREAM_EVENTS:
                    await on_event(event.type, _raw_event(event))
                completed = completed or event.type == "message_stop"
            final = await stream.get_final_message() if completed else None
            return _streamed(stream, completed=completed, final=final)
    except AttemptFailure:
        raise
    except Exception as err:
        raise _translate(err) from err


def _streamed(stream: Any, *, completed: bool, final: Any = None) -> ClientResponse[dict[str, Any]]:
    """The accumulated message of a finished stream; a stream that ended without
    ``message_stop`` (connection dropped) is a network failure, not billed."""
    headers = _headers_dict(stream.response.headers)
    if not completed:
        raise AttemptFailure(
            status=None,
            error_type="connection_error",
            message="the stream ended before message_stop",
            request_id=stream.request_id,
            headers=headers,
        )
    return ClientResponse(
        value=_message_dict(final if final is not None else stream.get_final_message()),
        status=stream.response.status_code,
        headers=headers,
        request_id=stream.request_id,
        billed=True,
    )


def _raw_event(event: Any) -> dict[str, Any]:
    """An SDK stream event back in the API's shape: the SDK's stop events carry snapshots of
    the block or message so far, which the API does not send."""
    if event.type == "content_block_stop":
        return {"type": "content_block_stop", "index": event.index}
    if event.type == "message_stop":
        return {"type": "message_stop"}
    data: dict[str, Any] = event.model_dump(mode="json", exclude_unset=True)
    return data


def _split_message_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the body into the SDK's three required arguments and the body sent verbatim.

    The whole body (minus ``stream``, which the function chooses) goes in ``extra_body`` so
    fields the SDK's signature does not name (``temperature``, new API fields) reach the API
    unchanged; the SDK gives ``extra_body`` precedence over its own arguments.
    """
    body = {key: value for key, value in params.items() if key != "stream"}
    required = {name: params[name] for name in ("model", "max_tokens", "messages")}
    return required, body


def _message_dict(message: Any) -> dict[str, Any]:
    # exclude_unset: the fields the API sent, not the SDK model's defaults for fields it did not
    # (the gateway's endpoint hands this body on as the API's own).
    data: dict[str, Any] = message.model_dump(mode="json", exclude_unset=True)
    data["content"] = [
        block.model_dump(mode="json", exclude_none=True) for block in message.content
    ]
    # Structured-output helpers add a parsed copy of the text; the text block itself is the truth.
    data.pop("parsed_output", None)
    for block in data["content"]:
        block.pop("parsed_output", None)
    return data


def count_tokens(*, params: Mapping[str, Any]) -> ClientResponse[dict[str, Any]]:
    """POST /v1/messages/count_tokens once. ``params`` is a Messages body without ``max_tokens``
    (sent verbatim); returns ``{"input_tokens": N}``. Free, so never ``billed``."""
    client = get_client()
    body = {key: value for key, value in params.items() if key not in ("max_tokens", "stream")}
    try:
        raw = client.messages.with_raw_response.count_tokens(
            model=body["model"], messages=body["messages"], extra_body=body
        )
        return ClientResponse(
            value=raw.parse().model_dump(mode="json"),
            status=raw.status_code,
            headers=_headers_dict(raw.headers),
            request_id=raw.request_id,
        )
    except Exception as err:
        raise _translate(err) from err


# ---------------------------------------------------------------------------------------------
# Models


def list_models(*, query: Mapping[str, Any]) -> ClientResponse[dict[str, Any]]:
    """GET /v1/models once, one page. ``query`` is passed through (``limit``, ``after_id``,
    ``before_id``, ``lifecycle[]``…); returns the page as the API wrote it."""
    client = get_client()
    try:
        raw = client.get("/v1/models", cast_to=httpx2.Response, options={"params": dict(query)})
        return _json_response(raw)
    except Exception as err:
        raise _translate(err) from err


def retrieve_model(*, model_id: str) -> ClientResponse[dict[str, Any]]:
    """GET /v1/models/{model_id} once."""
    client = get_client()
    try:
        raw = client.get(f"/v1/models/{model_id}", cast_to=httpx2.Response)
        return _json_response(raw)
    except Exception as err:
        raise _translate(err) from err


# ---------------------------------------------------------------------------------------------
# Usage and cost reports (Admin API; single attempts, never billed)


def usage_report(*, query: Mapping[str, Any]) -> ClientResponse[dict[str, Any]]:
    """GET /v1/organizations/usage_report/messages once, one page, with the Admin API key.

    ``query`` is passed through (``starting_at``, ``ending_at``, ``bucket_width``, ``limit``,
    ``page``, and lists such as ``{"group_by": ["api_key_id", "model"]}``, sent as
    ``group_by[]=api_key_id&group_by[]=model``; a key already spelt ``group_by[]`` works too);
    returns the page exactly as the API wrote it (``data``, ``has_more``, ``next_page``). The
    SDK has no typed resource for this endpoint (only for the Enterprise analytics ones), and a
    reconciler needs every figure as sent anyway.
    """
    return _admin_get("/v1/organizations/usage_report/messages", query)


def cost_report(*, query: Mapping[str, Any]) -> ClientResponse[dict[str, Any]]:
    """GET /v1/organizations/cost_report once, one page, with the Admin API key. Daily buckets;
    ``amount`` is a decimal string in cents (``"123.45"`` is $1.2345). Same query rules and raw
    JSON as :func:`usage_report`."""
    return _admin_get("/v1/organizations/cost_report", query)


def _admin_get(path: str, query: Mapping[str, Any]) -> ClientResponse[dict[str, Any]]:
    client = get_admin_client()
    # The SDK writes a list as ``name[]=a&name[]=b`` itself: a ``name[]`` key would become
    # ``name[][]``.
    params = {
        (key[:-2] if key.endswith("[]") and isinstance(value, list | tuple) else key): value
        for key, value in query.items()
    }
    try:
        raw = client.get(path, cast_to=httpx2.Response, options={"params": params})
        return _json_response(raw)
    except Exception as err:
        raise _translate(err) from err


def _json_response(raw: httpx2.Response) -> ClientResponse[dict[str, Any]]:
    # The page exactly as the API wrote it: the SDK's ModelInfo would drop fields it does not
    # know yet, and a drop-in endpoint must pass them on.
    return ClientResponse(
        value=raw.json(),
        status=raw.status_code,
        headers=_headers_dict(raw.headers),
        request_id=raw.headers.get("request-id"),
    )


# ---------------------------------------------------------------------------------------------
# Message Batches (single attempts; the batch route decides about retrying)


def create_batch(
    *, requests: Sequence[Mapping[str, Any]], extra_headers: Mapping[str, str] | None = None
) -> ClientResponse[dict[str, Any]]:
    """POST /v1/messages/batches once. ``requests`` are ``{custom_id, params}`` dicts, sent verbatim."""
    client = get_client()
    plain_requests = [dict(request) for request in requests]
    try:
        raw = client.messages.batches.with_raw_response.create(
            requests=plain_requests,  # type: ignore[arg-type]
            extra_body={"requests": plain_requests},
            extra_headers=dict(extra_headers or {}),
        )
        return _batch_response(raw)
    except Exception as err:
        raise _translate(err) from err


def retrieve_batch(*, batch_id: str) -> ClientResponse[dict[str, Any]]:
    """GET /v1/messages/batches/{id} once."""
    client = get_client()
    try:
        raw = client.messages.batches.with_raw_response.retrieve(batch_id)
        return _batch_response(raw)
    except Exception as err:
        raise _translate(err) from err


def cancel_batch(*, batch_id: str) -> ClientResponse[dict[str, Any]]:
    """POST /v1/messages/batches/{id}/cancel once."""
    client = get_client()
    try:
        raw = client.messages.batches.with_raw_response.cancel(batch_id)
        return _batch_response(raw)
    except Exception as err:
        raise _translate(err) from err


def iter_batch_results(*, batch_id: str) -> Iterator[dict[str, Any]]:
    """Yield each result line of an ended batch as a dict ``{custom_id, result: {type, …}}``.

    The SDK retrieves the batch and follows its ``results_url``. A failure while reading raises
    :class:`AttemptFailure`; results already yielded stay valid, so a caller that retries must
    skip the ``custom_id`` values it has already handled.
    """
    client = get_client()
    try:
        decoder = client.messages.batches.results(batch_id)
        # closing() releases the connection when the consumer stops iterating early.
        with contextlib.closing(decoder):
            for line in decoder:
                yield line.model_dump(mode="json", exclude_none=True)
    except AttemptFailure:
        raise
    except Exception as err:
        raise _translate(err) from err


def _batch_response(raw: Any) -> ClientResponse[dict[str, Any]]:
    batch = raw.parse()
    return ClientResponse(
        value=batch.model_dump(mode="json"),
        status=raw.status_code,
        headers=_headers_dict(raw.headers),
        request_id=raw.request_id,
        billed=False,
    )


# ---------------------------------------------------------------------------------------------
# Error translation


def _translate(err: Exception) -> AttemptFailure:
    """Map any SDK/httpx exception from one attempt onto an :class:`AttemptFailure`."""
    if isinstance(err, AttemptFailure):
        return err
    if isinstance(err, anthropic.APIStatusError):
        headers = _headers_dict(err.response.headers)
        body = err.body
        error_type = err.type or _body_str(body, "error", "type")
        message = err.api_message or _body_str(body, "error", "message") or str(err)
        request_id = err.request_id or _body_str(body, "request_id")
        return AttemptFailure(
            status=err.status_code,
            error_type=error_type,
            message=message,
            request_id=request_id,
            headers=headers,
            retry_after_s=parse_retry_after(headers),
            error_code=err.error_code,
        )
    if isinstance(err, anthropic.APITimeoutError | httpx2.TimeoutException):
        return AttemptFailure(
            status=None, error_type="timeout", message="the request timed out before a response"
        )
    if isinstance(err, anthropic.APIConnectionError):
        cause = err.__cause__ or err.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else err.message
        return AttemptFailure(
            status=None, error_type="connection_error", message=f"connection failed ({detail})"
        )
    if isinstance(err, httpx2.HTTPError | httpx2.StreamError):
        # Raised while reading a body or stream after the status line arrived: the SDK only
        # wraps errors that happen while sending.
        return AttemptFailure(
            status=None,
            error_type="connection_error",
            message=f"connection failed while reading the response ({type(err).__name__}: {err})",
        )
    if isinstance(err, anthropic.APIResponseValidationError):
        return AttemptFailure(
            status=err.status_code,
            error_type="invalid_response",
            message=f"the API returned data the SDK could not parse: {err.message}",
            request_id=err.response.headers.get("request-id"),
            headers=_headers_dict(err.response.headers),
        )
    raise err


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, else ``retry-after`` (seconds or
    an HTTP date). ``None`` when absent or unparseable; never negative."""
    lowered = {key.lower(): value for key, value in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            millis = float(raw_ms)
        except ValueError:
            millis = math.nan
        if math.isfinite(millis):
            return max(0.0, millis / 1000.0)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        current = time.time() if now is None else now
        return max(0.0, float(email.utils.mktime_tz(parsed)) - current)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _headers_dict(headers: Any) -> dict[str, str]:
    return {str(key).lower(): str(value) for key, value in headers.items()}


def _body_str(body: object, *path: str) -> str | None:
    current = body
    for key in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current if isinstance(current, str) else None
