"""The ON/OFF harness the feature-on-ingestion benches share (credits_bench, alerts_bench): their common
arguments, the latency probe in its own process, the loop of alternating OFF/ON slices each posted to a
fresh ``tally api``, and the summary lines (throughput per mode, the ON/OFF ratio, the load average).

A bench brings what differs: how it prepares the data, which slice each mode posts in a round, what
the probe asks (a function run in the probe's process) and what it prints about its own feature.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from benchmarks.api_bench import create_accounts, create_platform, pct, post_all, say, start_api, stop
from benchmarks.dataset import bench_accounts

MODES = ("off", "on")


def add_args(p: argparse.ArgumentParser, *, bulk_events: int, warmup_batches: int,
             accounts_help: str | None = None) -> argparse.ArgumentParser:
    """The arguments every ON/OFF bench takes (defaults that differ are given)."""
    p.add_argument("--accounts", type=int, default=1_000, help=accounts_help)
    p.add_argument("--bulk-events", type=int, default=bulk_events)
    p.add_argument("--http-events", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=1_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--api-workers", type=int, default=1,
                   help="uvicorn worker processes (1, TALLY_API_WORKERS' default: one serving process whose "
                        "batches go to its ingest processes, one per core)")
    p.add_argument("--rounds", type=int, default=2, help="OFF/ON pairs of slices")
    p.add_argument("--warmup-batches", type=int, default=warmup_batches, help="posted first in each slice, not timed")
    p.add_argument("--probe-pause-ms", type=float, default=5.0)
    p.add_argument("--workdir", type=Path, default=None)
    return p


def workdir_for(args: argparse.Namespace, feature: str) -> Path:
    """``--workdir``, or a fresh temp dir (the caller removes it when it made it)."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"tally-{feature}-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    return workdir


def database_with_accounts(stack, feature: str, n_accounts: int) -> tuple[str, str, list[dict]]:
    """Postgres started, a fresh database, a platform and its API key, ``n_accounts`` accounts:
    (url, key, accounts)."""
    stack.start_postgres()
    url = stack.fresh_database(feature)
    platform_id, key = create_platform(url)
    accounts = bench_accounts(n_accounts)
    create_accounts(url, accounts, platform_id)
    return url, key, accounts


class ProcessProbe:
    """Latency measured from a separate process while something runs. ``target(*args, pause, stop, ready,
    results)`` runs there: it sets ``ready`` once connected, asks until ``stop``, then puts (latencies ms,
    Server-Timing ms, errors[, kills]) on ``results``. The first 5 answers (connection warm-up) are dropped."""

    def __init__(self, target: Callable, args: tuple, pause: float, *, settle: float = 0.0, start_timeout: float = 120):
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.ready = ctx.Event()
        self.results = ctx.Queue()
        self.proc = ctx.Process(target=target, args=(*args, pause, self.stop, self.ready, self.results), daemon=True)
        self.settle, self.start_timeout = settle, start_timeout
        self.latencies: list[float] = []
        self.server_ms: list[float] = []
        self.errors = self.kills = 0

    def __enter__(self) -> ProcessProbe:
        self.proc.start()
        # imports take seconds (many on a loaded machine) before the probe connects
        if not self.ready.wait(self.start_timeout):
            raise RuntimeError("the probe process did not start")
        time.sleep(self.settle)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.latencies, self.server_ms, self.errors, *extra = self.results.get(timeout=60)
        self.kills = extra[0] if extra else 0
        self.proc.join(timeout=10)
        self.latencies, self.server_ms = self.latencies[5:], self.server_ms[5:]

    def merge(self, other: ProcessProbe) -> ProcessProbe:
        self.latencies += other.latencies
        self.server_ms += other.server_ms
        self.errors += other.errors
        self.kills += other.kills
        return self

    def line(self) -> str:
        return (f"n={len(self.latencies):>6,}  p50 {pct(self.latencies, 50):6.2f} ms  "
                f"p99 {pct(self.latencies, 99):6.2f} ms")


Run = tuple[str, float, int]  # (mode, seconds, accepted)


def run_onoff(args: argparse.Namespace, *, url: str, workdir: Path, key: str, feature: str,
              slice_of: Callable[[str, int], list[bytes]], probe: Callable[[str, float], ProcessProbe],
              idle_seconds: float, before_api: Callable[[str], None] | None = None,
              ) -> tuple[list[Run], dict[str, ProcessProbe], ProcessProbe]:
    """For each round, OFF then ON: a fresh ``tally api`` (``before_api(mode)`` sets its environment),
    the slice ``slice_of(mode, round)`` posted flat out with ``probe(base, pause)`` beside it. The first
    ``--warmup-batches`` of a slice are posted first and not timed: a fresh API process fills the caches
    both modes keep (API keys, terms, the feature's own), and production processes are long-lived. The
    probe runs beside both modes, so it weighs on both throughputs alike; it also runs once idle."""
    runs: list[Run] = []
    probes: dict[str, ProcessProbe] = {}
    idle = None
    api = None
    try:
        for r in range(args.rounds):
            for mode in MODES:
                if before_api is not None:
                    before_api(mode)
                api, base, _log = start_api(url, workdir, args.api_workers)
                if idle is None:
                    with probe(base, 0.002) as idle:
                        time.sleep(idle_seconds)
                    say(f"probe idle: p50 {pct(idle.latencies, 50):.2f} ms, p99 {pct(idle.latencies, 99):.2f} ms")
                part = slice_of(mode, r)
                post_all(base, key, part[:args.warmup_batches], args.clients)
                part = part[args.warmup_batches:]
                say(f"round {r + 1}/{args.rounds}: {feature} {mode.upper()}, {len(part):,} batches ...")
                with probe(base, args.probe_pause_ms / 1000) as p:
                    seconds, accepted, failed, _ = post_all(base, key, part, args.clients)
                probes[mode] = probes[mode].merge(p) if mode in probes else p
                say(f"  {accepted:,} accepted in {seconds:.1f} s = {accepted / seconds:,.0f}/s; {failed} failed requests")
                runs.append((mode, seconds, accepted))
                stop(api)
                api = None
    finally:
        if api is not None:
            stop(api)
    return runs, probes, idle


def print_throughput(runs: list[Run], labels: dict[str, str], target: float) -> float:
    """The events/s of each mode, the ON/OFF ratio (overall and per OFF/ON pair) against ``target``;
    returns the ratio."""
    rate = {m: sum(n for mm, _, n in runs if mm == m) / sum(s for mm, s, _ in runs if mm == m) for m in MODES}
    per_pair = [runs[i + 1][2] / runs[i + 1][1] / (runs[i][2] / runs[i][1]) for i in range(0, len(runs), 2)]
    ratio = rate["on"] / rate["off"]
    width = max(len(label) for label in labels.values())
    print(f"{'HTTP ingestion':<{width}} {'events':>9} {'seconds':>8} {'events/s':>9}")
    for mode in MODES:
        ev = sum(n for m, _, n in runs if m == mode)
        sec = sum(t for m, t, _ in runs if m == mode)
        print(f"{labels[mode]:<{width}} {ev:>9,} {sec:>8.1f} {rate[mode]:>9,.0f}")
    print(f"ON / OFF: {ratio:.2f} (per OFF/ON pair: {', '.join(f'{x:.2f}' for x in per_pair)}); "
          f"target >= {target}: {'ok' if ratio >= target else 'MISSED'}")
    return ratio


def load_line(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    return (f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in before)}, "
            f"after {'/'.join(f'{x:.2f}' for x in after)}: other work on a shared machine skews every figure")
