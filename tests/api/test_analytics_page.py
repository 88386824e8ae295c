"""The usage analytics page renders in a real browser (Debian's chromium through Playwright, like the
billing page): every chart is drawn with data, and every number in its tables is the JSON's
(GET /v1/analytics/usage), on the hand-built month of tests/analytics_month.py."""

from __future__ import annotations

import pytest

from api.analytics_page import TABLES, table_rows
from models.db import get_engine
from repositories import platforms
from services.platforms import assign_platform
from tests.analytics_month import build_month
from tests.api.test_billing_page import CHROMIUM, CHROMIUM_ARGS, needs_chromium

CHARTS = ("users-histogram", "users-percentiles", "tokens", "model-mix", "byok", "funnel", "churn", "tiers")


def platform_with_the_month(api) -> str:
    key = api.platform("p")
    build_month(api.database_url)
    with get_engine(api.database_url).begin() as conn:
        pid = platforms.platform_by_name(conn, "p").id
        for account in ("a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"):
            assign_platform(conn, account, pid)
    return key


def test_the_page_and_the_json_need_the_platform_key_and_show_only_its_accounts(api):
    key = platform_with_the_month(api)
    assert api.client().get("/ops/usage", params={"period": "2026-10"}).status_code == 401
    other = api.client(api.platform("other")).get("/v1/analytics/usage", params={"period": "2026-10"}).json()
    assert other["executions_per_user"] == [] and other["tiers"] == []
    mine = api.client(key).get("/v1/analytics/usage", params={"period": "2026-10", "months": 1}).json()
    assert mine["executions_per_user"][0]["median"] == "3.00"
    r = api.client(key).get("/ops/usage", params={"period": "2026-13"})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "period")


@needs_chromium
def test_the_analytics_page_renders_every_chart_with_data_and_its_tables_match_the_json(api, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    key = platform_with_the_month(api)
    params = {"period": "2026-10", "months": 3}
    data = api.client(key).get("/v1/analytics/usage", params=params).json()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 900},
                                          extra_http_headers={"Authorization": f"Bearer {key}"})
            page = context.new_page()
            requests: list[str] = []
            page.on("request", lambda req: requests.append(req.url))
            response = page.goto(f"{api.url}/ops/usage?period=2026-10&months=3", wait_until="load")
            assert response is not None and response.status == 200
            assert "default-src 'none'" in response.headers["content-security-policy"]
            assert requests == [response.url]  # nothing else fetched: no CDN, works offline
            assert page.locator("script").count() == 0

            for chart in CHARTS:
                figure = page.locator(f"#chart-{chart}")
                assert figure.locator("svg").count() == 1, chart
                box = figure.bounding_box()
                assert box and box["width"] > 300 and box["height"] > 150, chart
                assert int(figure.get_attribute("data-points")) > 0, chart
                drawn = figure.locator("svg rect.reactive").evaluate_all(
                    "els => els.filter(e => e.getBBox().width > 0 && e.getBBox().height > 0).length")
                assert drawn > 0, f"chart {chart} draws no bar"
                assert "no data" not in figure.inner_text(), chart

            for tid, _title, path, fields in TABLES:
                rows = table_rows(data, path)
                assert rows, f"table {tid} is empty in the JSON"
                shown = page.locator(f"#table-{tid} tr").evaluate_all(
                    "trs => trs.slice(1).map(tr => Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim()))")
                # The page prints thousands separators and "—" for none; otherwise the JSON's own text.
                assert [[text.replace(",", "") for text in r] for r in shown] == \
                    [["—" if row[f] is None else str(row[f]).replace(",", "") for f in fields] for row in rows], tid
            assert page.locator("#card-median").inner_text().strip() == "3.00"
            page.screenshot(path=str(tmp_path / "analytics-page.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "analytics-page.png").stat().st_size > 20_000

