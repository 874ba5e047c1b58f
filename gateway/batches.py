"""The Message Batches API at the gateway: ``/v1/messages/batches`` and its sub-paths.

A caller's batch becomes one request per item on the gateway's own batch route
(``queueing.batching``: collected into Anthropic Message Batches at half price), so every item
passes the request rules and quota admission, and lands in ``audit_log`` and on the dashboards
like any call. The batch's status, counts and results are read from those requests:

- an item is *processing* while its request is queued, dispatched or running; *succeeded* with
  its answer; *canceled* when it was cancelled (or its upstream batch was); *expired* when its
  upstream batch expired; *errored* otherwise (a quota refusal included, with its message);
- the batch has *ended* once no item is processing (``canceling`` until then, after a cancel).

The envelope is checked as the API checks it, and every item's ``params`` with the model's own
rules before anything is written: a bad item refuses the whole batch, naming it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from gateway.models import MessageBatch, MessageBatchItem
from gateway.services import SESSION_HEADER, GatewayError, check_model, failure, fresh_connections
from gateway.services import message_body as answer_body
from llm_calls.batches import MAX_BATCH_REQUESTS
from llm_calls.validation import InvalidRequest
from queueing import conf, services
from queueing.models import ApiToken, LLMRequest
from queueing.services import IDEMPOTENCY_KEY_RE

Status = LLMRequest.Status

ID_PREFIX = "msgbatch_gw"
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
EXPIRES_AFTER = dt.timedelta(hours=24)  # as the API's batches: results within 24 hours
PROCESSING = (Status.QUEUED, Status.DISPATCHED, Status.RUNNING)
DEFAULT_PAGE, MAX_PAGE = 20, 1000


def _invalid(message: str) -> GatewayError:
    return GatewayError("invalid_request_error", message)


def _rfc3339(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _requests(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    extra = sorted(set(body) - {"requests"})
    if extra:
        raise _invalid(f"{extra[0]}: Extra inputs are not permitted")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _invalid("requests: a non-empty list of {custom_id, params} is required")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise _invalid(f"requests: at most {MAX_BATCH_REQUESTS:,} requests per batch")
    seen: set[str] = set()
    for index, item in enumerate(requests):
        if not isinstance(item, dict) or set(item) != {"custom_id", "params"}:
            raise _invalid(f"requests.{index}: must be an object with custom_id and params")
        custom_id = item["custom_id"]
        if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            raise _invalid(f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if custom_id in seen:
            raise _invalid(f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        if not isinstance(item["params"], dict):
            raise _invalid(f"requests.{index}.params: Input should be a valid dictionary")
    return requests


def _batch_class() -> str:
    return conf.batch_priority_classes()[0]


def create(*, token: ApiToken, body: Mapping[str, Any], headers: Mapping[str, str]) -> MessageBatch:
    """Check the whole batch, then queue one batch-route request per item."""
    fresh_connections()
    requests = _requests(body)
    key = headers.get("idempotency-key")
    fingerprint = ""
    if key is not None:
        if not IDEMPOTENCY_KEY_RE.fullmatch(key):
            raise _invalid(
                "Idempotency-Key: must be 1 to 255 printable ASCII characters, not starting "
                "or ending with a space"
            )
        canonical = json.dumps(requests, sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        earlier = _replayed(token=token, key=key, fingerprint=fingerprint)
        if earlier is not None:
            return earlier
    if not conf.batch_priority_classes():
        raise GatewayError("api_error", "this gateway has no batch priority class configured")
    public_id = ID_PREFIX + secrets.token_hex(12)
    session_id = headers.get(SESSION_HEADER) or f"batch-{public_id}"
    priority = _batch_class()
    for index, item in enumerate(requests):
        check_model(token=token, model=item["params"].get("model"))
        try:
            services.check_submission(
                user=token.user,
                session_id=session_id,
                priority=priority,
                params=item["params"],
                use_batch=True,
            )
        except InvalidRequest as exc:
            raise _invalid(f"requests.{index}.params.{exc}") from None
    try:
        with transaction.atomic():
            batch = MessageBatch.objects.create(
                public_id=public_id,
                user=token.user,
                api_token=token,
                idempotency_key=key or "",
                idempotency_fingerprint=fingerprint,
            )
    except IntegrityError:
        # A twin with the same key won the race: that one is the batch.
        twin = _replayed(token=token, key=key or "", fingerprint=fingerprint)
        if twin is None:
            raise
        return twin
    for item in requests:
        try:
            request = services.submit_request(
                user=token.user,
                session_id=session_id,
                priority=priority,
                batch=True,
                api_token=token,
                **item["params"],
            )
        except services.QuotaExceeded as exc:
            request = exc.request  # kept as rejected: its result says why
        MessageBatchItem.objects.create(batch=batch, custom_id=item["custom_id"], request=request)
    return batch


def _replayed(*, token: ApiToken, key: str, fingerprint: str) -> MessageBatch | None:
    earlier = MessageBatch.objects.filter(user=token.user, idempotency_key=key).first()
    if earlier is None:
        return None
    if earlier.idempotency_fingerprint != fingerprint:
        raise _invalid(
            f"Idempotency-Key: {key!r} already named batch {earlier.public_id} with other "
            "requests; use a new key for a new batch"
        )
    return earlier


def find(*, token: ApiToken, public_id: str) -> MessageBatch:
    """The caller's own batch; anyone else's is as missing as one that never existed."""
    fresh_connections()
    batch = MessageBatch.objects.filter(
        public_id=public_id, user=token.user, deleted_at__isnull=True
    ).first()
    if batch is None:
        raise GatewayError("not_found_error", f"message batch {public_id!r} not found")
    return batch


def _item_outcome(request: LLMRequest) -> str:
    if request.status in PROCESSING:
        return "processing"
    if request.status == Status.SUCCEEDED:
        return "succeeded"
    if request.status == Status.CANCELLED or request.error_type == "batch_canceled":
        return "canceled"
    if request.error_type == "batch_expired":
        return "expired"
    return "errored"


def body(batch: MessageBatch, *, base_url: str) -> dict[str, Any]:
    """The batch as the API describes it."""
    rows = list(
        LLMRequest.objects.filter(gateway_batch_item__batch=batch).only(
            "status", "error_type", "finished_at"
        )
    )
    counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
    for row in rows:
        counts[_item_outcome(row)] += 1
    ended = counts["processing"] == 0
    ended_at = None
    if ended:
        ended_at = max((row.finished_at for row in rows if row.finished_at), default=None)
    if ended:
        status = "ended"
    elif batch.cancel_initiated_at is not None:
        status = "canceling"
    else:
        status = "in_progress"
    return {
        "id": batch.public_id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "created_at": _rfc3339(batch.created_at),
        "expires_at": _rfc3339(batch.created_at + EXPIRES_AFTER),
        "ended_at": _rfc3339(ended_at or (batch.created_at if ended else None)),
        "cancel_initiated_at": _rfc3339(batch.cancel_initiated_at),
        "archived_at": None,
        "results_url": f"{base_url}/v1/messages/batches/{batch.public_id}/results"
        if ended
        else None,
    }


def results_page(
    batch: MessageBatch, *, after_pk: int = 0, size: int = 500
) -> tuple[list[dict[str, Any]], int | None]:
    """Result lines of the items after ``after_pk``, in the order they were given, and the
    cursor for the next page (None after the last)."""
    fresh_connections()
    items = list(
        MessageBatchItem.objects.filter(batch=batch, pk__gt=after_pk)
        .select_related("request")
        .order_by("pk")[:size]
    )
    lines = [{"custom_id": item.custom_id, "result": _result(item.request)} for item in items]
    return lines, (items[-1].pk if len(items) == size else None)


def _result(request: LLMRequest) -> dict[str, Any]:
    outcome = _item_outcome(request)
    if outcome == "succeeded":
        return {"type": "succeeded", "message": answer_body(request)}
    if outcome in ("canceled", "expired"):
        return {"type": outcome}
    return {"type": "errored", "error": failure(request).body()}


def ended(batch: MessageBatch) -> bool:
    return not LLMRequest.objects.filter(
        gateway_batch_item__batch=batch, status__in=PROCESSING
    ).exists()


def cancel(*, token: ApiToken, batch: MessageBatch) -> MessageBatch:
    """Cancel every item still waiting for a batch; items already sent to Anthropic finish
    (or come back canceled with their upstream batch)."""
    if batch.cancel_initiated_at is None and not ended(batch):
        MessageBatch.objects.filter(pk=batch.pk).update(cancel_initiated_at=timezone.now())
    waiting = LLMRequest.objects.filter(gateway_batch_item__batch=batch, status=Status.QUEUED)
    for request in waiting.select_related("user"):
        # CannotCancel: a collector took it meanwhile; it finishes with its upstream batch.
        with contextlib.suppress(services.CannotCancel):
            services.cancel_request(request=request, by_user=token.user)
    batch.refresh_from_db()
    return batch


def delete(*, batch: MessageBatch) -> None:
    if not ended(batch):
        raise _invalid(
            f"message batch {batch.public_id} is still being processed; cancel it and wait "
            "for it to end before deleting"
        )
    MessageBatch.objects.filter(pk=batch.pk).update(deleted_at=timezone.now())


def page(*, token: ApiToken, query: Mapping[str, str], base_url: str) -> dict[str, Any]:
    """The caller's batches, newest first, paged like the API (``limit``, ``after_id``,
    ``before_id``)."""
    fresh_connections()
    raw_limit = query.get("limit", str(DEFAULT_PAGE))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise _invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= MAX_PAGE:
        raise _invalid(f"limit: Input should be between 1 and {MAX_PAGE}")
    mine = MessageBatch.objects.filter(user=token.user, deleted_at__isnull=True)
    after, before = query.get("after_id"), query.get("before_id")
    if after and before:
        raise _invalid("give after_id or before_id, not both")
    older = mine
    if after or before:
        cursor = mine.filter(public_id=after or before).first()
        if cursor is None:
            name = "after_id" if after else "before_id"
            raise _invalid(f"{name}: unknown batch id {after or before!r}")
        if before:
            # The ones just newer than the cursor, shown newest first.
            newer = list(mine.filter(pk__gt=cursor.pk).order_by("pk")[: limit + 1])
            has_more, rows = len(newer) > limit, list(reversed(newer[:limit]))
        older = mine.filter(pk__lt=cursor.pk)
    if not before:
        page_rows = list(older.order_by("-pk")[: limit + 1])
        has_more, rows = len(page_rows) > limit, page_rows[:limit]
    data = [body(batch, base_url=base_url) for batch in rows]
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
