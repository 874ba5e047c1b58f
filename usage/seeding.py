"""Synthetic usage history for demos and the dashboard benchmark (``manage.py seed_usage``).

Realistic enough to make the dashboards and their query plans honest: a few models with
skewed popularity, users whose activity follows a heavy tail, sessions of a few minutes to a
few days, cache-heavy users (a big system prompt written once per session, then read), light
and cache-less users, batch calls, retries, failures and response-cache hits. Costs come from
the real price table through the integer rate cards — the right row for each call's day, speed
and prompt band, with batch and US-only multipliers — and every row carries the rates it was
billed at, so every seeded row is priced exactly as ``record_call`` would price it.

Rows are bulk-inserted (executemany on SQLite, COPY on PostgreSQL) in session order, then
``rollups_rebuild`` builds the rollups from them with GROUP BY, so they are consistent by
construction.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from organizations.models import Membership, Organization
from usage import pricing, services
from usage.models import (
    AuditLog,
    AuditLogPrune,
    ModelPrice,
    OrganizationUsageDaily,
    Outcome,
    ServiceTier,
    SessionUsage,
    Speed,
    UsageDaily,
    UserUsageDaily,
)

USER_PREFIX = "seed-user-"
ORG_PREFIX = "seed-org-"
USERS_PER_ORG = 50

# model -> share of sessions that use it as their main model
MODEL_MIX = {
    "claude-sonnet-5-5": 0.35,
    "claude-haiku-5-5": 0.20,
    "claude-opus-5-5": 0.12,
    "claude-sonnet-4-6": 0.10,
    "claude-haiku-4-5": 0.10,
    "claude-fable-5-2": 0.05,
    "claude-opus-4-5": 0.05,
    "claude-sonnet-4-5": 0.03,
}
# A call on a model before its release (the history reaches back 90 days) uses the model it
# replaced, as a real caller would have.
FALLBACK = {
    "claude-sonnet-5-5": "claude-sonnet-5",
    "claude-haiku-5-5": "claude-haiku-4-5",
    "claude-opus-5-5": "claude-opus-5",
    "claude-fable-5-2": "claude-fable-5-1",
}
US_INFERENCE_MODELS = frozenset(  # inference_geo is accepted on Claude 4.6 and later
    ("claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5-5", "claude-sonnet-4-6",
     "claude-fable-5-2", "claude-sonnet-5", "claude-opus-5", "claude-fable-5-1")
)  # fmt: skip
FAST_MODELS = frozenset(("claude-opus-5-5", "claude-opus-5"))
THINKING_MODELS = US_INFERENCE_MODELS - {"claude-sonnet-4-6"}
CACHE_STYLES = (("heavy", 0.3), ("light", 0.2), ("none", 0.5))

COLUMNS = (
    "occurred_at",
    "user_id",
    "organization_id",
    "session_id",
    "model",
    "priority",
    "outcome",
    "attempts",
    "final_status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "thinking_tokens",
    "web_search_requests",
    "service_tier",
    "speed",
    "inference_geo",
    *services.RATE_COLUMNS,
    "cost_pico_usd",
    "uncached_cost_pico_usd",
    "price_missing",
    "latency_ms",
    "queue_wait_ms",
    "request_id",
)


@dataclass(frozen=True)
class SeedResult:
    rows: int
    users: int
    sessions: int
    seconds_insert: float
    seconds_rollups: float
    rollups: services.RebuildResult
    problems: list[str]


@dataclass
class _Session:
    session_id: str
    user_id: int | None
    org_id: int | None
    model: str
    style: str
    start: dt.datetime
    duration_s: float
    calls: int
    prefix_tokens: int
    ttl_1h: bool


def clear_usage() -> None:
    """Delete every audit row and rollup, and the records of pruned rows whose totals lived in
    those rollups (the seed users and organizations stay)."""
    with transaction.atomic():
        AuditLogPrune.objects.all().delete()
        OrganizationUsageDaily.objects.all().delete()
        SessionUsage.objects.all().delete()
        UsageDaily.objects.all().delete()
        UserUsageDaily.objects.all().delete()
        AuditLog.objects.all().delete()


def _ensure_people(n_users: int) -> list[tuple[int, int]]:
    """(user id, organization id) for ``n_users`` seed users, creating what is missing."""
    user_model = get_user_model()
    n_orgs = max(1, math.ceil(n_users / USERS_PER_ORG))
    names = [f"{ORG_PREFIX}{i:03d}" for i in range(n_orgs)]
    Organization.objects.bulk_create(
        [Organization(name=n) for n in names], ignore_conflicts=True, batch_size=500
    )
    org_ids = dict(Organization.objects.filter(name__in=names).values_list("name", "pk"))
    usernames = [f"{USER_PREFIX}{i:05d}" for i in range(n_users)]
    user_model._default_manager.bulk_create(
        [user_model(username=u, password="!") for u in usernames],  # "!": no usable password
        ignore_conflicts=True,
        batch_size=500,
    )
    user_ids = dict(
        user_model._default_manager.filter(username__in=usernames).values_list("username", "pk")
    )
    people = [(user_ids[u], org_ids[names[i // USERS_PER_ORG]]) for i, u in enumerate(usernames)]
    Membership.objects.bulk_create(
        [Membership(user_id=uid, organization_id=oid) for uid, oid in people],
        ignore_conflicts=True,
        batch_size=500,
    )
    return people


def _plan_sessions(
    *,
    rng: random.Random,
    people: list[tuple[int, int]],
    n_sessions: int,
    rows: int,
    start: dt.datetime,
    end: dt.datetime,
) -> list[_Session]:
    styles = rng.choices(
        [s for s, _ in CACHE_STYLES], weights=[w for _, w in CACHE_STYLES], k=len(people)
    )
    activity = [rng.paretovariate(1.2) for _ in people]  # a few users do most of the work
    owners = rng.choices(range(len(people)), weights=activity, k=n_sessions)
    sizes = [rng.paretovariate(1.5) for _ in range(n_sessions)]
    scale = (rows - n_sessions) / sum(sizes)
    calls = [1 + int(s * scale) for s in sizes]
    for i in rng.sample(range(n_sessions), k=rows - sum(calls)):
        calls[i] += 1
    span = (end - start).total_seconds()
    models = list(MODEL_MIX)
    sessions = []
    for i in range(n_sessions):
        system = rng.random() < 0.01  # calls made by the system itself, not by a user
        owner = owners[i]
        duration = min(rng.lognormvariate(math.log(3600), 1.5), 3 * 86400.0)
        begin = start + dt.timedelta(seconds=rng.uniform(0, max(span - duration, 0)))
        sessions.append(
            _Session(
                session_id=f"seed-{i:06d}-{rng.getrandbits(32):08x}",
                user_id=None if system else people[owner][0],
                org_id=None if system else people[owner][1],
                model=rng.choices(models, weights=list(MODEL_MIX.values()))[0],
                style="none" if system else styles[owner],
                start=begin,
                duration_s=duration,
                calls=calls[i],
                prefix_tokens=rng.randint(4096, 24000),
                ttl_1h=rng.random() < 0.3,
            )
        )
    sessions.sort(key=lambda s: s.start)
    return sessions


class _Cards:
    """Integer rate cards by model, day, tier, geo, speed and band — every price looked up
    before the insert starts (PostgreSQL's COPY holds the connection: no query may run during
    it) and each card computed once, so a million rows cost a few dictionary lookups each."""

    def __init__(self, *, start: dt.date, end: dt.date) -> None:
        self._prices: dict[tuple[str, str, dt.date], tuple[str, pricing.Price | None]] = {}
        self._cards: dict[tuple[int, str, str, int], pricing.RateCard] = {}
        models = {*MODEL_MIX, *FALLBACK.values()}
        day = start
        while day <= end:
            for model in models:
                for speed in pricing.SPEEDS:
                    self._resolve(model, speed, day)
            day += dt.timedelta(days=1)

    def _resolve(self, model: str, speed: str, day: dt.date) -> tuple[str, pricing.Price | None]:
        key = (model, speed, day)
        found = self._prices.get(key)
        if found is None:
            price = services.price_for(model=model, on=day, speed=speed)
            if price is None and model in FALLBACK:
                found = self._resolve(FALLBACK[model], speed, day)
            else:
                found = (model, price)
            self._prices[key] = found
        return found

    def price(self, model: str, speed: str, day: dt.date) -> tuple[str, pricing.Price | None]:
        """(model actually used, its price): the fallback model before a model's release."""
        return self._prices[(model, speed, day)]

    def card(self, price: pricing.Price, tier: str, geo: str, prompt: int) -> pricing.RateCard:
        band = price.band_for(prompt_tokens=prompt)
        key = (id(price), tier, geo, band.above_prompt_tokens if band else 0)
        card = self._cards.get(key)
        if card is None:
            card = pricing.rate_card(
                price=price, prompt_tokens=prompt, service_tier=tier, inference_geo=geo
            )
            self._cards[key] = card
        return card


_NO_RATES = (0,) * len(services.RATE_COLUMNS)


def _rows(
    *,
    rng: random.Random,
    sessions: list[_Session],
    cards: _Cards,
    adapt_time: Callable[[dt.datetime], Any],
) -> Iterator[tuple[Any, ...]]:
    models = list(MODEL_MIX)
    standard, fast = Speed.STANDARD.value, Speed.FAST.value
    n = 0
    for s in sessions:
        offsets = sorted(rng.uniform(0, s.duration_s) for _ in range(s.calls))
        for k, offset in enumerate(offsets):
            n += 1
            moment = s.start + dt.timedelta(seconds=offset)
            model = s.model if rng.random() < 0.9 else rng.choice(models)
            batch = rng.random() < 0.05
            r = rng.random()
            when = adapt_time(moment)
            queue_wait = int(rng.expovariate(1 / 400))
            if r < 0.02:
                status = rng.choice((529, 500, 429))
                error = {529: "overloaded_error", 500: "api_error", 429: "rate_limit_error"}
                yield (
                    when, s.user_id, s.org_id, s.session_id, model, "query",
                    Outcome.FAILED.value, 6, status, error[status],
                    0, 0, 0, 0, 0, 0, 0, 0, ServiceTier.STANDARD.value, standard, "",
                    *_NO_RATES, 0, 0, False,
                    int(rng.uniform(20_000, 90_000)), queue_wait, f"req_seed_{n}",
                )  # fmt: skip
                continue
            if r < 0.03:
                yield (
                    when, s.user_id, s.org_id, s.session_id, model, "query",
                    Outcome.RESPONSE_CACHE_HIT.value, 0, None, "",
                    0, 0, 0, 0, 0, 0, 0, 0, ServiceTier.STANDARD.value, standard, "",
                    *_NO_RATES, 0, 0, False,
                    int(rng.uniform(1, 8)), queue_wait, "",
                )  # fmt: skip
                continue
            speed = "fast" if not batch and model in FAST_MODELS and rng.random() < 0.05 else ""
            chosen = model
            model, price = cards.price(chosen, speed or "standard", moment.date())
            if price is None and speed:  # no fast mode on that model that day
                speed = ""
                model, price = cards.price(chosen, "standard", moment.date())
            geo = "us" if model in US_INFERENCE_MODELS and rng.random() < 0.05 else ""
            plain = int(rng.lognormvariate(math.log(600), 1.0))
            output = int(rng.lognormvariate(math.log(250), 0.9))
            thinking = int(output * rng.uniform(0.2, 0.6)) if model in THINKING_MODELS else 0
            searches = rng.randint(1, 3) if rng.random() < 0.02 else 0
            w5 = w1 = read = 0
            if s.style == "heavy":
                if k == 0 or rng.random() < 0.08:  # first call, or the cache expired
                    if s.ttl_1h:
                        w1 = s.prefix_tokens
                    else:
                        w5 = s.prefix_tokens
                else:
                    read = s.prefix_tokens
            elif s.style == "light" and rng.random() < 0.3:
                read = s.prefix_tokens // 4
            attempts = 1 if rng.random() < 0.92 else rng.choice((2, 2, 3))
            tier = ServiceTier.BATCH if batch else ServiceTier.STANDARD
            prompt = plain + w5 + w1 + read
            if price is None:
                rates: tuple[int, ...] = _NO_RATES
                cost = uncached = 0
            else:
                card = cards.card(price, tier.label, geo, prompt)
                rates = (
                    card.input, card.cache_write_5m, card.cache_write_1h, card.cache_read,
                    card.output, card.web_search, card.band,
                )  # fmt: skip
                cost = (
                    plain * card.input
                    + w5 * card.cache_write_5m
                    + w1 * card.cache_write_1h
                    + read * card.cache_read
                    + output * card.output
                    + searches * card.web_search
                )
                uncached = prompt * card.input + output * card.output + searches * card.web_search
            latency = int(250 + output * rng.uniform(8, 20) + (attempts - 1) * 1500)
            yield (
                when, s.user_id, s.org_id, s.session_id, model, "query",
                Outcome.SUCCESS.value, attempts, 200, "",
                plain, output, w5, w1, w5 + w1, read, thinking, searches,
                tier.value, fast if speed else standard, geo,
                *rates, cost, uncached, price is None,
                latency, queue_wait, f"req_seed_{n}",
            )  # fmt: skip


def _insert_sqlite(rows: Iterator[tuple[Any, ...]], batch: int) -> None:
    sql = (
        f"INSERT INTO {AuditLog._meta.db_table} ({', '.join(COLUMNS)}) "
        f"VALUES ({', '.join(['?'] * len(COLUMNS))})"
    )
    raw = connection.connection  # the sqlite3 connection: skips Django's per-row param rewriting
    assert raw is not None
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= batch:
            with transaction.atomic():
                raw.executemany(sql, chunk)
            chunk = []
    if chunk:
        with transaction.atomic():
            raw.executemany(sql, chunk)


def _insert_postgresql(rows: Iterator[tuple[Any, ...]], batch: int) -> None:
    sql = f"COPY {AuditLog._meta.db_table} ({', '.join(COLUMNS)}) FROM STDIN"
    done = False
    while not done:
        with (
            transaction.atomic(),
            connection.cursor() as cursor,
            cursor.cursor.copy(sql) as copy,  # psycopg 3
        ):
            for i, row in enumerate(rows):
                copy.write_row(row)
                if i + 1 >= batch:
                    break
            else:
                done = True


def seed_usage(
    *,
    rows: int,
    users: int = 1000,
    sessions: int = 10_000,
    days: int = 90,
    clear: bool = False,
    seed: int = 1,
    end: dt.datetime | None = None,
    batch: int = 20_000,
    progress: Callable[[str], None] | None = None,
) -> SeedResult:
    """Insert ``rows`` synthetic audit rows for ``users`` users over the last ``days`` days,
    then rebuild the rollups from all of audit_log and check them against it."""
    if rows < 1 or users < 1 or sessions < 1 or days < 1:
        raise ValueError("rows, users, sessions and days must all be at least 1.")
    sessions = min(sessions, rows)
    say = progress or (lambda _msg: None)
    rng = random.Random(seed)
    end = (end or timezone.now()).astimezone(dt.UTC)  # days below are UTC days, like billing
    start = end - dt.timedelta(days=days)
    if clear:
        say("clearing existing usage rows")
        clear_usage()
    elif AuditLogPrune.objects.filter(rows__gt=0).exists():
        # The rollups are rebuilt from audit_log below, which would erase the pruned days.
        raise ValueError("audit_log rows were pruned here: seed with --clear, or not at all.")
    if not ModelPrice.objects.exists():
        services.prices_seed_defaults()
    people = _ensure_people(users)
    plan = _plan_sessions(
        rng=rng, people=people, n_sessions=sessions, rows=rows, start=start, end=end
    )
    cards = _Cards(start=start.date(), end=end.date())
    vendor = connection.vendor
    if vendor == "sqlite":
        adapt: Callable[[dt.datetime], Any] = lambda t: str(t.replace(tzinfo=None))  # noqa: E731
    else:
        adapt = lambda t: t  # noqa: E731
    say(f"inserting {rows:,} audit rows ({users:,} users, {len(plan):,} sessions, {days} days)")
    started = time.monotonic()
    generated = _rows(rng=rng, sessions=plan, cards=cards, adapt_time=adapt)
    if vendor == "sqlite":
        connection.ensure_connection()
        if not connection.in_atomic_block:  # SQLite refuses these inside a transaction
            with connection.cursor() as cursor:
                # a throwaway bulk load: durability per batch is not worth the fsyncs
                cursor.execute("PRAGMA synchronous=OFF")
                cursor.execute("PRAGMA cache_size=-131072")
        _insert_sqlite(generated, batch)
    elif vendor == "postgresql":
        _insert_postgresql(generated, batch)
    else:
        raise ValueError(f"seed_usage supports SQLite and PostgreSQL, not {vendor}.")
    inserted = time.monotonic()
    say(f"inserted in {inserted - started:.1f}s; rebuilding rollups")
    rebuilt = services.rollups_rebuild()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh statistics, or the planner guesses at 1M rows
    finished = time.monotonic()
    problems = services.rollups_check()
    return SeedResult(
        rows=rows,
        users=users,
        sessions=len(plan),
        seconds_insert=round(inserted - started, 2),
        seconds_rollups=round(finished - inserted, 2),
        rollups=rebuilt,
        problems=problems,
    )
