"""`tally routing ...`, `tally report routing` and `tally report usage`, run as a person would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.analytics_month import build_month
from tests.factories import create_account

TALLY = str(Path(sys.executable).parent / "tally")


def run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TALLY, *args], env=env, capture_output=True, text=True, timeout=120)


def env_for(url: str, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(DATABASE_URL=url, TALLY_HOME=str(tmp_path / "home"))
    return env


def test_scores_import_route_and_the_savings_report_from_the_command_line(clean_db, tmp_path):
    env = env_for(clean_db, tmp_path)
    create_account(clean_db, "acme", "pro")
    scores = tmp_path / "scores.csv"
    scores.write_text("skill,model,score,measured_at,suite_id\n"
                      "review,claude-sonnet,91,2026-10-01T09:00:00Z,s1\n"
                      "review,gpt-4o-mini,78,2026-10-01T09:00:00Z,s1\n"
                      "review,gpt-4o-mini,seventy,2026-10-01T09:00:00Z,s2\n")
    first = run(env, "routing", "scores", "import", str(scores))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["accepted 2  duplicate 0  rejected 1  (new scores for 1 skills)",
                                         "  line 4: score: 'seventy' is not a number"]
    assert run(env, "routing", "scores", "import", str(scores)).stdout.startswith("accepted 0  duplicate 2  rejected 1")
    assert run(env, "routing", "skill", "review", "--default-model", "claude-sonnet").returncode == 0
    routed = run(env, "routing", "route", "acme", "review", "--input-tokens", "1500", "--output-tokens", "400")
    assert routed.returncode == 0, routed.stderr
    assert routed.stdout.startswith("gpt-4o-mini (cheapest of 2 models at or above 75); expected $0.00093 per "
                                    "execution at 1,500 in / 400 out (estimate); decision 1")
    bad = run(env, "routing", "account", "acme", "--slider", "2")
    assert bad.returncode == 1 and "slider: 2 is not between 0" in bad.stderr and "Traceback" not in bad.stderr
    assert "slider 0.5" in run(env, "routing", "account", "acme", "--slider", "0.5").stdout

    ingest_file = tmp_path / "ex.jsonl"
    ingest_file.write_text(json.dumps({
        "event_id": "e1", "account_id": "acme", "agent_id": "a", "skill_id": "review", "model": "gpt-4o-mini",
        "input_tokens": 100000, "output_tokens": 20000, "occurred_at": "2026-10-10T00:00:00Z",
        "routed_model": "gpt-4o-mini", "routing_decision_id": 1}) + "\n")
    assert run(env, "usage", "ingest", str(ingest_file)).stdout.startswith("accepted 1")
    report = run(env, "report", "routing", "--period", "2026-10")
    assert report.returncode == 0, report.stderr
    row = report.stdout.splitlines()[1].split()
    assert row[:2] == ["acme", "review"] and row[-4:] == ["1.20", "0.05", "1.15", "0.57"]
    as_json = json.loads(run(env, "report", "routing", "--period", "2026-10", "--json").stdout)
    assert (as_json["saved_price"], as_json["followed"], as_json["without_default"]) == ("1.15", 1, 0)


def test_report_usage_prints_json_and_writes_the_page(clean_db, tmp_path):
    env = env_for(clean_db, tmp_path)
    build_month(clean_db)
    data = json.loads(run(env, "report", "usage", "--period", "2026-10", "--json").stdout)
    assert data["executions_per_user"][-1]["median"] == "3.00" and len(data["months"]) == 3
    page = tmp_path / "usage.html"
    done = run(env, "report", "usage", "--period", "2026-10", "--months", "2", "--html", str(page))
    assert done.returncode == 0, done.stderr
    html = page.read_text()
    assert html.count('<figure class="chart"') == 8 and "<script" not in html and "all accounts" in html
    text = run(env, "report", "usage", "--period", "2026-10")
    assert "Churn by usage decile" in text.stdout and "96.16" in text.stdout
    bad = run(env, "report", "usage", "--period", "2026-10", "--months", "0")
    assert bad.returncode == 1 and "months: must be a whole number from 1 to 24" in bad.stderr
