"""In-memory state of the emulator: Stripe objects, idempotency records, faults, clock, request log.

Everything that mutates goes through ``EmulatorState.lock`` (one re-entrant lock). Objects are kept
as plain JSON-able dicts shaped like Stripe's API objects so they can be dumped as-is.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import random
import string
import tempfile
import threading
import time
from collections import Counter, defaultdict

IDEMPOTENCY_TTL = 24 * 3600
METER_IDENTIFIER_TTL = 24 * 3600
REQUEST_LOG_MAX = 200_000
FAULT_KINDS = ("error_500", "drop_after_commit", "rate_limit_429", "delay")
STATE_FILE_VERSION = 1

_ALNUM = string.ascii_letters + string.digits
_rand = random.Random()  # ids need uniqueness, not secrecy (SystemRandom costs a syscall per char)


_id_counter = itertools.count(1)


def random_token(n: int = 14, alphabet: str = _ALNUM) -> str:
    return "".join(_rand.choices(alphabet, k=n))


_ID_SALT = random_token(24)


class EmulatorState:
    """All emulator data. Attributes are public so tests can assert on them (hold ``lock`` to be safe)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clock_offset = 0.0
        self.dirty = False
        self.faults: list[dict] = []
        self._fault_seq = 0
        self._clear_objects()
        self._clear_log()

    # ---- lifecycle --------------------------------------------------------------------------
    def _clear_objects(self) -> None:
        self.customers: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.invoice_lines: dict[str, list[dict]] = {}  # invoice id -> line_item objects, in order
        self.invoice_items: dict[str, dict] = {}
        self.accounts: dict[str, dict] = {}
        self.transfers: dict[str, dict] = {}
        self.meters: dict[str, dict] = {}
        self.meter_events: list[dict] = []
        # (event_name, identifier) -> emulator time the identifier was first accepted
        self.meter_identifiers: dict[tuple[str, str], float] = {}
        # (event_name, customer) -> [(timestamp, value)]
        self.meter_index: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        # (api_key, idempotency_key) -> {"fp", "created", "status", "body", "request_id", "in_flight"}
        self.idempotency: dict[tuple[str, str], dict] = {}

    def _clear_log(self) -> None:
        self.request_log: list[dict] = []
        self._log_seq = 0
        self.stats_by_endpoint: Counter = Counter()
        self.stats_by_status: Counter = Counter()
        self.stats_totals: Counter = Counter()

    def reset(self) -> None:
        """Forget everything: objects, idempotency keys, faults, request log and clock offset."""
        with self.lock:
            self._clear_objects()
            self._clear_log()
            self.faults = []
            self.clock_offset = 0.0
            self.dirty = True

    # ---- clock & ids ------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        with self.lock:
            self.clock_offset += float(seconds)
            self.dirty = True
            return self.now()

    @staticmethod
    def new_id(prefix: str, n: int = 14) -> str:
        """Stripe-like id: prefix + per-process random salt + counter (unique, cheap, alphanumeric)."""
        num = next(_id_counter)
        digits = []
        while num:
            num, r = divmod(num, 62)
            digits.append(_ALNUM[r])
        tail = "".join(reversed(digits))
        return f"{prefix}_{_ID_SALT[: max(n - len(tail), 4)]}{tail}"

    # ---- idempotency ------------------------------------------------------------------------
    def idem_begin(self, api_key: str, key: str, fp: str) -> tuple[str, dict | None]:
        """Claim ``key`` for a request with fingerprint ``fp``.

        Returns ("new", None) when the caller must execute (a fresh in-flight record now exists),
        ("replay", rec), ("mismatch", rec) or ("in_flight", rec).
        """
        with self.lock:
            rk = (api_key, key)
            rec = self.idempotency.get(rk)
            now = self.now()
            if rec is not None and not rec["in_flight"] and now - rec["created"] > IDEMPOTENCY_TTL:
                rec = None  # expired: the key is new again
            if rec is not None:
                if rec["fp"] != fp:
                    return "mismatch", rec
                if rec["in_flight"]:
                    return "in_flight", rec
                return "replay", rec
            self.idempotency[rk] = {
                "fp": fp, "created": now, "status": None, "body": None,
                "request_id": None, "in_flight": True,
            }
            return "new", None

    def idem_finish(self, api_key: str, key: str, status: int, body: bytes, request_id: str) -> None:
        with self.lock:
            rec = self.idempotency.get((api_key, key))
            if rec is None:  # reset while executing
                return
            rec.update(status=status, body=body.decode("utf-8"), request_id=request_id, in_flight=False)
            self.dirty = True

    def prune_idempotency(self) -> int:
        with self.lock:
            now = self.now()
            dead = [k for k, r in self.idempotency.items()
                    if not r["in_flight"] and now - r["created"] > IDEMPOTENCY_TTL]
            for k in dead:
                del self.idempotency[k]
            dead_ids = [k for k, t in self.meter_identifiers.items() if now - t > METER_IDENTIFIER_TTL]
            for k in dead_ids:
                del self.meter_identifiers[k]
            return len(dead) + len(dead_ids)

    # ---- faults -----------------------------------------------------------------------------
    def add_fault(self, method: str = "POST", path: str = "*", kind: str = "error_500", count: int = 1,
                  retry_after: float = 1, seconds: float = 1.0) -> dict:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        count = int(count)
        if count < 1:
            raise ValueError("count must be >= 1")
        retry_after, seconds = float(retry_after), float(seconds)
        if retry_after < 0 or seconds < 0:
            raise ValueError("retry_after and seconds must be >= 0")
        with self.lock:
            self._fault_seq += 1
            fault = {
                "id": f"fault_{self._fault_seq}", "method": (method or "*").upper(), "path": path or "*",
                "kind": kind, "count": count, "retry_after": retry_after, "seconds": float(seconds),
            }
            self.faults.append(fault)
            return dict(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults = []

    def take_faults(self, method: str, path: str, kinds: tuple[str, ...]) -> dict[str, dict]:
        """Consume (decrement) the first pending fault of each of ``kinds`` matching this request."""
        if not self.faults:
            return {}
        taken: dict[str, dict] = {}
        with self.lock:
            for fault in list(self.faults):
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
                    self.faults.remove(fault)
                taken[kind] = dict(fault)
        return taken

    # ---- request log ------------------------------------------------------------------------
    def log_request(self, method: str, path: str, template: str, idem_key: str | None, status: int,
                    replayed: bool, executed: bool, fault: str | None = None) -> None:
        with self.lock:
            self._log_seq += 1
            self.request_log.append({
                "seq": self._log_seq, "time": self.now(), "method": method, "path": path,
                "template": template, "idempotency_key": idem_key, "status": status,
                "replayed": replayed, "executed": executed, "fault": fault,
            })
            if len(self.request_log) > REQUEST_LOG_MAX:
                del self.request_log[: REQUEST_LOG_MAX // 10]
            self.stats_by_endpoint[f"{method} {template}"] += 1
            self.stats_by_status[str(status)] += 1
            self.stats_totals["requests"] += 1
            if replayed:
                self.stats_totals["replayed"] += 1
            if executed:
                self.stats_totals["executed"] += 1
            if status >= 400:
                self.stats_totals["errors"] += 1

    def requests_since(self, since: int = 0) -> list[dict]:
        with self.lock:
            log = self.request_log
            # entries are in seq order: walk back from the end
            i = len(log)
            while i > 0 and log[i - 1]["seq"] > since:
                i -= 1
            return [dict(e) for e in log[i:]]

    def stats(self) -> dict:
        with self.lock:
            return {
                "totals": {k: self.stats_totals.get(k, 0)
                           for k in ("requests", "executed", "replayed", "errors")},
                "by_endpoint": dict(sorted(self.stats_by_endpoint.items())),
                "by_status": dict(sorted(self.stats_by_status.items())),
                "objects": {
                    "customers": len(self.customers), "invoices": len(self.invoices),
                    "invoice_items": len(self.invoice_items), "accounts": len(self.accounts),
                    "transfers": len(self.transfers), "meters": len(self.meters),
                    "meter_events": len(self.meter_events),
                    "idempotency_keys": len(self.idempotency),
                },
                "last_seq": self._log_seq,
            }

    # ---- persistence ------------------------------------------------------------------------
    def to_json(self) -> str:
        """Serialize objects, completed idempotency records and the clock (not faults/log)."""
        with self.lock:
            data = {
                "version": STATE_FILE_VERSION,
                "saved_at": time.time(),
                "clock_offset": self.clock_offset,
                "customers": self.customers,
                "invoices": self.invoices,
                "invoice_lines": self.invoice_lines,
                "invoice_items": self.invoice_items,
                "accounts": self.accounts,
                "transfers": self.transfers,
                "meters": self.meters,
                "meter_events": self.meter_events,
                "meter_identifiers": [[e, i, t] for (e, i), t in self.meter_identifiers.items()],
                "idempotency": [[a, k, r] for (a, k), r in self.idempotency.items() if not r["in_flight"]],
            }
            return json.dumps(data, separators=(",", ":"))

    def load_json(self, text: str) -> None:
        data = json.loads(text)
        if data.get("version") != STATE_FILE_VERSION:
            raise ValueError(f"unsupported state file version {data.get('version')!r}")
        with self.lock:
            self._clear_objects()
            self.clock_offset = float(data.get("clock_offset", 0.0))
            self.customers = data.get("customers", {})
            self.invoices = data.get("invoices", {})
            self.invoice_lines = data.get("invoice_lines", {})
            self.invoice_items = data.get("invoice_items", {})
            self.accounts = data.get("accounts", {})
            self.transfers = data.get("transfers", {})
            self.meters = data.get("meters", {})
            self.meter_events = data.get("meter_events", [])
            self.meter_identifiers = {(e, i): t for e, i, t in data.get("meter_identifiers", [])}
            self.idempotency = {(a, k): r for a, k, r in data.get("idempotency", [])}
            self.rebuild_meter_index()
            self.dirty = False

    def rebuild_meter_index(self) -> None:
        index: dict = defaultdict(list)
        for ev in self.meter_events:
            if ev.get("_customer") is not None:
                index[(ev["event_name"], ev["_customer"])].append((ev["timestamp"], ev["_value"]))
        self.meter_index = index

    def save(self, path: str) -> None:
        """Atomically write the state file (temp file in the same directory + rename)."""
        text = self.to_json()
        with self.lock:
            self.dirty = False
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".stripe-emulator-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with self.lock:
                self.dirty = True
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def load(self, path: str) -> bool:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except FileNotFoundError:
            return False
        if text.strip():
            self.load_json(text)
        return True
