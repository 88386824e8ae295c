"""Injected faults: what tests ask the next matching requests to suffer.

Kinds (each matching request consumes one ``count``; at most one fault of each kind per request):
- ``rate_limit_429``: 429 ``invalid_request_error`` (``code: rate_limit``) with ``Retry-After``; nothing executed or saved under the key.
- ``delay``: sleep ``seconds`` after claiming the idempotency key, before executing.
- ``error_500``: execute nothing, answer (and save under the key) a 500 ``api_error``.
- ``drop_after_commit``: execute, commit, save under the key, then close the connection with no response.
- ``error_500_after_commit``: execute and commit, then answer (and save under the key) a 500 ``api_error``:
  the object exists although the caller was told the request failed.
"""

from __future__ import annotations

import fnmatch

from .state import EmulatorState

FAULT_KINDS = ("error_500", "drop_after_commit", "rate_limit_429", "delay", "error_500_after_commit")
EXECUTION_FAULTS = ("delay", "error_500", "drop_after_commit", "error_500_after_commit")


def add(st: EmulatorState, method: str = "POST", path: str = "*", kind: str = "error_500", count: int = 1,
        retry_after: float = 1, seconds: float = 1.0) -> dict:
    """Queue a fault for requests matching ``method`` (or ``*``) and ``path`` (exact, or a glob where ``*``
    matches anything including ``/``). Returns a copy of the fault."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
    count = int(count)
    if count < 1:
        raise ValueError("count must be >= 1")
    retry_after, seconds = float(retry_after), float(seconds)
    if retry_after < 0 or seconds < 0:
        raise ValueError("retry_after and seconds must be >= 0")
    with st.lock:
        st.fault_seq += 1
        fault = {
            "id": f"fault_{st.fault_seq}", "method": (method or "*").upper(), "path": path or "*",
            "kind": kind, "count": count, "retry_after": retry_after, "seconds": seconds,
        }
        st.faults.append(fault)
        return dict(fault)


def clear(st: EmulatorState) -> None:
    with st.lock:
        st.faults = []


def pending(st: EmulatorState) -> list[dict]:
    with st.lock:
        return [dict(f) for f in st.faults]


def take(st: EmulatorState, method: str, path: str, kinds: tuple[str, ...]) -> dict[str, dict]:
    """Consume (decrement) the first pending fault of each of ``kinds`` matching this request."""
    if not st.faults:
        return {}
    taken: dict[str, dict] = {}
    with st.lock:
        for fault in list(st.faults):
            kind = fault["kind"]
            if kind not in kinds or kind in taken:
                continue
            if fault["method"] not in ("*", method):
                continue
            pat = fault["path"]
            if pat != path and not ("*" in pat and fnmatch.fnmatchcase(path, pat)):
                continue
            fault["count"] -= 1
            if fault["count"] <= 0:
                st.faults.remove(fault)
            taken[kind] = dict(fault)
    return taken
