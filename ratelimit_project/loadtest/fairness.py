"""``loadtest fairness``: one heavy user against four light ones, fair scheduler vs plain FIFO.

Workload (both arms identical): one priority class, equal weights, five users in a closed loop
(``backlog.ClosedLoop``): each light user keeps ``light_backlog`` requests queued, the heavy user
``heavy_factor`` times as many. Request sizes are random (``min_input``..``max_input`` input
tokens, ``output_tokens`` out), the same distribution for everyone. The emulator and our limiter
allow ``rate`` requests/s of the mean size in input tokens (ITPM binds; RPM and OTPM are set far
above need), and the ITPM bucket is drained before each arm, so the whole run is limiter-bound.

Arms, one after the other in one run against the same stack: ``fair`` (the gateway's scheduler)
and ``fifo`` (``GATEWAY_SCHEDULER_MODE=fifo``: every request under one scheduler key, i.e. first
come, first served). Each arm: ``warmup_s`` of load, then the measured window of ``--duration``
seconds; load continues after the window until every request submitted in it was dispatched.

Figures (fair arm at the top level, both arms under ``arms``):
- ``jain_index``: Jain's index of the tokens the API billed (input + output) per user, over the
  requests dispatched inside the window, when all five users were backlogged throughout.
- ``light_user_p95_wait_s``: p95 of light users' waits (``dispatched_at - created_at``) of the
  requests submitted inside the window.
- ``light_user_ideal_wait_s``: p95 of the same requests' waits under perfect fair share (see
  ``notes`` in the JSON for the definition).
- ``fifo_light_user_p95_wait_s``: the light users' p95 wait in the FIFO arm.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings

from ratelimit_project.loadtest import backlog
from ratelimit_project.loadtest.stack import Stack

DEFAULTS: dict[str, float] = {
    "light_users": 4,
    "light_backlog": 3,
    "heavy_factor": 20,
    "rate": 8.0,  # requests/s of the mean size that the ITPM limit allows
    "min_input": 200,
    "max_input": 1400,
    "output_tokens": 50,
    "latency_ms": 300,
    "warmup_s": 6.0,
    "tail_cap_s": 60.0,
    "threads": 16,
}
DEFAULT_DURATION_S = 30.0
TARGETS = {"jain_index_min": 0.99, "light_p95_over_ideal_max": 1.5}


def add_arguments(parser: ArgumentParser) -> None:
    """Options via --opt key=value: see DEFAULTS (--duration is the measured window per arm)."""


def _config(options: dict[str, Any]) -> dict[str, Any]:
    extra = options.get("extra") or {}
    unknown = set(extra) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown --opt keys {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
    cfg: dict[str, Any] = {key: float(extra.get(key, default)) for key, default in DEFAULTS.items()}
    for key in ("light_users", "light_backlog", "heavy_factor", "min_input", "max_input"):
        cfg[key] = int(cfg[key])
    cfg["output_tokens"] = int(cfg["output_tokens"])
    cfg["threads"] = int(cfg["threads"])
    scale = float(options.get("scale") or 1.0)
    cfg["light_users"] = max(1, round(cfg["light_users"] * scale))
    cfg["duration_s"] = float(options.get("duration") or DEFAULT_DURATION_S)
    cfg["chars_per_token"] = float(options.get("chars_per_token") or 4.0)
    mean_input = (cfg["min_input"] + cfg["max_input"]) / 2 + 4  # + per-message overhead
    cfg["limits"] = {
        "rpm": round(cfg["rate"] * 60 * 4),
        "itpm": round(cfg["rate"] * mean_input * 60),
        "otpm": round(cfg["rate"] * cfg["output_tokens"] * 60 * 4),
    }
    return cfg


def _run_arm(stack: Stack, mode: str, cfg: dict[str, Any]) -> dict[str, Any]:
    settings.GATEWAY_SCHEDULER_MODE = mode
    stack.worker_env["GATEWAY_SCHEDULER_MODE"] = mode
    users = backlog.make_users(f"fair-{mode}", 1 + cfg["light_users"])
    size = {
        "input_tokens": (cfg["min_input"], cfg["max_input"]),
        "output_tokens": cfg["output_tokens"],
    }
    light_backlog = cfg["light_backlog"]
    streams = [
        backlog.Stream("heavy", users[0], backlog=light_backlog * cfg["heavy_factor"], **size),
        *(
            backlog.Stream(f"light-{n}", user, backlog=light_backlog, **size)
            for n, user in enumerate(users[1:], start=1)
        ),
    ]
    run = backlog.run_window(
        stack,
        streams,
        threads=cfg["threads"],
        warmup_s=cfg["warmup_s"],
        duration_s=cfg["duration_s"],
        tail_cap_s=cfg["tail_cap_s"],
        # The heavy user's own waits are not the question (and its last backlog would need
        # minutes to drain); its share is measured from dispatches in the window.
        measured=lambda s: s.label != "heavy",
    )
    return _figures(loop=run.loop, outcomes=run.outcomes, window=run.window, extra=run.info)


def _figures(
    *,
    loop: backlog.ClosedLoop,
    outcomes: list[backlog.Outcome],
    window: tuple[float, float],
    extra: dict[str, Any],
) -> dict[str, Any]:
    start, end = window
    span = end - start
    labels = [s.label for s in loop.streams]
    heavy_backlog = loop.streams[0].backlog
    dispatched = [
        o for o in outcomes if o.dispatched_at is not None and start <= o.dispatched_at < end
    ]
    billed = {label: 0 for label in labels}
    cost = {label: 0 for label in labels}
    count = {label: 0 for label in labels}
    for o in dispatched:
        billed[o.item.label] += o.billed_tokens
        cost[o.item.label] += o.item.cost
        count[o.item.label] += 1
    total_cost_rate = sum(cost.values()) / span
    fair_rate = total_cost_rate / len(labels)  # cost tokens/s each user gets at perfect fair share

    submitted = [o for o in outcomes if start <= o.created_at < end]
    light = [o for o in submitted if o.item.label != "heavy"]
    light_waits = [o.wait_s for o in light if o.wait_s is not None]
    ideal = (
        [(o.item.own_tokens_ahead + o.item.cost) / fair_rate for o in light] if fair_rate else []
    )
    total_billed = sum(billed.values()) or 1
    p95 = backlog.percentile(light_waits, 95)
    ideal_p95 = backlog.percentile(ideal, 95)
    return {
        "jain_index": backlog.rounded(backlog.jain_index(billed.values()), 4),
        "jain_index_cost_tokens": backlog.rounded(backlog.jain_index(cost.values()), 4),
        "light_user_p95_wait_s": backlog.rounded(p95),
        "light_user_p50_wait_s": backlog.rounded(backlog.percentile(light_waits, 50)),
        "light_user_ideal_wait_s": backlog.rounded(ideal_p95),
        "light_user_ideal_p50_wait_s": backlog.rounded(backlog.percentile(ideal, 50)),
        "light_p95_over_ideal": backlog.rounded(p95 / ideal_p95 if p95 and ideal_p95 else None),
        # Little's law (backlog / throughput): the heavy user's mean wait, the price it pays
        # for fairness. Its own waits are not all observed: the run ends with its backlog full.
        "heavy_user_mean_wait_s": backlog.rounded(
            heavy_backlog / (count["heavy"] / span) if count["heavy"] else None
        ),
        "light_requests_measured": len(light_waits),
        "light_requests_not_dispatched": len(light) - len(light_waits),
        "token_share": {label: round(billed[label] / total_billed, 4) for label in labels},
        "requests_dispatched_in_window": count,
        "dispatch_rate_per_s": round(len(dispatched) / span, 2),
        "cost_tokens_per_s": round(total_cost_rate, 1),
        **extra,
    }


def run(options: dict[str, Any]) -> dict[str, Any]:
    cfg = _config(options)
    limits = cfg["limits"]
    with Stack(
        emulator={
            **limits,
            "latency_ms": cfg["latency_ms"],
            "chars_per_token": cfg["chars_per_token"],
            "seed": 1,
        },
        rate_limits={backlog.MODEL_CLASS: limits},
    ) as stack:
        settings.GATEWAY_BATCH_PRIORITY_CLASSES = []
        arms = {mode: _run_arm(stack, mode, cfg) for mode in ("fair", "fifo")}
    fair, fifo = arms["fair"], arms["fifo"]
    return {
        "scenario": "fairness",
        "jain_index": fair["jain_index"],
        "light_user_p95_wait_s": fair["light_user_p95_wait_s"],
        "light_user_ideal_wait_s": fair["light_user_ideal_wait_s"],
        "fifo_light_user_p95_wait_s": fifo["light_user_p95_wait_s"],
        "fifo_jain_index": fifo["jain_index"],
        "light_p95_over_ideal": fair["light_p95_over_ideal"],
        "fifo_over_fair_light_p95": backlog.rounded(
            fifo["light_user_p95_wait_s"] / fair["light_user_p95_wait_s"]
            if fifo["light_user_p95_wait_s"] and fair["light_user_p95_wait_s"]
            else None,
            2,
        ),
        "targets": TARGETS,
        "met": {
            "jain_index": bool(
                fair["jain_index"] and fair["jain_index"] >= TARGETS["jain_index_min"]
            ),
            "light_p95_within_1_5x_ideal": bool(
                fair["light_p95_over_ideal"]
                and fair["light_p95_over_ideal"] <= TARGETS["light_p95_over_ideal_max"]
            ),
        },
        "limits": limits,
        "config": {k: v for k, v in cfg.items() if k != "limits"},
        "arms": arms,
        "notes": {
            "window": (
                "Measured window = --duration seconds after warmup_s of load; every user is "
                "backlogged throughout (closed loop: each user's queued requests are topped up "
                "every 20 ms; ticks_found_empty counts ticks where a user had none queued)."
            ),
            "jain_index": (
                "Jain's index (sum x)^2 / (n sum x^2) over the five users' tokens billed by the "
                "emulator (input + output) for requests dispatched inside the window. "
                "jain_index_cost_tokens uses the scheduler's cost (estimated input + max_tokens)."
            ),
            "light_user_ideal_wait_s": (
                "Wait under perfect fair share: with n users backlogged, each gets 1/n of the "
                "measured dispatch rate R (scheduler cost tokens/s in the window). A light "
                "user's request must wait for its own user's requests queued ahead of it plus "
                "itself: ideal = (cost of own requests ahead at submit + own cost) / (R / n). "
                "Reported as the p95 over the same light-user requests whose measured p95 is "
                "light_user_p95_wait_s. Gateway overhead is not in it, so it is a reference, "
                "not a strict bound: dispatching whole requests lands a little either side of it."
            ),
            "fifo": (
                "Same workload with GATEWAY_SCHEDULER_MODE=fifo (every request under one "
                "scheduler key: first come, first served); run after the fair arm on the same "
                "stack, with the ITPM bucket drained before each arm."
            ),
        },
    }
