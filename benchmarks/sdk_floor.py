"""The SDK floor the Stripe-facing benches share (payouts_bench, meters_bench): the same Stripe calls Tally
makes, straight through the SDK to the same emulator with the same concurrency and nothing recorded, run
in two halves (before and after Tally's run, so a shared machine's drifting load weighs on both alike),
with the CPU seconds the emulator and the bench process spent on it."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from benchmarks.stack import cpu_seconds


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def post_straight(items: Sequence[Any], send: Callable[[str, int, Any], None], threads: int, tag: str,
                  name: str = "sdk-floor") -> tuple[float, int, int]:
    """``send(tag, i, item)`` for every item, ``threads`` at once; an exception counts as an error.
    Returns (seconds, ok, errors)."""
    ok = errors = 0
    lock = threading.Lock()

    def one(i_item) -> None:
        nonlocal ok, errors
        i, item = i_item
        try:
            send(tag, i, item)
            with lock:
                ok += 1
        except Exception:  # noqa: BLE001 - counted
            with lock:
                errors += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name) as pool:
        list(pool.map(one, enumerate(items)))
    return time.perf_counter() - started, ok, errors


class SdkFloor:
    """The floor's halves added up: seconds, calls that succeeded and failed, CPU seconds of the emulator
    and the bench process. ``what`` names the calls in the progress line ("transfers")."""

    def __init__(self, send: Callable[[str, int, Any], None], threads: int, what: str, *, emulator_proc,
                 bench_proc):
        self.send, self.threads, self.what = send, threads, what
        self.procs = {"stripe-emulator": emulator_proc, "bench": bench_proc}
        self.seconds = 0.0
        self.ok = self.errors = 0
        self.cpu = {k: 0.0 for k in self.procs}
        self.tag = uuid.uuid4().hex[:6]

    def half(self, items: Sequence[Any], label: str) -> None:
        c0 = {k: cpu_seconds(p) for k, p in self.procs.items()}
        say(f"floor: {len(items):,} {self.what} straight through the SDK, {self.threads} threads")
        secs, ok, err = post_straight(items, self.send, self.threads, f"{self.tag}{label}")
        self.seconds, self.ok, self.errors = self.seconds + secs, self.ok + ok, self.errors + err
        for k, p in self.procs.items():
            self.cpu[k] += cpu_seconds(p) - c0[k]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def cpu_line(self) -> str:
        return "  CPU s (floor):     " + ", ".join(f"{k} {v:.1f}" for k, v in self.cpu.items())


def load_line(start: float, before: float, after: float, end: float, cpus: int | None) -> str:
    return (f"  load average: {start:.2f} at the start, {before:.2f} / {after:.2f} before / after Tally's run, "
            f"{end:.2f} at the end ({cpus} CPUs)")
