"""The dashboards draw real charts in a real browser (Debian's chromium via Playwright).

Each chart canvas gets ``data-points`` (points drawn) once usage.js has fetched its JSON and
Chart.js has drawn it; a chart that failed gets ``data-state="error"``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore

from tests.usage.world import RANGE, build_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    # Playwright's sync API keeps an event loop running in this thread; the test's own ORM
    # calls are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (make browser-deps)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _logged_in_page(browser, live_server, user):
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    context = browser.new_context()
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": session.session_key,
                "url": live_server.url,
            }
        ]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def _charts(page) -> dict[str, tuple[str | None, int]]:
    page.wait_for_function(
        "() => [...document.querySelectorAll('canvas[data-chart]')]"
        ".every(c => ['drawn', 'empty', 'error'].includes(c.dataset.state))",
        timeout=15_000,
    )
    return page.eval_on_selector_all(
        "canvas[data-chart]",
        "cs => Object.fromEntries(cs.map(c => [c.id, [c.dataset.state, Number(c.dataset.points || 0)]]))",
    )


def test_charts_draw_data(browser, live_server) -> None:
    world = build_world()
    page, errors = _logged_in_page(browser, live_server, world.alice)

    page.goto(f"{live_server.url}/usage/?{RANGE}")
    charts = _charts(page)
    # 3 days x 4 token kinds; 3 days x (cost, uncached); 3 days x (requests, errors)
    assert charts == {
        "chart-tokens": ["drawn", 12],
        "chart-cost": ["drawn", 6],
        "chart-requests": ["drawn", 6],
    }
    assert page.text_content('[data-stat="cost_usd"]') == "$0.0206"

    page.goto(f"{live_server.url}/usage/sessions/s-a/")
    assert _charts(page) == {"chart-calls": ["drawn", 10]}  # 2 calls x (4 kinds + latency)

    page.goto(f"{live_server.url}/usage/caching/?{RANGE}")
    assert _charts(page) == {"chart-cache-tokens": ["drawn", 9], "chart-saved": ["drawn", 3]}
    assert errors == []

    staff_page, staff_errors = _logged_in_page(browser, live_server, world.staff)
    staff_page.goto(f"{live_server.url}/usage/users/?{RANGE}")
    assert _charts(staff_page) == {"chart-users": ["drawn", 4]}  # 2 users x (cost, saved)
    staff_page.goto(f"{live_server.url}/usage/orgs/?{RANGE}")
    assert _charts(staff_page) == {"chart-orgs": ["drawn", 2]}
    assert staff_errors == []
