"""``loadtest priority``: a saturated queue holding every priority class at once.

Workload: for each configured class (``GATEWAY_PRIORITY_CLASSES``; default approval >
interactive > query > bulk, each with a 10% minimum share) ``users_per_class`` users in a
closed loop (``backlog.ClosedLoop``), each keeping that class's backlog queued:
``approval_backlog``, ``interactive_backlog``, ``query_backlog``, ``bulk_backlog`` requests.
Every class therefore competes for the whole run, including the top one, so the lower classes
get only what their minimum shares guarantee: a starvation test, not a leftover test. Bulk goes
through the scheduler here (``GATEWAY_BATCH_PRIORITY_CLASSES=[]``), not the Message Batches API.
Request sizes are random and the same for every class; ITPM binds (``rate`` requests/s of the
mean size) and the ITPM bucket is drained first, as in ``fairness``.

Figures over the measured window (``--duration`` seconds after ``warmup_s``):
- ``p95_wait_s{class}``: p95 of ``dispatched_at - created_at`` of the requests submitted in the
  window (load continues until all of them were dispatched);
- ``approval_to_query_p95_ratio``: approval p95 ÷ query p95 (small = priority works);
- ``min_class_share``: the lowest share of dispatched tokens (billed input + output, requests
  dispatched in the window) any class got; ``expected_share`` says what the scheduler's rule
  gives when every class stays backlogged.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.conf import settings

from queueing import conf
from ratelimit_project.loadtest import backlog
from ratelimit_project.loadtest.stack import Stack

DEFAULTS: dict[str, float] = {
    "users_per_class": 2,
    "approval_backlog": 1,
    "interactive_backlog": 2,
    "query_backlog": 3,
    "bulk_backlog": 4,
    "rate": 8.0,  # requests/s of the mean size that the ITPM limit allows
    "min_input": 200,
    "max_input": 1400,
    "output_tokens": 50,
    "latency_ms": 300,
    "warmup_s": 6.0,
    "tail_cap_s": 60.0,
    "threads": 16,
}
DEFAULT_DURATION_S = 40.0


def add_arguments(parser: ArgumentParser) -> None:
    """Options via --opt key=value: see DEFAULTS (<class>_backlog for each configured class;
    a class without one gets 2). --duration is the measured window."""


def _config(options: dict[str, Any]) -> dict[str, Any]:
    extra = options.get("extra") or {}
    classes = conf.priority_classes()
    known = set(DEFAULTS) | {f"{name}_backlog" for name, _ in classes}
    unknown = set(extra) - known
    if unknown:
        raise ValueError(f"unknown --opt keys {sorted(unknown)}; known: {', '.join(sorted(known))}")
    cfg: dict[str, Any] = {key: float(extra.get(key, default)) for key, default in DEFAULTS.items()}
    scale = float(options.get("scale") or 1.0)
    cfg["users_per_class"] = max(1, round(cfg["users_per_class"] * scale))
    cfg["backlogs"] = {
        name: int(float(extra.get(f"{name}_backlog", DEFAULTS.get(f"{name}_backlog", 2))))
        for name, _ in classes
    }
    for key in ("min_input", "max_input", "output_tokens", "threads"):
        cfg[key] = int(cfg[key])
    cfg["duration_s"] = float(options.get("duration") or DEFAULT_DURATION_S)
    cfg["chars_per_token"] = float(options.get("chars_per_token") or 4.0)
    mean_input = (cfg["min_input"] + cfg["max_input"]) / 2 + 4
    cfg["limits"] = {
        "rpm": round(cfg["rate"] * 60 * 4),
        "itpm": round(cfg["rate"] * mean_input * 60),
        "otpm": round(cfg["rate"] * cfg["output_tokens"] * 60 * 4),
    }
    return cfg


def expected_shares(classes: list[tuple[str, float]]) -> dict[str, float]:
    """Token shares when every class stays backlogged: each class below the top gets its
    minimum share, the top class the rest."""
    shares = {name: share for name, share in classes[1:]}
    return {classes[0][0]: 1 - sum(shares.values()), **shares}


def run(options: dict[str, Any]) -> dict[str, Any]:
    cfg = _config(options)
    classes = conf.priority_classes()
    limits = cfg["limits"]
    with Stack(
        emulator={
            **limits,
            "latency_ms": cfg["latency_ms"],
            "chars_per_token": cfg["chars_per_token"],
            "seed": 1,
        },
        rate_limits={backlog.MODEL_CLASS: limits},
        worker_env={"GATEWAY_BATCH_PRIORITY_CLASSES_JSON": json.dumps([])},
    ) as stack:
        settings.GATEWAY_BATCH_PRIORITY_CLASSES = []
        users = backlog.make_users("prio", cfg["users_per_class"] * len(classes))
        streams = [
            backlog.Stream(
                f"{name}-{n}",
                users[i * cfg["users_per_class"] + n],
                priority=name,
                backlog=cfg["backlogs"][name],
                input_tokens=(cfg["min_input"], cfg["max_input"]),
                output_tokens=cfg["output_tokens"],
            )
            for i, (name, _) in enumerate(classes)
            for n in range(cfg["users_per_class"])
            if cfg["backlogs"][name] > 0
        ]
        run_ = backlog.run_window(
            stack,
            streams,
            threads=cfg["threads"],
            warmup_s=cfg["warmup_s"],
            duration_s=cfg["duration_s"],
            tail_cap_s=cfg["tail_cap_s"],
            measured=lambda s: True,
        )

    start, end = run_.window
    span = end - start
    names = [name for name, _ in classes]
    billed = dict.fromkeys(names, 0)
    cost = dict.fromkeys(names, 0)
    count = dict.fromkeys(names, 0)
    for o in run_.outcomes:
        if o.dispatched_at is not None and start <= o.dispatched_at < end:
            billed[o.item.priority] += o.billed_tokens
            cost[o.item.priority] += o.item.cost
            count[o.item.priority] += 1
    active = [name for name in names if cfg["backlogs"][name] > 0]
    total_billed = sum(billed.values()) or 1
    total_cost = sum(cost.values()) or 1
    share = {name: round(billed[name] / total_billed, 4) for name in active}
    cost_share = {name: round(cost[name] / total_cost, 4) for name in active}
    waits: dict[str, list[float]] = {name: [] for name in active}
    not_dispatched = dict.fromkeys(active, 0)
    for o in run_.outcomes:
        if start <= o.created_at < end:
            if o.wait_s is None:
                not_dispatched[o.item.priority] += 1
            else:
                waits[o.item.priority].append(o.wait_s)
    p95 = {name: backlog.rounded(backlog.percentile(waits[name], 95)) for name in active}
    p50 = {name: backlog.rounded(backlog.percentile(waits[name], 50)) for name in active}
    approval_p95, query_p95 = p95.get("approval"), p95.get("query")
    ratio = round(approval_p95 / query_p95, 4) if approval_p95 is not None and query_p95 else None
    return {
        "scenario": "priority",
        "p95_wait_s": p95,
        "p50_wait_s": p50,
        "approval_to_query_p95_ratio": ratio,
        "min_class_share": min(share.values()) if share else None,
        "min_class_share_cost_tokens": min(cost_share.values()) if cost_share else None,
        "class_share": share,
        "class_share_cost_tokens": cost_share,
        "expected_share": {k: round(v, 4) for k, v in expected_shares(classes).items()},
        "min_share_configured": dict(classes),
        "requests_dispatched_in_window": count,
        "requests_measured": {name: len(waits[name]) for name in active},
        "requests_not_dispatched": not_dispatched,
        "dispatch_rate_per_s": round(sum(count.values()) / span, 2),
        "limits": limits,
        "config": {k: v for k, v in cfg.items() if k != "limits"},
        **run_.info,
        "notes": (
            "Closed loop: every user keeps its class backlog queued (topped up every 20 ms), so "
            "all classes compete throughout; ticks_found_empty counts ticks where a stream had "
            "nothing queued. Shares are of tokens billed by the emulator (input + output) for "
            "requests dispatched in the window; *_cost_tokens use the scheduler's cost "
            "(estimated input + max_tokens). Waits are dispatched_at - created_at of requests "
            "submitted in the window; load continued until all of them were dispatched. "
            "Bulk is routed through the scheduler (GATEWAY_BATCH_PRIORITY_CLASSES=[])."
        ),
    }
