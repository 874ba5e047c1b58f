"""Bad input, through every door: a clear error naming the field, before any API call.

Each case goes through one entry point — the service functions (``submit_request``,
``call_claude``), the JSON API, the queue page's form or the usage date filters — and must:
answer with an error that names the offending field, make no call to Anthropic (the emulator's
request log stays empty, so nothing was sent and nothing retried), and leave nothing behind
(no LLMRequest or AuditLog row, nothing in the scheduler, the other user's request untouched).
Quota rejections are the one designed exception: the row is kept as ``rejected``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.test import Client
from django.utils.html import escape

from llm_calls.emulator.process import EmulatorProcess
from llm_calls.validation import MAX_BODY_BYTES, InvalidRequest
from queueing import services
from queueing.models import LLMRequest, Quota
from queueing.scheduler import get_scheduler
from tests.e2e.conftest import MODEL
from tests.usage.factories import make_user
from usage.models import AuditLog

pytestmark = pytest.mark.django_db

VALID: dict[str, Any] = {
    "session_id": "s-ok",
    "model": MODEL,
    "messages": [{"role": "user", "content": "Hello"}],
    "max_tokens": 50,
    "priority": "query",
}
FORM = {
    "session_id": "playground",
    "model": MODEL,
    "priority": "query",
    "prompt": "Hello",
    "max_tokens": "50",
}


def text(s: str, **cc: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": s}
    if cc:
        block["cache_control"] = {"type": "ephemeral", **cc}
    return block


FIVE_BREAKPOINTS = [{"role": "user", "content": [text(f"part {i}", ttl="5m") for i in range(5)]}]
ONE_HOUR_AFTER_5M = {
    "system": [text("rules", ttl="5m")],
    "messages": [{"role": "user", "content": [text("question", ttl="1h")]}],
}
OVER_32_MB = [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1)}]


HUGE = "9" * 23  # fits no database integer column
CIRCULAR: dict[str, Any] = {}
CIRCULAR["self"] = CIRCULAR


def schema_tool(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "t", "input_schema": {"type": "object", "properties": {"p": schema}}}]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


@dataclass(frozen=True)
class World:
    alice: User
    bob: User
    client: Client  # alice, logged in
    own_pk: int  # alice's queued request
    other_pk: int  # bob's queued request


@pytest.fixture
def world(wired: EmulatorProcess) -> World:
    alice = make_user("alice")
    bob = make_user("bob")
    own = services.submit_request(user=alice, **VALID)
    other = services.submit_request(user=bob, **VALID)
    client = Client()
    client.force_login(alice)
    return World(alice=alice, bob=bob, client=client, own_pk=own.pk, other_pk=other.pk)


def _service_user(world: World, spec: dict[str, Any]) -> Any:
    who = spec.pop("user", "alice")
    if who == "anonymous":
        return AnonymousUser()
    if who == "inactive":
        return make_user("sleeper")  # made inactive below, so it exists before the snapshot
    return world.alice


def run_service(world: World, kind: str, spec: dict[str, Any]) -> tuple[int, str, str]:
    spec = dict(spec)
    user = _service_user(world, spec)
    if spec.pop("deactivate", False):
        user.is_active = False
        user.save()
    call = services.submit_request if kind == "submit" else services.call_claude
    with pytest.raises(InvalidRequest) as info:
        call(user=user, **{**VALID, **spec})
    return 400, info.value.field, str(info.value)


def run_api(world: World, body: Any) -> tuple[int, str, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = world.client.post("/api/v1/requests", data=raw, content_type="application/json")
    error = response.json()["error"]
    return response.status_code, error.get("field", ""), error["message"]


def run_http(world: World, method: str, path: str) -> tuple[int, str, str]:
    path = path.format(own=world.own_pk, other=world.other_pk)
    response = world.client.get(path) if method == "GET" else world.client.post(path)
    if response["Content-Type"].startswith("application/json"):
        error = response.json()["error"]
        if isinstance(error, dict):
            return response.status_code, error.get("field", ""), error["message"]
        return response.status_code, "", error
    return response.status_code, "", response.content.decode()


def run_form(world: World, changes: dict[str, str]) -> tuple[int, str, str]:
    response = world.client.post("/queue/", {**FORM, **changes})
    errors = response.context["form"].errors if response.context else {}
    fields = " ".join(errors)
    messages = " ".join(str(e) for errs in errors.values() for e in errs)
    html = response.content.decode()
    for message in (e for errs in errors.values() for e in errs):
        # What the form says must reach the page, escaped like everything else.
        assert escape(message) in html
    return response.status_code, fields, messages


def c(kind: str, spec: Any, field: str, status: int = 400, *, id: str) -> Any:  # noqa: A002
    return pytest.param(kind, spec, field, status, id=id)


CASES = [
    # --- submit_request ---------------------------------------------------------------------
    c("submit", {"model": None}, "model", id="submit-missing-model"),
    c("submit", {"model": "claude-nonexistent-9"}, "model", id="submit-unknown-model"),
    c("submit", {"model": 123}, "model", id="submit-model-not-a-string"),
    c("submit", {"max_tokens": -1}, "max_tokens", id="submit-negative-max-tokens"),
    c("submit", {"max_tokens": 10**9}, "max_tokens", id="submit-huge-max-tokens"),
    c("submit", {"max_tokens": True}, "max_tokens", id="submit-bool-max-tokens"),
    c("submit", {"max_tokens": "50"}, "max_tokens", id="submit-string-max-tokens"),
    c("submit", {"max_tokens": 50.5}, "max_tokens", id="submit-float-max-tokens"),
    c("submit", {"messages": []}, "messages", id="submit-empty-messages"),
    c("submit", {"messages": "hi"}, "messages", id="submit-messages-not-a-list"),
    c("submit", {"messages": None}, "messages", id="submit-missing-messages"),
    c(
        "submit",
        {"messages": [{"role": "user", "content": ""}]},
        "messages[0].content",
        id="submit-empty-content",
    ),
    c(
        "submit",
        {"messages": [{"role": "system", "content": "hi"}]},
        "messages[0].role",
        id="submit-bad-role",
    ),
    c(
        "submit",
        {"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
        "messages[0].content[0].type",
        id="submit-unknown-block-type",
    ),
    c(
        "submit",
        {"messages": [{"role": "user", "content": "hi", "name": "x"}]},
        "messages[0]",
        id="submit-unknown-message-key",
    ),
    c("submit", {"messages": FIVE_BREAKPOINTS}, "cache_control", id="submit-5-breakpoints"),
    c("submit", ONE_HOUR_AFTER_5M, "cache_control", id="submit-1h-after-5m"),
    c(
        "submit",
        {"messages": [{"role": "user", "content": [text("q", ttl="1d")]}]},
        "messages[0].content[0].cache_control.ttl",
        id="submit-bad-ttl",
    ),
    c("submit", {"priority": "urgent"}, "priority", id="submit-unknown-priority"),
    c("submit", {"priority": 3}, "priority", id="submit-priority-not-a-string"),
    c(
        "submit",
        {"session_id": "<script>alert(1)</script>"},
        "session_id",
        id="submit-script-session",
    ),
    c(
        "submit",
        {"session_id": "x'; DROP TABLE queueing_llmrequest;--"},
        "session_id",
        id="submit-sql-session",
    ),
    c("submit", {"session_id": ""}, "session_id", id="submit-empty-session"),
    c("submit", {"session_id": "s" * 129}, "session_id", id="submit-long-session"),
    c("submit", {"session_id": "s-1\n"}, "session_id", id="submit-session-trailing-newline"),
    c("submit", {"session_id": None}, "session_id", id="submit-missing-session"),
    c(
        "submit",
        {"messages": [{"role": "user", "content": "bad \ud800 text"}]},
        "messages[0].content",
        id="submit-lone-surrogate",
    ),
    c("submit", {"system": "rules \udfff"}, "system", id="submit-surrogate-in-system"),
    c("submit", {"system": 42}, "system", id="submit-system-wrong-type"),
    c("submit", {"tools": {"name": "t"}}, "tools", id="submit-tools-not-a-list"),
    c("submit", {"tools": [{"description": "no name"}]}, "tools[0]", id="submit-tool-no-name"),
    c("submit", {"temperature": 3}, "temperature", id="submit-temperature-out-of-range"),
    c("submit", {"stop_sequences": [""]}, "stop_sequences", id="submit-empty-stop-sequence"),
    c("submit", {"metadata": ["x"]}, "metadata", id="submit-metadata-not-object"),
    c("submit", {"messages": OVER_32_MB}, "body", id="submit-over-32MB"),
    # A tool's input_schema is free-form JSON, so it is where a caller can hand over a value
    # JSON cannot carry.
    c("submit", {"tools": schema_tool({"enum": {"a", "b"}})}, "body", id="submit-set-is-not-json"),
    c("submit", {"tools": schema_tool({"max": float("nan")})}, "body", id="submit-nan-is-not-json"),
    c("submit", {"tools": schema_tool(CIRCULAR)}, "body", id="submit-circular-schema"),
    c("submit", {"tools": schema_tool(nested(5000))}, "body", id="submit-nested-too-deeply"),
    c("submit", {"user": "anonymous"}, "user", id="submit-anonymous-user"),
    c("submit", {"user": "inactive", "deactivate": True}, "user", id="submit-inactive-user"),
    # --- call_claude (the synchronous door) ---------------------------------------------------
    c("sync", {"model": "gpt-4"}, "model", id="sync-unknown-model"),
    c("sync", {"max_tokens": -1}, "max_tokens", id="sync-negative-max-tokens"),
    c("sync", {"messages": FIVE_BREAKPOINTS}, "cache_control", id="sync-5-breakpoints"),
    c("sync", ONE_HOUR_AFTER_5M, "cache_control", id="sync-1h-after-5m"),
    c("sync", {"priority": "vip"}, "priority", id="sync-unknown-priority"),
    c(
        "sync",
        {"messages": [{"role": "assistant", "content": "hi"}]},
        "messages[0].role",
        id="sync-assistant-first",
    ),
    # --- POST /api/v1/requests ------------------------------------------------------------------
    c("api", b'{"model": "\xff\xfe"}', "body", id="api-invalid-utf8"),
    c("api", b"", "body", id="api-empty-body"),
    c("api", b"[" * 200_000, "body", id="api-nested-too-deeply"),
    c("api", b'{"max_tokens": 1' + b"0" * 5000 + b"}", "body", id="api-number-too-long"),
    c("api", b'{"session_id": NaN}', "session_id", id="api-nan-literal"),
    c("api", b"model=x&max_tokens=5", "body", id="api-not-json"),
    c("api", [1, 2, 3], "body", id="api-json-array"),
    c("api", None, "body", id="api-json-null"),
    c("api", "a string", "body", id="api-json-string"),
    c("api", {**VALID, "modle": MODEL}, "modle", id="api-unknown-field"),
    c("api", {**VALID, "max_tokens": True}, "max_tokens", id="api-bool-max-tokens"),
    c("api", {**VALID, "max_tokens": "100"}, "max_tokens", id="api-string-max-tokens"),
    c("api", {**VALID, "max_tokens": -5}, "max_tokens", id="api-negative-max-tokens"),
    c("api", {k: v for k, v in VALID.items() if k != "messages"}, "messages", id="api-no-msgs"),
    c("api", {k: v for k, v in VALID.items() if k != "model"}, "model", id="api-no-model"),
    c("api", {**VALID, "messages": []}, "messages", id="api-empty-messages"),
    c(
        "api",
        b'{"session_id": "s", "model": "claude-sonnet-5-5", "max_tokens": 5,'
        b' "messages": [{"role": "user", "content": "bad \\ud800"}]}',
        "messages[0].content",
        id="api-lone-surrogate-escape",
    ),
    c(
        "api",
        {**VALID, "session_id": "<script>alert(1)</script>"},
        "session_id",
        id="api-script-session",
    ),
    c("api", {**VALID, "session_id": "1 OR 1=1; --"}, "session_id", id="api-sql-session"),
    c("api", {**VALID, "priority": "urgent"}, "priority", id="api-unknown-priority"),
    c("api", {**VALID, **ONE_HOUR_AFTER_5M}, "cache_control", id="api-1h-after-5m"),
    c("api", {**VALID, "messages": FIVE_BREAKPOINTS}, "cache_control", id="api-5-breakpoints"),
    c("api", {**VALID, "response_cache": "yes"}, "response_cache", id="api-string-bool"),
    c("api", {**VALID, "batch": 1}, "batch", id="api-int-for-bool"),
    c(
        "api",
        json.dumps({**VALID, "system": "x" * 3_000_000}).encode(),
        "body",
        id="api-over-upload-limit",
    ),
    # --- other API endpoints --------------------------------------------------------------------
    c("GET", "/api/v1/requests/{other}", "", 404, id="api-detail-other-users"),
    c("GET", "/api/v1/requests/{other}/result", "", 404, id="api-result-other-users"),
    c("POST", "/api/v1/requests/{other}/cancel", "", 404, id="api-cancel-other-users"),
    c("GET", "/api/v1/requests/99999999", "", 404, id="api-detail-no-such-request"),
    c("GET", "/api/v1/requests/{own}/result?wait=abc", "wait", id="api-wait-not-a-number"),
    c("GET", "/api/v1/requests/{own}/result?wait=-1", "wait", id="api-wait-negative"),
    c("GET", "/api/v1/requests/{own}/result?wait=1000", "wait", id="api-wait-too-long"),
    c("GET", "/api/v1/requests/{own}/result?wait=nan", "wait", id="api-wait-nan"),
    c("GET", "/api/v1/requests?status=bogus", "status", id="api-unknown-status-filter"),
    # --- queue pages and the submit form ------------------------------------------------------
    c("GET", "/queue/requests/{other}/", "", 404, id="page-other-users-request"),
    c("POST", "/queue/requests/{other}/cancel/", "", 404, id="page-cancel-other-users"),
    c("form", {"prompt": ""}, "prompt", 200, id="form-empty-prompt"),
    c("form", {"prompt": "   "}, "prompt", 200, id="form-blank-prompt"),
    c("form", {"max_tokens": "lots"}, "max_tokens", 200, id="form-max-tokens-not-a-number"),
    c("form", {"max_tokens": "-5"}, "max_tokens", 200, id="form-negative-max-tokens"),
    c("form", {"max_tokens": "1000000000"}, "max_tokens", 200, id="form-huge-max-tokens"),
    c("form", {"model": "claude-nonexistent-9"}, "model", 200, id="form-unknown-model"),
    c("form", {"priority": "urgent"}, "priority", 200, id="form-unknown-priority"),
    c("form", {"session_id": "<script>x</script>"}, "session_id", 200, id="form-script-session"),
    c("form", {"session_id": ""}, "session_id", 200, id="form-empty-session"),
    # --- usage date filters ------------------------------------------------------------------
    c("GET", "/usage/?days=abc", "days", id="filter-days-not-a-number"),
    c("GET", "/usage/?days=0", "days", id="filter-days-zero"),
    c("GET", "/usage/?days=99999", "days", id="filter-days-huge"),
    c("GET", "/usage/?start=2026-01-01", "end", id="filter-start-without-end"),
    c("GET", "/usage/?start=2026-13-01&end=2026-12-31", "start", id="filter-bad-month"),
    c("GET", "/usage/?start=2026-03-05&end=2026-03-01", "start", id="filter-start-after-end"),
    c("GET", "/usage/?days=7&start=2026-01-01&end=2026-01-02", "days", id="filter-both-forms"),
    c("GET", "/usage/?start=<script>&end=2026-01-02", "start", id="filter-script-date"),
    c("GET", "/usage/?page=0", "page", id="filter-page-zero"),
    c("GET", f"/usage/?page={HUGE}", "page", id="filter-page-huge"),
    c("GET", f"/usage/api/sessions.json?page={HUGE}", "page", id="filter-json-page-huge"),
    c("GET", "/usage/api/daily.json?days=-3", "days", id="filter-json-negative-days"),
    c("GET", "/usage/export/audit.csv?start=yesterday&end=today", "start", id="filter-csv"),
    c("GET", "/usage/caching/?user=someone", "user", id="filter-user-not-an-id"),
]


def counts(world: World) -> dict[str, Any]:
    return {
        "llm_requests": LLMRequest.objects.count(),
        "audit_rows": AuditLog.objects.count(),
        "statuses": sorted(LLMRequest.objects.values_list("pk", "status")),
        "scheduled": get_scheduler().depth()["requests"],
    }


@pytest.mark.parametrize(("kind", "spec", "field", "status"), CASES)
def test_bad_input_is_refused_clearly_before_any_api_call(
    world: World, wired: EmulatorProcess, kind: str, spec: Any, field: str, status: int
) -> None:
    before = counts(world)
    if kind in ("submit", "sync"):
        got_status, got_field, message = run_service(world, kind, spec)
    elif kind == "api":
        got_status, got_field, message = run_api(world, spec)
    elif kind == "form":
        got_status, got_field, message = run_form(world, spec)
    else:
        got_status, got_field, message = run_http(world, kind, spec)

    assert got_status == status, message[:500]
    if field:
        # The error names the field, both in its machine-readable part (where there is one)
        # and in the words a person reads.
        assert field in got_field or (got_field in ("", "__all__") and field in message), (
            got_field,
            message[:500],
        )
        assert field in message or field in got_field, message[:500]
    else:
        assert "no such" in message.lower() or "not found" in message.lower(), message[:500]
    assert wired.log() == [], "bad input reached the Anthropic API"
    assert counts(world) == before, "bad input left something behind"


def test_the_error_message_says_what_is_wrong_not_just_where(world: World) -> None:
    """Spot checks of the wording a developer sees (the table above checks the field names)."""
    _, _, unknown = run_service(world, "submit", {"model": "claude-nonexistent-9"})
    assert "unknown model 'claude-nonexistent-9'" in unknown
    assert MODEL in unknown  # and the known ones are listed
    _, _, five = run_service(world, "submit", {"messages": FIVE_BREAKPOINTS})
    assert "A maximum of 4 blocks with cache_control may be provided. Found 5." in five
    status, field, too_big = run_api(world, json.dumps({"system": "x" * 3_000_000}).encode())
    assert (status, field) == (400, "body")
    assert "larger than this server accepts" in too_big
    _, _, huge = run_service(world, "submit", {"messages": OVER_32_MB})
    assert "the API accepts at most 33,554,432" in huge


# --- quota rejections: refused before any call, but the row is kept as "rejected" ------------


@pytest.fixture
def tight_quota(world: World) -> Quota:
    return Quota.objects.create(user=world.alice, tokens_per_day=10, usd_per_day=Decimal("1"))


def test_quota_rejection_keeps_a_rejected_row_and_makes_no_call(
    world: World, tight_quota: Quota, wired: EmulatorProcess
) -> None:
    with pytest.raises(services.QuotaExceeded) as info:
        services.submit_request(user=world.alice, **{**VALID, "session_id": "over"})
    message = str(info.value)
    assert "Daily token quota" in message and "alice" in message
    assert "exceeded" in message and "resets at" in message
    row = LLMRequest.objects.get(session_id="over")
    assert row == info.value.request
    assert row.status == LLMRequest.Status.REJECTED
    assert row.error_type == "quota_exceeded" and row.error_message == message
    assert row.finished_at is not None

    with pytest.raises(services.QuotaExceeded):
        services.call_claude(user=world.alice, **{**VALID, "session_id": "over-sync"})
    assert LLMRequest.objects.get(session_id="over-sync").status == LLMRequest.Status.REJECTED

    response = world.client.post(
        "/api/v1/requests",
        data={**VALID, "session_id": "over-api"},
        content_type="application/json",
    )
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "quota_exceeded" and "Daily token quota" in error["message"]
    assert LLMRequest.objects.get(pk=error["request_id"]).status == LLMRequest.Status.REJECTED

    page = world.client.post("/queue/", {**FORM, "session_id": "over-form"})
    assert page.status_code == 200
    assert "Daily token quota" in page.content.decode()

    assert wired.log() == [], "a request over quota reached the Anthropic API"
    assert AuditLog.objects.count() == 0
    assert get_scheduler().depth()["requests"] == 2  # only the two valid requests of the world
    rejected = LLMRequest.objects.filter(status=LLMRequest.Status.REJECTED)
    assert sorted(rejected.values_list("session_id", flat=True)) == [
        "over",
        "over-api",
        "over-form",
        "over-sync",
    ]


def test_ids_too_big_for_the_database_are_not_found_not_errors(world: World) -> None:
    """Staff pass every access check, so these reach the queries: never a 500."""
    staff = Client(raise_request_exception=False)
    boss = make_user("boss", staff=True)
    boss.is_superuser = True  # the admin's own permissions pass too
    boss.save()
    staff.force_login(boss)
    for path in (
        f"/api/v1/requests/{HUGE}",
        f"/api/v1/requests/{HUGE}/result",
        f"/queue/requests/{HUGE}/",
        f"/usage/users/{HUGE}/",
        f"/usage/users/{HUGE}/sessions/s-ok/",
        f"/usage/api/summary.json?user={HUGE}",
        f"/usage/api/sessions/s-ok/calls.json?user={HUGE}",
        f"/admin/queueing/llmrequest/{HUGE}/change/",
    ):
        assert staff.get(path).status_code in (302, 404), path  # admin: 302 "does not exist"
    assert staff.post(f"/api/v1/requests/{HUGE}/cancel").status_code == 404
    for path in (f"/usage/users/?page={HUGE}", f"/usage/api/users.json?page={HUGE}"):
        response = staff.get(path)
        assert response.status_code == 400, path
        assert "page must be at most" in response.content.decode()
