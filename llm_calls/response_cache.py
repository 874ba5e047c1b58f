"""Response cache: an identical request, opted in by its caller, answered from Redis.

Opt-in per call, because a stored answer is only right where the caller says so: with
``temperature`` above 0 (or absent: the API's default is 1) the API would sample a new answer,
and the cache returns the stored one instead. ``temperature`` is part of the key, so requests
that differ in it never share an answer.

Key: ``gw:rc:<scope>:<sha256 of the canonical body>``. The body is canonicalised so that what
cannot change the answer cannot split the key: ``cache_control`` marks (the prompt-cache planner
adds them), ``stream``, and a string versus a one-text-block list. Everything else (model,
max_tokens, system, tools, messages, temperature, stop sequences, metadata…) is in it.

Scope: a string naming who may share an answer — ``scope_for`` gives ``user:<id>`` by default and
``org:<id>`` only when the caller says the content is shared within the organization. Answers
never cross scopes. Entries live ``RESPONSE_CACHE_TTL_S`` seconds (default 3600).

A hit is a ``MessageResult`` with ``from_response_cache=True``, zero usage, no attempts and no
request id (no API request was made); ``message_id`` is the stored answer's.

Redis trouble never fails a call: a lookup becomes a miss and a store is skipped, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from llm_calls.types import MessageResult, Usage

log = logging.getLogger(__name__)

KEY_PREFIX = "gw:rc"
DEFAULT_TTL_S = 3600
FORMAT_VERSION = 1
# Fields of the body that cannot change the answer.
IGNORED_FIELDS = frozenset({"stream", "cache_control"})


def response_cache_ttl_s() -> int:
    """``RESPONSE_CACHE_TTL_S`` (default 3600), read at call time."""
    raw = getattr(settings, "RESPONSE_CACHE_TTL_S", DEFAULT_TTL_S)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise ImproperlyConfigured(
            f"RESPONSE_CACHE_TTL_S must be a whole number of seconds > 0, got {raw!r}."
        )
    return raw


def scope_for(*, user_id: int, organization_id: int | None, shared: bool) -> str:
    """Who may share a cached answer: the user, or their organization when ``shared`` is set
    (a user without an organization keeps a scope of their own)."""
    if shared and organization_id is not None:
        return f"org:{organization_id}"
    return f"user:{user_id}"


def _text_block(text: Any) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _strip_marks(block: Any) -> Any:
    if isinstance(block, Mapping):
        return {k: v for k, v in block.items() if k != "cache_control"}
    return block


def canonical_body(params: Mapping[str, Any]) -> bytes:
    """The request as the key sees it (see the module docstring)."""
    body: dict[str, Any] = {k: v for k, v in params.items() if k not in IGNORED_FIELDS}
    if isinstance(body.get("tools"), list):
        body["tools"] = [_strip_marks(tool) for tool in body["tools"]]
    system = body.get("system")
    if isinstance(system, str):
        body["system"] = [_text_block(system)] if system else []
    elif isinstance(system, list):
        body["system"] = [_strip_marks(block) for block in system]
    messages = body.get("messages")
    if isinstance(messages, list):
        normalised = []
        for message in messages:
            if isinstance(message, Mapping):
                content = message.get("content")
                if isinstance(content, str):
                    content = [_text_block(content)]
                elif isinstance(content, list):
                    content = [_strip_marks(block) for block in content]
                message = {**message, "content": content}
            normalised.append(message)
        body["messages"] = normalised
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def cache_key(*, params: Mapping[str, Any], scope: str) -> str:
    if not isinstance(scope, str) or not scope.strip():
        raise ValueError("scope must be a non-empty string such as 'user:42' or 'org:7'")
    return f"{KEY_PREFIX}:{scope}:{hashlib.sha256(canonical_body(params)).hexdigest()}"


def _redis() -> redis.Redis:
    from ratelimit_project.redis import get_redis  # late: tests repoint REDIS_URL

    return get_redis()


def lookup(*, params: Mapping[str, Any], scope: str) -> MessageResult | None:
    """The stored answer to this exact request within ``scope``, or None."""
    started = time.monotonic()
    key = cache_key(params=params, scope=scope)
    try:
        raw = _redis().get(key)
    except redis.RedisError as error:
        log.warning("response cache unavailable (%s); treating as a miss", error)
        return None
    if raw is None:
        return None
    try:
        stored = json.loads(raw)
        if stored.get("v") != FORMAT_VERSION:
            return None
        return MessageResult(
            message_id=str(stored["message_id"]),
            model=str(stored["model"]),
            text=str(stored["text"]),
            stop_reason=stored.get("stop_reason"),
            usage=Usage(),
            request_id=None,
            attempts=(),
            latency_ms=(time.monotonic() - started) * 1000.0,
            content=tuple(stored.get("content") or ()),
            from_response_cache=True,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        log.warning("response cache entry %s is unreadable (%s); ignoring it", key, error)
        return None


def store(*, params: Mapping[str, Any], scope: str, result: MessageResult) -> None:
    """Keep ``result`` as the answer to this exact request within ``scope`` for the TTL.

    An answer that itself came from the cache is not stored again (its TTL must not be
    extended by being read).
    """
    if result.from_response_cache:
        return
    key = cache_key(params=params, scope=scope)
    value = json.dumps(
        {
            "v": FORMAT_VERSION,
            "message_id": result.message_id,
            "model": result.model,
            "text": result.text,
            "stop_reason": result.stop_reason,
            "content": [dict(block) for block in result.content],
            "stored_at": time.time(),
        },
        ensure_ascii=False,
    )
    try:
        _redis().set(key, value, ex=response_cache_ttl_s())
    except redis.RedisError as error:
        log.warning("response cache unavailable (%s); answer not stored", error)
