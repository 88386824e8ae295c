"""Plain-HTTP helpers for the emulator control plane and raw API calls."""

from __future__ import annotations

import json
import urllib.error
import urllib.request


def control(emu, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """Call the /_emulator/ control plane over plain HTTP."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(emu.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def raw(emu, method: str, path: str, form: dict | None = None, headers: dict | None = None,
        api_key: str | None = "sk_test_raw") -> tuple[int, dict, dict]:
    """A raw form-encoded API call: (status, json body, headers)."""
    from urllib.parse import urlencode

    data = urlencode(form).encode() if form is not None else None
    hdrs = {"Content-Type": "application/x-www-form-urlencoded"}
    if api_key:
        hdrs["Authorization"] = f"Bearer {api_key}"
    hdrs.update(headers or {})
    req = urllib.request.Request(emu.url + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)
