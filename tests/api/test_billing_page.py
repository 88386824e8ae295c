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


@needs_chromium
def test_billing_page_of_a_contract_account_shows_the_commitment_and_how_much_this_month_used(api):
    from datetime import date, datetime, timezone

    from billing.catalog import load_catalog
    from models.db import get_engine
    from services.contracts import create_contract

    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    create_contract(get_engine(api.database_url), load_catalog(), account_id="ent", commitment=100_000,
                    start=date(2026, 10, 17), months=12, now=NOW)
    start = datetime(2026, 10, 17, tzinfo=timezone.utc)
    docs = [event("ent", i, start + timedelta(seconds=60 * i)) for i in range(12_000)]  # Oct 17 - Oct 25
    assert ingest(api.database_url, docs, now=NOW).accepted == 12_000
    link = billing_link(api.url, api.settings.effective_api_secret(), "ent", hours=24)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            response = page.goto(link, wait_until="load")
            assert response is not None and response.status == 200
            # October from the 17th: 100,000 x 15/31 = 48,387 committed; 12,000 used so far = 24.8%
            assert page.locator("#commitment-used").inner_text() == "12,000"
            assert page.locator("#commitment-committed").inner_text() == "48,387"
            assert page.locator("#commitment-percent").inner_text() == "24.8%"
            card = page.locator("#commitment").inner_text()
            assert "36,387 left" in card and "100,000/month, 20% off, until 2027-10-16" in card
            bar = float(page.locator("#commitment-bar").get_attribute("width"))
            assert bar == round(12_000 * 180 / 48_387, 1)
            # the month so far as the close would bill it: the committed use, used or not
            assert page.locator("#mtd-total").inner_text().strip() == "$309.68"
            assert "Committed use — 100,000 executions/month (20% off)" in page.locator("#lines").inner_text()
        finally:
            browser.close()
