"""`tally platforms ...`, `tally accounts billing-link` and `tally api`, run as a person would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from tests.api.conftest import free_port
from tests.factories import create_account, event

TALLY = str(Path(sys.executable).parent / "tally")


def run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TALLY, *args], env=env, capture_output=True, text=True, timeout=120)


def test_platform_keys_links_and_the_api_server(clean_db, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    port = free_port()
    env.update(DATABASE_URL=clean_db, TALLY_HOME=str(tmp_path / "home"), TALLY_API_PORT=str(port))
    create_account(clean_db, "acct-1", "pro")

    created = run(env, "platforms", "create", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("tk_") and len(key) == 35
    again = run(env, "platforms", "create", "acme")
    assert again.returncode == 1 and "exists already" in again.stderr and "Traceback" not in again.stderr
    attached = run(env, "platforms", "attach", "acme", "acct-1")
    assert attached.returncode == 0, attached.stderr
    missing = run(env, "platforms", "attach", "acme", "nobody")
    assert missing.returncode == 1 and "no account 'nobody'" in missing.stderr
    listed = run(env, "platforms", "list")
    assert "acme" in listed.stdout and " 1 " in listed.stdout
    link = run(env, "accounts", "billing-link", "acct-1")
    assert link.returncode == 0 and link.stdout.startswith(f"http://localhost:{port}/accounts/acct-1/billing?token=")

    server = subprocess.Popen([TALLY, "api"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "tally api did not start"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {key}"}
        e = httpx.get(f"{base}/v1/accounts/acct-1/entitlement", params={"model": "claude-haiku"}, headers=headers)
        assert e.status_code == 200 and e.json()["allowed"] is True and e.json()["used"] == 0
        # An execution recorded now shows within a refresh or two of the entitlement view, from memory.
        doc = event("acct-1", 1, datetime.now(timezone.utc) - timedelta(minutes=1))
        # (the first batch may wait for the ingest child's imports: seconds on a busy machine)
        assert httpx.post(f"{base}/v1/executions", json=doc, headers=headers, timeout=120).json()["accepted"] == 1
        deadline = time.monotonic() + 15
        while (e := httpx.get(f"{base}/v1/accounts/acct-1/entitlement", params={"model": "claude-haiku"},
                              headers=headers, timeout=30)).json()["used"] != 1:
            assert time.monotonic() < deadline, "the entitlement view never showed the execution"
            time.sleep(0.1)
        assert e.headers["Server-Timing"].endswith("desc=view")
        page = httpx.get(link.stdout.strip().replace(f"localhost:{port}", f"127.0.0.1:{port}"))
        assert page.status_code == 200 and "acct-1" in page.text  # the CLI and the API share the secret
        rotated = run(env, "platforms", "rotate-key", "acme")
        new_key = rotated.stdout.strip().splitlines()[-1]
        assert rotated.returncode == 0 and new_key != key
        ok = httpx.get(f"{base}/v1/accounts/acct-1/usage", headers={"Authorization": f"Bearer {new_key}"})
        assert ok.status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
