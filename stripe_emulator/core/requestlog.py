"""The request log and counters behind ``/_emulator/requests`` and ``/_emulator/stats``."""

from __future__ import annotations

from .state import EmulatorState

REQUEST_LOG_MAX = 200_000
PARAMS_KEPT = 20_000


def record(st: EmulatorState, method: str, path: str, template: str, idem_key: str | None, status: int,
           replayed: bool, executed: bool, fault: str | None = None, params: dict | None = None) -> None:
    """Log one request; ``params`` are its decoded parameters (body or query), None when they could not
    be read. Only the last ``PARAMS_KEPT`` entries keep them (memory); older ones say None."""
    with st.lock:
        st.log_seq += 1
        st.request_log.append({
            "seq": st.log_seq, "time": st.now(), "method": method, "path": path,
            "template": template, "idempotency_key": idem_key, "status": status,
            "replayed": replayed, "executed": executed, "fault": fault, "params": params,
        })
        if len(st.request_log) > PARAMS_KEPT:
            st.request_log[-PARAMS_KEPT - 1]["params"] = None
        if len(st.request_log) > REQUEST_LOG_MAX:
            del st.request_log[: REQUEST_LOG_MAX // 10]
        st.stats_by_endpoint[f"{method} {template}"] += 1
        st.stats_by_status[str(status)] += 1
        st.stats_totals["requests"] += 1
        if replayed:
            st.stats_totals["replayed"] += 1
        if executed:
            st.stats_totals["executed"] += 1
        if status >= 400:
            st.stats_totals["errors"] += 1


def since(st: EmulatorState, seq: int = 0) -> list[dict]:
    """Entries after ``seq``, oldest first."""
    with st.lock:
        log = st.request_log
        i = len(log)  # entries are in seq order: walk back from the end
        while i > 0 and log[i - 1]["seq"] > seq:
            i -= 1
        return [dict(e) for e in log[i:]]


def stats(st: EmulatorState) -> dict:
    with st.lock:
        return {
            "totals": {k: st.stats_totals.get(k, 0) for k in ("requests", "executed", "replayed", "errors")},
            "by_endpoint": dict(sorted(st.stats_by_endpoint.items())),
            "by_status": dict(sorted(st.stats_by_status.items())),
            "objects": st.object_counts(),
            "last_seq": st.log_seq,
        }
