"""An organization admin's pages in a real browser (Debian's chromium via Playwright), at a
phone's width and a desktop's.

ada, Acme Legal's admin (a membership role, not staff), logs in through the login form, follows
the Organization entry of the navigation to Acme's usage, a member's dashboard and session,
sets a member's limit (refused above Acme's own, then saved within it), makes a gateway key
(shown once) and revokes it. At 390 px and at 1280 px no page is wider than the screen, every
navigation item is on screen, every chart draws, and nothing of Globex Support — its users'
names, its session id, its cost, its key — is anywhere in a page's HTML. Screenshots go to
docs/screenshots/ (org-*.png, phone-org-*.png).

Fails, never skips, when chromium is missing (``make browser-deps`` installs it).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, ViewportSize, sync_playwright

from llm_calls.emulator.process import EmulatorProcess
from queueing.auth import token_for_key
from queueing.models import Quota
from tests.e2e.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FITS,
    PASSWORD,
    PHONE,
    SCREENSHOTS,
    stat,
    wait_for_charts,
)
from tests.organizations.world import ACME_SESSION, TwoOrgs, build_two_orgs
from usage.models import AuditLog
from usage.pricing import pico_to_usd
from usage.templatetags.usage_format import usd

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP: ViewportSize = {"width": 1280, "height": 900}


def acme_cost(world: TwoOrgs) -> str:
    rows = AuditLog.objects.filter(organization=world.acme)
    return usd(pico_to_usd(sum(rows.values_list("cost_pico_usd", flat=True))))


class Walk:
    """One browser page as ada, checking every page it lands on."""

    def __init__(self, page: Page, world: TwoOrgs, width: int) -> None:
        self.page, self.world, self.width = page, world, width
        self.problems: list[str] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def check(self, what: str, screenshot: str = "") -> None:
        page = self.page
        page.wait_for_load_state("networkidle")
        seen = page.evaluate(FITS)
        if seen["page"] > seen["width"] or seen["hidden"] or seen["cards"]:
            self.problems.append(f"{self.width}px {what}: does not fit: {seen}")
        html = page.content()
        for secret in self.world.globex_secrets:
            if secret in html:
                self.problems.append(f"{self.width}px {what}: shows Globex's {secret!r}")
        if screenshot:
            name = f"phone-{screenshot}" if self.width < 640 else screenshot
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def walk_as_the_org_admin(walk: Walk, base: str) -> None:
    page, world = walk.page, walk.world
    acme = world.acme.pk
    page.goto(f"{base}/accounts/login/?next=/usage/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("form.card button[type=submit]")
    page.wait_for_url(f"{base}/usage/")

    # the Organization entry leads straight to Acme's usage
    page.click(".topbar nav a:has-text('Organization')")
    page.wait_for_url(f"{base}/org/{acme}/")
    charts = wait_for_charts(page)
    assert {c["id"] for c in charts} == {"chart-cost", "chart-tokens", "chart-users"}
    assert stat(page, "cost_usd") == acme_cost(world)
    listed = page.eval_on_selector_all(
        "table.users tr[data-user] td:nth-child(2)", "tds => tds.map(td => td.innerText.trim())"
    )
    assert sorted(listed) == ["acme-helpdesk", "alice"]
    walk.check("organization usage", "org-usage")

    # a member's dashboard, then one of their sessions
    page.click("table.users a:has-text('alice')")
    page.wait_for_url(f"**/org/{acme}/users/{world.alice.pk}/**")
    wait_for_charts(page)
    walk.check("alice's usage")
    page.click(f"tr[data-session='{ACME_SESSION}'] a")
    page.wait_for_url(f"**/org/{acme}/users/{world.alice.pk}/sessions/{ACME_SESSION}/")
    assert wait_for_charts(page)[0]["id"] == "chart-calls"
    walk.check("alice's session")

    # members: a limit above Acme's own is refused with both figures, one within is saved
    page.click(".org-nav a:has-text('Members')")
    page.wait_for_url(f"{base}/org/{acme}/members/")
    walk.check("members", "org-members")
    page.click(f"tr[data-member='{world.alice.pk}'] a:has-text('Set limits')")
    page.fill("#id_tokens_per_day", "2000000")
    page.click("#member-quota-form button[type=submit]")
    refusal = page.locator("[data-error-for='tokens_per_day']").inner_text()
    assert "2,000,000 for alice is above Acme Legal's own daily token limit of 1,000,000" in (
        refusal
    )
    walk.check("the refused limit", "org-member-quota")
    page.fill("#id_tokens_per_day", "400000")
    page.click("#member-quota-form button[type=submit]")
    page.wait_for_url(f"{base}/org/{acme}/members/")
    assert "Limits of alice saved." in page.locator("ul.messages").inner_text()
    assert Quota.objects.get(user=world.alice).tokens_per_day == 400_000
    row = page.locator(f"tr[data-member='{world.alice.pk}']").inner_text()
    assert "400,000" in row

    # a key: made for alice, shown once, then revoked
    page.click(".org-nav a:has-text('Gateway keys')")
    page.wait_for_url(f"{base}/org/{acme}/keys/")
    page.select_option("#id_owner", str(world.alice.pk))
    page.fill("#id_name", f"browser key {walk.width}")
    page.click("#key-form button[type=submit]")
    raw = page.inner_text("#new-key-value").strip()
    token = token_for_key(raw)[0]
    assert token is not None and token.user_id == world.alice.pk
    walk.check("the new key", "org-keys")
    page.goto(f"{base}/org/{acme}/keys/")
    assert raw not in page.content()
    page.click(f"tr[data-key='{token.pk}'] button:has-text('Revoke')")
    page.wait_for_url(f"{base}/org/{acme}/keys/")
    assert page.locator(f"tr[data-key='{token.pk}'] td.state").inner_text() == "revoked"
    assert token_for_key(raw)[0] is None
    walk.check("keys after revoking")

    # Globex does not exist for ada
    response = page.goto(f"{base}/org/{world.globex.pk}/")
    assert response is not None and response.status == 404


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390px", "1280px"])
def test_the_org_admin_walk_fits_and_shows_no_other_organization(
    live_server: Any,
    wired: EmulatorProcess,
    monkeypatch: pytest.MonkeyPatch,
    viewport: ViewportSize,
) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install Debian's chromium"
    world = build_two_orgs(password=PASSWORD)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Playwright's sync API keeps an event loop in this thread; the ORM calls between browser
    # steps are plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            walk = Walk(browser.new_page(viewport=viewport), world, viewport["width"])
            walk_as_the_org_admin(walk, live_server.url)
        finally:
            browser.close()
    assert not walk.errors, f"JavaScript errors: {walk.errors}"
    assert not walk.problems, "\n".join(walk.problems)
    prefix = "phone-" if viewport["width"] < 640 else ""
    for name in ("org-usage", "org-members", "org-member-quota", "org-keys"):
        assert (SCREENSHOTS / f"{prefix}{name}.png").stat().st_size > 10_000, name
