"""What staff see of the queue: depth per class and user, calls in flight, the limiter's buckets.

``queue_overview()`` is what ``/metrics`` and ``/api/v1/queue/stats`` read: counts by status,
depth per class and user, and each model class's buckets. ``queue_overview(detail=True)`` is
the staff queue page, which polls it every 2 seconds: it adds who is at the head of each class
and when they go (``heads``), each listed user's next request, and the calls in flight.

Every list is bounded (``HEAD_ROWS``, ``USER_ROWS``, ``USER_DETAIL_ROWS``, ``IN_FLIGHT_ROWS``)
so the cost does not grow with the queue: the heads come from one read-only replay of the fair
scheduler (``FairScheduler.heads``), and a position and an ETA are asked only for the rows shown,
within a time budget (``ETA_BUDGET_S``). Those are read a moment after the heads, so a request
dispatched in between shows no position and an "unknown" wait until the next poll.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import F
from django.utils import timezone

from llm_calls import catalog
from queueing import conf, eta, selectors
from queueing.limiter import DIMENSIONS, get_limiter
from queueing.models import LLMRequest
from queueing.scheduler import Position, get_scheduler

HEAD_ROWS = 5  # requests listed at the head of each priority class
USER_ROWS = 50  # users listed, most queued tokens first (/metrics exports the same 50)
# Of those, how many get their next request's position and ETA: each costs a position replay
# and an ETA (``eta.estimate_wait``), which grow with the users ahead.
USER_DETAIL_ROWS = 10
IN_FLIGHT_ROWS = 50  # dispatched or running calls listed, longest-running first
# Wall time one overview may spend on positions and ETAs (heads first, then users), so a page
# that polls every 2 s stays cheap however long the queue: with thousands of users tied at
# the class clock one position costs ~10 ms, an ETA more.
ETA_BUDGET_S = 0.3

BUCKET_LABELS = {"rpm": "Requests", "itpm": "Input tokens", "otpm": "Output tokens"}
_UNIT = {"rpm": "RPM", "itpm": "ITPM", "otpm": "OTPM"}


def queue_overview(*, detail: bool = False) -> dict[str, Any]:
    """Staff view of the queue (see the module docstring). Raises ``redis.RedisError`` when
    Redis is unreachable: there is no queue to show without it."""
    now = timezone.now()
    depth = get_scheduler().depth()
    counts = selectors.status_counts()
    user_rows = depth.get("users", {})
    ranked = sorted(user_rows.items(), key=lambda item: (-item[1]["tokens"], item[0]))[:USER_ROWS]
    ids = [i for i in (_user_id(key) for key, _ in ranked) if i is not None]
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    users = [
        {
            "user": _display_name(key, names),
            "user_key": key,
            "requests": row.get("requests", 0),
            "tokens": row.get("tokens", 0),
        }
        for key, row in ranked
    ]
    batch_classes = set(conf.batch_priority_classes())
    classes = [
        {
            "name": name,
            "min_share": share,
            "batch": name in batch_classes,
            "requests": depth.get("classes", {}).get(name, {}).get("requests", 0),
            "tokens": depth.get("classes", {}).get(name, {}).get("tokens", 0),
        }
        for name, share in conf.priority_classes()
    ]
    in_flight = counts.get(LLMRequest.Status.RUNNING, 0) + counts.get(
        LLMRequest.Status.DISPATCHED, 0
    )
    limiter = [_limiter_row(m) for m in catalog.model_classes()]
    overview: dict[str, Any] = {
        "generated_at": now.isoformat(),
        "counts": counts,
        "in_flight": in_flight,
        "classes": classes,
        "users": users,
        "users_total": len(user_rows),
        "limiter": limiter,
        "limiter_idle": [row["model_class"] for row in limiter if row["idle"]],
    }
    if detail:
        for user in users:
            user["next"] = None  # beyond USER_DETAIL_ROWS, and users whose requests just left
        overview["heads"] = _heads(users=users[:USER_DETAIL_ROWS], now=now)
        overview["in_flight_calls"] = _in_flight_calls(now=now)
        overview["row_caps"] = {
            "head_rows": HEAD_ROWS,
            "user_rows": USER_ROWS,
            "user_detail_rows": USER_DETAIL_ROWS,
            "in_flight_rows": IN_FLIGHT_ROWS,
        }
    return overview


def _user_id(user_key: str) -> int | None:
    """The user id behind a scheduler user key ("u42"); None for the shared "fifo" key."""
    return int(user_key[1:]) if user_key.startswith("u") and user_key[1:].isdigit() else None


def _display_name(user_key: str, names: Mapping[int, str]) -> str:
    user_id = _user_id(user_key)
    return names.get(user_id, user_key) if user_id is not None else user_key


# --- the head of each class and each user's next request -------------------------------------


def _heads(*, users: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The first ``HEAD_ROWS`` requests of each class (classes highest first, each in its
    dispatch order); fills ``users[i]["next"]`` in place."""
    front = get_scheduler().heads(limit=HEAD_ROWS, user_keys=[u["user_key"] for u in users])
    next_ids: dict[str, list[int]] = {}
    for heads in front.values():
        for key, request_id in heads.user_next.items():
            next_ids.setdefault(key, []).append(request_id)
    wanted = {item.request_id for heads in front.values() for item in heads.requests}
    wanted.update(i for ids in next_ids.values() for i in ids)
    rows = _rows(wanted)
    estimate = _Estimates(rows=rows, now=now)

    listed = [
        estimate.row(item.request_id, class_position=n)
        for heads in front.values()
        for n, item in enumerate(heads.requests, start=1)
        if item.request_id in rows
    ]
    for user in users:
        # A user queued in several classes goes next with whichever of its first requests
        # has the best position overall.
        candidates = sorted(
            (i for i in next_ids.get(user["user_key"], []) if i in rows), key=estimate.sort_key
        )
        user["next"] = estimate.row(candidates[0]) if candidates else None
    return listed


def _rows(ids: Iterable[int]) -> dict[int, LLMRequest]:
    # The Messages body and the answer can be large and nothing here reads them.
    qs = (
        LLMRequest.objects.filter(pk__in=list(ids)).select_related("user").defer("params", "result")
    )
    return {row.pk: row for row in qs}


class _Estimates:
    """Positions and ETAs of the rows shown, each asked of Redis at most once per overview,
    and only until ``ETA_BUDGET_S`` is spent: rows after that (lowest on the page) say "not
    estimated" rather than make the poll slower."""

    def __init__(self, *, rows: Mapping[int, LLMRequest], now: datetime) -> None:
        self._rows = rows
        self._now = now
        self._deadline = time.monotonic() + ETA_BUDGET_S
        self._positions: dict[int, Position | None] = {}
        self._waits: dict[int, float | None] = {}

    def _in_budget(self, request_id: int, done: Mapping[int, object]) -> bool:
        return request_id in done or time.monotonic() < self._deadline

    def position(self, request_id: int) -> Position | None:
        if request_id not in self._positions:
            if not self._in_budget(request_id, self._positions):
                return None
            self._positions[request_id] = get_scheduler().position(request_id=request_id)
        return self._positions[request_id]

    def sort_key(self, request_id: int) -> tuple[int, int]:
        found = self.position(request_id)
        return (0, found.position) if found is not None else (1, request_id)

    def row(self, request_id: int, *, class_position: int | None = None) -> dict[str, Any]:
        request = self._rows[request_id]
        found = self.position(request_id)
        estimated = request_id in self._positions
        if found is not None and request_id not in self._waits:
            if self._in_budget(request_id, self._waits):
                estimate = eta.estimate_wait(request=request)
                self._waits[request_id] = None if estimate is None else estimate.eta_s
            else:
                estimated = False
        wait = self._waits.get(request_id)
        waited = max(0.0, (self._now - request.created_at).total_seconds())
        if class_position is None and found is not None:
            class_position = found.class_requests_ahead + 1
        return {
            "request_id": request.pk,
            "user": request.user.get_username(),
            "model": request.model,
            "priority": request.priority,
            "tokens": request.estimated_input_tokens + request.max_tokens,
            "class_position": class_position,
            "position": found.position if found is not None else None,
            "estimated": estimated,
            "eta_s": wait,
            # None with a position asked: it left the queue in the meantime
            "eta": eta.describe_wait(wait) if estimated else "not estimated",
            "waited_s": round(waited, 1),
            "waited": eta.describe_waited(waited),
        }


# --- calls in flight --------------------------------------------------------------------------


def _in_flight_calls(*, now: datetime) -> list[dict[str, Any]]:
    """The longest-running dispatched or running calls (a stuck one is at the top)."""
    qs = (
        LLMRequest.objects.filter(
            status__in=(LLMRequest.Status.DISPATCHED, LLMRequest.Status.RUNNING)
        )
        .select_related("user")
        .defer("params", "result")
        .order_by(F("dispatched_at").asc(nulls_last=True), "pk")[:IN_FLIGHT_ROWS]
    )
    calls = []
    for row in qs:
        running = row.status == LLMRequest.Status.RUNNING and row.started_at is not None
        since = row.started_at if running else row.dispatched_at
        seconds = max(0.0, (now - since).total_seconds()) if since is not None else None
        calls.append(
            {
                "request_id": row.pk,
                "user": row.user.get_username(),
                "model": row.model,
                "priority": row.priority,
                "status": row.status,
                "batch": row.use_batch,
                "attempts": row.attempts,
                "since_s": None if seconds is None else round(seconds, 1),
                "since": f"{'running' if running else 'dispatched'} {eta.describe_waited(seconds)}",
            }
        )
    return calls


# --- the limiter ------------------------------------------------------------------------------


def _limiter_row(model_class: str) -> dict[str, Any]:
    state = get_limiter().state(model_class=model_class)
    levels, effective = state["levels"], state["limits"]["effective"]
    buckets = [bucket_figures(state=state, dimension=dim) for dim in DIMENSIONS]
    return {
        "model_class": model_class,
        # the flat figures /metrics exports
        "requests": levels["rpm"],
        "input_tokens": levels["itpm"],
        "output_tokens": levels["otpm"],
        "limits": f"{effective['rpm']} / {effective['itpm']} / {effective['otpm']}",
        "paused_s": state["paused_for_s"],
        "rate_limited": state["rate_limit_errors"],
        "estimate_factor": state["estimate_factor"],
        "warm_prefixes": state.get("warm_prefixes"),
        "buckets": buckets,
        "explanation": describe_limiter(state=state),
        # Nothing to read here: full buckets, nothing learned, no 429s. The page lists these
        # on one line so the model classes in use stand out.
        "idle": all(b["unlimited"] or b["available_pct"] == 100 for b in buckets)
        and not state["estimate_samples"]
        and all(v is None for v in state["limits"]["learned"].values())
        and not state["rate_limit_errors"]
        and not state["paused_for_s"],
    }


def bucket_figures(*, state: Mapping[str, Any], dimension: str) -> dict[str, Any]:
    """One bucket as the page shows it: level vs effective limit and the share available.

    ``limit`` 0 is unlimited (``level`` None); the level may be negative after the server
    charged more than was reserved, and ``available_pct`` then reads 0.
    """
    level = state["levels"][dimension]
    limit = state["limits"]["effective"][dimension]
    learned = state["limits"]["learned"].get(dimension)
    unlimited = not limit or level is None
    return {
        "dimension": dimension,
        "label": BUCKET_LABELS[dimension],
        "level": None if level is None else round(level, 1),
        "limit": limit,
        "unlimited": unlimited,
        "available_pct": None if unlimited else round(max(0.0, min(100.0, 100 * level / limit)), 1),
        "from_server": learned is not None,
        "text": "unlimited" if unlimited else f"{level:,.0f} of {limit:,}",
    }


def describe_limiter(*, state: Mapping[str, Any]) -> list[str]:
    """The limiter's learned figures for one model class, in plain sentences.

    ``state`` is ``RedisRateLimiter.state``'s snapshot; ``warm_prefixes`` is optional (shown
    only when the limiter reports it). Pure, so what staff read is unit-tested.
    """
    sentences = [_estimate_sentence(state), _limits_sentence(state["limits"])]
    warm = state.get("warm_prefixes")
    if warm is not None:
        if warm:
            prefixes = "prefix is" if warm == 1 else "prefixes are"
            sentences.append(
                f"{warm:,} prompt-cache {prefixes} known warm on the current upstream: the "
                "part of a prompt they cover is expected as cache reads, not reserved as input."
            )
        else:
            sentences.append(
                "No prompt-cache prefix is known warm on the current upstream: "
                "prompts are reserved in full."
            )
    paused = state.get("paused_for_s") or 0.0
    if paused > 0:
        sentences.append(f"Dispatch is paused for another {paused:.1f} s after a 429.")
    errors = state.get("rate_limit_errors") or 0
    if errors:
        last = state.get("last_429_at")
        ago = (
            f", the last {eta.describe_waited(max(0.0, state['now'] - last))} ago"
            if last and state.get("now")
            else ""
        )
        sentences.append(
            f"{_count(errors, 'rate-limit error', 'rate-limit errors')} (429) from the server{ago}."
        )
    lowered = state.get("levels_lowered") or 0
    if lowered:
        sentences.append(
            f"Buckets lowered to the server's remaining figures {_count(lowered, 'time', 'times')}."
        )
    return sentences


def _estimate_sentence(state: Mapping[str, Any]) -> str:
    samples = int(state.get("estimate_samples") or 0)
    if not samples:
        return "Reserves the local token estimate as it is: no responses to learn a correction from yet."
    return (
        f"Reserves {state['estimate_factor']:.2f} × the local token estimate (learned from "
        f"{_count(samples, 'response', 'responses')}: the API counted {state['estimate_mean']:.2f} "
        f"± {state['estimate_deviation']:.2f} × our estimate of the input tokens)."
    )


def _limits_sentence(limits: Mapping[str, Mapping[str, int | None]]) -> str:
    configured, learned = limits["configured"], limits["learned"]
    seen = [dim for dim in DIMENSIONS if learned.get(dim) is not None]
    adopted = [dim for dim in seen if learned[dim] != configured.get(dim)]
    if adopted:
        changes = "; ".join(
            f"{_limit(learned[dim], dim)} instead of the configured {_limit(configured.get(dim), dim)}"
            for dim in adopted
        )
        return f"Limits adopted from the server's headers: {changes}."
    if seen:
        return "The server's headers confirm the configured limits."
    return "Limits as configured: no rate-limit headers seen from the server yet."


def _limit(value: int | None, dimension: str) -> str:
    return f"unlimited {_UNIT[dimension]}" if not value else f"{value:,} {_UNIT[dimension]}"


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"
