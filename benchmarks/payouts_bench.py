"""``make bench``: a month's creator payouts on the real stack, beside the same transfers made straight
through the SDK.

    .venv/bin/python -m benchmarks.payouts_bench [--creators 10000] [--concurrency 16] [--page-size 1000] [--keep]

1. Data: ``--creators`` creators, each with an enabled Express account in the emulator and one $30.00
   earning payable in the month (so every one is paid: the run's whole cost is deciding and paying).
2. Tally: ``PayoutRun`` (``payouts-YYYY-MM``) through the Temporal dev server and a worker process: pages
   of ``--page-size`` creators decided in one activity each, then paid through ``StripeLedger.perform_batch``
   (keys recorded in one statement before the calls, ``--concurrency`` transfers at once, outcomes in one
   statement). Wall time from start to result.
3. Floor, same run, same concurrency: the same number of transfers (same amounts, destinations,
   ``transfer_group`` and metadata, an idempotency key each) straight through the SDK to the same emulator,
   nothing recorded anywhere, half before Tally's run and half after (a shared machine's load drifts).
Figures: seconds of each and their ratio (target <= 1.5), Stripe calls per paid payout (target 1),
transfers per payout id in the emulator (1: nothing paid twice), CPU seconds per process, the machine's
load average. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Callable

import psutil
import psycopg

from benchmarks.sdk_floor import SdkFloor, load_line, say
from benchmarks.stack import BenchInterrupted, BenchStack, cpu_seconds, install_signal_handlers, remove_tree, stripe_client
from billing.periods import Period
from models.db import libpq_url
from models.settings import Settings

PERIOD = Period.parse("2026-10")
AMOUNT_CENTS = 3000


def make_accounts(sdk, base_url: str, n: int, threads: int) -> list[str]:
    """``n`` Express accounts, enabled (transfers active) through the emulator's control plane."""
    def one(i: int) -> str:
        acct = sdk.v1.accounts.create(params={"type": "express", "metadata": {"tally_creator_id": f"cr-{i:06d}"}}).id
        req = urllib.request.Request(f"{base_url}/_emulator/accounts/{acct}/enable", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30):
            pass
        return acct

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(n)))


def seed(url: str, accounts: list[str]) -> None:
    """Creators with their accounts, and one earning each payable in the month (one statement each)."""
    ids = [f"cr-{i:06d}" for i in range(len(accounts))]
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("INSERT INTO creators (id, email, stripe_account_id, charges_enabled, payouts_enabled, "
                     "details_submitted, transfers_capability) SELECT c, c || '@example.com', a, true, true, true, "
                     "'active' FROM unnest(%s::text[], %s::text[]) AS x(c, a)", (ids, accounts))
        conn.execute("INSERT INTO creator_earnings (id, creator_id, account_id, period, source, amount, revenue, "
                     "executions, skills, payable_from) SELECT 'bench:' || c, c, 'acct', %s, 'bench', %s, %s, 1, "
                     "'[]'::jsonb, %s FROM unnest(%s::text[]) AS x(c)",
                     (str(PERIOD), AMOUNT_CENTS / 100, AMOUNT_CENTS / 100, PERIOD.start + timedelta(days=10), ids))
        conn.commit()


def send_transfer(sdk) -> Callable[[str, int, str], None]:
    """The floor's call: the transfer Tally makes for a payout (amount, destination, group, metadata, key)."""
    def send(tag: str, i: int, acct: str) -> None:
        group = f"floor-{tag}-{i}"
        sdk.v1.transfers.create(params={"amount": AMOUNT_CENTS, "currency": "usd", "destination": acct,
                                        "transfer_group": group, "metadata": {"tally_payout_id": group}},
                                options={"idempotency_key": group})
    return send


async def run_payouts(settings: Settings, page_size: int, concurrency: int):
    from models.schemas import PayoutRunInput
    from workers.worker import connect
    from workflows.payouts import PayoutRunWorkflow

    client = await connect(settings)
    return await client.execute_workflow(
        PayoutRunWorkflow.run, PayoutRunInput(period=str(PERIOD), page_size=page_size, concurrency=concurrency),
        id=f"payouts-{PERIOD}", task_queue=settings.task_queue, execution_timeout=timedelta(hours=3))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Settings()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.payouts_bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--creators", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=d.payouts_concurrency, help="transfers at once")
    ap.add_argument("--page-size", type=int, default=d.payouts_page_size, help="creators per activity")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args(argv)
    if min(args.creators, args.concurrency, args.page_size) < 1:
        ap.error("--creators, --concurrency and --page-size must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="tally-payouts-bench-"))
    load0 = os.getloadavg()
    say(f"tally payouts bench: {args.creators:,} creators, {args.concurrency} transfers at once, pages of "
        f"{args.page_size}; load average {load0[0]:.2f} on {os.cpu_count()} CPUs; temp dir {workdir}")
    rc = 0
    try:
        with BenchStack(workdir, echo=say) as stack:
            stack.start_postgres()
            url = stack.fresh_database("payouts")
            stack.start_temporal()
            base = stack.start_emulator()
            settings = stack.settings(url, task_queue=f"payouts-bench-{uuid.uuid4().hex[:6]}",
                                      concurrency=args.concurrency, chunk_size=100, parallel=1)
            sdk = stripe_client(base, settings)
            t = time.perf_counter()
            accounts = make_accounts(sdk, base, args.creators, args.concurrency)
            seed(url, accounts)
            say(f"data: {len(accounts):,} creators with enabled accounts and a $30.00 earning each, "
                f"in {time.perf_counter() - t:.1f} s")

            bench_proc, emu_proc = psutil.Process(), stack.emulator.proc()
            halves = [accounts[: len(accounts) // 2], accounts[len(accounts) // 2:]]
            floor = SdkFloor(send_transfer(sdk), args.concurrency, "transfers", emulator_proc=emu_proc,
                             bench_proc=bench_proc)
            floor.half(halves[0], "a")
            worker = stack.start_worker(settings)
            time.sleep(1.0)
            procs = {"worker": (worker.proc(), False), "postgres": (stack.postgres_process(), True),
                     "stripe-emulator": (emu_proc, False), "temporal": (stack.temporal.proc(), False)}
            procs = {k: v for k, v in procs.items() if v[0] is not None}
            cpu0 = {k: cpu_seconds(p, with_children=c) for k, (p, c) in procs.items()}
            stats0 = stack.emulator_stats()
            load_mid0 = os.getloadavg()
            say(f"tally: payouts-{PERIOD}")
            t = time.perf_counter()
            result = asyncio.run(run_payouts(settings, args.page_size, args.concurrency))
            ours_s = time.perf_counter() - t
            load_mid = os.getloadavg()
            cpu_ours = {k: cpu_seconds(p, with_children=c) - cpu0[k] for k, (p, c) in procs.items()}
            stats1 = stack.emulator_stats()
            stack.stop_worker(worker)
            calls = stats1["totals"]["requests"] - stats0["totals"]["requests"]
            posts = (stats1.get("by_endpoint", {}).get("POST /v1/transfers", 0)
                     - stats0.get("by_endpoint", {}).get("POST /v1/transfers", 0))
            with psycopg.connect(libpq_url(url)) as conn:
                paid_rows, distinct_transfers = conn.execute(
                    "SELECT count(*), count(DISTINCT stripe_transfer_id) FROM payouts WHERE status = 'paid'").fetchone()
            say(f"tally: {result.paid:,} paid (${result.amount_paid}), {len(result.failed)} failed, {result.carried} "
                f"carried, in {ours_s:.1f} s")
            floor.half(halves[1], "b")
            load1 = os.getloadavg()

            print()
            print(f"creator payouts, {args.creators:,} creators, {args.concurrency} transfers at once")
            print(f"  Tally  PayoutRun (decide + recorded transfers):  {ours_s:8.1f} s  {result.paid:>8,} payouts  "
                  f"{result.paid / ours_s if ours_s else 0:8.1f} /s")
            floor_s = floor.seconds
            print(f"  floor  SDK transfers straight (two halves):    {floor_s:8.1f} s  {floor.ok:>8,} transfers "
                  f"{floor.rate:8.1f} /s  ({floor.errors} errors)")
            print(f"  ratio  {ours_s / floor_s if floor_s else 0:.2f} x the floor's time  (target <= 1.50)")
            print(f"  Stripe calls per paid payout: {calls / max(1, result.paid):.2f} ({calls:,} requests, "
                  f"{posts:,} transfer POSTs; target 1); payouts paid {paid_rows:,} with {distinct_transfers:,} "
                  f"distinct transfers")
            print("  CPU s (Tally run): " + ", ".join(f"{k} {v:.1f}" for k, v in cpu_ours.items()))
            print(floor.cpu_line())
            print(load_line(load0[0], load_mid0[0], load_mid[0], load1[0], os.cpu_count()))
            print(json.dumps({"bench": "payouts", "creators": args.creators, "tally_s": round(ours_s, 2),
                              "floor_s": round(floor_s, 2), "ratio": round(ours_s / floor_s, 3) if floor_s else None,
                              "calls_per_paid": round(calls / max(1, result.paid), 3), "load": round(load_mid[0], 2)}))
    except (KeyboardInterrupt, BenchInterrupted):
        say("interrupted; stopping what was started")
        rc = 130
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            remove_tree(workdir)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
