"""The dashboards in a real browser: Debian's chromium, driven by Playwright, against a live server.

Data comes from the gateway itself (real calls through ``call_claude`` to the emulator) plus two
weeks of history recorded with ``usage.services.record_call``. A person logs in through the login
form, opens their usage dashboard, a session, the queue page (and submits the "ask Claude" form),
then staff open the all-users page and the staff queue page. Every chart must have drawn points
(usage.js marks each canvas ``data-state="drawn"`` with ``data-points``) and the numbers on the page
and in the charts must match the database. The staff queue page must follow the queue live (a new
request, a dispatch, an outage) without reloading. Screenshots go to docs/screenshots/ for the
README.

This test fails, never skips, when chromium is missing (``make browser-deps`` installs it).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum
from django.utils import timezone
from playwright.sync_api import Page, ViewportSize, sync_playwright

from llm_calls.emulator.process import EmulatorProcess
from llm_calls.types import Usage
from queueing import dispatcher, services
from queueing.models import LLMRequest
from tests.e2e.conftest import MODEL
from tests.usage.factories import make_org, make_user
from usage import services as usage_services
from usage.models import AuditLog
from usage.pricing import pico_to_usd
from usage.templatetags.usage_format import num, usd

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "a-long-test-password-42"
SESSION = "support-bot"
SYSTEM = [
    {
        "type": "text",
        "text": "You answer customer questions about invoices, briefly. " * 120,
        "cache_control": {"type": "ephemeral"},
    }
]
HISTORY = [  # (days ago, user, session, model, input, output, cache read, cache write)
    (13, "alice", SESSION, "claude-sonnet-4-6", 1800, 400, 0, 6000),
    (12, "alice", SESSION, "claude-sonnet-4-6", 300, 350, 6000, 0),
    (10, "alice", "nightly-report", "claude-haiku-4-5", 9000, 1200, 0, 0),
    (8, "alice", SESSION, "claude-sonnet-4-6", 250, 500, 6000, 0),
    (6, "alice", "nightly-report", "claude-haiku-4-5", 8800, 1100, 0, 0),
    (4, "alice", SESSION, "claude-sonnet-4-6", 420, 380, 6000, 0),
    (2, "alice", "code-review", "claude-opus-4-5", 5200, 2600, 0, 0),
    (1, "alice", SESSION, "claude-sonnet-4-6", 310, 290, 6000, 0),
    (11, "bob", "bulk-tagging", "claude-haiku-4-5", 22000, 3000, 0, 0),
    (5, "bob", "bulk-tagging", "claude-haiku-4-5", 21000, 2900, 0, 0),
    (3, "carol", "drafts", "claude-opus-4-5", 4000, 3000, 0, 0),
]


def build_history() -> dict[str, User]:
    org = make_org("Acme Support")
    users = {
        "alice": make_user("alice", org=org, password=PASSWORD),
        "bob": make_user("bob", org=org),
        "carol": make_user("carol", org=org),
        "root": make_user("root", staff=True, password=PASSWORD),
    }
    now = timezone.now()
    for i, (days, who, session, model, inp, out, read, write) in enumerate(HISTORY):
        usage_services.record_call(
            user=users[who],
            organization=org,
            session_id=session,
            model=model,
            priority="interactive",
            outcome=AuditLog.Outcome.SUCCESS,
            attempts=1 + i % 3 // 2,
            final_status=200,
            error_type="",
            usage=Usage(
                input_tokens=inp,
                output_tokens=out,
                cache_read_input_tokens=read,
                cache_creation_input_tokens=write,
            ),
            latency_ms=900 + 37 * i,
            queue_wait_ms=40 * i,
            request_id=f"req_history_{i}",
            occurred_at=now - dt.timedelta(days=days, hours=i % 5),
        )
    usage_services.record_call(  # one that failed for good after the retries ran out
        user=users["alice"],
        organization=org,
        session_id="nightly-report",
        model="claude-haiku-4-5",
        priority="bulk",
        outcome=AuditLog.Outcome.FAILED,
        attempts=6,
        final_status=529,
        error_type="overloaded_error",
        usage=None,
        latency_ms=31_000,
        queue_wait_ms=500,
        request_id="req_history_failed",
        occurred_at=now - dt.timedelta(days=9),
    )
    # Today, through the gateway itself: a cache write, then reads of the same system prompt.
    for question in ("Why was invoice 1182 charged twice?", "Can I get a refund?", "Thanks!"):
        services.call_claude(
            user=users["alice"],
            session_id=SESSION,
            model=MODEL,
            system=SYSTEM,
            messages=[{"role": "user", "content": question}],
            max_tokens=200,
        )
    return users


def cost_of(rows: Any) -> Decimal:
    """Exact USD of audit rows, summed from the stored picodollars."""
    return pico_to_usd(rows.aggregate(total=Sum("cost_pico_usd"))["total"] or 0)


def wait_for_charts(page: Page) -> list[dict[str, Any]]:
    """Wait until usage.js has finished every chart; return each canvas's id, state and points."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('canvas[data-chart]')].every(
               c => ['drawn', 'empty', 'error'].includes(c.dataset.state))""",
        timeout=15_000,
    )
    charts: list[dict[str, Any]] = page.eval_on_selector_all(
        "canvas[data-chart]",
        """cs => cs.map(c => ({id: c.id, state: c.dataset.state, error: c.dataset.error || '',
                              points: Number(c.dataset.points || 0)}))""",
    )
    assert charts, "no charts on the page"
    for chart in charts:
        assert chart["state"] == "drawn" and chart["points"] > 0, chart
    return charts


def dataset_sum(page: Page, canvas_id: str, index: int) -> float:
    """The sum of one dataset as Chart.js holds it (what was actually plotted)."""
    return float(
        page.evaluate(
            "([id, i]) => Chart.getChart(document.getElementById(id)).data.datasets[i].data"
            ".reduce((a, b) => a + b, 0)",
            [canvas_id, index],
        )
    )


# staff_queue.js counts its updates in data-refreshes and names its state in data-state.
STAFF_PAGE_REFRESHED = (
    "n => Number(document.getElementById('staff-queue').dataset.refreshes || 0) >= n"
)
STAFF_PAGE_STATE = "s => document.getElementById('staff-queue').dataset.state === s"


def stat(page: Page, name: str) -> str:
    return page.locator(f'[data-stat="{name}"]').first.inner_text().strip()


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/?next=/usage/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"{base}/usage/")


def test_dashboards_draw_the_database_in_a_real_browser(
    live_server: Any, wired: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (`make browser-deps`)"
    )
    users = build_history()
    alice, root = users["alice"], users["root"]
    mine = AuditLog.objects.filter(user=alice)
    expected_requests = mine.count()
    expected_cost = cost_of(mine)
    session_rows = mine.filter(session_id=SESSION)
    everyone = AuditLog.objects.all()
    by_cost = sorted(
        (u.username for u in users.values() if everyone.filter(user=u).exists()),
        key=lambda name: -cost_of(everyone.filter(user__username=name)),
    )
    expected_errors = mine.filter(outcome=AuditLog.Outcome.FAILED).count()
    assert (expected_requests, expected_errors, session_rows.count()) == (12, 1, 8)
    assert session_rows.filter(cache_read_input_tokens__gt=0).count() >= 5  # history + gateway

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Playwright's sync API keeps an event loop in this thread; the ORM calls below are plain
    # synchronous code between browser steps, so Django's async guard can be lifted here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = live_server.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            # -- my usage
            log_in(page, base, "alice")
            charts = wait_for_charts(page)
            assert {c["id"] for c in charts} == {"chart-tokens", "chart-cost", "chart-requests"}
            assert stat(page, "requests") == num(expected_requests)
            assert stat(page, "errors") == num(expected_errors)
            assert stat(page, "cost_usd") == usd(expected_cost)
            assert dataset_sum(page, "chart-requests", 1) == expected_errors
            assert dataset_sum(page, "chart-requests", 0) == expected_requests
            assert dataset_sum(page, "chart-cost", 0) == pytest.approx(float(expected_cost))
            page.screenshot(path=str(SCREENSHOTS / "usage.png"), full_page=True)

            # the 7-day filter, through the page's own buttons
            page.click("a.btn:has-text('7 days')")
            page.wait_for_url("**/usage/?days=7")
            wait_for_charts(page)
            first_day = timezone.now().date() - dt.timedelta(days=6)  # "7 days": today and 6 before
            week = mine.filter(
                occurred_at__gte=dt.datetime.combine(first_day, dt.time.min, tzinfo=dt.UTC)
            )
            assert stat(page, "requests") == num(week.count())
            assert dataset_sum(page, "chart-requests", 0) == week.count()

            # -- one session, reached by its link
            page.click(f"tr[data-session='{SESSION}'] a")
            page.wait_for_url(f"**/usage/sessions/{SESSION}/")
            charts = wait_for_charts(page)
            assert charts[0]["id"] == "chart-calls"
            assert stat(page, "requests") == num(session_rows.count())
            assert stat(page, "cost_usd") == usd(cost_of(session_rows))
            assert page.locator("tr[data-call]").count() == session_rows.count()
            cache_read = sum(session_rows.values_list("cache_read_input_tokens", flat=True))
            assert dataset_sum(page, "chart-calls", 2) == cache_read  # "Cache read" dataset
            page.screenshot(path=str(SCREENSHOTS / "session.png"), full_page=True)

            # -- the queue page: ask Claude through the form (no worker runs: it stays queued)
            page.goto(f"{base}/queue/")
            page.fill("#id_session_id", "browser-test")
            page.fill("#id_prompt", "Summarise yesterday's tickets in three bullets.")
            page.fill("#id_max_tokens", "300")
            page.click("form.narrow button[type=submit]")
            page.wait_for_url(f"{base}/queue/")
            queued = LLMRequest.objects.get(session_id="browser-test")
            assert queued.status == LLMRequest.Status.QUEUED and queued.user_id == alice.pk
            assert f"Request {queued.pk} queued." in page.locator("ul.messages").inner_text()
            row = page.locator(f"#pending-table tr[data-id='{queued.pk}']")
            assert row.locator("td.status").inner_text() == "queued"
            assert row.locator("td.position").inner_text().strip() == "1"
            finished = page.locator("section.card:has-text('Recently finished') tbody tr")
            assert finished.count() == 3  # the three calls made through the gateway today
            page.screenshot(path=str(SCREENSHOTS / "queue.png"), full_page=True)

            # -- staff: every user
            page.click("form.logout button")
            page.wait_for_url("**/accounts/login/")
            log_in(page, base, root.username)
            page.goto(f"{base}/usage/users/")
            charts = wait_for_charts(page)
            assert charts[0]["id"] == "chart-users"
            assert stat(page, "requests") == num(everyone.count())
            total = cost_of(everyone)
            assert stat(page, "cost_usd") == usd(total)
            assert dataset_sum(page, "chart-users", 0) == pytest.approx(float(total))
            listed = page.eval_on_selector_all(
                "tr[data-user] td:nth-child(2)", "tds => tds.map(td => td.innerText.trim())"
            )
            assert listed == by_cost  # highest cost first, as the page says
            page.screenshot(path=str(SCREENSHOTS / "users.png"), full_page=True)

            # -- staff: the queue page, live. alice's request from the form is at the head of
            # its class; what happens to the queue next shows without a reload.
            page.goto(f"{base}/queue/staff/")
            assert page.get_attribute("#staff-queue", "data-state") == "live"
            alice_head = page.locator(f"#heads-body tr[data-request-id='{queued.pk}']")
            assert alice_head.locator("td.user").inner_text() == "alice"
            assert alice_head.locator("td.class-position").inner_text() == "1"
            assert page.inner_text("#stat-queued") == "1"
            assert page.inner_text("#in-flight-body") == "Nothing in flight."
            page.wait_for_function(STAFF_PAGE_REFRESHED, arg=1, timeout=10_000)
            page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads

            # someone whose name is markup submits an interactive request (a class ahead)
            hostile = make_user('<img src="x" onerror="window.pwned = 1">eve')
            urgent = services.submit_request(
                user=hostile,
                session_id="browser-live",
                model=MODEL,
                messages=[{"role": "user", "content": "Is the queue moving?"}],
                max_tokens=50,
                priority="interactive",
            )
            page.wait_for_function(
                """([id]) => document.querySelector(`#heads-body tr[data-request-id="${id}"]`)
                     && document.getElementById('stat-queued').textContent === '2'""",
                arg=[urgent.pk],
                timeout=10_000,
            )
            urgent_head = page.locator(f"#heads-body tr[data-request-id='{urgent.pk}']")
            assert urgent_head.locator("td.user").inner_text() == hostile.username  # as text
            assert page.locator("#staff-queue img").count() == 0  # never as markup
            assert alice_head.locator("td.position").inner_text() == "2"  # now behind it
            users = page.eval_on_selector_all(
                "#users-body tr td.user", "tds => tds.map(td => td.textContent)"
            )
            assert sorted(users) == sorted(["alice", hostile.username])

            # a dispatcher takes both (no worker runs: they stay in flight)
            assert set(dispatcher.dispatch_once().dispatched) == {queued.pk, urgent.pk}
            page.wait_for_function(
                """([a, b]) => [a, b].every(
                       id => document.querySelector(`#in-flight-body tr[data-request-id="${id}"]`))
                     && document.getElementById('stat-queued').textContent === '0'
                     && document.getElementById('stat-inflight').textContent === '2'""",
                arg=[queued.pk, urgent.pk],
                timeout=10_000,
            )
            assert page.inner_text("#heads-body") == "Nothing queued."
            flight = page.locator(f"#in-flight-body tr[data-request-id='{queued.pk}']")
            assert flight.locator("td.status").inner_text() == "dispatched"
            assert re.fullmatch(
                r"updated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page.inner_text("#live-updated")
            )

            # the server unreachable, then answering 503: the page says so, keeps its figures
            notice = page.locator("#live-notice")
            assert not notice.is_visible()
            page.route("**/queue/staff/data", lambda route: route.abort())
            page.wait_for_function(STAFF_PAGE_STATE, arg="stale", timeout=10_000)
            assert notice.is_visible() and "could not be reached" in notice.inner_text()
            page.unroute("**/queue/staff/data")
            outage = json.dumps({"error": {"type": "service_unavailable", "message": "Redis down"}})
            page.route(
                "**/queue/staff/data",
                lambda route: route.fulfill(
                    status=503, content_type="application/json", body=outage
                ),
            )
            page.wait_for_function(STAFF_PAGE_STATE, arg="unavailable", timeout=10_000)
            assert "Queue unavailable: Redis down" in notice.inner_text()
            assert flight.is_visible()  # the last figures stay, marked as such
            page.unroute("**/queue/staff/data")
            page.wait_for_function(STAFF_PAGE_STATE, arg="live", timeout=10_000)
            assert not notice.is_visible()
            assert page.evaluate("() => window.sameDocument") is True  # never reloaded
            assert page.evaluate("() => window.pwned") is None

            assert not errors, f"JavaScript errors: {errors}"
        finally:
            browser.close()
    for name in ("usage", "session", "queue", "users"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000, name


PHONE: ViewportSize = {"width": 390, "height": 844}
# Every page a person, then staff, opens; each must fit a phone's width.
PHONE_PAGES = {
    "alice": ["/usage/", f"/usage/sessions/{SESSION}/", "/usage/caching/", "/queue/"],
    "root": ["/usage/users/", "/usage/orgs/", "/queue/staff/"],
}
FITS = """() => {
    const width = window.innerWidth;
    const page = document.documentElement.scrollWidth;
    const hidden = [...document.querySelectorAll('.topbar nav a')].filter(a => {
        const box = a.getBoundingClientRect();
        return box.width === 0 || box.right > width + 1 || box.left < -1;
    }).map(a => a.textContent);
    const cards = [...document.querySelectorAll('main .card, main .stat, canvas')].filter(
        el => el.getBoundingClientRect().right > width + 1).map(el => el.id || el.className);
    return {width, page, hidden, cards};
}"""


def test_every_page_fits_a_phone_with_its_navigation_usable(
    live_server: Any, wired: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 390 px no page is wider than the screen, every nav item is on screen, and cards,
    charts and tables stay inside it (a wide table scrolls within its card)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium"
    build_history()
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = live_server.url
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for username, paths in PHONE_PAGES.items():
                page = browser.new_page(viewport=PHONE)
                log_in(page, base, username)
                for path in paths:
                    page.goto(f"{base}{path}")
                    page.wait_for_load_state("networkidle")
                    seen = page.evaluate(FITS)
                    if seen["page"] > seen["width"] or seen["hidden"] or seen["cards"]:
                        problems.append(f"{username} {path}: {seen}")
                    if path in ("/usage/", "/queue/"):
                        name = path.strip("/").replace("/", "-") or "usage"
                        page.screenshot(path=str(SCREENSHOTS / f"phone-{name}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
