"""The close's Stripe pacing under Stripe's live rate limit (``python -m benchmarks.pacing_bench``).

    .venv/bin/python -m benchmarks.pacing_bench [--invoices 2500] [--cap 100] [--pace 100]
        [--chunk-size 100] [--parallel 4] [--concurrency 8] [--lines 2]

Stripe allows about 100 writes/s in live mode; a pushed invoice takes 4 (customer, create, add_lines,
finalize), so a close cannot push more than about 25 invoices/s however fast Tally is. This bench
measures how close the push gets to that ceiling, against the emulator with its write rate cap
(``--write-rate-cap``, answering 429 past it like Stripe):

- ``--invoices`` drafts (``--lines`` lines each, a new customer each) are written straight into a fresh
  database (no executions, no rating: only the push is timed);
- they are pushed as the close pushes them: chunks of ``--chunk-size`` through
  ``InvoicePusher.push_many`` (the recorded, batched Stripe steps), ``--parallel`` chunks at once,
  ``--concurrency`` calls per chunk, with Tally's own pacing ``TALLY_STRIPE_WRITES_PER_SECOND`` =
  ``--pace`` (0: none, then the cap's 429s and Retry-After do the pacing);
- printed: wall time beside the floor writes / cap, writes/s and invoices/s achieved, 429s answered, and
  the time 100,000 invoices would take at the rate achieved.

One process pushes (one worker's limiter is the whole pace); with several workers the pace is split
between them (docs/scaling.md). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

from activities.push import InvoicePusher
from billing.catalog import default_catalog
from billing.periods import Period
from gateways.stripe import StripeGateway
from models.db import get_engine, libpq_url
from repositories import catalog_versions

from benchmarks.stack import BenchStack, install_signal_handlers, remove_tree

PERIOD = Period.parse("2026-10")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_drafts(url: str, invoices: int, lines: int) -> list[int]:
    """``invoices`` PAYG accounts, each with a draft invoice of ``lines`` lines (plain SQL)."""
    with get_engine(url).begin() as conn:
        version_id = catalog_versions.ensure_catalog_version(conn, default_catalog().at(PERIOD.start))
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(
            "INSERT INTO accounts (id, plan, seats, overage_opt_in, billing_starts_at) "
            "SELECT 'pace-' || lpad(i::text, 7, '0'), 'payg', 1, false, %s FROM generate_series(1, %s) i",
            (PERIOD.start, invoices))
        conn.execute(
            "INSERT INTO invoices (account_id, period, period_start, period_end, plan, seats, overage_opt_in, "
            "catalog_version_id, executions, subtotal, total) "
            "SELECT 'pace-' || lpad(i::text, 7, '0'), %s, %s, %s, 'payg', 1, false, %s, 100 * %s, %s, %s "
            "FROM generate_series(1, %s) i",
            (str(PERIOD), PERIOD.start, PERIOD.end, version_id, lines, lines, lines, invoices))
        conn.execute(
            "INSERT INTO invoice_lines (invoice_id, position, kind, model, description, quantity, unit_price, "
            "amount, catalog_version_id, key) "
            "SELECT i.id, p, 'usage', 'gpt-4o-mini', 'gpt-4o-mini executions', 100, 0.01, 1.00, %s, 'usage:' || p "
            "FROM invoices i CROSS JOIN generate_series(1, %s) p WHERE i.period = %s",
            (version_id, lines, str(PERIOD)))
        ids = [r[0] for r in conn.execute("SELECT id FROM invoices WHERE period = %s ORDER BY account_id",
                                          (str(PERIOD),))]
        conn.commit()
    return ids


def set_cap(emulator_url: str, per_second: float | None) -> None:
    req = urllib.request.Request(emulator_url + "/_emulator/rate_cap", method="POST",
                                 data=json.dumps({"writes_per_second": per_second}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pacing_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--invoices", type=int, default=2_500)
    ap.add_argument("--cap", type=float, default=100.0, help="the emulator's write rate cap (writes/s)")
    ap.add_argument("--pace", type=float, default=100.0, help="Tally's own writes/s (0: none)")
    ap.add_argument("--chunk-size", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--lines", type=int, default=2)
    args = ap.parse_args(argv)
    install_signal_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="tally-pacing-"))
    load0 = os.getloadavg()
    say(f"pacing bench: {args.invoices:,} invoices, emulator cap {args.cap:g} writes/s, Tally pace {args.pace:g}; "
        f"load average {load0[0]:.2f} on {os.cpu_count()} CPUs")
    try:
        with BenchStack(workdir, echo=say) as stack:
            stack.start_postgres()
            url = stack.fresh_database("pacing")
            ids = seed_drafts(url, args.invoices, args.lines)
            stack.start_emulator()
            set_cap(stack.emulator_url, args.cap)
            settings = stack.settings(url, task_queue="pacing", concurrency=args.concurrency,
                                      chunk_size=args.chunk_size, parallel=args.parallel)
            settings = settings.model_copy(update={"stripe_writes_per_second": args.pace})
            pusher = InvoicePusher(get_engine(url, pool_size=args.parallel + 2), StripeGateway(settings))
            chunks = [ids[i:i + args.chunk_size] for i in range(0, len(ids), args.chunk_size)]
            before = stack.emulator_stats()
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                batches = list(pool.map(lambda c: pusher.push_many(c, workers=args.concurrency), chunks))
            seconds = time.perf_counter() - started
            after = stack.emulator_stats()
            errors = sum(len(b.errors) for b in batches)
            pushed = sum(1 for b in batches for o in b.outcomes.values() if o.status == "open")
            eps = {k: v - before.get("by_endpoint", {}).get(k, 0) for k, v in after.get("by_endpoint", {}).items()}
            writes = sum(v for k, v in eps.items() if k.startswith("POST"))
            limited = after.get("by_status", {}).get("429", 0) - before.get("by_status", {}).get("429", 0)
    finally:
        remove_tree(workdir)
    load1 = os.getloadavg()
    done = writes - limited  # the writes Stripe accepted
    floor = done / args.cap if args.cap else 0.0
    print()
    print(f"pacing   {pushed:,} invoices pushed ({errors} not) in {seconds:.1f} s | floor {floor:.1f} s "
          f"({done:,} accepted writes at the {args.cap:g}/s cap) | ratio {seconds / floor if floor else 0:.2f}x")
    print(f"         {done / seconds:.1f} accepted writes/s, {pushed / seconds:.1f} invoices/s, {limited:,} POSTs "
          f"answered 429; 100,000 invoices at this rate: {100_000 / max(pushed / seconds, 1e-9) / 60:.0f} min "
          f"(floor {100_000 * done / max(pushed, 1) / args.cap / 60:.0f} min)")
    print(f"         load average {load0[0]:.2f} at start, {load1[0]:.2f} at end ({os.cpu_count()} CPUs, shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
