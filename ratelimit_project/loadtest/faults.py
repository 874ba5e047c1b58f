"""``loadtest faults``: load while everything that can break does, then an exact audit.

While ``submit_request`` load runs through the documented worker command (``llm_worker``):

- the emulator injects 529s, 500s, connection resets and slow replies (``fault_rate`` of calls
  in total, split 3:3:2:2);
- worker hosts are SIGKILLed while they hold calls in flight (``kills`` times; a new host is
  started at once each time);
- Redis is restarted (``redis_restarts`` times; the emulator keeps running), and goes away
  for longer with calls in flight (``--redis-outage-s``, default one outage of 8 s and one of
  30 s: a Sentinel failover, a host reboot);
- a burst of JSON API clients submits through the web server, which is SIGKILLed mid-burst and
  restarted; every client that saw an error retries under its ``Idempotency-Key``
  (``web_clients`` × ``web_requests``; ``web_clients=0`` turns it off);
- the database is locked against writers by another connection for ``lock_s`` seconds
  (``db_locks`` times; SQLite: ``BEGIN EXCLUSIVE``). With ``overlap=1`` one kill lands while
  the database is locked: the worst moment, when billed responses wait to be recorded.

Then it drains (``drain_s`` at most), stops the workers gracefully and compares:

- ``lost``: submitted rows that are not terminal;
- ``double_billed``: a dispatch with more than one audit row, or a request with more than one
  successful audit row;
- ``match``: ``audit_log`` token totals == the emulator's ledger totals, field by field;
- ``ledger_entries_without_audit_row``: billed responses we never recorded (by
  ``client_request_id``); ``api_billed_twice_requests``: requests the API billed more than once
  (a billed response was lost with a killed worker and the request ran again);
- ``duplicate_submissions``: API submissions saved more than once (each carries a marker of its
  own in its text); ``worker_exits``: worker hosts that exited without being killed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import random
import re
import socket
import sqlite3
import threading
import time
import uuid
from argparse import ArgumentParser
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections
from django.db.models import Count, Sum
from django.utils import timezone

from organizations.models import Membership, Organization
from queueing import journal, services
from queueing.auth import api_token_create
from queueing.models import LLMRequest
from ratelimit_project import redis as project_redis
from ratelimit_project.loadtest.backlog import MODEL, MODEL_CLASS
from ratelimit_project.loadtest.stack import Stack
from usage import services as usage_services
from usage.models import AuditLog

DEFAULT_DURATION_S = 60.0
DEFAULTS: dict[str, float] = {
    "rate": 5.0,  # submitted requests per second
    "workers": 2,  # worker hosts alive at any time
    "threads": 8,  # calls in flight per host
    "latency_ms": 600,  # emulator think time of a normal reply
    "fault_rate": 0.10,  # share of calls the emulator faults (529, 500, reset, slow)
    "slow_ms": 3000,  # extra delay of a slow reply
    "kills": 5,
    "redis_restarts": 2,
    "db_locks": 3,
    "lock_s": 1.5,
    "overlap": 1,  # 1: one kill happens while the database is locked
    "avoid_unjournaled": 0,  # 1: time kills outside the window the journal cannot cover
    "drain_s": 100,
    "seed": 7,
    # Limits (per minute) of the emulator and of the gateway's limiter: room for the load, so
    # this scenario tests recovery, not queueing.
    "rpm": 1000,
    "itpm": 400_000,
    "otpm": 200_000,
    "users": 4,
    # Lease/reaper timing of the workers; the CI test shortens them to recover within seconds.
    "lease_ttl_s": 30,
    "dispatch_lease_ttl_s": 120,
    "orphan_grace_s": 30,
    # The web burst: API clients, submissions each, and when (share of the load window).
    "web_clients": 20,
    "web_requests": 4,
    "web_at": 0.35,
    "web_down_s": 1.0,
}
DEFAULT_REDIS_OUTAGES_S = "8,30"
WEB_CLIENT_DEADLINE_S = 90.0
WEB_MARKER = re.compile(r"\[web-(\d+)-(\d+)\]")
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
ATTEMPT_SUFFIX = re.compile(r"-a\d+$")
KILL_MARGIN_S = 0.3
JOURNAL_RECOVERY_LOG = "recorded its billed response from the journal"


def add_arguments(parser: ArgumentParser) -> None:
    """Options come as --opt KEY=VALUE; see DEFAULTS for the keys. ``--redis-outage-s 8,30``
    (a flag of the loadtest command) sets the outages; ``0`` means none."""


def _outages(options: dict[str, Any]) -> list[float]:
    raw = options.get("redis_outage_s")
    raw = DEFAULT_REDIS_OUTAGES_S if raw is None else str(raw)
    try:
        outages = [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--redis-outage-s takes seconds separated by commas, got {raw!r}"
        ) from None
    if any(seconds < 0 for seconds in outages):
        raise ValueError(f"--redis-outage-s takes seconds >= 0, got {raw!r}")
    return [seconds for seconds in outages if seconds > 0]


def _config(options: dict[str, Any]) -> dict[str, float]:
    extra = options.get("extra") or {}
    unknown = set(extra) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown faults option(s) {sorted(unknown)}; known: {', '.join(sorted(DEFAULTS))}"
        )
    cfg = {key: float(extra.get(key, default)) for key, default in DEFAULTS.items()}
    cfg["rate"] *= float(options.get("scale") or 1.0)
    return cfg


def _make_users(count: int) -> list[User]:
    org, _ = Organization.objects.get_or_create(name="faults-org")
    users = []
    for number in range(count):
        user, _ = User.objects.get_or_create(username=f"faults-user-{number}")
        Membership.objects.get_or_create(user=user, defaults={"organization": org})
        users.append(user)
    return users


def _message(rng: random.Random, number: int) -> tuple[str, int]:
    output_tokens = rng.randint(20, 160)
    filler = " ".join(f"word{rng.randint(0, 999)}" for _ in range(rng.randint(5, 120)))
    return (
        f"Request {number}: summarise {filler} [[emulator:output_tokens={output_tokens}]]",
        output_tokens + 40,
    )


class Submitter(threading.Thread):
    """Open-loop Poisson load: ``submit_request`` at ``rate`` per second until ``stop`` is set.

    Random (seeded) gaps, not a fixed clock: with arrivals every 200 ms exactly, replies also
    land on that clock and the kills (scheduled on whole seconds) fell 20-40 ms after replies
    arrived, i.e. in the window the journal cannot cover, far more often than chance.

    A submit that raises (Redis restarting) is counted, not retried: the row it may already
    have written is the source of truth and must still finish.
    """

    def __init__(self, *, users: list[User], rate: float, seed: int) -> None:
        super().__init__(name="faults-submitter", daemon=True)
        self.users = users
        self.rate = rate
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.accepted: list[int] = []
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, str] = {}

    def run(self) -> None:
        next_at = time.monotonic()
        for number in itertools.count():
            if self.stop.is_set():
                break
            text, max_tokens = _message(self.rng, number)
            try:
                row = services.submit_request(
                    user=self.users[number % len(self.users)],
                    session_id=f"faults-{number % 7}",
                    model=MODEL,
                    messages=[{"role": "user", "content": text}],
                    max_tokens=max_tokens,
                    priority="interactive" if number % 3 == 0 else "query",
                )
                self.accepted.append(row.pk)
            except Exception as error:  # noqa: BLE001 - counted and reported
                self.errors[type(error).__name__] += 1
                self.error_examples.setdefault(type(error).__name__, str(error)[:300])
                close_old_connections()
            next_at += self.rng.expovariate(self.rate)
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        close_old_connections()


class WebBurst(threading.Thread):
    """JSON API clients submitting through the web server while it is SIGKILLed and restarted.

    Each submission has a marker of its own in its text and an ``Idempotency-Key``; a client that
    gets no answer (connection refused or reset, a timeout, a 5xx) retries with the same key,
    with backoff, until it gets its 202 (or 429) or gives up after WEB_CLIENT_DEADLINE_S.
    """

    def __init__(self, *, stack: Stack, user: User, clients: int, per_client: int) -> None:
        super().__init__(name="faults-web-burst", daemon=True)
        self.stack = stack
        _, self.token = api_token_create(user=user, name="faults-web")
        self.clients = clients
        self.per_client = per_client
        self.answered = 0
        self.retries = 0
        self.retried_submissions = 0
        self.gave_up = 0
        self.refused: Counter[int] = Counter()
        self._lock = threading.Lock()

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._client, args=(number,), daemon=True)
            for number in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        with httpx.Client(timeout=10.0) as http:
            for item in range(self.per_client):
                self._submit(http, rng, number, item)

    def _submit(self, http: httpx.Client, rng: random.Random, number: int, item: int) -> None:
        text, max_tokens = _message(rng, number * 1000 + item)
        body = {
            "session_id": "faults-web",
            "model": MODEL,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"[web-{number}-{item}] {text}"}],
        }
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": str(uuid.uuid4())}
        deadline = time.monotonic() + WEB_CLIENT_DEADLINE_S
        pause = 0.1
        retried = False
        while True:
            try:
                response = http.post(
                    f"{self.stack.web_url}/api/v1/requests", json=body, headers=headers
                )
            except httpx.HTTPError:
                status = 0
            else:
                status = response.status_code
            if status in (202, 429):
                with self._lock:
                    self.answered += 1
                    self.retried_submissions += retried
                return
            if status and status < 500:
                with self._lock:
                    self.refused[status] += 1
                return
            if time.monotonic() > deadline:
                with self._lock:
                    self.gave_up += 1
                return
            with self._lock:
                self.retries += 1
            retried = True
            time.sleep(pause * rng.uniform(0.5, 1.5))
            pause = min(2.0, pause * 2)


def duplicate_submissions() -> int:
    """API submissions saved more than once: rows sharing one client's marker."""
    markers: Counter[str] = Counter()
    for params in LLMRequest.objects.filter(session_id="faults-web").values_list(
        "params", flat=True
    ):
        messages = (params or {}).get("messages") or [{}]
        match = WEB_MARKER.search(str(messages[0].get("content", "")))
        if match:
            markers[match.group(0)] += 1
    return sum(count - 1 for count in markers.values() if count > 1)


@contextlib.contextmanager
def database_locked(seconds: float) -> Iterator[float]:
    """Lock the database against writers from another connection for ``seconds``; yields the
    seconds it took to get the lock (writers in flight finish first).

    SQLite: ``BEGIN EXCLUSIVE`` on the file (WAL readers go on). PostgreSQL: ``LOCK TABLE`` of
    the request and audit tables in EXCLUSIVE mode (reads go on, every write waits).
    """
    started = time.monotonic()
    if connection.vendor == "sqlite":
        db = sqlite3.connect(str(settings.DATABASES["default"]["NAME"]), timeout=60)
        db.isolation_level = None
        try:
            db.execute("BEGIN EXCLUSIVE")
            try:
                yield time.monotonic() - started
                time.sleep(seconds)
            finally:
                db.execute("COMMIT")
        finally:
            db.close()
        return
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(
                f"LOCK TABLE {LLMRequest._meta.db_table}, {AuditLog._meta.db_table} "
                "IN EXCLUSIVE MODE"
            )
            try:
                yield time.monotonic() - started
                time.sleep(seconds)
            finally:
                cursor.execute("COMMIT")
    finally:
        other.close()


def _schedule(
    cfg: dict[str, float],
    duration_s: float,
    outages: list[float] = (),  # type: ignore[assignment]
) -> list[tuple[float, str]]:
    """Event times inside the load window, spread evenly, each kind offset from the others;
    kills get a random (seeded) jitter of up to 1 s. An outage is ``redis_outage:<seconds>``;
    outages start early enough to end inside the load window where they can."""
    rng = random.Random(int(cfg["seed"]) + 1)

    def spread(count: int, offset: float) -> list[float]:
        if count <= 0:
            return []
        span = duration_s * 0.8
        return [duration_s * 0.1 + span * (i + offset) / count for i in range(count)]

    events = [(t + rng.uniform(0, 1), "kill") for t in spread(int(cfg["kills"]), 0.5)]
    events += [(t, "redis_restart") for t in spread(int(cfg["redis_restarts"]), 0.25)]
    locks = spread(int(cfg["db_locks"]), 0.15)
    events += [(t, "db_lock") for t in locks]
    if cfg["overlap"] and locks and events:
        # Move the kill nearest to the middle lock into that lock's window.
        middle = locks[len(locks) // 2]
        kills = [e for e in events if e[1] == "kill"]
        if kills:
            nearest = min(kills, key=lambda e: abs(e[0] - middle))
            events.remove(nearest)
            inside = rng.uniform(0.2, max(0.2, cfg["lock_s"] - 0.2))
            events.append((middle + inside, "kill"))
    if cfg["web_clients"] > 0:
        # The burst starts at web_at; the kill lands half a second into it.
        events.append((duration_s * cfg["web_at"] + 0.5, "web_kill"))
    for number, seconds in enumerate(outages):
        start = duration_s * (0.3 + 0.4 * number / max(1, len(outages)))
        events.append((min(start, max(0.0, duration_s - seconds - 2)), f"redis_outage:{seconds:g}"))
    return sorted(events)


class Chaos:
    """Runs the fault schedule against a Stack and keeps a record of what it did."""

    def __init__(self, stack: Stack, cfg: dict[str, float]) -> None:
        self.stack = stack
        self.cfg = cfg
        self.events: list[dict[str, Any]] = []
        self.lock_threads: list[threading.Thread] = []
        self.killed_pids: set[int] = set()
        # One change of Redis's state at a time: a restart due during an outage waits for its
        # end (two threads stopping and starting one server would leave a second one running).
        self.redis_lock = threading.Lock()

    def run(self, schedule: list[tuple[float, str]], started: float) -> None:
        self.started = started
        for at, kind in schedule:
            delay = started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            offset = round(time.monotonic() - started, 2)
            if kind == "kill":
                self.events.append({"t_s": offset, "kind": kind, **self.kill_one()})
            elif kind == "redis_restart":
                thread = threading.Thread(target=self._restart, daemon=True)
                thread.start()
                self.lock_threads.append(thread)
            elif kind.startswith("redis_outage:"):
                seconds = float(kind.split(":", 1)[1])
                thread = threading.Thread(target=self._outage, args=(seconds,), daemon=True)
                thread.start()
                self.lock_threads.append(thread)
            elif kind == "web_kill":
                self.stack.kill_web()
                time.sleep(self.cfg["web_down_s"])
                self.stack.start_web()
                self.events.append({"t_s": offset, "kind": kind})
            else:
                thread = threading.Thread(target=self._lock, args=(offset,), daemon=True)
                thread.start()
                self.lock_threads.append(thread)
        for thread in self.lock_threads:
            thread.join()

    def _restart(self) -> None:
        # Not stack.restart_redis(): that also closes this process's pooled clients under the
        # submitter thread, an error no real deployment sees. The clients reconnect by
        # themselves, as in production.
        with self.redis_lock:
            offset = round(time.monotonic() - self.started, 2)
            began = time.monotonic()
            self.stack.redis.restart()
            self.events.append(
                {
                    "t_s": offset,
                    "kind": "redis_restart",
                    "down_s": round(time.monotonic() - began, 2),
                }
            )

    def _outage(self, seconds: float) -> None:
        """Redis gone for ``seconds`` with calls in flight (it keeps its data, as a failed-over
        replica or a restarted server with its append-only file does)."""
        with self.redis_lock:
            offset = round(time.monotonic() - self.started, 2)
            began = time.monotonic()
            self.stack.redis.stop()
            time.sleep(seconds)
            self.stack.redis.start()
        self.events.append(
            {
                "t_s": offset,
                "kind": "redis_outage",
                "down_s": round(time.monotonic() - began, 2),
            }
        )

    def _lock(self, offset: float) -> None:
        with database_locked(self.cfg["lock_s"]) as waited:
            self.events.append(
                {
                    "t_s": offset,
                    "kind": "db_lock",
                    "held_s": self.cfg["lock_s"],
                    "waited_s": round(waited, 2),
                }
            )

    def _calls_of(self, pid: int) -> list[int]:
        """Running calls of the worker host ``pid``: requests it holds the lease of (its
        dispatcher's leases of jobs still in the queue do not count)."""
        owner = f"{socket.gethostname()}:{pid}".encode()
        try:
            client = project_redis.get_redis()
            keys = list(client.scan_iter("gw:lease:*", count=1000))
            values: list[Any] = list(client.mget(keys)) if keys else []
        except redis.RedisError:
            return []
        leased = [
            int(k.rsplit(b":", 1)[1]) for k, v in zip(keys, values, strict=True) if v == owner
        ]
        return list(
            LLMRequest.objects.filter(pk__in=leased, status=LLMRequest.Status.RUNNING).values_list(
                "pk", flat=True
            )
        )

    def _unjournaled(self, request_ids: list[int]) -> list[int]:
        """Calls that may hold a billed response not yet journaled: running for longer than the
        emulator's reply time (minus a margin) and with no journal entry. An upper bound: a
        slow reply or a retry also counts."""
        cutoff = timezone.now() - dt.timedelta(
            seconds=max(0.0, self.cfg["latency_ms"] / 1000 - KILL_MARGIN_S)
        )
        old = LLMRequest.objects.filter(
            pk__in=request_ids, status=LLMRequest.Status.RUNNING, started_at__lt=cutoff
        ).values_list("pk", flat=True)
        try:
            return [pk for pk in old if journal.pending(request_id=pk) is None]
        except redis.RedisError:
            return list(old)

    def kill_one(self) -> dict[str, Any]:
        """SIGKILL the oldest live worker host while it holds calls, then start a new one.

        ``avoid_unjournaled=1`` waits (up to 5 s) for a moment when none of the victim's calls
        can be between "the API billed it" and "the journal has it" — the one window the
        gateway cannot close (see queueing/journal.py) — so a short CI run asserts only what
        the gateway guarantees. By default kills are not timed against that window.
        """
        avoid = bool(self.cfg["avoid_unjournaled"])
        victim = [p for p in self.stack.workers if p.poll() is None][0]
        deadline = time.monotonic() + (5.0 if avoid else 3.0)
        while True:
            calls = self._calls_of(victim.pid)
            exposed = self._unjournaled(calls) if calls else []
            if (calls and not (avoid and exposed)) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.stack.kill_worker(victim)
        self.killed_pids.add(victim.pid)
        killed_at = round(time.monotonic() - self.started, 3)
        self.stack.start_worker(threads=int(self.cfg["threads"]))
        return {
            "victim_pid": victim.pid,
            "killed_at_s": killed_at,
            "calls_held_by_victim": len(calls),
            "calls_possibly_unjournaled": len(exposed),
        }


def _drain(deadline: float) -> int:
    while True:
        open_rows = LLMRequest.objects.exclude(status__in=LLMRequest.TERMINAL).count()
        if open_rows == 0 or time.monotonic() > deadline:
            return open_rows
        time.sleep(0.25)


def _dispatch_of(client_request_id: str) -> str:
    return ATTEMPT_SUFFIX.sub("", client_request_id)


def _request_pk(dispatch_id: str) -> int | None:
    match = re.match(r"^llmreq-(\d+)-d\d+$", dispatch_id)
    return int(match.group(1)) if match else None


def audit(stack: Stack, *, accepted: list[int], wall0: float) -> dict[str, Any]:
    """Compare the database with the emulator's ledger and log, after everything stopped."""
    ledger = stack.emulator.ledger()
    http_log = [e for e in stack.emulator.log() if e["path"] == "/v1/messages"]
    entries = [entry for key in ledger["keys"].values() for entry in key["requests"]]

    rows = LLMRequest.objects.all()
    submitted = rows.count()
    terminal = rows.filter(status__in=LLMRequest.TERMINAL).count()
    missing = len(set(accepted) - set(rows.values_list("pk", flat=True)))
    statuses = dict(rows.values_list("status").annotate(n=Count("id")).order_by())

    audit_rows = AuditLog.objects.all()
    sums = audit_rows.aggregate(**{name: Sum(name) for name in TOKEN_FIELDS})
    audit_fields = {name: int(sums[name] or 0) for name in TOKEN_FIELDS}
    emulator_fields = {name: int(ledger["totals"][name]) for name in TOKEN_FIELDS}

    dispatch_dupes = (
        audit_rows.exclude(client_request_id=None)
        .values("client_request_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    request_dupes = (
        audit_rows.filter(outcome=AuditLog.Outcome.SUCCESS)
        .values("llm_request_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    audited = set(
        audit_rows.exclude(client_request_id=None).values_list("client_request_id", flat=True)
    )
    unaudited = [
        e
        for e in entries
        if not e["client_request_id"] or _dispatch_of(e["client_request_id"]) not in audited
    ]
    unaudited_detail = [
        {
            "client_request_id": e["client_request_id"],
            "billed_at_s": round(e["time"] - wall0, 2),
            "attempts_at_s": [
                [round(a["time"] - wall0, 2), a["status"]]
                for a in http_log
                if a["client_request_id"]
                and _dispatch_of(a["client_request_id"])
                == _dispatch_of(e["client_request_id"] or "")
            ],
        }
        for e in unaudited[:20]
    ]
    billed_per_request: Counter[int] = Counter()
    for entry in entries:
        pk = _request_pk(_dispatch_of(entry["client_request_id"] or ""))
        if pk is not None:
            billed_per_request[pk] += 1

    attempts_per_dispatch: dict[str, int] = defaultdict(int)
    for entry in http_log:
        if entry["client_request_id"]:
            attempts_per_dispatch[_dispatch_of(entry["client_request_id"])] += 1
    faults = Counter(
        "connection_reset" if e["status"] == 0 else str(e["status"])
        for e in http_log
        if e["status"] != 200
    )
    recovered = rows.filter(dispatch_count__gt=1).count()
    journal_recoveries = sum(
        path.read_text(errors="replace").count(JOURNAL_RECOVERY_LOG)
        for path in Path(settings.VAR_DIR).glob("worker-*.log")
    )
    audit_total = sum(audit_fields.values())
    emulator_total = sum(emulator_fields.values())
    success_rows = audit_rows.filter(outcome=AuditLog.Outcome.SUCCESS).count()
    return {
        "submitted": submitted,
        "terminal": terminal,
        "lost": (submitted - terminal) + missing,
        "missing_rows": missing,
        "statuses": statuses,
        "double_billed": dispatch_dupes + request_dupes,
        "audit_tokens": audit_total,
        "emulator_tokens": emulator_total,
        "match": audit_fields == emulator_fields and success_rows == ledger["totals"]["requests"],
        "audit_token_fields": audit_fields,
        "emulator_token_fields": emulator_fields,
        "audit_success_rows": success_rows,
        "emulator_billed_responses": ledger["totals"]["requests"],
        "ledger_entries_without_audit_row": len(unaudited),
        "ledger_entries_without_audit_row_detail": unaudited_detail,
        "api_billed_twice_requests": sum(1 for n in billed_per_request.values() if n > 1),
        "http_attempts": len(http_log),
        "retries": sum(n - 1 for n in attempts_per_dispatch.values()),
        "faults_seen_by_emulator_log": dict(faults),
        "recovered": recovered + journal_recoveries,
        "recovered_redispatched": recovered,
        "recovered_from_journal": journal_recoveries,
    }


def run(options: dict[str, Any]) -> dict[str, Any]:
    cfg = _config(options)
    outages = _outages(options)
    duration_s = float(options.get("duration") or DEFAULT_DURATION_S)
    chars_per_token = float(options.get("chars_per_token") or 4.0)
    fault = cfg["fault_rate"]
    limits = {"rpm": int(cfg["rpm"]), "itpm": int(cfg["itpm"]), "otpm": int(cfg["otpm"])}
    emulator = {
        **limits,
        "latency_ms": cfg["latency_ms"],
        "fault_rate_529": fault * 0.3,
        "fault_rate_500": fault * 0.3,
        "fault_rate_reset": fault * 0.2,
        "fault_rate_slow": fault * 0.2,
        "slow_ms": cfg["slow_ms"],
        "seed": int(cfg["seed"]),
        "chars_per_token": chars_per_token,
    }
    worker_env = {
        "GATEWAY_LEASE_TTL_S": str(int(cfg["lease_ttl_s"])),
        "GATEWAY_DISPATCH_LEASE_TTL_S": str(int(cfg["dispatch_lease_ttl_s"])),
        "GATEWAY_ORPHAN_GRACE_S": str(cfg["orphan_grace_s"]),
    }
    for name in ("llm_calls.retry", "queueing.services", "queueing.dispatcher"):
        logging.getLogger(name).setLevel(logging.ERROR)
    began = time.monotonic()
    with Stack(
        emulator=emulator, rate_limits={MODEL_CLASS: limits}, worker_env=worker_env
    ) as stack:
        usage_services.prices_seed_defaults()
        users = _make_users(int(cfg["users"]))
        for _ in range(int(cfg["workers"])):
            stack.start_worker(threads=int(cfg["threads"]))
        stack.wait_for_workers(threads=int(cfg["workers"] * cfg["threads"]))
        burst = None
        if cfg["web_clients"] > 0:
            stack.start_web()
            burst = WebBurst(
                stack=stack,
                user=users[0],
                clients=int(cfg["web_clients"]),
                per_client=int(cfg["web_requests"]),
            )
        submitter = Submitter(users=users, rate=cfg["rate"], seed=int(cfg["seed"]))
        chaos = Chaos(stack, cfg)
        schedule = _schedule(cfg, duration_s, outages)
        started, wall0 = time.monotonic(), time.time()
        setup_s = started - began
        submitter.start()
        if burst is not None:
            threading.Timer(duration_s * cfg["web_at"], burst.start).start()
        chaos.run(schedule, started)
        time.sleep(max(0.0, started + duration_s - time.monotonic()))
        submitter.stop.set()
        submitter.join()
        if burst is not None:
            burst.join()
        load_s = time.monotonic() - started
        open_rows = _drain(time.monotonic() + cfg["drain_s"])
        drain_s = time.monotonic() - started - load_s
        worker_exits = [
            {"pid": p.pid, "returncode": p.returncode}
            for p in stack.workers
            if p.poll() is not None and p.pid not in chaos.killed_pids
        ]
        stopping = time.monotonic()
        # After the drain nothing is in flight: a graceful stop only waits for idle threads.
        stack.stop_workers(graceful=True, timeout_s=5)
        stop_s = time.monotonic() - stopping
        connection.close()
        result = audit(stack, accepted=submitter.accepted, wall0=wall0)
        duplicates = duplicate_submissions()
    outage_events = [e for e in chaos.events if e["kind"] == "redis_outage"]
    web: dict[str, Any] = {}
    if burst is not None:
        web = {
            "submissions": burst.clients * burst.per_client,
            "answered": burst.answered,
            "retries": burst.retries,
            "retried_submissions": burst.retried_submissions,
            "gave_up": burst.gave_up,
            "refused": dict(burst.refused),
            "kills": sum(1 for e in chaos.events if e["kind"] == "web_kill"),
        }
    return {
        "scenario": "faults",
        **result,
        "duplicate_submissions": duplicates,
        "redis_outages": len(outage_events),
        "longest_outage_s": max((e["down_s"] for e in outage_events), default=0.0),
        "worker_exits": len(worker_exits),
        "worker_exit_detail": worker_exits,
        "web_burst": web,
        "open_after_drain": open_rows,
        "submit_calls_ok": len(submitter.accepted),
        "submit_errors": dict(submitter.errors),
        "submit_error_examples": submitter.error_examples,
        "setup_s": round(setup_s, 1),
        "load_s": round(load_s, 1),
        "drain_s": round(drain_s, 1),
        "stop_s": round(stop_s, 1),
        "total_s": round(time.monotonic() - began, 1),
        "events": sorted(chaos.events, key=lambda e: e["t_s"]),
        "kills": sum(1 for e in chaos.events if e["kind"] == "kill"),
        "kills_with_possibly_unjournaled_calls": sum(
            1 for e in chaos.events if e.get("calls_possibly_unjournaled")
        ),
        "redis_restarts": sum(1 for e in chaos.events if e["kind"] == "redis_restart"),
        "db_locks": sum(1 for e in chaos.events if e["kind"] == "db_lock"),
        "config": {
            **cfg,
            "duration_s": duration_s,
            "chars_per_token": chars_per_token,
            "redis_outage_s": outages,
        },
    }
