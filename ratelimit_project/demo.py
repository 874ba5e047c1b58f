"""``make demo``: the whole gateway on one machine, under real load, then left up to explore.

``python manage.py demo`` (``queueing/management/commands/demo.py`` only parses flags) runs
``demo_run``:

1. stops whatever a previous demo left running (``var/demo/pids.json``), migrates, starts or
   finds Redis (the embedded server unless ``REDIS_URL`` is set) and creates the demo data
   (``demo_data_ensure``: 3 organizations, 21 users with quotas, Acme Legal's organization
   admin ``kim`` and a staff admin);
2. starts the Anthropic emulator with the configured limits, realistic latency and a few faults,
   one worker host with the documented command (``manage.py llm_worker --threads 64``) and the
   web server (``manage.py serve``: pages, JSON API and the Anthropic-compatible endpoint),
   recording every pid in ``var/demo/pids.json``;
3. offers traffic at twice the configured per-minute limit for ``--duration`` seconds — 21 users
   of 3 organizations through ``queueing.services.submit_request``, mixed priorities, several
   sessions each (some multi-turn), and a helpdesk app calling ``/v1/messages`` with the
   official SDK (``demo_helpdesk``), all sharing one large system prompt and tool schema —
   while a progress bar and a summary line refresh every second; then waits (bounded) for the
   queue to drain and prints the final summary;
4. keeps everything up, prints the URLs and logins, and stops all it started on Ctrl-C (or
   ``python manage.py demo --stop`` / ``make stop`` from another terminal). With
   ``--no-serve`` it stops once the traffic has drained.

``--real`` (with ``ANTHROPIC_API_KEY`` set) skips the emulator and sends a small capped workload
to the real API. Without ``--real`` no request ever leaves the machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO, TypeVar

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from llm_calls import catalog
from llm_calls.emulator.process import EmulatorProcess
from llm_calls.params import MessageParams
from llm_calls.tokens import estimate_input_tokens
from llm_calls.validation import InvalidRequest
from organizations.models import Membership, Organization
from queueing import conf as queue_conf
from queueing import services as queue_services
from queueing.models import LLMRequest, Quota, QuotaAlert
from ratelimit_project import demo_helpdesk
from ratelimit_project import redis as project_redis
from usage import pricing
from usage import services as usage_services
from usage.models import AuditLog, SessionUsage

T = TypeVar("T")
Status = LLMRequest.Status

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Today's models: most calls on Sonnet 5.5, some on Haiku 5.5, so "usage by model" has two rows
# at two prices. Each has its own rate-limit bucket; the load is sized against Sonnet 5.5's.
EMULATOR_MODEL = catalog.DEFAULT_MODEL
EMULATOR_SECOND_MODEL = catalog.DEFAULT_SMALL_MODEL
REAL_MODEL = catalog.DEFAULT_SMALL_MODEL
# Small per-minute limits (the size of the old Tier 1), so one minute of traffic at twice the
# limit shows a real queue; the emulator and the gateway's limiter both use them.
DEMO_LIMITS = {"rpm": 50, "itpm": 30_000, "otpm": 8_000}
REAL_MAX_REQUESTS = 10
REAL_MAX_TOKENS = 64
MAX_TOKENS = 160
OFFERED_LOAD_FACTOR = 2.0
WORKER_THREADS = 64
DEFAULT_PORT = 8000
# Any non-empty key works with the emulator; this one says "demo" in the emulator's ledger.
EMULATOR_API_KEY = "sk-ant-demo-emulator"
PRIORITY_MIX = (("approval", 0.10), ("interactive", 0.30), ("query", 0.40), ("bulk", 0.20))
# Of the queued (non-bulk) traffic, the share the helpdesk app sends through the gateway's
# Anthropic-compatible endpoint with the official SDK; half of it streams.
ENDPOINT_SHARE = 0.2
MAX_TURNS = 4


class DemoError(Exception):
    """A demo cannot start as asked; the message says what to change."""


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 60.0
    serve: bool = True
    port: int | None = None
    real: bool = False
    threads: int = WORKER_THREADS
    seed: int = 7


# --- demo data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserSpec:
    username: str
    weight: Decimal = Decimal(1)
    activity: float = 1.0  # relative share of the traffic this user sends
    tokens_per_day: int = 3_000_000
    usd_per_day: Decimal = Decimal("10")
    usd_per_month: Decimal = Decimal("150")


@dataclass(frozen=True)
class OrgSpec:
    name: str
    domain: str
    quota: dict[str, Any]
    users: tuple[UserSpec, ...]
    # The organization's admin (a membership role, not staff): logs in with the users'
    # password, sees and manages this organization only. Sends no traffic of their own, so the
    # demo's figures stay those of the 21 users.
    admin: str = ""


ORGANIZATIONS: tuple[OrgSpec, ...] = (
    OrgSpec(
        name="Acme Legal",
        domain="acme-legal.example",
        quota={"usd_per_month": Decimal("500"), "tokens_per_month": 200_000_000},
        users=(
            UserSpec("alice"),
            UserSpec("bob"),
            UserSpec("carol", weight=Decimal(2), activity=2.0),
            # Deliberately small: the demo shows an 80% alert and a quota rejection on dave.
            UserSpec("dave", activity=1.5, tokens_per_day=25_000, usd_per_day=Decimal("1")),
            UserSpec("erin"),
            UserSpec("frank"),
            UserSpec("grace"),
        ),
        admin="kim",
    ),
    OrgSpec(
        name="Globex Support",
        domain="globex.example",
        quota={"usd_per_day": Decimal("50"), "tokens_per_day": 20_000_000},
        users=(
            UserSpec("heidi", weight=Decimal(3)),
            UserSpec("ivan", activity=3.0),
            UserSpec("judy"),
            UserSpec("mallory"),
            UserSpec("niaj"),
            UserSpec("olivia"),
            UserSpec("peggy"),
        ),
    ),
    OrgSpec(
        name="Initech Research",
        domain="initech.example",
        quota={"usd_per_month": Decimal("300"), "weight": Decimal("1.5")},
        users=(
            UserSpec("rupert", activity=2.0),
            UserSpec("sybil"),
            UserSpec("trent"),
            UserSpec("victor"),
            UserSpec("walter"),
            UserSpec("yvonne"),
            UserSpec("zoe"),
        ),
    ),
)
ADMIN_USERNAME = "admin"
DEMO_USERNAMES = tuple(u.username for org in ORGANIZATIONS for u in org.users)
ORG_ADMINS = {org.admin: org.name for org in ORGANIZATIONS if org.admin}


@dataclass(frozen=True)
class Logins:
    user_password: str = field(repr=False)
    admin_password: str = field(repr=False)


def demo_dir() -> Path:
    return Path(settings.VAR_DIR) / "demo"


def _logins() -> Logins:
    """Passwords made once per checkout (var/demo/logins.json, owner-only) and reused, so a
    second ``make demo`` prints the same logins a browser may have saved."""
    path = demo_dir() / "logins.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return Logins(stored["user_password"], stored["admin_password"])
    logins = Logins(secrets.token_urlsafe(9), secrets.token_urlsafe(12))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"user_password": logins.user_password, "admin_password": logins.admin_password})
    )
    path.chmod(0o600)
    return logins


def demo_data_ensure() -> Logins:
    """Create the demo organizations, users, memberships, quotas and admin if missing.

    Idempotent: existing rows (and any quota an admin edited) are kept; only the demo
    passwords are set again, so the printed logins always work. One password hash is shared by
    every end user because hashing costs ~0.3 s each on a small machine.
    """
    logins = _logins()
    user_model = get_user_model()
    user_hash = make_password(logins.user_password)
    with transaction.atomic():
        for org_spec in ORGANIZATIONS:
            org, _ = Organization.objects.get_or_create(name=org_spec.name)
            Quota.objects.get_or_create(organization=org, defaults=org_spec.quota)
            for spec in org_spec.users:
                user, _ = user_model.objects.get_or_create(
                    username=spec.username,
                    defaults={
                        "email": f"{spec.username}@{org_spec.domain}",
                        "first_name": spec.username.capitalize(),
                    },
                )
                Membership.objects.get_or_create(user=user, defaults={"organization": org})
                Quota.objects.get_or_create(
                    user=user,
                    defaults={
                        "weight": spec.weight,
                        "tokens_per_day": spec.tokens_per_day,
                        "tokens_per_month": spec.tokens_per_day * 20,
                        "usd_per_day": spec.usd_per_day,
                        "usd_per_month": spec.usd_per_month,
                    },
                )
            if org_spec.admin:
                org_admin, _ = user_model.objects.get_or_create(
                    username=org_spec.admin,
                    defaults={
                        "email": f"{org_spec.admin}@{org_spec.domain}",
                        "first_name": org_spec.admin.capitalize(),
                    },
                )
                # The role is what the printed login promises, so it is set again each run.
                Membership.objects.update_or_create(
                    user=org_admin, defaults={"organization": org, "role": Membership.Role.ADMIN}
                )
        user_model.objects.filter(username__in=(*DEMO_USERNAMES, *ORG_ADMINS)).update(
            password=user_hash, is_active=True
        )
        admin, _ = user_model.objects.get_or_create(
            username=ADMIN_USERNAME, defaults={"email": "admin@example.com"}
        )
        admin.is_staff = True
        admin.is_superuser = True
        admin.is_active = True
        admin.set_password(logins.admin_password)
        admin.save()
    usage_services.prices_seed_defaults()
    return logins


# --- the shared prompt -------------------------------------------------------------------------

HANDBOOK_TOPICS = (
    ("travel", "the travel desk", 1500),
    ("purchasing", "procurement", 5000),
    ("software licences", "IT asset management", 2000),
    ("client entertainment", "the compliance office", 800),
    ("remote work", "people operations", 0),
    ("contractors", "procurement", 10000),
    ("data protection", "the privacy officer", 0),
    ("expense claims", "finance", 1000),
    ("hardware", "IT asset management", 3000),
    ("training budgets", "people operations", 2500),
)


def handbook_prompt() -> str:
    """The system prompt every demo user shares: a generated policy handbook (~26,000
    characters, ~6,400 tokens at 4 characters per token; ~7,100 with the tool) — large enough that prompt caching
    decides both the bill and how many calls fit under the input-token limit."""
    parts = [
        "You are the policy assistant of the Northwind group (Acme Legal, Globex Support and "
        "Initech Research). Answer only from the handbook below, cite the section numbers you "
        "rely on, keep answers short, and say plainly when a request needs a human approver. "
        "When a user asks you to file something, call the file_request tool.\n\n"
        "NORTHWIND GROUP POLICY HANDBOOK (revision 2026-01)\n"
    ]
    for number, (topic, owner, limit) in enumerate(HANDBOOK_TOPICS * 3, start=1):
        edition = (number - 1) // len(HANDBOOK_TOPICS) + 1
        parts.append(
            f"\nSection {number} - {topic.capitalize()} (part {edition}). Owner: {owner}. "
            f"Every request about {topic} is filed with the file_request tool and names a cost "
            f"centre, a business reason and the expected amount in euros. Amounts up to "
            f"{limit + 250 * edition} EUR are approved by the requester's line manager; above that "
            f"{owner} approves in writing before anything is booked, and above "
            f"{(limit + 250 * edition) * 4} EUR a director co-signs. Receipts are kept for seven "
            f"years. Exceptions are recorded in the request with the approver's name, and a "
            f"request split into smaller ones to stay under a limit counts as one request. "
            f"Questions that this section does not answer go to {owner}; nobody may promise "
            f"reimbursement on {owner}'s behalf. Section {number} replaces every earlier "
            f"instruction on {topic} and takes effect on the first day of the quarter after "
            f"publication.\n"
        )
    return "".join(parts)


def request_tool() -> dict[str, Any]:
    """The JSON-schema tool shared by every call (~750 tokens)."""
    fields = {
        "kind": ("The kind of request.", [t for t, _, _ in HANDBOOK_TOPICS]),
        "cost_centre": ("Cost centre code, e.g. ACME-LEGAL-104.", None),
        "amount_eur": ("Expected amount in euros, two decimals.", None),
        "business_reason": ("Why the company needs this, in one or two sentences.", None),
        "requester": ("E-mail address of the person asking.", None),
        "line_manager": ("E-mail address of the requester's line manager.", None),
        "approver": ("Who must approve it according to the handbook section cited.", None),
        "handbook_section": ("The section number that decides this request.", None),
        "urgency": ("How soon a decision is needed.", ["today", "this week", "this month"]),
        "vendor": ("Supplier or travel provider, when there is one.", None),
        "start_date": ("First day the request applies to (YYYY-MM-DD).", None),
        "end_date": ("Last day the request applies to (YYYY-MM-DD), if any.", None),
        "attachments": ("Receipts or quotes referenced by file name.", None),
        "exception_requested": ("True when the request asks for an exception.", None),
        "notes": ("Anything the approver should know.", None),
    }
    properties: dict[str, Any] = {}
    for name, (description, choices) in fields.items():
        schema: dict[str, Any] = {
            "type": "string",
            "description": description + " Leave out when unknown; never guess a value.",
        }
        if choices:
            schema["enum"] = list(choices)
        properties[name] = schema
    return {
        "name": "file_request",
        "description": (
            "File a request in the Northwind approvals system and return its ticket number. "
            "Use it only after the user confirmed the details; the approver named by the "
            "handbook receives it at once. "
        )
        * 3,
        "input_schema": {
            "type": "object",
            "properties": properties,
            "required": ["kind", "cost_centre", "amount_eur", "business_reason", "requester"],
        },
    }


QUESTIONS: dict[str, tuple[str, ...]] = {
    "approval": (
        "Approve purchase order PO-{n}: {amount} EUR of {topic} from Contoso. Who signs it?",
        "My manager is away. Can I approve expense claim EC-{n} ({amount} EUR, {topic}) myself?",
        "Please confirm approval path for request R-{n}: {topic}, {amount} EUR, urgent.",
    ),
    "interactive": (
        "Quick one: what is the approval limit for {topic}?",
        "I need {topic} for a client project worth {amount} EUR. What do I file?",
        "Does the {topic} section apply to contractors as well?",
        "Which receipts do I keep for {topic}, and for how long?",
    ),
    "query": (
        "Summarise the handbook rules on {topic} in three bullet points.",
        "List every approver involved when {topic} costs {amount} EUR.",
        "Compare the limits for {topic} and travel.",
    ),
    "bulk": (
        "Classify this ledger line into a handbook topic: '{topic} invoice {n}, {amount} EUR'.",
        "Extract cost centre and amount from: 'CC ACME-{n} {topic} {amount} EUR'.",
    ),
}
FOLLOW_UPS = (
    "Thanks. And if the amount were twice as high?",
    "Which section says that exactly?",
    "Can you file it for me with cost centre ACME-LEGAL-104?",
    "Who do I ask if the approver says no?",
)


# --- processes ---------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int, marker: str) -> bool:
    """Running, and still the program we started (a pid may have been reused since)."""
    cmdline = _cmdline(pid)
    if not cmdline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 0)
            return sys.platform != "linux"  # no /proc: trust the pid
        return False
    return "manage.py" in cmdline and marker in cmdline


def _signal(pid: int, sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_gone(pid: int, marker: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid, marker):
            return True
        time.sleep(0.1)
    return not _alive(pid, marker)


@dataclass
class Child:
    role: str  # "worker" | "web" | "emulator"
    marker: str  # what its command line contains: guards against a reused pid
    pid: int
    group: bool  # started in its own session: signal the whole process group


class PidFile:
    """``var/demo/pids.json``: what a running demo started, so another process can stop it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def write(self, *, redis_owned: bool, children: list[Child]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "demo_pid": os.getpid(),
                    "redis_owned": redis_owned,
                    "var_dir": str(settings.VAR_DIR),
                    "children": [vars(c) for c in children],
                },
                indent=2,
            )
        )
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def pid_file() -> PidFile:
    return PidFile(demo_dir() / "pids.json")


def _stop_child(child: Child, *, timeout_s: float) -> None:
    """SIGTERM, then SIGTERM again, then SIGKILL.

    A worker host's first SIGTERM is a warm shutdown (in-flight calls finish); it can still
    wait on idle RQ threads for a while, so after half the time a second SIGTERM makes it exit
    at once — any call still running is recovered by a reaper (its lease expires)."""
    if not _alive(child.pid, child.marker):
        return
    _signal(child.pid, signal.SIGTERM, group=child.group)
    if _wait_gone(child.pid, child.marker, timeout_s / 2):
        return
    _signal(child.pid, signal.SIGTERM, group=child.group)
    if not _wait_gone(child.pid, child.marker, timeout_s / 2):
        _signal(child.pid, signal.SIGKILL, group=child.group)
        _wait_gone(child.pid, child.marker, 5)


def _embedded_socket() -> Path:
    return Path(settings.EMBEDDED_REDIS_DIR) / "redis.sock"


def embedded_redis_running() -> bool:
    sock = _embedded_socket()
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def demo_stop(*, out: TextIO) -> bool:
    """Stop the demo recorded in ``var/demo/pids.json`` and everything it started.

    Asks the demo process first (it stops its own children in order: workers finish their
    calls before the emulator goes away), then stops any child that outlived it, then the
    embedded Redis if the demo had started it. Returns False when nothing was recorded.
    """
    pids = pid_file()
    data = pids.read()
    if data is None:
        return False
    demo_pid = int(data.get("demo_pid") or 0)
    if demo_pid and demo_pid != os.getpid() and _alive(demo_pid, "demo"):
        out.write(f"Stopping the running demo (pid {demo_pid})...\n")
        _signal(demo_pid, signal.SIGTERM, group=False)
        _wait_gone(demo_pid, "demo", 60)
    children = [Child(**c) for c in data.get("children", [])]
    for child in children:
        if _alive(child.pid, child.marker):
            out.write(
                f"Stopping the {child.role} a previous demo left running (pid {child.pid}).\n"
            )
        _stop_child(child, timeout_s=20)
    if data.get("redis_owned") and settings.EMBEDDED_REDIS and embedded_redis_running():
        project_redis.stop_embedded_redis()
        out.write("Stopped the embedded Redis the demo had started.\n")
    pids.remove()
    return True


def _free_port(preferred: int) -> int:
    for port in range(preferred, preferred + 50):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise DemoError(f"no free port between {preferred} and {preferred + 49}; pass --port")


def _without_sigint(start: Callable[[], T]) -> T:
    """Run ``start`` (which spawns a child) with SIGINT ignored: the child inherits "ignore" and
    so survives the Ctrl-C the terminal sends to its whole foreground group. The demo then
    stops it in order, after the workers have finished their calls."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return start()
    finally:
        signal.signal(signal.SIGINT, previous)


class DemoStack:
    """The processes of one demo run: emulator, worker host, web server (+ Redis if ours)."""

    def __init__(self, *, options: DemoOptions, out: TextIO) -> None:
        self.options = options
        self.out = out
        self.children: list[Child] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.emulator: EmulatorProcess | None = None
        self.redis_owned = False
        self.port: int | None = None
        self.app: demo_helpdesk.HelpdeskApp | None = None
        self.pids = pid_file()
        self.limits = queue_conf.ConfiguredLimits(**DEMO_LIMITS)
        self.emulator_config: dict[str, Any] = {
            "rpm": self.limits.rpm,
            "itpm": self.limits.itpm,
            "otpm": self.limits.otpm,
            # 1.0 s for most calls, 2.8 s for a third of them: the spread of real latencies.
            "latency_ms": 1000,
            "fault_rate_slow": 0.35,
            "slow_ms": 1800,
            "fault_rate_529": 0.03,
            "fault_rate_500": 0.01,
            "seed": options.seed,
        }

    def _record(self) -> None:
        self.pids.write(redis_owned=self.redis_owned, children=self.children)

    def start_redis(self) -> None:
        if settings.EMBEDDED_REDIS:
            self.redis_owned = not embedded_redis_running()
        project_redis.get_redis().ping()
        self._record()

    def start_emulator(self) -> EmulatorProcess:
        emulator = EmulatorProcess(**self.emulator_config)
        _without_sigint(emulator.start)
        self.emulator = emulator
        assert emulator.pid is not None
        self.children.append(Child("emulator", "anthropic_emulator", emulator.pid, group=False))
        self._record()
        return emulator

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, "VAR_DIR": str(settings.VAR_DIR)}
        env.setdefault("LOG_LEVEL", "WARNING")
        if self.emulator is not None:
            env["ANTHROPIC_BASE_URL"] = self.emulator.base_url
            env["ANTHROPIC_API_KEY"] = EMULATOR_API_KEY
            # The emulator limits every model class alike; tell the limiter exactly that.
            env["GATEWAY_RATE_LIMITS_JSON"] = json.dumps(
                {bucket: DEMO_LIMITS for bucket in catalog.model_classes()}
            )
            # Bulk goes through Message Batches; shorter waits let its results land in the demo.
            env.setdefault("BATCH_MAX_WAIT_S", "5")
            env.setdefault("BATCH_POLL_INTERVAL_S", "2")
        else:
            env.pop("ANTHROPIC_BASE_URL", None)
        return env

    def _spawn(self, role: str, marker: str, args: list[str], log_name: str) -> None:
        log_path = demo_dir() / log_name
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, str(PROJECT_ROOT / "manage.py"), *args],
                cwd=PROJECT_ROOT,
                env=self.child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops these in order
            )
        self.processes.append(process)
        self.children.append(Child(role, marker, process.pid, group=True))
        self._record()

    def start_worker(self) -> None:
        """The documented worker command: ``python manage.py llm_worker --threads 64``."""
        self._spawn(
            "worker",
            "llm_worker",
            ["llm_worker", "--threads", str(self.options.threads)],
            "worker.log",
        )

    def wait_for_worker(self, *, stop: threading.Event, timeout_s: float = 60.0) -> float | None:
        """Seconds until the worker host's RQ threads registered in Redis (None: gave up)."""
        from rq import Worker

        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < timeout_s:
            if Worker.count(connection=project_redis.get_redis()) >= self.options.threads:
                return time.monotonic() - started
            if self.dead_children():
                return None
            stop.wait(0.2)
        return None

    def start_web(self) -> str:
        preferred = self.options.port or int(os.environ.get("DEMO_PORT") or DEFAULT_PORT)
        self.port = _free_port(preferred)
        if self.port != preferred:
            self.out.write(f"Port {preferred} is busy; the web server uses {self.port}.\n")
        self._spawn(
            "web",
            "manage.py serve",
            ["serve", "--host", "127.0.0.1", "--port", str(self.port)],
            "web.log",
        )
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(base + "/accounts/login/", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return base
            if self.processes[-1].poll() is not None:
                break
            time.sleep(0.3)
        raise DemoError(f"the web server did not start; see {demo_dir() / 'web.log'}")

    def dead_children(self) -> list[str]:
        return [c.role for c in self.children if c.group and not _alive(c.pid, c.marker)]

    def stop(self) -> None:
        """Workers first (they finish in-flight calls), then the web server, emulator, Redis."""
        if self.app is not None:
            self.app.close(wait=False)
        in_flight = True
        with contextlib.suppress(Exception):  # no database answer: assume calls are running
            in_flight = LLMRequest.objects.filter(
                status__in=[Status.DISPATCHED, Status.RUNNING]
            ).exists()
        for role in ("worker", "web"):
            for child in self.children:
                if child.role == role:
                    _stop_child(child, timeout_s=16 if in_flight else 4)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1)
        if self.emulator is not None:
            self.emulator.stop()
        if self.redis_owned and settings.EMBEDDED_REDIS:
            project_redis.stop_embedded_redis()
        self.pids.remove()


# --- traffic -----------------------------------------------------------------------------------


@dataclass
class Session:
    user_index: int
    number: int
    history: list[dict[str, Any]] = field(default_factory=list)
    pending: int | None = None  # request id waiting for its answer
    closed: bool = False  # its last request failed: the user starts a new session instead

    def session_id(self, username: str, run_tag: str) -> str:
        return f"{username}-chat-{run_tag}-{self.number}"


@dataclass
class TrafficCounters:
    # Rows the traffic created, accepted or rejected by a quota (a rejected submission keeps its
    # row). The summary counts rows, not this: it only tells the demo's own share apart.
    submitted: int = 0


class Traffic:
    """Simulated users: Poisson arrivals, mixed priorities, several sessions per user.

    A session continues (multi-turn: earlier question and answer + a follow-up) when its last
    request has succeeded; a user whose session is still waiting opens another one, as a person
    with a slow answer would. Arrival rate = ``OFFERED_LOAD_FACTOR`` × the sonnet RPM limit for
    the queued (non-bulk) calls, bulk on top (it goes through Message Batches).
    """

    def __init__(
        self,
        *,
        options: DemoOptions,
        rpm: int,
        users: list[Any],
        real: bool,
        app: demo_helpdesk.HelpdeskApp | None = None,
    ) -> None:
        self.rng = random.Random(options.seed)
        self.real = real
        self.app = app
        self.users = users
        self.weights = [_activity(u.username) for u in users]
        self.system = handbook_prompt()
        self.tools = [request_tool()]
        self.sessions: dict[int, list[Session]] = {i: [] for i in range(len(users))}
        # Session ids are the caller's; a tag per run keeps one run's conversations apart from
        # the next run's on the dashboards.
        self.run_tag = timezone.now().strftime("%d%H%M%S")
        self.next_session: dict[int, int] = {}
        self.counters = TrafficCounters()
        # Everyone speaks once first — alice and bob (the printed logins) before the rest — so
        # every user and organization has data on the dashboards even after a short run.
        order = list(range(len(users)))
        self.rng.shuffle(order)
        order.sort(key=lambda i: users[i].username not in ("alice", "bob"))
        self.opening_users = order
        bulk_share = dict(PRIORITY_MIX)["bulk"]
        self.limit: int | None = None
        if real:
            self.per_min = 30.0
            self.limit = REAL_MAX_REQUESTS
        else:
            self.per_min = OFFERED_LOAD_FACTOR * rpm / (1 - bulk_share)

    @property
    def queued_per_min(self) -> float:
        return self.per_min * (1 - dict(PRIORITY_MIX)["bulk"])

    def done(self) -> bool:
        return self.limit is not None and self.counters.submitted >= self.limit

    def next_gap_s(self) -> float:
        if self.real:
            return 60.0 / self.per_min
        return self.rng.expovariate(self.per_min / 60.0)

    def _session_for(self, user_index: int) -> Session:
        sessions = self.sessions[user_index]
        ready = [
            s
            for s in sessions
            if s.pending is None and not s.closed and 0 < len(s.history) < 2 * MAX_TURNS
        ]
        if ready and self.rng.random() < 0.6:
            return self.rng.choice(ready)
        number = self.next_session.get(user_index, 0) + 1
        self.next_session[user_index] = number
        session = Session(user_index=user_index, number=number)
        sessions.append(session)
        if len(sessions) > 3:  # keep a few open sessions per user
            sessions.pop(0)
        return session

    def _priority(self) -> str:
        classes = queue_conf.priority_class_names()
        mix = [(name, share) for name, share in PRIORITY_MIX if name in classes]
        if self.real:  # a real Message Batch may take hours: keep --real to queued calls
            mix = [(name, share) for name, share in mix if name != "bulk"]
        if not mix:
            return classes[0]
        names, shares = zip(*mix, strict=True)
        return str(self.rng.choices(names, weights=shares)[0])

    def _question(self, priority: str) -> str:
        topic = self.rng.choice(HANDBOOK_TOPICS)[0]
        template = self.rng.choice(QUESTIONS.get(priority, QUESTIONS["query"]))
        return template.format(
            n=self.rng.randint(1000, 9999), amount=self.rng.randint(2, 400) * 25, topic=topic
        )

    def submit_one(self) -> None:
        if self.opening_users:
            user_index = self.opening_users.pop(0)
        else:
            user_index = self.rng.choices(range(len(self.users)), weights=self.weights)[0]
        user = self.users[user_index]
        priority = self._priority()
        if self.app is not None and priority != "bulk" and self.rng.random() < ENDPOINT_SHARE:
            self._send_through_endpoint(self.app, priority)
            return
        session = self._session_for(user_index)
        text = self.rng.choice(FOLLOW_UPS) if session.history else self._question(priority)
        if self.real:
            max_tokens = REAL_MAX_TOKENS
            model = REAL_MODEL
        else:
            # The emulator answers with exactly this many tokens of text, after this many of
            # adaptive thinking (on by default on the 5.x models; see docs/emulator.md).
            text += (
                f" [[emulator:output_tokens={self.rng.randint(30, 100)}]]"
                f" [[emulator:thinking_tokens={self.rng.randint(0, 40)}]]"
            )
            max_tokens = MAX_TOKENS
            model = EMULATOR_SECOND_MODEL if self.rng.random() < 0.15 else EMULATOR_MODEL
        messages = [*session.history, {"role": "user", "content": text}]
        params: MessageParams = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "system": self.system,
            "tools": self.tools,
        }
        if self.real:
            # Haiku 5.5 thinks adaptively by default, and thinking is output: within 64 tokens
            # it could leave no answer at all.
            params["thinking"] = {"type": "disabled"}
        try:
            row = queue_services.submit_request(
                user=user,
                session_id=session.session_id(user.username, self.run_tag),
                priority=priority,
                **params,
            )
        except queue_services.QuotaExceeded:
            self.counters.submitted += 1
            return
        except InvalidRequest as exc:  # the demo's own requests are valid: this is a bug
            raise DemoError(f"the demo built a request the gateway refused: {exc}") from exc
        self.counters.submitted += 1
        session.history = messages
        session.pending = row.pk

    def _send_through_endpoint(self, app: demo_helpdesk.HelpdeskApp, priority: str) -> None:
        """One helpdesk question, sent by the app with the official SDK (single-turn)."""
        text = self._question(priority) + (
            f" [[emulator:output_tokens={self.rng.randint(30, 100)}]]"
            f" [[emulator:thinking_tokens={self.rng.randint(0, 40)}]]"
        )
        model = EMULATOR_SECOND_MODEL if self.rng.random() < 0.15 else EMULATOR_MODEL
        app.send(
            params={
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": MAX_TOKENS,
                "system": self.system,
                "tools": self.tools,
            },
            priority=priority,
            session_id=f"helpdesk-{self.run_tag}-{self.rng.randint(1, 4)}",
            stream=self.rng.random() < 0.5,
        )
        self.counters.submitted += 1

    def collect_answers(self) -> None:
        """Give each waiting session its answer (so the next turn can carry it), or close it."""
        waiting = {s.pending: s for ss in self.sessions.values() for s in ss if s.pending}
        if not waiting:
            return
        rows = LLMRequest.objects.filter(pk__in=list(waiting)).exclude(
            status__in=[Status.QUEUED, Status.DISPATCHED, Status.RUNNING]
        )
        for pk, status, result in rows.values_list("pk", "status", "result"):
            session = waiting[pk]
            session.pending = None
            text = (result or {}).get("text") if status == Status.SUCCEEDED else None
            if text:
                session.history = [*session.history, {"role": "assistant", "content": text}]
            else:
                session.closed = True


def _activity(username: str) -> float:
    for org in ORGANIZATIONS:
        for spec in org.users:
            if spec.username == username:
                return spec.activity
    return 1.0


# --- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStats:
    """One accounting of a run: the requests created since it started, whoever sent them.

    ``submitted`` counts every such row, and each is in exactly one of queued / in flight
    (dispatched or running) / done / failed / rejected / cancelled, so the six always add up to
    ``submitted``; once the queue has drained, done + failed + rejected + cancelled do. A quota
    rejection is a row too (``submit_request`` keeps it), from the demo's traffic, the web page
    or the JSON API alike. The other figures come from the audit rows of the same requests,
    except the 429s: every one the run's emulator answered.
    """

    submitted: int
    queued: int
    in_flight: int
    succeeded: int
    failed: int
    rejected: int
    cancelled: int
    rate_limited_429: int | None  # None: not observable (real API)
    retries: int
    calls: int
    cache_hit_calls: int
    input_tokens_total: int
    cache_read_tokens: int
    cost_pico: int
    uncached_cost_pico: int

    @property
    def pending(self) -> int:
        return self.queued + self.in_flight

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hit_calls / self.calls if self.calls else 0.0

    @property
    def saved_pico(self) -> int:
        return max(0, self.uncached_cost_pico - self.cost_pico)


def _usd(pico: int) -> str:
    return f"${pricing.pico_to_usd(pico):.4f}"


def run_stats(*, first_pk: int, emulator: EmulatorProcess | None) -> RunStats:
    """Figures for the requests of this run (pk >= first_pk: the demo's traffic and anything
    submitted from the web page or the API meanwhile) and their audit rows.

    The status counts are one query, so they add up even while requests change state."""
    counts = dict(
        LLMRequest.objects.filter(pk__gte=first_pk)
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    audit = AuditLog.objects.filter(llm_request_id__gte=first_pk).aggregate(
        calls=Count("pk", filter=Q(outcome=AuditLog.Outcome.SUCCESS)),
        attempts=Sum("attempts"),
        rows=Count("pk"),
        hits=Count("pk", filter=Q(outcome=AuditLog.Outcome.SUCCESS, cache_read_input_tokens__gt=0)),
        inputs=Sum(
            F("input_tokens") + F("cache_creation_input_tokens") + F("cache_read_input_tokens")
        ),
        reads=Sum("cache_read_input_tokens"),
        cost=Sum("cost_pico_usd"),
        uncached=Sum("uncached_cost_pico_usd"),
    )
    rate_limited: int | None = None
    if emulator is not None:
        with contextlib.suppress(Exception):  # a stats refresh must never end the demo
            rate_limited = sum(
                1
                for entry in emulator.log()
                if entry.get("status") == 429 and entry.get("path") == "/v1/messages"
            )
    # Response-cache hits have 0 attempts; every other row made attempts - 1 retries.
    retries = AuditLog.objects.filter(llm_request_id__gte=first_pk, attempts__gt=0).aggregate(
        r=Sum(F("attempts") - 1)
    )["r"]
    return RunStats(
        submitted=sum(counts.values()),
        queued=counts.get(Status.QUEUED, 0),
        in_flight=counts.get(Status.DISPATCHED, 0) + counts.get(Status.RUNNING, 0),
        succeeded=counts.get(Status.SUCCEEDED, 0),
        failed=counts.get(Status.FAILED, 0),
        rejected=counts.get(Status.REJECTED, 0),
        cancelled=counts.get(Status.CANCELLED, 0),
        rate_limited_429=rate_limited,
        retries=int(retries or 0),
        calls=int(audit["calls"] or 0),
        cache_hit_calls=int(audit["hits"] or 0),
        input_tokens_total=int(audit["inputs"] or 0),
        cache_read_tokens=int(audit["reads"] or 0),
        cost_pico=int(audit["cost"] or 0),
        uncached_cost_pico=int(audit["uncached"] or 0),
    )


def summary_parts(stats: RunStats) -> tuple[str, str]:
    """The live summary in two halves (where the submitted requests are; API and money), each
    fitting 80 columns."""
    limited = "n/a" if stats.rate_limited_429 is None else str(stats.rate_limited_429)
    return (
        f"queued {stats.queued} | in flight {stats.in_flight} | done {stats.succeeded} | "
        f"failed {stats.failed} | rejected {stats.rejected} | cancelled {stats.cancelled}",
        f"429s {limited} | retries {stats.retries} | cache hits {stats.cache_hit_rate:.0%} | "
        f"cost {_usd(stats.cost_pico)} | saved by caching {_usd(stats.saved_pico)}",
    )


def summary_line(stats: RunStats) -> str:
    return " | ".join(summary_parts(stats))


def submitted_text(stats: RunStats, *, by_traffic: int) -> str:
    """``N submitted``, and who else submitted when someone used the page or the API."""
    others = stats.submitted - by_traffic
    if others <= 0:
        return f"{stats.submitted} submitted"
    return (
        f"{stats.submitted} submitted ({by_traffic} by the demo's traffic, {others} from the "
        "web page or API)"
    )


def endpoint_summary(app: demo_helpdesk.HelpdeskApp) -> str:
    """What the helpdesk app saw through the endpoint (its requests are in the summary too)."""
    line = (
        f"Anthropic-compatible endpoint: {app.sent} calls from the helpdesk app with the "
        f"official SDK ({app.streamed} streamed), {app.refused} refused by a quota, "
        f"{app.errors} client errors"
    )
    if app.in_flight:
        line += f", {app.in_flight} still waiting"
    if app.error_samples:
        line += "; first: " + app.error_samples[0]
    return line + "."


def _progress_bar(fraction: float, width: int = 30) -> str:
    filled = min(width, max(0, round(fraction * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class LiveDisplay:
    """Redraws a few lines in place on a terminal (~1/s); prints a line every few seconds into
    a pipe or file, so logs stay readable."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.drawn = 0
        self.last_plain = 0.0

    def show(self, lines: list[str]) -> None:
        if self.tty:
            width = max(40, shutil.get_terminal_size((120, 24)).columns - 1)
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")
            for line in lines:
                self.out.write("\x1b[2K" + line[:width] + "\n")
            self.drawn = len(lines)
        elif time.monotonic() - self.last_plain >= 5:
            self.out.write(" | ".join(lines) + "\n")
            self.last_plain = time.monotonic()
        self.out.flush()

    def done(self) -> None:
        self.drawn = 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def waits_by_priority(*, first_pk: int) -> dict[str, tuple[int, float, float]]:
    """Per class: (requests, p50, p95) of the queue wait (dispatched_at - created_at) in s."""
    waits: dict[str, list[float]] = {}
    rows = LLMRequest.objects.filter(pk__gte=first_pk, dispatched_at__isnull=False).values_list(
        "priority", "created_at", "dispatched_at"
    )
    for priority, created, dispatched in rows:
        assert dispatched is not None  # filtered above
        waits.setdefault(priority, []).append((dispatched - created).total_seconds())
    return {
        name: (len(v), _percentile(v, 0.5), _percentile(v, 0.95))
        for name in queue_conf.priority_class_names()
        if (v := waits.get(name))
    }


def ledger_matches(*, since: dt.datetime, emulator: EmulatorProcess) -> tuple[bool, str]:
    """Invariant 2 in the open: what the emulator billed == what audit_log recorded."""
    keys = (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    )
    ledger = emulator.ledger()["totals"]
    audit = AuditLog.objects.filter(occurred_at__gte=since).aggregate(**{k: Sum(k) for k in keys})
    diffs = [k for k in keys if int(ledger.get(k, 0)) != int(audit[k] or 0)]
    if diffs:
        return False, ", ".join(
            f"{k} ledger {ledger.get(k, 0)} vs audit {audit[k] or 0}" for k in diffs
        )
    total = sum(int(ledger.get(k, 0)) for k in keys)
    return True, f"{total:,} tokens in {ledger.get('requests', 0)} billed responses"


# --- the run -----------------------------------------------------------------------------------


def _install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in signals:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _cancel_leftovers(*, admin: Any) -> int:
    """Cancel demo requests a killed demo left queued, so this run starts from an empty queue.

    Rows a dead worker left dispatched or running are not touched: the new worker's reaper
    puts them back in the queue and they finish normally (invariant 1)."""
    cancelled = 0
    rows = LLMRequest.objects.filter(status=Status.QUEUED, user__username__in=DEMO_USERNAMES)
    for row in rows:
        with contextlib.suppress(queue_services.CannotCancel, LLMRequest.DoesNotExist):
            queue_services.cancel_request(request=row, by_user=admin)
            cancelled += 1
    return cancelled


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """The live display owns the terminal; warnings still reach var/demo/*.log via the children."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _check_real(options: DemoOptions) -> None:
    if not options.real:
        return
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise DemoError("--real needs ANTHROPIC_API_KEY set in the environment.")
    if os.environ.get("ANTHROPIC_BASE_URL"):
        raise DemoError(
            "--real calls the real API, but ANTHROPIC_BASE_URL is set "
            f"({os.environ['ANTHROPIC_BASE_URL']}); unset it."
        )


def demo_run(*, options: DemoOptions, out: TextIO) -> None:
    """Everything ``make demo`` does; returns when the user stops it (or at once with
    ``serve=False`` after the traffic). Raises DemoError for a setup the user must fix."""
    _check_real(options)
    if options.duration_s <= 0:
        raise DemoError("--duration must be a positive number of seconds.")
    if demo_stop(out=out):
        out.write("Cleaned up the previous demo.\n")
    demo_dir().mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    restore = _install_stop_handlers(stop)
    stack = DemoStack(options=options, out=out)
    try:
        with _quiet_logging():
            _run(options=options, out=out, stack=stack, stop=stop)
    finally:
        if stack.children or stack.redis_owned:
            out.write("\nStopping the demo's processes...\n")
            out.flush()
        stack.stop()
        restore()
        out.write("Demo stopped.\n")


def _run(*, options: DemoOptions, out: TextIO, stack: DemoStack, stop: threading.Event) -> None:
    out.write("Preparing: database, Redis, demo users...\n")
    out.flush()
    call_command("migrate", interactive=False, verbosity=0)
    if options.serve:
        call_command("collectstatic", interactive=False, verbosity=0)
    stack.start_redis()
    where = (
        f"embedded Redis at {_embedded_socket()}"
        if settings.EMBEDDED_REDIS
        # a password in it is a secret (invariant 6); also a Sentinel URL's
        else f"Redis at {project_redis.redacted_url(str(settings.REDIS_URL))}"
    )
    out.write(f"Using the {where}.\n")
    logins = demo_data_ensure()
    user_model = get_user_model()
    admin = user_model.objects.get(username=ADMIN_USERNAME)
    leftovers = _cancel_leftovers(admin=admin)
    if leftovers:
        out.write(f"Cancelled {leftovers} requests a previous demo left queued.\n")

    emulator: EmulatorProcess | None = None
    if options.real:
        out.write(
            f"REAL API: at most {REAL_MAX_REQUESTS} requests to {REAL_MODEL}, max_tokens "
            f"{REAL_MAX_TOKENS}, worst case {_real_worst_case()} in total.\n"
        )
    else:
        if os.environ.get("ANTHROPIC_API_KEY"):
            out.write("ANTHROPIC_API_KEY is set but --real was not given: using the emulator.\n")
        emulator = stack.start_emulator()
        cfg = stack.emulator_config
        out.write(
            f"Anthropic emulator at {emulator.base_url}: {cfg['rpm']} RPM / {cfg['itpm']:,} ITPM "
            f"/ {cfg['otpm']:,} OTPM, latency 1-3 s, {cfg['fault_rate_529']:.0%} 529s and "
            f"{cfg['fault_rate_500']:.0%} 500s.\n"
        )
    stack.start_worker()
    out.write(
        f"Worker host: python manage.py llm_worker --threads {options.threads} "
        f"(log: {demo_dir() / 'worker.log'}).\n"
    )
    # Always up during the traffic: part of it goes through the Anthropic-compatible endpoint.
    base = stack.start_web()
    out.write(f"Web server: python manage.py serve at {base}  (log: {demo_dir() / 'web.log'})\n")
    if options.serve:
        out.write(
            f"  Watch the queue live: {base}/queue/staff/ (as {ADMIN_USERNAME} / "
            f"{logins.admin_password}) or {base}/queue/ (as alice / {logins.user_password})\n"
        )
    app: demo_helpdesk.HelpdeskApp | None = None
    if not options.real:
        key = demo_helpdesk.app_key(organization=ORGANIZATIONS[0].name)
        app = demo_helpdesk.HelpdeskApp(base_url=base, key=key)
        stack.app = app
    out.flush()
    # Traffic starts when the worker host takes work: a queue that nothing drains for its first
    # seconds (Django start-up) would make every early wait, and every estimate of it, about
    # start-up rather than about the limits the demo shows.
    ready_s = stack.wait_for_worker(stop=stop)
    if ready_s is not None:
        out.write(f"Worker host ready ({options.threads} threads) after {ready_s:.1f} s.\n")
        out.flush()
    if stop.is_set():
        return

    users = list(user_model.objects.filter(username__in=DEMO_USERNAMES).order_by("username"))
    traffic = Traffic(
        options=options, rpm=stack.limits.rpm, users=users, real=options.real, app=app
    )
    if not options.real:
        body_tokens = estimate_input_tokens(
            {
                "model": EMULATOR_MODEL,
                "system": traffic.system,
                "tools": traffic.tools,
                "messages": [{"role": "user", "content": "x"}],
            }
        )
        out.write(
            f"Traffic: {len(users)} users in {len(ORGANIZATIONS)} organizations for "
            f"{options.duration_s:g} s, {traffic.queued_per_min:.0f} queued requests/min = "
            f"{OFFERED_LOAD_FACTOR:g}x the {stack.limits.rpm} RPM limit (+ bulk via Message "
            f"Batches); shared system prompt + tool schema ~{body_tokens:,} tokens; "
            f"{ENDPOINT_SHARE:.0%} of it from a helpdesk app calling {base}/v1/messages with the "
            "official SDK.\n"
        )
    out.flush()

    first_pk = (LLMRequest.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    since = timezone.now()
    display = LiveDisplay(out)
    _drive_traffic(
        traffic=traffic,
        options=options,
        display=display,
        stop=stop,
        first_pk=first_pk,
        emulator=emulator,
        stack=stack,
    )
    _drain(
        traffic=traffic,
        options=options,
        display=display,
        stop=stop,
        first_pk=first_pk,
        emulator=emulator,
    )
    final_summary(
        out=out,
        first_pk=first_pk,
        since=since,
        emulator=emulator,
        by_traffic=traffic.counters.submitted,
        serving=options.serve and not stop.is_set(),
    )
    if app is not None:
        out.write(endpoint_summary(app) + "\n")
    if stop.is_set():
        return
    if options.serve:
        if app is not None:
            out.write(
                "Call the Anthropic-compatible endpoint yourself (the helpdesk app's key):\n"
                f"  export ANTHROPIC_BASE_URL={base} ANTHROPIC_API_KEY={app.key}\n"
            )
        _print_urls(out=out, base=base, logins=logins)
        while not stop.wait(1.0):
            dead = stack.dead_children()
            if dead:
                out.write(f"The {', '.join(dead)} process stopped; see {demo_dir()}/*.log.\n")
                break


def _real_worst_case() -> str:
    price = usage_services.price_for(model=REAL_MODEL, on=timezone.now().date())
    if price is None:
        return "unknown (no price on file)"
    tokens = estimate_input_tokens(
        {
            "model": REAL_MODEL,
            "system": handbook_prompt(),
            "tools": [request_tool()],
            "messages": [{"role": "user", "content": "x" * 200}],
        }
    )
    # The quota's bound: every input token written to a 1-hour cache, max_tokens of output.
    per_call = pricing.worst_case_cost_usd(
        price=price, prompt_tokens=tokens, max_tokens=REAL_MAX_TOKENS
    )
    return f"${per_call * REAL_MAX_REQUESTS:.2f}"


def _drive_traffic(
    *,
    traffic: Traffic,
    options: DemoOptions,
    display: LiveDisplay,
    stop: threading.Event,
    first_pk: int,
    emulator: EmulatorProcess | None,
    stack: DemoStack,
) -> None:
    start = time.monotonic()
    end = start + options.duration_s
    next_arrival = start
    next_refresh = start
    while not stop.is_set():
        now = time.monotonic()
        if now >= end or traffic.done():
            break
        while next_arrival <= now and not traffic.done():
            traffic.submit_one()
            next_arrival += traffic.next_gap_s()
        if now >= next_refresh:
            traffic.collect_answers()
            stats = run_stats(first_pk=first_pk, emulator=emulator)
            elapsed = now - start
            display.show(
                [
                    f"{_progress_bar(elapsed / options.duration_s)} traffic "
                    f"{elapsed:4.0f}/{options.duration_s:g} s  submitted {stats.submitted}",
                    *summary_parts(stats),
                ]
            )
            next_refresh = now + 1.0
            dead = stack.dead_children()
            if dead:
                raise DemoError(f"the {', '.join(dead)} process died; see {demo_dir()}/*.log")
        stop.wait(max(0.0, min(next_arrival, next_refresh, end) - time.monotonic()))


def _drain(
    *,
    traffic: Traffic,
    options: DemoOptions,
    display: LiveDisplay,
    stop: threading.Event,
    first_pk: int,
    emulator: EmulatorProcess | None,
) -> None:
    """Wait until every request of this run is terminal, at most ``max(60, 2 x duration)`` s."""
    bound = max(60.0, 2 * options.duration_s)
    start = time.monotonic()
    stats = run_stats(first_pk=first_pk, emulator=emulator)
    total = max(1, stats.pending)
    while not stop.is_set():
        traffic.collect_answers()
        stats = run_stats(first_pk=first_pk, emulator=emulator)
        elapsed = time.monotonic() - start
        display.show(
            [
                f"{_progress_bar(1 - stats.pending / total)} draining: {stats.pending} left "
                f"({elapsed:.0f}/{bound:.0f} s)  submitted {stats.submitted}",
                *summary_parts(stats),
            ]
        )
        app_busy = traffic.app is not None and traffic.app.in_flight > 0
        if (stats.pending == 0 and not app_busy) or elapsed >= bound:
            break
        stop.wait(1.0)
    display.done()


def final_summary(
    *,
    out: TextIO,
    first_pk: int,
    since: dt.datetime,
    emulator: EmulatorProcess | None,
    by_traffic: int,
    serving: bool,
) -> None:
    """The figures of the run (``run_stats``), once the queue has drained or the wait is over.

    ``by_traffic``: how many of the requests the demo's own traffic submitted. Requests still
    queued or in flight are reported as such, so the figures add up to ``submitted`` either way.
    """
    stats = run_stats(first_pk=first_pk, emulator=emulator)
    out.write("\n")
    if stats.pending:
        after = (
            "they keep running while the gateway is up"
            if serving
            else "the demo stops now: calls in flight finish or go back to the queue, and the "
            "next demo cancels its own requests still queued"
        )
        out.write(
            f"The queue has not drained: {stats.queued} requests are still queued and "
            f"{stats.in_flight} in flight ({after}).\n"
        )
    out.write(f"Summary: {submitted_text(stats, by_traffic=by_traffic)} | {summary_line(stats)}\n")
    if stats.input_tokens_total:
        saved_share = stats.saved_pico / stats.uncached_cost_pico if stats.uncached_cost_pico else 0
        out.write(
            f"Caching: {stats.cache_read_tokens / stats.input_tokens_total:.0%} of input tokens "
            f"were cache reads; the bill is {saved_share:.0%} lower than without caching.\n"
        )
    waits = waits_by_priority(first_pk=first_pk)
    if waits:
        parts = [f"{name} {p50:.1f}/{p95:.1f} s (n={n})" for name, (n, p50, p95) in waits.items()]
        out.write("Queue wait p50/p95 by priority: " + " | ".join(parts) + "\n")
    # Alerts are raised once per period, so a second demo on the same day shows today's.
    alerts = QuotaAlert.objects.filter(created_at__date=timezone.now().date()).select_related(
        "user", "organization"
    )
    for alert in alerts[:5]:
        out.write(f"Quota alert: {alert}\n")
    rejected = (
        LLMRequest.objects.filter(pk__gte=first_pk, status=Status.REJECTED)
        .values_list("user__username", "error_message")
        .first()
    )
    if rejected:
        out.write(f"Quota rejection, e.g. {rejected[0]}: {rejected[1]}\n")
    failure = (
        LLMRequest.objects.filter(pk__gte=first_pk, status=Status.FAILED)
        .values_list("user__username", "error_message")
        .first()
    )
    if failure:
        out.write(f"Failure, e.g. {failure[0]}: {failure[1]}\n")
    if emulator is not None and stats.pending:
        out.write("audit_log vs the emulator's ledger: not compared while calls are pending.\n")
    elif emulator is not None:
        ok, detail = ledger_matches(since=since, emulator=emulator)
        verdict = "exact match" if ok else "MISMATCH"
        out.write(f"audit_log vs the emulator's ledger: {verdict} ({detail})\n")
    out.flush()


def _org_admin_login() -> str:
    name, org = next(iter(ORG_ADMINS.items()))
    return f"{name} of {org}"


def _print_urls(*, out: TextIO, base: str, logins: Logins) -> None:
    session = (
        SessionUsage.objects.filter(user__username="alice")
        .order_by("-requests", "-last_at")  # a multi-turn one when there is one
        .values_list("session_id", flat=True)
        .first()
    )
    rows = [("Dashboard", f"{base}/usage/")]
    if session:
        rows.append(("A session", f"{base}/usage/sessions/{session}/"))
    rows += [
        ("Queue", f"{base}/queue/"),
        ("Organization", f"{base}/org/  (an organization admin, e.g. {_org_admin_login()})"),
        ("All users", f"{base}/usage/users/  (staff)"),
        ("Queue overview", f"{base}/queue/staff/  (staff)"),
        ("Admin", f"{base}/admin/"),
    ]
    lines = ["", "The gateway is up. Open:"]
    lines += [f"  {label:<15} {url}" for label, url in rows]
    lines += [
        "Logins:",
        f"  end user  alice / {logins.user_password}  (every demo user, e.g. bob, has it)",
        *(
            f"  org admin {name} / {logins.user_password}  (admin of {org} only: its usage, "
            "members' quotas and gateway keys)"
            for name, org in ORG_ADMINS.items()
        ),
        f"  staff     {ADMIN_USERNAME} / {logins.admin_password}  (staff + superuser)",
        "Press Ctrl-C to stop everything (or run `make stop` in another terminal).",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()
