"""In-memory state of one emulator: the resources' object stores, idempotency records, pending faults, the
request log and the clock.

Everything that reads or mutates goes through ``EmulatorState.lock`` (one re-entrant lock). Objects are
plain JSON-able dicts shaped like Stripe's API objects, so they are returned and saved as they are. Which
stores exist is declared by the resources (``Store``): ``state.customers``, ``state.invoices``, ...
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable


SEARCH_LAG_ENV = "STRIPE_EMULATOR_SEARCH_LAG"


def default_search_lag() -> float:
    """Seconds before a new object shows in search results: ``STRIPE_EMULATOR_SEARCH_LAG`` (0 unset).
    The test suite sets it (tests/conftest.py): real Stripe's search lags up to a minute, more in
    outages, and Stripe says not to use it to read what was just written."""
    try:
        return max(0.0, float(os.environ.get(SEARCH_LAG_ENV, "0") or 0))
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Store:
    """A collection a resource keeps: ``state.<name>``, emptied to ``factory()`` by a reset, written to the
    state file (through ``dump``/``load`` when it is not plain JSON) and counted under
    ``stats()["objects"]`` when ``counted``. A ``derive``d store is an index: never written, recomputed
    from the other stores by ``derive(state)`` after a load."""

    name: str
    factory: Callable[[], Any] = dict
    counted: bool = True
    dump: Callable[[Any], Any] | None = None
    load: Callable[[Any], Any] | None = None
    derive: Callable[["EmulatorState"], Any] | None = None


class EmulatorState:
    """All emulator data. Attributes are public so tests can assert on them (hold ``lock`` to be safe)."""

    def __init__(self, stores: Iterable[Store] = ()) -> None:
        self.stores: tuple[Store, ...] = tuple(stores)
        self.lock = threading.RLock()
        self.clock_offset = 0.0
        self.dirty = False
        self.faults: list[dict] = []  # see core.faults
        self.fault_seq = 0
        self.clear_objects()
        self.clear_log()

    # ---- lifecycle --------------------------------------------------------------------------
    def clear_objects(self) -> None:
        for store in self.stores:
            setattr(self, store.name, store.factory())
        self.search_lag_seconds = default_search_lag()  # see core.listing.search; not saved
        # (api_key, idempotency_key) -> {"fp", "created", "status", "body", "headers", "request_id", "in_flight"}
        self.idempotency: dict[tuple[str, str], dict] = {}  # see core.idempotency

    def clear_log(self) -> None:  # see core.requestlog
        self.request_log: list[dict] = []
        self.log_seq = 0
        self.stats_by_endpoint: Counter = Counter()
        self.stats_by_status: Counter = Counter()
        self.stats_totals: Counter = Counter()

    def reset(self) -> None:
        """Forget everything: objects, idempotency keys, faults, request log and clock offset."""
        with self.lock:
            self.clear_objects()
            self.clear_log()
            self.faults = []
            self.clock_offset = 0.0
            self.dirty = True

    # ---- clock ------------------------------------------------------------------------------
    def now(self) -> float:
        """The emulator clock: wall time plus the offset tests advance it by (it never goes back)."""
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        with self.lock:
            self.clock_offset += float(seconds)
            self.dirty = True
            return self.now()

    def object_counts(self) -> dict[str, int]:
        with self.lock:
            counts = {s.name: len(getattr(self, s.name)) for s in self.stores if s.counted}
            counts["idempotency_keys"] = len(self.idempotency)
            return counts
