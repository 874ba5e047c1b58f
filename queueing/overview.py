"""What staff see of the queue: depth per class and user, calls in flight, the limiter's buckets."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from llm_calls import catalog
from queueing import conf, selectors
from queueing.limiter import get_limiter
from queueing.models import LLMRequest
from queueing.scheduler import get_scheduler


def queue_overview() -> dict[str, Any]:
    """Staff view: depth per class and user, in-flight calls, limiter state per model class."""
    depth = get_scheduler().depth()
    counts = selectors.status_counts()
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
    for model_class in catalog.model_classes():
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
