"""Model routing over HTTP: POST /v1/route on the live API (the seed's table, recorded decisions, other
platforms' accounts), the account's settings, skills, and CSV score imports."""

from __future__ import annotations

from tests.api.conftest import NOW
from tests.factories import event

SEED_CSV = """skill,model,score,measured_at,suite_id
code-reviewer,claude-haiku,62,2026-10-01T09:00:00Z,suite-7
code-reviewer,claude-sonnet,91,2026-10-01T09:00:00Z,suite-7
code-reviewer,gpt-4o-mini,78,2026-10-01T09:00:00Z,suite-7
commit-message,claude-haiku,89,2026-10-01T09:00:00Z,suite-7
commit-message,claude-sonnet,95,2026-10-01T09:00:00Z,suite-7
commit-message,gpt-4o-mini,87,2026-10-01T09:00:00Z,suite-7
"""


def setup(api):
    key = api.platform("p")
    api.account("acme", "pro", platform="p")
    c = api.client(key)
    r = c.post("/v1/routing/scores", content=SEED_CSV + "bad,gpt-9,1,2026-10-01T09:00:00Z,s\n",
               headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 6, "duplicates": 0, "rejected": 1,
                        "rejections": [{"line": 8, "reason": "model: unknown model 'gpt-9'"}]}
    return c


def test_route_answers_the_model_why_its_cost_and_the_alternatives_and_records_the_decision(api):
    c = setup(api)
    r = c.post("/v1/route", json={"account_id": "acme", "skill_id": "commit-message",
                                  "expected_input_tokens": 1500, "expected_output_tokens": 400})
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["model"], d["provider"], d["reason"], d["expected_cost"]) == (
        "gpt-4o-mini", "openai", "cheapest of 3 models at or above 75", "0.00093")
    assert [a["model"] for a in d["alternatives"]] == ["claude-haiku", "claude-sonnet"]  # cheapest first
    assert r.headers["Server-Timing"].startswith("app;dur=")
    # The platform sends the decision back with the execution.
    ex = event("acme", 1, NOW.replace(day=20), d["model"], skill_id="commit-message", routed_model=d["model"],
               routing_decision_id=d["decision_id"])
    assert c.post("/v1/executions", json=ex).json()["accepted"] == 1
    again = c.post("/v1/route", json={"account_id": "acme", "skill_id": "commit-message"}).json()
    assert again["decision_id"] == d["decision_id"] + 1
    assert again["token_mix"]["source"] == "history"


def test_route_refuses_other_platforms_accounts_and_names_bad_fields(api):
    c = setup(api)
    api.platform("other")
    api.account("theirs", "pro", platform="other")
    assert c.post("/v1/route", json={"account_id": "theirs", "skill_id": "code-reviewer"}).status_code == 404
    r = c.post("/v1/route", json={"account_id": "acme", "skill_id": "unscored"})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "skill_id")
    r = c.post("/v1/route", json={"account_id": "acme", "skill_id": "code-reviewer", "slider": 2})
    assert (r.status_code, r.json()["error"]["message"]) == (422, "slider: 2 is not between 0 (cheapest) and 1 "
                                                                   "(best quality)")
    assert c.post("/v1/route", content=b"[1]").status_code == 422
    assert c.post("/v1/route", content=b"{").status_code == 400
    assert api.client().post("/v1/route", json={"account_id": "acme", "skill_id": "x"}).status_code == 401


def test_the_platform_sets_the_slider_and_the_byok_providers_it_knows_the_user_holds(api):
    c = setup(api)
    r = c.put("/v1/accounts/acme/routing", json={"byok_providers": ["anthropic"]})
    assert r.json() == {"account_id": "acme", "slider": "0", "byok_providers": ["anthropic"], "byok": True}
    d = c.post("/v1/route", json={"account_id": "acme", "skill_id": "code-reviewer"}).json()
    assert (d["model"], d["byok"]) == ("claude-sonnet", True)
    r = c.put("/v1/accounts/acme/routing", json={"byok_providers": [], "slider": 1})
    assert r.json()["slider"] == "1" and c.get("/v1/accounts/acme/routing").json()["byok"] is False
    assert c.post("/v1/route", json={"account_id": "acme", "skill_id": "code-reviewer"}).json()["model"] == \
        "claude-sonnet"
    r = c.put("/v1/accounts/acme/routing", json={"colour": "red"})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "colour")


def test_a_skill_records_its_category_and_default_model(api):
    c = setup(api)
    r = c.put("/v1/skills/code-reviewer", json={"category": "coding", "default_model": "claude-sonnet"})
    assert r.json() == {"skill_id": "code-reviewer", "category": "coding", "default_model": "claude-sonnet"}
    d = c.post("/v1/route", json={"account_id": "acme", "skill_id": "code-reviewer"}).json()
    assert d["default_model"] == "claude-sonnet"
    assert c.put("/v1/skills/x", json={"default_model": "gpt-9"}).status_code == 422
    scores = c.get("/v1/routing/scores", params={"skill_id": "code-reviewer"}).json()["scores"]
    assert [(s["model"], s["score"]) for s in scores] == [("claude-haiku", "62"), ("claude-sonnet", "91"),
                                                         ("gpt-4o-mini", "78")]
