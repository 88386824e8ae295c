"""Every route but /healthz needs a platform key; another platform's account does not exist for you."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from services.accounts import BadLink, billing_link, check_billing_token
from services.platforms import hash_key, new_api_key
from tests.factories import OCT_START, event

ROUTES = [
    ("GET", "/v1/accounts/a1/entitlement?model=claude-haiku"),
    ("GET", "/v1/accounts/a1/usage"),
    ("GET", "/v1/accounts/a1/invoices"),
    ("GET", "/v1/accounts/a1/invoices/preview"),
    ("GET", "/v1/accounts/a1/invoices/2026-09"),
    ("GET", "/accounts/a1/billing"),
]


def test_health_needs_no_key(api):
    resp = api.client().get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"ok": True, "database": "ok"}


@pytest.mark.parametrize("method,path", ROUTES + [("POST", "/v1/executions")])
def test_missing_or_wrong_key_is_401(api, method, path):
    api.platform("p1")
    api.account("a1", "pro", platform="p1")
    for headers in ({}, {"Authorization": "Bearer tk_not-a-real-key-at-all-000000000"},
                    {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}):
        resp = api.client().request(method, path, headers=headers, json={})
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json()["error"]["type"] == "unauthorized"
        assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("method,path", ROUTES)
def test_another_platforms_account_is_404_like_a_missing_one(api, method, path):
    api.platform("p1")
    key2 = api.platform("p2")
    api.account("a1", "pro", platform="p1")
    theirs = api.client(key2).request(method, path)
    missing = api.client(key2).request(method, path.replace("/a1/", "/nobody/"))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["message"] == "no account 'a1'"
    assert missing.json()["error"]["message"] == "no account 'nobody'"


def test_an_account_without_platform_is_reached_by_no_key(api):
    key = api.platform("p1")
    api.account("a1", "pro")
    assert api.client(key).get("/v1/accounts/a1/usage").status_code == 404


def test_keys_are_stored_hashed(api):
    key = api.platform("p1")
    from models.db import get_engine

    with get_engine(api.database_url).begin() as conn:
        stored = conn.exec_driver_sql("SELECT api_key_hash FROM platforms").scalar()
    assert stored == hash_key(key) and key not in stored
    assert key.startswith("tk_") and len(key) == 35 and new_api_key() != key


def test_billing_link_opens_its_account_only_and_expires(api):
    api.platform("p1")
    api.account("a1", "pro", platform="p1")
    api.account("a2", "pro", platform="p1")
    secret = api.settings.effective_api_secret()
    link = billing_link(api.url, secret, "a1", hours=24)
    parts = urlsplit(link)
    page = api.client().get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["referrer-policy"] == "no-referrer"
    other = api.client().get(f"/accounts/a2/billing?{parts.query}")
    assert other.status_code == 401 and other.json()["error"]["field"] == "token"
    old = billing_link(api.url, secret, "a1", hours=24, now=time.time() - 25 * 3600)
    expired = api.client().get(urlsplit(old).path + "?" + urlsplit(old).query)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    forged = api.client().get("/accounts/a1/billing?token=9999999999.AAAA")
    assert forged.status_code == 401


def test_billing_token_check_rejects_tampering():
    secret = b"s"
    token = billing_link("http://x", secret, "acct", hours=1).split("token=")[1]
    check_billing_token(secret, "acct", token)
    expires, sig = token.split(".")
    for bad in (f"{int(expires) + 3600}.{sig}", f"{expires}.{sig[:-2]}xx", "junk", "", f"{expires}."):
        with pytest.raises(BadLink):
            check_billing_token(secret, "acct", bad)
    with pytest.raises(BadLink):
        check_billing_token(b"other secret", "acct", token)


def test_connections_the_database_dropped_cost_no_request(api):
    key = api.platform("p1")
    api.account("a1", "payg", platform="p1")
    c = api.client(key)
    assert c.get("/v1/accounts/a1/entitlement", params={"model": "gpt-4o"}).status_code == 200
    from models.db import get_engine

    with get_engine(api.database_url).connect() as conn:  # a restart, a failover, an idle timeout
        conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    assert c.get("/v1/accounts/a1/entitlement", params={"model": "gpt-4o"}).status_code == 200
    assert c.get("/v1/accounts/a1/usage").status_code == 200
    posted = c.post("/v1/executions", json=event("a1", 1, OCT_START))
    assert posted.status_code == 200 and posted.json()["accepted"] == 1
