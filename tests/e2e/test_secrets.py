"""The Anthropic API key never reaches the database, Redis, a log line, a page or an error.

Real traffic runs with a distinctive canary key — queued requests through a real worker process
(``manage.py llm_worker``, its own environment and logs), synchronous calls in this process,
the Message Batches route, retries after 529/429/500, a 400, a spend-limit 429, a 401 (a key
the emulator rejects), a connection failure and a response-cache hit. Then every place the key
could leak to is searched for it: every row of every table, every Redis key and value, all log
output at DEBUG (this process and the worker), every page, JSON and CSV the users and staff can
reach (admin and /metrics included), and the text of every error raised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from rq import Worker

from llm_calls.client import close_clients
from llm_calls.emulator.ledger import key_fingerprint
from llm_calls.emulator.process import EmulatorProcess
from queueing import services
from queueing.auth import api_token_create
from queueing.models import LLMRequest
from ratelimit_project import redis as project_redis
from tests.conftest import subprocess_database_url
from tests.e2e.conftest import MODEL, admin_ids, all_routes, body_text, route_path, url_values
from tests.usage.factories import make_org, make_user
from usage.models import AuditLog

pytestmark = pytest.mark.django_db(transaction=True)

CANARY = secrets.token_hex(12)
KEY = f"sk-ant-SECRET-canary-{CANARY}"
BAD_KEY = f"sk-bad-SECRET-canary-{CANARY}"  # the emulator answers 401 to sk-bad-… keys
NEEDLES = (CANARY, "SECRET-canary")  # any part of either key
METRICS_TOKEN = "metrics-token-secrets-test"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Haystack:
    """Everything gathered, by where it came from; ``leaks()`` says where a needle is."""

    parts: dict[str, list[str]] = field(default_factory=dict)

    def add(self, where: str, text: Any) -> None:
        self.parts.setdefault(where, []).append(text if isinstance(text, str) else repr(text))

    def leaks(self) -> list[str]:
        found = []
        for where, texts in self.parts.items():
            for text in texts:
                for needle in NEEDLES:
                    at = text.find(needle)
                    if at >= 0:
                        found.append(f"{where}: …{text[max(0, at - 120) : at + 60]!r}…")
                        break
        return found

    def size(self, where: str) -> int:
        return sum(len(t) for t in self.parts.get(where, []))


# --- a real worker process --------------------------------------------------------------------


@pytest.fixture
def worker_process(
    wired: EmulatorProcess, settings, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``manage.py llm_worker`` with the canary key in its environment and DEBUG logging,
    sharing this test's database file and Redis."""
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": wired.base_url,
        "REDIS_URL": settings.REDIS_URL,
        "DATABASE_URL": subprocess_database_url(),
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_LEVEL": "DEBUG",
        "LLM_RETRY_BASE_S": "0.01",
        "LLM_RETRY_CAP_S": "0.05",
        "BATCH_MAX_WAIT_S": "0",
        "BATCH_POLL_INTERVAL_S": "0",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "llm_worker", "--threads", "4"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while Worker.count(connection=project_redis.get_redis()) < 4:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker did not start within 60 s"
            time.sleep(0.1)
        yield process, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def debug_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG on the root logger and on every logger that exists (some set their own level)."""
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)


# --- gathering -----------------------------------------------------------------------------------


def gather_database(hay: Haystack) -> None:
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from introspection
            for row in cursor.fetchall():
                hay.add(f"database table {table}", " | ".join(map(str, row)))


def _redis_text(value: Any) -> str:
    if isinstance(value, bytes):
        text = value.decode(errors="replace")
        with contextlib.suppress(zlib.error):  # RQ stores job data zlib-compressed
            text += zlib.decompress(value).decode(errors="replace")
        return text
    return repr(value)


def gather_redis(hay: Haystack) -> None:
    client: Any = project_redis.get_redis()  # redis-py's stubs type replies as str | bytes | …
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        values: list[Any] = []
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [x for pair in client.hgetall(key).items() for x in pair]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [x for _, entry in client.xrange(key) for pair in entry.items() for x in pair]
        hay.add("redis keys", _redis_text(key))
        for value in values:
            hay.add(f"redis {_redis_text(key)[:60]}", _redis_text(value))


def gather_pages(hay: Haystack, *, clients: dict[str, Client], request: LLMRequest) -> int:
    """Every URL of the project as every visitor; returns how many answered 200."""
    values = url_values(request=request)
    ok = 0
    for route in all_routes():
        path = route_path(route, {**values, **admin_ids(route)})
        suffixes, visitors = [""], clients
        if route.route.startswith("admin/"):  # staff only: the others just get a redirect
            visitors = {who: clients[who] for who in ("owner", "staff")}
        else:
            suffixes += ["?format=csv", "?user=all", f"?user={request.user_id}", "?days=30"]
        for who, client in visitors.items():
            for suffix in suffixes:
                response = client.get(path + suffix)
                ok += response.status_code == 200
                hay.add(f"page {path + suffix} as {who}", body_text(response))
                hay.add(f"headers of {path + suffix}", str(response.headers))
    staff = clients["staff"]
    for model, model_admin in admin.site._registry.items():
        if not model._meta.managed:
            continue
        opts = model._meta
        for pk in model._default_manager.order_by("-pk").values_list("pk", flat=True)[:15]:
            path = f"/admin/{opts.app_label}/{opts.model_name}/{pk}/change/"
            response = staff.get(path)
            ok += response.status_code == 200
            hay.add(f"admin page {path}", body_text(response))
        del model_admin
    return ok


# --- the test --------------------------------------------------------------------------------------


def test_the_api_key_appears_nowhere(
    wired: EmulatorProcess,
    worker_process: tuple[subprocess.Popen[bytes], Path],
    settings,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings.ANTHROPIC_API_KEY = KEY
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.RQ_API_TOKEN = METRICS_TOKEN
    settings.DEBUG = True  # the local default: SQL and its parameters are logged at DEBUG too
    settings.BATCH_POLL_INTERVAL_S = 0
    wired.configure(batch_latency_ms=50)
    debug_everywhere(caplog)
    hay = Haystack()
    process, worker_log = worker_process

    org = make_org("Canary Org")
    owner = make_user("olga", org=org)
    other = make_user("oscar", org=org)
    staff = make_user("sam", staff=True)
    User.objects.filter(pk=staff.pk).update(is_superuser=True)
    _, raw_token = api_token_create(user=owner, name="ci")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw_token}")

    def ask(text: str, **extra: Any) -> dict[str, Any]:
        body = {
            "session_id": "canary-sess",
            "model": MODEL,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 20,
            **extra,
        }
        response = api.post("/api/v1/requests", data=body, content_type="application/json")
        hay.add("API submit response", response.content.decode())
        assert response.status_code == 202, response.content
        return dict(response.json())

    def result(pk: int) -> dict[str, Any]:
        response = api.get(f"/api/v1/requests/{pk}/result?wait=30")
        hay.add("API result response", response.content.decode())
        assert response.status_code == 200, response.content
        return dict(response.json())

    # -- queued, through the worker process
    wired.configure(script=[{"status": 529}, {"status": 429, "retry_after": 1}])
    retried = result(ask("retry me")["id"])
    assert retried["status"] == "succeeded" and retried["attempts"] == 3
    wired.configure(script=[{"status": 400}])
    failed = result(ask("fail me")["id"])
    assert failed["status"] == "failed" and "invalid_request_error" in failed["error"]["message"]
    queued = [ask(f"question {i}")["id"] for i in range(3)]
    bulk = [ask(f"bulk {i}", priority="bulk")["id"] for i in range(2)]
    done = [result(pk) for pk in queued + bulk]
    assert [r["status"] for r in done] == ["succeeded"] * 5

    # -- synchronous, in this process
    def sync(text: str, **extra: Any) -> LLMRequest | services.RequestFailed:
        try:
            row = services.call_claude(
                user=owner,
                session_id="canary-sync",
                model=MODEL,
                messages=[{"role": "user", "content": text}],
                max_tokens=20,
                **extra,
            )
        except services.RequestFailed as error:
            hay.add("error text", f"{error} {error!r} {error.request.error_message}")
            return error
        return row

    system = [
        {"type": "text", "text": "You are terse. " * 400, "cache_control": {"type": "ephemeral"}}
    ]
    assert isinstance(sync("cache me", system=system), LLMRequest)
    assert isinstance(sync("cache me again", system=system), LLMRequest)
    wired.configure(script=[{"status": 500}, {"status": 529}])
    assert isinstance(sync("retry me inline"), LLMRequest)
    wired.configure(script=[{"status": 400}])
    assert isinstance(sync("bad inline"), services.RequestFailed)
    wired.configure(script=[{"status": 429, "spend_limit": True}])
    assert isinstance(sync("over the spend cap"), services.RequestFailed)
    assert isinstance(sync("remember me", use_response_cache=True), LLMRequest)
    cached = sync("remember me", use_response_cache=True)
    assert isinstance(cached, LLMRequest) and cached.result
    assert cached.result["from_response_cache"]

    settings.ANTHROPIC_API_KEY = BAD_KEY
    rejected = sync("wrong key")
    assert isinstance(rejected, services.RequestFailed)
    assert "authentication_error" in str(rejected)
    settings.ANTHROPIC_API_KEY = KEY
    close_clients()

    base_url = settings.ANTHROPIC_BASE_URL
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    settings.LLM_RETRY_MAX_RETRIES = 1
    unreachable = sync("nobody home")
    assert isinstance(unreachable, services.RequestFailed)
    settings.ANTHROPIC_BASE_URL = base_url
    close_clients()

    # The canary really went over the wire (so searching for it below means something).
    fingerprints = {entry["key_fingerprint"] for entry in wired.log()}
    assert key_fingerprint(KEY) in fingerprints
    assert any(entry["status"] == 401 for entry in wired.log())
    assert LLMRequest.objects.filter(status=LLMRequest.Status.SUCCEEDED).count() >= 10

    # -- stop the worker so its log is complete
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)

    # -- search
    gather_database(hay)
    gather_redis(hay)
    owner_client, other_client, staff_client = (
        Client(raise_request_exception=False) for _ in range(3)
    )
    owner_client.force_login(owner)
    other_client.force_login(other)
    staff_client.force_login(staff)
    scrape = Client(HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    clients = {
        "owner": owner_client,
        "other": other_client,
        "staff": staff_client,
        "token": api,
        "scrape": scrape,
    }
    answered = gather_pages(
        hay, clients=clients, request=LLMRequest.objects.filter(user=owner).earliest("pk")
    )
    assert answered > 150, "too few pages answered to mean anything"
    for record in caplog.records:
        hay.add(f"log {record.name}", record.getMessage())
        if record.exc_info:
            hay.add(
                f"log {record.name} traceback", logging.Formatter().formatException(record.exc_info)
            )
    hay.add("log text", caplog.text)
    captured = capfd.readouterr()
    hay.add("stdout", captured.out)
    hay.add("stderr", captured.err)
    worker_output = worker_log.read_text(errors="replace")
    hay.add("worker log", worker_output)

    # The gathering saw what it should have: real rows, real logs from both processes.
    assert hay.size(f"database table {AuditLog._meta.db_table}") > 0
    assert hay.size(f"database table {LLMRequest._meta.db_table}") > 0
    assert "HTTP Request: POST" in caplog.text  # the SDK's HTTP client logged at DEBUG/INFO
    assert "DEBUG" in worker_output and "/v1/messages" in worker_output
    assert any(r.levelno == logging.DEBUG for r in caplog.records)

    leaks = hay.leaks()
    assert not leaks, "the API key leaked:\n" + "\n".join(leaks[:20])
