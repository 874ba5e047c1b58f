"""Queue position and estimated wait, for users; queue depth and limiter state, for staff.

The estimate is a fluid model of the rate limiter: everything that will be dispatched before
this request (its position in the fair scheduler: what is ahead in higher classes and its share
of its own class) plus the request itself must fit through the three buckets. For each dimension
the wait is ``max(0, work - level) / refill`` — the time until the bucket has refilled enough —
and the binding dimension decides. Output tokens are counted at the learned ratio of actual to
``max_tokens`` (reservations of ``max_tokens`` come back when calls finish). The ``eta``
benchmark measures how far predictions land from actual waits.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count

from llm_calls import catalog
from queueing import conf
from queueing.limiter import get_limiter
from queueing.models import LLMRequest
from queueing.scheduler import get_scheduler
from ratelimit_project.redis import get_redis

OUTPUT_RATIO_KEY = "gw:eta:output_ratio"


def record_output_ratio(*, max_tokens: int, output_tokens: int) -> None:
    """Learn how much of ``max_tokens`` calls really use (EWMA), for the OTPM part of the ETA."""
    if max_tokens <= 0:
        return
    ratio = min(1.0, output_tokens / max_tokens)
    client = get_redis()
    old = client.get(OUTPUT_RATIO_KEY)
    value = ratio if old is None else 0.9 * float(old) + 0.1 * ratio
    client.set(OUTPUT_RATIO_KEY, repr(value), ex=7 * 24 * 3600)


def _output_ratio() -> float:
    raw = get_redis().get(OUTPUT_RATIO_KEY)
    return 1.0 if raw is None else max(0.05, float(raw))


def _wait_for(work: float, level: float | None, limit: int) -> float:
    if not limit or level is None:
        return 0.0
    return max(0.0, work - level) / (limit / 60.0)


def predict_wait_s(*, request: LLMRequest) -> float | None:
    """Seconds until this queued request is dispatched, or None when it is not in the queue."""
    position = get_scheduler().position(request_id=request.pk)
    if position is None:
        return None
    state = get_limiter().state(model_class=catalog.model_class(request.model))
    levels = state["levels"]
    limits = state["limits"]["effective"]
    own_cost = max(1, request.estimated_input_tokens + request.max_tokens)
    input_share = request.estimated_input_tokens / own_cost
    tokens_ahead = float(position.tokens_ahead) + own_cost
    requests = position.requests_ahead + 1
    input_work = tokens_ahead * input_share * state["estimate_factor"]
    output_work = tokens_ahead * (1 - input_share) * _output_ratio()
    wait = max(
        _wait_for(requests, levels["rpm"], limits["rpm"]),
        _wait_for(input_work, levels["itpm"], limits["itpm"]),
        _wait_for(output_work, levels["otpm"], limits["otpm"]),
        state["paused_for_s"],
    )
    return round(wait, 2)


def queue_status(request: LLMRequest) -> dict[str, Any]:
    """What a user sees next to a request: position (1 = next) and estimated wait in seconds."""
    if request.status != LLMRequest.Status.QUEUED:
        return {
            "position": None,
            "requests_ahead": 0,
            "eta_s": 0.0 if not request.is_terminal else None,
        }
    position = get_scheduler().position(request_id=request.pk)
    if position is None:
        return {"position": None, "requests_ahead": None, "eta_s": None}
    return {
        "position": position.position,
        "requests_ahead": position.requests_ahead,
        "eta_s": predict_wait_s(request=request),
    }


def queue_overview() -> dict[str, Any]:
    """Staff view: depth per class and user, in-flight calls, limiter state per model class."""
    depth = get_scheduler().depth()
    counts = dict(LLMRequest.objects.values_list("status").annotate(n=Count("pk")))
    user_rows = depth.get("users", {})
    ids = [int(key[1:]) for key in user_rows if key.startswith("u") and key[1:].isdigit()]
    names = dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))
    users = sorted(
        (
            {
                "user": names.get(int(key[1:]), key) if key[1:].isdigit() else key,
                "requests": row.get("requests", 0),
                "tokens": row.get("tokens", 0),
            }
            for key, row in user_rows.items()
        ),
        key=lambda r: -r["tokens"],
    )
    classes = [
        {"name": name, **depth.get("classes", {}).get(name, {"requests": 0, "tokens": 0})}
        for name in conf.priority_class_names()
    ]
    limiter = get_limiter()
    limiter_rows = []
    for model_class in sorted({catalog.model_class(m) for m in catalog.known_models()}):
        state = limiter.state(model_class=model_class)
        eff = state["limits"]["effective"]
        limiter_rows.append(
            {
                "model_class": model_class,
                "requests": state["levels"]["rpm"],
                "input_tokens": state["levels"]["itpm"],
                "output_tokens": state["levels"]["otpm"],
                "limits": f"{eff['rpm']} / {eff['itpm']} / {eff['otpm']}",
                "paused_s": state["paused_for_s"],
                "rate_limited": state["rate_limit_errors"],
                "estimate_factor": state["estimate_factor"],
            }
        )
    return {
        "counts": counts,
        "in_flight": counts.get(LLMRequest.Status.RUNNING, 0)
        + counts.get(LLMRequest.Status.DISPATCHED, 0),
        "classes": classes,
        "users": users[:50],
        "limiter": limiter_rows,
    }
