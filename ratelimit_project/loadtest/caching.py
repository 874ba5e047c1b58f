"""``loadtest caching``: what the prompt-cache planner saves, billed by the emulator.

Workload: ``users`` people of one application share a ~6,400-token system prompt and a
~1,400-token tool schema and ask short, different questions (each answered in
``output_tokens`` tokens). The same deterministic request sequence runs through
``llm_calls.services.send_message`` in two arms — planner OFF (bodies sent as written) and
planner ON (``llm_calls.caching.plan_for_call`` with its Redis reuse tracker) — against one
emulator subprocess and a private redis-server:

1. cost — ``requests`` calls per arm, no rate limits. Costs are computed from the emulator's
   ledger (what it billed) with the list prices (``usage.pricing``): ``cost_usd_cached`` (ON),
   ``cost_usd_uncached`` (OFF), ``cost_ratio``; ``cache_read_ratio`` = cache-read ÷ all input
   tokens in the ON arm.
2. throughput — the emulator limits input tokens to ``itpm`` per minute (ITPM is cache-aware:
   cache reads are free), each arm drives ``concurrency`` threads at full speed for ``duration``
   seconds from a full bucket, one attempt per call, sleeping ``retry-after`` after a 429.
   ``throughput_gain`` = requests/min the emulator accepted (HTTP 200) ON ÷ OFF. The
   steady-state figure from the ledger (ITPM ÷ mean ITPM charge per request) is reported too,
   because the first seconds of each arm spend the initial full bucket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import threading
import time
from argparse import ArgumentParser
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings

from llm_calls.caching import plan_cache, plan_for_call
from llm_calls.client import close_clients
from llm_calls.emulator.process import EmulatorProcess
from llm_calls.retry import ClaudeCallError, RetryPolicy
from llm_calls.services import send_message
from llm_calls.types import Usage
from ratelimit_project import redis as project_redis
from ratelimit_project.loadtest.backlog import MODEL
from usage import price_sheets, pricing

DEFAULTS = {
    "users": 8,
    "requests": 60,
    "output_tokens": 120,
    "itpm": 30_000,
    "concurrency": 4,
}
DEFAULT_DURATION_S = 40.0
ONE_ATTEMPT = RetryPolicy(max_retries=0)

TOPICS = [
    "orders",
    "refunds",
    "shipping",
    "warranty",
    "accounts",
    "invoices",
    "returns",
    "privacy",
]
QUESTIONS = [
    "Where is my order {n}?",
    "Can I return item {n} after thirty days?",
    "Why was I charged twice on invoice {n}?",
    "How do I change the address on order {n}?",
    "Is product {n} covered by the warranty?",
    "My parcel {n} arrived damaged, what now?",
    "Can you delete the account with id {n}?",
    "Do you ship order {n} to Norway?",
]


def add_arguments(parser: ArgumentParser) -> None:
    """Tune with --duration (seconds per throughput arm), --scale (more requests) and
    --opt users=N requests=N output_tokens=N itpm=N concurrency=N."""


def system_prompt() -> str:
    """~25,500 characters (~6,400 tokens at 4 characters per token) of shared instructions."""
    sections = []
    for i, topic in enumerate(TOPICS * 5):
        sections.append(
            f"Section {i + 1}: {topic}. When a customer asks about {topic}, first confirm their "
            f"identity with the order number and the e-mail address on file, then look the case "
            f"up with the lookup tool before answering. Quote the policy paragraph for {topic} "
            f"verbatim when it decides the outcome, never promise a refund or replacement that "
            f"the policy does not grant, escalate to a human agent when the customer is upset or "
            f"the amount exceeds 500 euros, and close with a one-sentence summary of what "
            f"happens next and when. Policy {topic}-{i}: the standard period is {14 + i} days "
            f"from delivery; exceptions need a supervisor's approval recorded in the ticket. "
        )
    return "You are the customer-support assistant of Example Corp.\n\n" + "".join(sections)


def tools() -> list[dict[str, Any]]:
    """One lookup tool with a detailed schema (~1,400 tokens)."""
    fields = {
        f"field_{name}": {
            "type": "string",
            "description": f"The customer's {name.replace('_', ' ')} as written on the order form; "
            f"leave empty when unknown. Used to find the case for {name}.",
        }
        for name in [
            "order_number",
            "email",
            "postcode",
            "surname",
            "first_name",
            "phone",
            "country",
            "invoice_number",
            "product_sku",
            "tracking_code",
            "payment_method",
            "order_date",
            "delivery_date",
            "return_reference",
            "warranty_reference",
            "account_id",
            "store_location",
            "channel",
            "language",
            "ticket_id",
            "agent_id",
            "priority",
            "amount",
            "currency",
            "reason_code",
            "notes",
        ]
    }
    return [
        {
            "name": "lookup_case",
            "description": "Look up an order, invoice, return or warranty case in the support "
            "system. Returns the case record with its history, amounts and the policy that applies. "
            * 6,
            "input_schema": {
                "type": "object",
                "properties": fields,
                "required": ["field_order_number"],
            },
        }
    ]


def request_body(
    number: int, *, users: int, output_tokens: int, system: str, tool_list: list[dict[str, Any]]
) -> dict[str, Any]:
    rng = random.Random(number)
    user = number % users
    question = rng.choice(QUESTIONS).format(n=rng.randint(10_000, 99_999))
    return {
        "model": MODEL,
        "max_tokens": output_tokens + 50,
        "system": system,
        "tools": tool_list,
        "metadata": {"user_id": f"user-{user}"},
        "messages": [
            {
                "role": "user",
                "content": f"(customer {user}) {question} [[emulator:output_tokens={output_tokens}]]",
            }
        ],
    }


def _ledger_usages(emulator: EmulatorProcess) -> list[Usage]:
    return [
        Usage.from_api(entry["usage"])
        for key in emulator.ledger()["keys"].values()
        for entry in key["requests"]
    ]


def _costs(usages: list[Usage]) -> dict[str, Any]:
    price = price_sheets.shipped_price(model=MODEL, on=dt.date.today())
    assert price is not None, f"the shipped price sheet has no price for {MODEL}"
    billed = sum((pricing.call_cost_usd(usage=u, price=price) for u in usages), Decimal(0))
    uncached = sum((pricing.uncached_cost_usd(usage=u, price=price) for u in usages), Decimal(0))
    total_input = sum(u.total_input_tokens for u in usages)
    return {
        "requests": len(usages),
        "cost_usd": float(billed),
        "uncached_equivalent_usd": float(uncached),
        "input_tokens": sum(u.input_tokens for u in usages),
        "cache_creation_input_tokens": sum(u.cache_creation_input_tokens for u in usages),
        "cache_read_input_tokens": sum(u.cache_read_input_tokens for u in usages),
        "output_tokens": sum(u.output_tokens for u in usages),
        "cache_read_ratio": (sum(u.cache_read_input_tokens for u in usages) / total_input)
        if total_input
        else 0.0,
        # ITPM charges input + cache writes; cache reads are free on this model.
        "mean_itpm_charge": (
            sum(u.input_tokens + u.cache_creation_input_tokens for u in usages) / len(usages)
            if usages
            else 0.0
        ),
    }


def _cost_arm(
    emulator: EmulatorProcess, *, planner: bool, bodies: list[dict[str, Any]]
) -> dict[str, Any]:
    emulator.reset()
    emulator.configure(rpm=0, itpm=0, otpm=0, latency_ms=0)
    project_redis.get_redis().flushall()
    for params in bodies:
        plan = plan_for_call(params=params, enabled=planner)
        send_message(params=plan.body, policy=ONE_ATTEMPT, cache_planner=False)
    return _costs(_ledger_usages(emulator))


def _throughput_arm(
    emulator: EmulatorProcess,
    *,
    planner: bool,
    duration_s: float,
    concurrency: int,
    itpm: int,
    make_body: Any,
) -> dict[str, Any]:
    emulator.reset()
    emulator.configure(rpm=0, itpm=itpm, otpm=0, latency_ms=0)  # buckets start full
    project_redis.get_redis().flushall()
    counter = iter(range(10**9))
    lock = threading.Lock()
    accepted = 0
    limited = 0
    deadline = time.monotonic() + duration_s

    def drive() -> None:
        nonlocal accepted, limited
        while time.monotonic() < deadline:
            with lock:
                number = next(counter)
            plan = plan_for_call(params=make_body(number), enabled=planner)
            try:
                send_message(params=plan.body, policy=ONE_ATTEMPT, cache_planner=False)
            except ClaudeCallError as error:
                if error.last_status != 429:
                    raise
                with lock:
                    limited += 1
                wait = error.attempt_log[-1].retry_after_s if error.attempt_log else None
                time.sleep(min(max(wait or 1.0, 0.05), max(0.0, deadline - time.monotonic())))
                continue
            if time.monotonic() <= deadline:
                with lock:
                    accepted += 1

    threads = [
        threading.Thread(target=drive, name=f"caching-bench-{i}") for i in range(concurrency)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max(duration_s, time.monotonic() - started)
    costs = _costs(_ledger_usages(emulator))
    return {
        "accepted": accepted,
        "rate_limited_429": limited,
        "requests_per_min": accepted / elapsed * 60.0,
        "mean_itpm_charge": costs["mean_itpm_charge"],
        "steady_state_requests_per_min": itpm / costs["mean_itpm_charge"]
        if costs["mean_itpm_charge"]
        else 0.0,
    }


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """One warning per 429 is right in production and noise here: the arms provoke thousands."""
    loggers = [logging.getLogger(name) for name in ("llm_calls.retry", "httpx2", "httpx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run(options: dict[str, Any]) -> dict[str, Any]:
    extra = options.get("extra") or {}
    cfg = {key: int(extra.get(key, default)) for key, default in DEFAULTS.items()}
    cfg["requests"] = max(2, int(cfg["requests"] * float(options.get("scale") or 1.0)))
    duration_s = float(options.get("duration") or DEFAULT_DURATION_S)
    chars_per_token = float(options.get("chars_per_token") or 4.0)
    system = system_prompt()
    tool_list = tools()

    def make_body(number: int) -> dict[str, Any]:
        return request_body(
            number,
            users=cfg["users"],
            output_tokens=cfg["output_tokens"],
            system=system,
            tool_list=tool_list,
        )

    bodies = [make_body(i) for i in range(cfg["requests"])]
    redis = project_redis.PrivateRedis(Path(settings.VAR_DIR) / "caching-bench-redis")
    redis.start()
    saved = (
        settings.REDIS_URL,
        settings.EMBEDDED_REDIS,
        settings.ANTHROPIC_BASE_URL,
        settings.ANTHROPIC_API_KEY,
    )
    settings.REDIS_URL, settings.EMBEDDED_REDIS = redis.url, False
    project_redis.reset_clients()
    emulator = EmulatorProcess(
        rpm=0, itpm=0, otpm=0, latency_ms=0, seed=1, chars_per_token=chars_per_token
    )
    try:
        emulator.start()
        settings.ANTHROPIC_BASE_URL = emulator.base_url
        settings.ANTHROPIC_API_KEY = "sk-ant-bench-caching"
        with quiet_logs():
            off = _cost_arm(emulator, planner=False, bodies=bodies)
            on = _cost_arm(emulator, planner=True, bodies=bodies)
            tp_off = _throughput_arm(
                emulator,
                planner=False,
                duration_s=duration_s,
                concurrency=cfg["concurrency"],
                itpm=cfg["itpm"],
                make_body=make_body,
            )
            tp_on = _throughput_arm(
                emulator,
                planner=True,
                duration_s=duration_s,
                concurrency=cfg["concurrency"],
                itpm=cfg["itpm"],
                make_body=make_body,
            )
    finally:
        close_clients()
        emulator.stop()
        redis.stop()
        (
            settings.REDIS_URL,
            settings.EMBEDDED_REDIS,
            settings.ANTHROPIC_BASE_URL,
            settings.ANTHROPIC_API_KEY,
        ) = saved
        project_redis.reset_clients()

    return {
        "scenario": "caching",
        "model": MODEL,
        "config": {
            **cfg,
            "duration_s_per_throughput_arm": duration_s,
            "chars_per_token": chars_per_token,
        },
        "first_request_marks": plan_summary(bodies[0]),
        "cost_usd_cached": round(on["cost_usd"], 6),
        "cost_usd_uncached": round(off["cost_usd"], 6),
        "cost_ratio": round(on["cost_usd"] / off["cost_usd"], 4) if off["cost_usd"] else None,
        "cache_read_ratio": round(on["cache_read_ratio"], 4),
        "throughput_gain": round(tp_on["requests_per_min"] / tp_off["requests_per_min"], 2)
        if tp_off["requests_per_min"]
        else None,
        "steady_state_throughput_gain": round(
            tp_on["steady_state_requests_per_min"] / tp_off["steady_state_requests_per_min"], 2
        )
        if tp_off["steady_state_requests_per_min"]
        else None,
        "cost_arms": {"planner_off": off, "planner_on": on},
        "throughput_arms": {"planner_off": tp_off, "planner_on": tp_on},
        "method": (
            "Cost: the same request sequence through send_message with the planner off and on, "
            "emulator without limits; costs from the emulator ledger at list prices "
            "(usage.pricing). Throughput: emulator ITPM limit, RPM/OTPM unlimited, each arm "
            f"{cfg['concurrency']} threads at full speed for {duration_s:g} s from a full bucket, "
            "one attempt per call, sleeping retry-after on 429; throughput = HTTP 200s per "
            "minute, gain = on / off. steady_state_throughput_gain = ITPM / mean ITPM charge "
            "(input + cache writes) per request, from the ledger, on / off."
        ),
        "targets": {"cost_ratio_max": 0.35, "cache_read_ratio_min": 0.85, "throughput_gain_min": 2},
    }


def plan_summary(params: dict[str, Any]) -> dict[str, int]:
    """Where the planner marks the first request: block -> estimated prefix tokens."""
    plan = plan_cache(params=params, reuse=None)
    return {bp.position: bp.prefix_tokens for bp in plan.breakpoints}
