"""``loadtest faults``: load while everything that can break does, then an exact audit.

While ``submit_request`` load runs through the documented worker command (``llm_worker``):

- the emulator injects 529s, 500s, connection resets and slow replies (``fault_rate`` of calls
  in total, split 3:3:2:2);
- worker hosts are SIGKILLed while they hold calls in flight (``kills`` times; a new host is
  started at once each time);
- Redis is restarted (``redis_restarts`` times; the emulator keeps running);
- the SQLite database is locked by another connection holding ``BEGIN EXCLUSIVE`` for
  ``lock_s`` seconds (``db_locks`` times). With ``overlap=1`` one kill lands while the database
  is locked: the worst moment, when billed responses wait to be recorded.

Then it drains (``drain_s`` at most), stops the workers gracefully and compares:

- ``lost``: submitted rows that are not terminal;
- ``double_billed``: a dispatch with more than one audit row, or a request with more than one
  successful audit row;
- ``match``: ``audit_log`` token totals == the emulator's ledger totals, field by field;
- ``ledger_entries_without_audit_row``: billed responses we never recorded (by
  ``client_request_id``); ``api_billed_twice_requests``: requests the API billed more than once
  (a billed response was lost with a killed worker and the request ran again).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import re
import sqlite3
import threading
import time
from argparse import ArgumentParser
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, connection
from django.db.models import Count, Sum

from queueing import services
from queueing.models import LLMRequest, Membership, Organization
from ratelimit_project import redis as project_redis
from ratelimit_project.loadtest.stack import Stack
from usage import services as usage_services
from usage.models import AuditLog

MODEL = "claude-sonnet-4-6"
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
}
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
ATTEMPT_SUFFIX = re.compile(r"-a\d+$")
JOURNAL_RECOVERY_LOG = "recorded its billed response from the journal"

log = logging.getLogger(__name__)


def add_arguments(parser: ArgumentParser) -> None:
    """Options come as --opt KEY=VALUE; see DEFAULTS for the keys."""


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
    """Open-loop load: one ``submit_request`` every 1/rate seconds until ``stop`` is set.

    A submit that raises (Redis restarting) is counted, not retried: the row it may already
    have written is the source of truth and must still finish.
    """

    def __init__(self, *, users: list[User], rate: float, seed: int) -> None:
        super().__init__(name="faults-submitter", daemon=True)
        self.users = users
        self.interval = 1.0 / rate
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
            next_at += self.interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        close_old_connections()


@contextlib.contextmanager
def _database_locked(path: str, seconds: float) -> Iterator[float]:
    """Hold ``BEGIN EXCLUSIVE`` on the SQLite file from another connection; yields the seconds
    it took to get the lock (writers in flight finish first)."""
    started = time.monotonic()
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        waited = time.monotonic() - started
        try:
            yield waited
            time.sleep(seconds)
        finally:
            db.execute("COMMIT")
    finally:
        db.close()


def _schedule(cfg: dict[str, float], duration_s: float) -> list[tuple[float, str]]:
    """Event times inside the load window, spread evenly, each kind offset from the others."""

    def spread(count: int, offset: float) -> list[float]:
        if count <= 0:
            return []
        span = duration_s * 0.8
        return [duration_s * 0.1 + span * (i + offset) / count for i in range(count)]

    events = [(t, "kill") for t in spread(int(cfg["kills"]), 0.5)]
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
            events.append((middle + min(0.6, cfg["lock_s"] / 2), "kill"))
    return sorted(events)


class Chaos:
    """Runs the fault schedule against a Stack and keeps a record of what it did."""

    def __init__(self, stack: Stack, cfg: dict[str, float]) -> None:
        self.stack = stack
        self.cfg = cfg
        self.events: list[dict[str, Any]] = []
        self.lock_threads: list[threading.Thread] = []
        self.db_path = str(settings.DATABASES["default"]["NAME"])

    def run(self, schedule: list[tuple[float, str]], started: float) -> None:
        for at, kind in schedule:
            delay = started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            offset = round(time.monotonic() - started, 2)
            if kind == "kill":
                self.events.append({"t_s": offset, "kind": kind, **self.kill_one()})
            elif kind == "redis_restart":
                began = time.monotonic()
                self.stack.restart_redis()
                self.events.append(
                    {"t_s": offset, "kind": kind, "down_s": round(time.monotonic() - began, 2)}
                )
            else:
                thread = threading.Thread(target=self._lock, args=(offset,), daemon=True)
                thread.start()
                self.lock_threads.append(thread)
        for thread in self.lock_threads:
            thread.join()

    def _lock(self, offset: float) -> None:
        with _database_locked(self.db_path, self.cfg["lock_s"]) as waited:
            self.events.append(
                {
                    "t_s": offset,
                    "kind": "db_lock",
                    "held_s": self.cfg["lock_s"],
                    "waited_s": round(waited, 2),
                }
            )

    def _calls_held(self, pid: int) -> int:
        owner = f"{_hostname()}:{pid}"
        try:
            client = project_redis.get_redis()
            keys = list(client.scan_iter("gw:lease:*", count=1000))
            values: list[Any] = list(client.mget(keys)) if keys else []
        except Exception:  # noqa: BLE001 - Redis restarting: unknown
            return -1
        return sum(1 for v in values if isinstance(v, bytes) and v.decode() == owner)

    def kill_one(self) -> dict[str, Any]:
        """SIGKILL the oldest live worker host once it holds a call, then start a new one."""
        alive = [p for p in self.stack.workers if p.poll() is None]
        victim = alive[0]
        deadline = time.monotonic() + 3.0
        held = self._calls_held(victim.pid)
        while held == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            held = self._calls_held(victim.pid)
        running = LLMRequest.objects.filter(status=LLMRequest.Status.RUNNING).count()
        self.stack.kill_worker(victim)
        self.stack.start_worker(threads=int(self.cfg["threads"]))
        return {"victim_pid": victim.pid, "leases_held_by_victim": held, "running_rows": running}


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _drain(deadline: float) -> int:
    while True:
        open_rows = LLMRequest.objects.exclude(status__in=LLMRequest.TERMINAL).count()
        if open_rows == 0 or time.monotonic() > deadline:
            return open_rows
        time.sleep(0.5)


def _dispatch_of(client_request_id: str) -> str:
    return ATTEMPT_SUFFIX.sub("", client_request_id)


def _request_pk(dispatch_id: str) -> int | None:
    match = re.match(r"^llmreq-(\d+)-d\d+$", dispatch_id)
    return int(match.group(1)) if match else None


def audit(stack: Stack, *, accepted: list[int]) -> dict[str, Any]:
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
        e["client_request_id"]
        for e in entries
        if not e["client_request_id"] or _dispatch_of(e["client_request_id"]) not in audited
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
    journal = sum(
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
        "ledger_entries_without_audit_row_ids": unaudited[:20],
        "api_billed_twice_requests": sum(1 for n in billed_per_request.values() if n > 1),
        "http_attempts": len(http_log),
        "retries": sum(n - 1 for n in attempts_per_dispatch.values()),
        "faults_seen_by_emulator_log": dict(faults),
        "recovered": recovered,
        "recovered_from_journal": journal,
    }


def run(options: dict[str, Any]) -> dict[str, Any]:
    cfg = _config(options)
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
    settings.GATEWAY_LEASE_TTL_S = int(cfg["lease_ttl_s"])
    settings.GATEWAY_DISPATCH_LEASE_TTL_S = int(cfg["dispatch_lease_ttl_s"])
    settings.GATEWAY_ORPHAN_GRACE_S = cfg["orphan_grace_s"]
    for name in ("llm_calls.retry", "queueing.services", "queueing.dispatcher"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with Stack(emulator=emulator, rate_limits={"sonnet": limits}, worker_env=worker_env) as stack:
        usage_services.prices_seed_defaults()
        users = _make_users(int(cfg["users"]))
        for _ in range(int(cfg["workers"])):
            stack.start_worker(threads=int(cfg["threads"]))
        stack.wait_for_workers(threads=int(cfg["workers"] * cfg["threads"]))
        submitter = Submitter(users=users, rate=cfg["rate"], seed=int(cfg["seed"]))
        chaos = Chaos(stack, cfg)
        schedule = _schedule(cfg, duration_s)
        started = time.monotonic()
        submitter.start()
        chaos.run(schedule, started)
        time.sleep(max(0.0, started + duration_s - time.monotonic()))
        submitter.stop.set()
        submitter.join()
        load_s = time.monotonic() - started
        open_rows = _drain(time.monotonic() + cfg["drain_s"])
        drain_s = time.monotonic() - started - load_s
        stack.stop_workers(graceful=True, timeout_s=60)
        connection.close()
        result = audit(stack, accepted=submitter.accepted)
    return {
        "scenario": "faults",
        **result,
        "open_after_drain": open_rows,
        "submit_calls_ok": len(submitter.accepted),
        "submit_errors": dict(submitter.errors),
        "submit_error_examples": submitter.error_examples,
        "load_s": round(load_s, 1),
        "drain_s": round(drain_s, 1),
        "events": sorted(chaos.events, key=lambda e: e["t_s"]),
        "kills": sum(1 for e in chaos.events if e["kind"] == "kill"),
        "redis_restarts": sum(1 for e in chaos.events if e["kind"] == "redis_restart"),
        "db_locks": sum(1 for e in chaos.events if e["kind"] == "db_lock"),
        "config": {**cfg, "duration_s": duration_s, "chars_per_token": chars_per_token},
    }
