"""Plain-HTTP helpers for the emulator control plane and raw API calls."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def control(emu, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """Call the /_emulator/ control plane over plain HTTP (``emu``: an EmulatorServer or its URL)."""
    data = json.dumps(body).encode() if body is not None else None
    base = emu if isinstance(emu, str) else emu.url
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def raw(emu, method: str, path: str, form: dict | None = None, headers: dict | None = None,
        api_key: str | None = "sk_test_raw") -> tuple[int, dict, Message]:
    """A raw form-encoded API call: (status, json body, headers; header names are case-insensitive)."""
    from urllib.parse import urlencode

    data = urlencode(form).encode() if form is not None else None
    hdrs = {"Content-Type": "application/x-www-form-urlencoded"}
    if api_key:
        hdrs["Authorization"] = f"Bearer {api_key}"
    hdrs.update(headers or {})
    req = urllib.request.Request(emu.url + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


@contextlib.contextmanager
def emulator_process(state_file: str | None = None, timeout: float = 20):
    """``python -m stripe_emulator`` on a free port, healthy; yields its URL. On exit: SIGTERM, and the
    process must stop cleanly (exit code 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "stripe_emulator", "--port", str(port)]
    if state_file:
        cmd += ["--state-file", state_file]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                with urllib.request.urlopen(url + "/_emulator/health", timeout=1) as r:
                    if json.loads(r.read())["ok"]:
                        break
            except OSError:
                assert time.monotonic() < deadline, "emulator did not become healthy"
                time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=15) == 0, proc.stdout.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
