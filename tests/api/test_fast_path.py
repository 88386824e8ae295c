"""The entitlement check's fast path (api/fast_path.py): a check the view answers is answered before the
framework, with the route's own bytes; every other request reaches the application and is answered as
before. The session's API server runs it in front of the app (tests/api/conftest.py), so every check of
tests/api/test_entitlements.py "from the view" goes through it as well."""

from __future__ import annotations

from datetime import timedelta

import pytest
import httpx

from tests.api.conftest import NOW, serving
from tests.api.test_entitlement_view import ask, post, view  # noqa: F401 - the fixture
from tests.factories import OCT_START, event


def held(api, view, key: str, account_id: str) -> None:  # noqa: F811
    """The account read from Postgres once (the view keeps it) and refreshed."""
    assert ask(api, key, account_id).status_code == 200
    view.refresh()


def route_answer(api, key: str, path: str, params) -> tuple[int, dict, dict]:
    """What the application's own route answers (the app served with no fast path in front)."""
    with serving(api.app) as url:
        resp = httpx.get(url + path, params=params, headers={"Authorization": f"Bearer {key}"})
    return resp.status_code, resp.json(), dict(resp.headers)


def comparable(headers) -> dict:
    """Headers but the ones that differ between two answers by nature (the server's own, the timing's
    duration)."""
    out = {k.lower(): v for k, v in headers.items() if k.lower() not in ("date", "server")}
    out["server-timing"] = out["server-timing"].split(";desc=")[1]
    return out


@pytest.mark.parametrize("params", [
    {"model": "claude-haiku"},
    {"model": "claude-haiku", "sandbox": "true"},
    {"model": "claude-haiku", "sandbox": "0"},
    {"model": "gpt-unknown"},  # an unknown model: denied with its reason, from the view as from the route
])
def test_a_check_the_view_answers_gets_the_routes_status_body_and_headers_without_the_framework(api, view, params):  # noqa: F811
    key = api.platform("p")
    api.account("pro-1", "pro", platform="p")
    post(api, key, "pro-1", 0, 4)
    held(api, view, key, "pro-1")
    path = "/v1/accounts/pro-1/entitlement"
    before = api.fast.answered
    resp = api.client(key).get(path, params=params)
    assert api.fast.answered == before + 1
    status, body, headers = route_answer(api, key, path, params)
    assert (resp.status_code, resp.json()) == (status, body)
    assert comparable(resp.headers) == comparable(headers)
    assert comparable(resp.headers)["server-timing"] == "view"
    assert body["used"] == 4


@pytest.mark.parametrize("case", [
    "no key", "unknown key", "not bearer", "no model", "model too long", "model twice", "sandbox yes",
    "sandbox maybe", "unheld account", "another platform's account", "bad account id",
])
def test_every_other_check_reaches_the_application_and_gets_its_answer(api, view, case):  # noqa: F811
    key = api.platform("p")
    other = api.platform("q")
    api.account("pro-1", "pro", platform="p")
    api.account("pro-2", "pro", platform="p")
    api.account("pro-3", "pro", platform="q")
    post(api, key, "pro-1", 0, 2)
    held(api, view, key, "pro-1")
    held(api, view, other, "pro-3")
    account, query, headers = "pro-1", "model=claude-haiku", {"Authorization": f"Bearer {key}"}
    expected = 200
    if case == "no key":
        headers, expected = {}, 401
    elif case == "unknown key":
        headers, expected = {"Authorization": "Bearer tally_pk_nosuchkey"}, 401
    elif case == "not bearer":
        headers, expected = {"Authorization": f"Basic {key}"}, 401
    elif case == "no model":
        query, expected = "sandbox=true", 422
    elif case == "model too long":
        query, expected = "model=" + "m" * 201, 422
    elif case == "model twice":
        query = "model=gpt-unknown&model=claude-haiku"
    elif case == "sandbox yes":
        query = "model=claude-haiku&sandbox=yes"
    elif case == "sandbox maybe":
        query, expected = "model=claude-haiku&sandbox=maybe", 422
    elif case == "unheld account":
        account = "pro-2"
    elif case == "another platform's account":
        account, expected = "pro-3", 404
    elif case == "bad account id":
        account, expected = "no such id!", 404
    before = api.fast.answered

    resp = httpx.get(f"{api.url}/v1/accounts/{account}/entitlement?{query}", headers=headers)
    assert api.fast.answered == before
    assert resp.status_code == expected, resp.text
    if expected == 200:
        answer = resp.json()
        assert answer["allowed"] is True and answer["used"] == (2 if account == "pro-1" else 0)
        assert answer["model"] == "claude-haiku"
        assert resp.headers["server-timing"].endswith("desc=view" if account == "pro-1" else "desc=postgres")


def test_a_check_whose_answer_raises_in_the_fast_path_is_answered_by_the_application(api, view, monkeypatch):  # noqa: F811
    key = api.platform("p")
    api.account("pro-1", "pro", platform="p")
    held(api, view, key, "pro-1")
    service = api.app.state.service
    real = service.entitlement_from_view
    calls = []

    def once_broken(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("broken once")
        return real(*args)

    monkeypatch.setattr(service, "entitlement_from_view", once_broken)
    before = api.fast.answered
    resp = api.client(key).get("/v1/accounts/pro-1/entitlement", params={"model": "claude-haiku"})
    assert resp.status_code == 200 and resp.json()["allowed"] is True
    assert api.fast.answered == before and len(calls) == 2  # the route asked the view again


def test_the_fast_path_reads_the_clock_of_the_service_like_the_route(api, view):  # noqa: F811
    """Past the month's end the view's entry is of the previous period: the fast path hands the check over."""
    key = api.platform("p")
    api.account("pro-1", "pro", platform="p")
    api.client(key).post("/v1/executions", json=event("pro-1", 1, OCT_START + timedelta(days=3)))
    held(api, view, key, "pro-1")
    api.clock.now = NOW + timedelta(days=10)  # November
    before = api.fast.answered
    resp = api.client(key).get("/v1/accounts/pro-1/entitlement", params={"model": "claude-haiku"})
    assert resp.status_code == 200 and resp.json()["used"] == 0
    assert api.fast.answered == before
