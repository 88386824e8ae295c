"""The billing page renders in a real browser: Debian's chromium driven by Playwright (no browser is
ever downloaded). Skipped, with the reason, where /usr/bin/chromium is not installed; CI installs it."""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from activities.close import CloseActivities
from activities.deps import Deps
from billing.money import format_usd
from models.schemas import AccountRange, CloseChunkInput
from services.accounts import billing_link
from tests.api.conftest import NOW
from tests.factories import OCT_START, event, ingest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"Debian's chromium is not installed ({CHROMIUM} missing): `apt-get install -y chromium` "
           "(.ci/run does it in CI); Playwright never downloads a browser here",
)


@needs_chromium
def test_billing_page_shows_the_month_to_date_total_and_one_bar_per_active_day(api, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    key = api.platform("p")
    api.account("web", "pro", platform="p", overage=True)
    active_days = [1, 2, 5, 9, 17, 24]
    docs = []
    n = 0
    for d in active_days:  # 5,800 executions in all: past Pro's 5,000, so overage is billed
        for i in range(d * 100):
            docs.append(event("web", n, OCT_START + timedelta(days=d - 1, seconds=i * 7),
                              ("claude-haiku", "gpt-4o")[n % 2], agent_id=f"agent-{n % 4}"))
            n += 1
    docs += [event("web", 10_000 + i, OCT_START - timedelta(days=10, minutes=i)) for i in range(30)]  # September
    assert ingest(api.database_url, docs, now=NOW).accepted == len(docs)
    CloseActivities(Deps(api.settings)).rate_accounts(
        CloseChunkInput(period="2026-09", index=0, accounts=AccountRange(after=None, upto="~", count=0)))
    mtd = api.client(key).get("/v1/accounts/web/entitlement", params={"model": "gpt-4o"}).json()[
        "month_to_date_charges"]
    assert Decimal(mtd) > Decimal("29.00")

    link = billing_link(api.url, api.settings.effective_api_secret(), "web", hours=24)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            response = page.goto(link, wait_until="load")
            assert response is not None and response.status == 200
            assert page.locator("#mtd-total").inner_text().strip() == format_usd(Decimal(mtd))
            bars = page.locator("#daily-chart rect.bar")
            assert bars.count() == len(active_days)
            days = [bars.nth(i).get_attribute("data-day") for i in range(bars.count())]
            assert days == [f"2026-10-{d:02d}" for d in active_days]
            heights = [float(bars.nth(i).get_attribute("height")) for i in range(bars.count())]
            assert heights == sorted(heights) and heights[-1] > heights[0]  # busier days, taller bars
            box = page.locator("#daily-chart").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100
            assert page.locator("#by-agent tr").count() == 1 + 4
            assert page.locator("#by-model").inner_text().count("gpt-4o") == 1
            assert "2026-09" in page.locator("#invoices").inner_text()
            page.screenshot(path=str(tmp_path / "billing-page.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "billing-page.png").stat().st_size > 10_000
    assert urlsplit(link).path == "/accounts/web/billing"
