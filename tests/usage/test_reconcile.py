"""The reconciler against the real emulator: gateway traffic plus direct traffic on the same key."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from llm_calls.client import app_client
from queueing import services as queueing
from tests.usage.factories import make_user
from usage import reconcile
from usage.models import AuditLog, ReconciliationDay, ReconciliationRun

MODEL = "claude-sonnet-5-5"
GATEWAY_KEY = "sk-ant-test-gateway"  # what the gateway fixture configures
LONG_SYSTEM = "You answer questions about the reconciliation of invoices. " * 400
SUMMARY_KEYS = ["days", "match", "unattributed", "missing_from_audit", "price_drift_usd"]
SIDE_KEYS = {
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cost_usd",
}


@pytest.fixture
def books(gateway, settings):
    settings.ANTHROPIC_ADMIN_API_KEY = "sk-ant-admin01-test"
    settings.ANTHROPIC_API_KEY_ID = gateway.emulator.api_key_id(GATEWAY_KEY)
    user = make_user("ann")
    for i in range(3):  # the same long system prompt: the cache planner writes, then reads
        queueing.call_claude(
            user=user,
            session_id="recon",
            model=MODEL,
            system=LONG_SYSTEM,
            messages=[{"role": "user", "content": f"Question {i}: what is a credit note?"}],
            max_tokens=2000,
        )
    direct = app_client(base_url=gateway.emulator.base_url, api_key=GATEWAY_KEY, max_retries=0)
    bypass = [
        direct.messages.create(
            model=MODEL,
            max_tokens=300,
            system=[{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": f"Bypass {i}"}],
        ).usage
        for i in range(2)
    ]
    # Another key of the organization: not the gateway's, so never "unattributed".
    other = app_client(base_url=gateway.emulator.base_url, api_key="sk-ant-other-team")
    other.messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Other team"}]
    )
    return bypass


def expected_unattributed(bypass) -> dict[str, int]:
    return {
        "input_tokens": sum(u.input_tokens for u in bypass),
        "output_tokens": sum(u.output_tokens for u in bypass),
        "cache_read_input_tokens": sum(u.cache_read_input_tokens or 0 for u in bypass),
        "cache_creation_input_tokens": sum(u.cache_creation_input_tokens or 0 for u in bypass),
    }


def bypass_cost_pico(bypass) -> int:
    """What the direct calls cost at the gateway's own recorded rates (same model and tier)."""
    card = AuditLog.objects.filter(model=MODEL, outcome=AuditLog.Outcome.SUCCESS)[0].rate_card
    return sum(
        card.cost_pico_counts(
            input_tokens=u.input_tokens,
            cache_write_5m_tokens=u.cache_creation_input_tokens or 0,
            cache_write_1h_tokens=0,
            cache_read_tokens=u.cache_read_input_tokens or 0,
            output_tokens=u.output_tokens,
            web_search_requests=0,
        )
        for u in bypass
    )


def run_today() -> ReconciliationRun:
    since, until = reconcile.default_window()
    return reconcile.reconciliation_run(since=until, until=until)


def test_exactly_the_direct_traffic_is_unattributed_and_the_rest_matches(books) -> None:
    assert all((u.cache_creation_input_tokens or u.cache_read_input_tokens) for u in books)
    run = run_today()
    line = run.result["summary"]
    assert line["match"] is True
    unattributed = {k: v for k, v in line["unattributed"].items() if k != "cost_usd"}
    assert unattributed == expected_unattributed(books)
    assert line["missing_from_audit"] == dict.fromkeys(SIDE_KEYS - {"cost_usd"}, 0) | {
        "cost_usd": 0.0
    }
    assert line["price_drift_usd"] == 0.0

    (day,) = run.result["days"]
    pico = {k: Decimal(v) for k, v in day["pico_usd"].items()}
    assert pico["price_drift"] == 0
    assert pico["unattributed_cost"] == bypass_cost_pico(books)
    assert line["unattributed"]["cost_usd"] == pytest.approx(
        float(reconcile.usd(bypass_cost_pico(books))), abs=1e-6
    )
    # Anthropic's bill for the day = our audit_log + the bypass + the other team, exactly.
    ours = sum(r.cost_pico_usd for r in AuditLog.objects.all())
    assert pico["our_cost"] == ours
    assert pico["their_cost"] == ours + pico["unattributed_cost"] + pico["other_keys_cost"]
    assert pico["other_keys_cost"] > 0
    # Gateway traffic matches to the token, kind by kind.
    assert day["missing_from_audit"] == dict.fromkeys(reconcile.KINDS, 0)
    for kind, value in day["ours"].items():
        assert day["theirs_our_key"][kind] == value + day["unattributed"][kind]
    assert not day["final"]  # today has not settled


def test_running_twice_stores_the_same_result(books) -> None:
    first = run_today()
    second = run_today()
    assert second.pk != first.pk
    assert second.result == first.result
    assert ReconciliationDay.objects.count() == 1
    assert ReconciliationDay.objects.get().run_id == second.pk


def test_a_recorded_call_anthropic_never_billed_breaks_the_match(books) -> None:
    row = AuditLog.objects.filter(outcome=AuditLog.Outcome.SUCCESS)[0]
    # Recorded a second time, under a model Anthropic billed nothing for today (a difference
    # in a cell where the key also has direct traffic would be netted against it: the reports
    # are sums, and cannot say which call was which).
    row.pk = None
    row.client_request_id = None
    row.model = "claude-haiku-5-5"
    row.save()
    line = run_today().result["summary"]
    assert line["match"] is False
    assert line["missing_from_audit"]["output_tokens"] == row.output_tokens
    assert line["missing_from_audit"]["cost_usd"] == pytest.approx(
        float(reconcile.usd(row.cost_pico_usd)), abs=1e-6
    )
    assert line["unattributed"]["output_tokens"] == expected_unattributed(books)["output_tokens"]


def test_a_price_that_differs_from_anthropics_is_drift(books) -> None:
    AuditLog.objects.filter(outcome=AuditLog.Outcome.SUCCESS).update(
        output_rate_pico_usd=1_000_000_000  # $1,000 per MTok: far above the real rate
    )
    line = run_today().result["summary"]
    assert line["match"] is False
    assert line["price_drift_usd"] < 0  # Anthropic charged less than our sheet says


def test_command_prints_the_json_summary_last(books) -> None:
    out = StringIO()
    call_command("reconcile", stdout=out)
    last = json.loads(out.getvalue().strip().splitlines()[-1])
    assert list(last) == SUMMARY_KEYS
    assert set(last["unattributed"]) == SIDE_KEYS == set(last["missing_from_audit"])
    assert last["match"] is True
    assert last["unattributed"]["output_tokens"] == expected_unattributed(books)["output_tokens"]
    assert len(last["days"]) == 7


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-13-01"], "--since must be a date"),
        (["--since", "2026-12-03", "--until", "2026-12-01"], "is before --since"),
    ],
)
def test_command_refuses_bad_dates(args, message, settings) -> None:
    settings.ANTHROPIC_ADMIN_API_KEY = "sk-ant-admin01-test"
    settings.ANTHROPIC_API_KEY_ID = "apikey_x"
    with pytest.raises(CommandError, match=message):
        call_command("reconcile", *args, stdout=StringIO())


@pytest.mark.django_db
def test_command_needs_an_admin_key(settings) -> None:
    settings.ANTHROPIC_ADMIN_API_KEY = ""
    settings.ANTHROPIC_API_KEY_ID = "apikey_x"
    with pytest.raises(CommandError, match="ANTHROPIC_ADMIN_API_KEY"):
        call_command("reconcile", stdout=StringIO())
    assert not ReconciliationRun.objects.exists()


def test_staff_page_and_metrics_show_the_unattributed_spend(books, settings) -> None:
    run = run_today()
    (day,) = run.result["days"]
    client = Client()
    client.force_login(make_user("clerk"))
    assert client.get("/usage/reconciliation/").status_code == 403
    client.force_login(make_user("finance", staff=True))
    page = client.get("/usage/reconciliation/").content.decode()
    assert f'data-day="{day["day"]}"' in page
    assert "Unattributed spend" in page and "did not go through the gateway" in page
    assert "(provisional)" in page

    unattributed = run.result["summary"]["unattributed"]["cost_usd"]
    settings.RECONCILE_ALERT_USD = unattributed / 2
    metrics = client.get("/metrics").content.decode()
    assert f"claude_gateway_reconciliation_unattributed_usd {unattributed}" in metrics
    assert "claude_gateway_reconciliation_match 1.0" in metrics
    assert "claude_gateway_reconciliation_alert 1.0" in metrics
    settings.RECONCILE_ALERT_USD = unattributed * 2
    assert "claude_gateway_reconciliation_alert 0.0" in client.get("/metrics").content.decode()


def report_calls(emulator) -> list[dict]:
    return [e for e in emulator.log() if "/v1/organizations/" in str(e.get("path"))]


def test_a_final_matched_day_is_not_fetched_again(books, emulator) -> None:
    today = reconcile.default_window()[1]
    later = timezone.now() + dt.timedelta(days=2)  # today has settled by then
    first = reconcile.reconciliation_run(since=today, until=today, now=later)
    assert first.final and first.match
    reports_read = len(report_calls(emulator))
    assert reports_read == 2  # one page of each report
    AuditLog.objects.update(model="claude-haiku-5-5")  # would not match, were it recomputed
    again = reconcile.reconciliation_run(since=today, until=today, now=later)
    assert again.result == first.result
    assert len(report_calls(emulator)) == reports_read
    recomputed = reconcile.reconciliation_run(since=today, until=today, now=later, refetch=True)
    assert recomputed.match is False
