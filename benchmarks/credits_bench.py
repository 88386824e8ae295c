"""What prepaid credits cost the metering API, measured in one run on this machine:

- HTTP ingestion (``POST /v1/executions``, batches of 1,000, ``--clients`` keep-alive connections,
  ``tally api`` with ``--api-workers`` uvicorn processes) of accounts of which half hold credits (the
  credits observer books their consumption after every committed batch: FEFO, under each account's
  lock), beside the same ingestion of a twin population that holds none (the floor). The accounts are
  split in two populations of the same size and plan mix (``bench_accounts``, even/odd), each with
  its own stream generated with the same seed; their slices alternate (``--rounds`` pairs) so both see
  the same table sizes. Free-plan holders are credits-only (every execution consumes), PAYG holders
  pay every execution with credits, Pro/Team holders only past their quota. Target ON/OFF >= 0.7.
- The entitlement check p50/p99 for credits-only accounts from a separate client process while each
  population is ingested flat out (and idle).

The month so far is loaded first (``--bulk-events``) and its consumption booked before timing (as a
running system would have). Nothing is asserted.

    python -m benchmarks.credits_bench [--accounts 1000] [--bulk-events 100000] [--http-events 200000]
"""

from __future__ import annotations

import argparse
import os
import platform as platform_mod
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg

from activities.ingest import ingest_file, known_models
from benchmarks import onoff
from benchmarks.api_bench import batches_of, month_so_far, pct, say
from benchmarks.dataset import write_dataset
from benchmarks.stack import BenchStack, install_signal_handlers
from billing import credits as rules
from billing.catalog import load_catalog
from billing.credits import Unit
from models.db import get_engine, libpq_url

TARGET_RATIO = 0.7


MODELS = ("claude-haiku", "gpt-4o-mini", "claude-sonnet", "gpt-4o")


def probe_credit_entitlements(base: str, key: str, account_ids: list[str], pause: float, stop_event, ready,
                              results) -> None:
    """In its own process: sequential entitlement checks of credits-only accounts until ``stop_event``."""
    from benchmarks.api_bench import probe_requests

    ready.set()
    probe_requests(base, key, lambda rnd: ("GET", f"/v1/accounts/{rnd.choice(account_ids)}/entitlement"
                                                  f"?model={rnd.choice(MODELS)}", None), pause, stop_event, results)


def give_credits(url: str, holders: list[dict], start: datetime) -> list[str]:
    """A large grant from the month's start for each holder; free-plan holders become credits-only.
    Returns the credits-only account ids."""
    from repositories import credits as repo

    only = []
    engine = get_engine(url)
    with engine.begin() as conn:
        for a in holders:
            grant = rules.ops_grant(grant_id=f"grant-bench-{a['id']}", account_id=a["id"], unit=Unit.credits,
                                    amount=Decimal(50_000_000), granted_at=start, reason="bench", expiry_months=12)
            repo.ensure_credit_account(conn, a["id"], a["plan"] == "free")
            repo.insert_grant(conn, grant, granted_by="bench")
            repo.append_entries(conn, [rules.grant_entry(grant)])
            if a["plan"] == "free":
                only.append(a["id"])
    return only


def _prefix_event_ids(jsonl: Path, prefix: str) -> None:
    import orjson

    out = jsonl.with_suffix(".prefixed.jsonl")
    with open(jsonl, "rb") as src, open(out, "wb") as dst:
        for line in src:
            doc = orjson.loads(line)
            doc["event_id"] = prefix + doc["event_id"]
            dst.write(orjson.dumps(doc) + b"\n")
    out.replace(jsonl)


def booked(url: str) -> dict[str, int]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {name: conn.execute(sql).fetchone()[0] for name, sql in (
            ("executions decided", "SELECT count(*) FROM credit_bookings"),
            ("paid with credits", "SELECT count(*) FROM credit_bookings WHERE funded"),
            ("ledger entries", "SELECT count(*) FROM credit_ledger"),
            ("negative grants", "SELECT count(*) FROM (SELECT grant_id FROM credit_ledger GROUP BY 1 "
                                "HAVING sum(amount) < 0) x"),
        )}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.credits_bench", description=__doc__.split("\n\n")[0])
    return onoff.add_args(p, bulk_events=100_000, warmup_batches=8,
                          accounts_help="both populations together").parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    workdir = onoff.workdir_for(args, "credits")
    now = datetime.now(timezone.utc)
    span = month_so_far(now)
    load_before = os.getloadavg()
    try:
        with BenchStack(workdir, echo=say) as stack:
            url, key, accounts = onoff.database_with_accounts(stack, "credits", args.accounts)
            on_pop, off_pop = accounts[0::2], accounts[1::2]
            holders = on_pop[0::2]
            only = give_credits(url, holders, span.start)
            say(f"{len(holders)} of {len(on_pop)} accounts hold credits ({len(only)} credits-only); "
                f"{len(off_pop)} twin accounts hold none")
            bulk = write_dataset(workdir, accounts, span, args.bulk_events, seed=31, with_copy_file=False, name="bulk")
            report = ingest_file(url, bulk.jsonl, known_models(load_catalog()))
            t0 = time.perf_counter()
            from services.credits import consume_for

            consume_for(get_engine(url), load_catalog(), [a["id"] for a in holders], now, 48)
            say(f"month so far: {report.accepted:,} executions loaded; holders' consumption booked in "
                f"{time.perf_counter() - t0:.1f} s")
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                for table in ("executions", "usage_counters", "credit_ledger", "credit_bookings"):
                    conn.execute(f"VACUUM (ANALYZE) {table}")
            # the same seed for both populations: the same volumes per account index, the same plan mix
            streams = {"on": write_dataset(workdir, on_pop, span, args.http_events, seed=32, with_copy_file=False,
                                           name="http-on"),
                       "off": write_dataset(workdir, off_pop, span, args.http_events, seed=32, with_copy_file=False,
                                            name="http-off")}
            _prefix_event_ids(streams["on"].jsonl, "c-")  # the same seed made the same event ids
            bodies = {m: batches_of(s.jsonl, args.batch) for m, s in streams.items()}
            slices = {m: [b[i::args.rounds] for i in range(args.rounds)] for m, b in bodies.items()}
            runs, probes, idle = onoff.run_onoff(
                args, url=url, workdir=workdir, key=key, feature="credits",
                slice_of=lambda mode, r: slices[mode][r], idle_seconds=5,
                probe=lambda base, pause: onoff.ProcessProbe(probe_credit_entitlements, (base, key, only), pause,
                                                             settle=0.5, start_timeout=300))
            counts = booked(url)
            pg_version = psycopg.connect(libpq_url(url)).execute("SHOW server_version").fetchone()[0]
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    load_after = os.getloadavg()
    print()
    print(f"credits on ingestion — {os.cpu_count()} cores, Python {platform_mod.python_version()}, Postgres "
          f"{pg_version}, {args.accounts:,} accounts in two populations, {report.accepted:,} executions already "
          f"this month, batches of {args.batch:,} from {args.clients} clients, {args.api_workers} uvicorn workers")
    onoff.print_throughput(runs, {"off": "no account holds credits (floor)",
                                  "on": "half the accounts hold credits (consumption booked)"}, TARGET_RATIO)
    for label, p in (("idle", idle), ("during the floor's ingestion", probes["off"]),
                     ("during ingestion with credits", probes["on"])):
        print(f"entitlement, credits-only accounts, {label:<30} {p.line()}  "
              f"(handler p50 {pct(p.server_ms, 50):.2f} ms, p99 {pct(p.server_ms, 99):.2f} ms; errors {p.errors})")
    print("booked: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(onoff.load_line(load_before, load_after))
    return 0 if counts["negative grants"] == 0 and probes["on"].errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
