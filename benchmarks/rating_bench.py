"""Rating speed with a token-priced mix (``python -m benchmarks.rating_bench``; part of ``make bench``).

Loads a month of executions (half the accounts priced per token, BYOK and sandbox mixed in) with COPY,
and their month-to-date counters as ingest keeps them, then times, in the same run:
- the floor: the plain SQL aggregation of the same rows (GROUP BY account, model);
- Tally's rating of every account, in chunks of 100 as the close does (ranking, segments, versions,
  token lines, platform cost), without writing invoices.
Floor and rating alternate ``--repeats`` times (default 3); prints the best of each, their ratio, every
pair, and the 1-minute load average before and after (other work on a shared machine skews both; the
later rounds rate with the rater's per-catalog memories warm, as a worker does after its first chunk).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

from activities import pricing
from billing.catalog import default_catalog
from billing.periods import Period
from models.db import get_engine, libpq_url, migrate
from repositories import accounts as account_rows
from repositories.usage import COUNT_INSERTED, INSERTED_COLUMNS
from workers.demo import MODEL_MIX

PERIOD = Period.parse("2026-10")
# The loaded rows counted by ingest's own statement (repositories.usage.COUNT_INSERTED).
COUNT_LOADED = f"WITH ins AS (SELECT {INSERTED_COLUMNS} FROM executions)\n{COUNT_INSERTED}"


def fresh_database(server_url: str | None) -> tuple[str, object]:
    """A new database on ``server_url`` / DATABASE_URL (dropped afterwards) or on an embedded server."""
    from workers.devstack import ensure_database, start_embedded_postgres, stop_embedded_postgres

    server = server_url or os.environ.get("DATABASE_URL")
    cleanup = None
    if not server:
        pgdir = Path(tempfile.mkdtemp(prefix="tally-rating-bench-"))
        server = start_embedded_postgres(pgdir)

        def cleanup():  # the server and its data directory (~1.4 GB a run)
            stop_embedded_postgres(pgdir)
            shutil.rmtree(pgdir, ignore_errors=True)
    name = f"tally_rating_bench_{uuid.uuid4().hex[:8]}"
    url = ensure_database(server, name)
    migrate(url)
    if cleanup is None:
        def cleanup():
            with psycopg.connect(libpq_url(server), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return url, cleanup


def load(url: str, accounts: int, executions: int, seed: int = 5) -> None:
    rng = random.Random(seed)
    engine = get_engine(url)
    with engine.begin() as conn:
        for i in range(accounts):
            plan = ("pro", "team", "payg")[i % 3]
            account_rows.create_account(conn, account_id=f"r-{i:06d}", plan=plan, seats=2 if plan == "team" else 1,
                                        overage_opt_in=True, email=None,
                                        billing_starts_at=PERIOD.start - timedelta(days=40),
                                        pricing="tokens" if i % 2 else "executions")
    models, weights = list(MODEL_MIX), list(MODEL_MIX.values())
    span = (PERIOD.end - PERIOD.start).total_seconds()
    with psycopg.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        with cur.copy("COPY executions (event_id, account_id, agent_id, skill_id, model, input_tokens, "
                      "output_tokens, byok, sandbox, occurred_at) FROM STDIN") as copy:
            for k in range(executions):
                copy.write_row((
                    f"e{k:09d}", f"r-{rng.randrange(accounts):06d}", "agent", "skill",
                    rng.choices(models, weights)[0], rng.randint(200, 4000), rng.randint(50, 1500),
                    rng.random() < 0.1, rng.random() < 0.02,
                    PERIOD.start + timedelta(seconds=rng.random() * span),
                ))
        # What ingest counts of the same rows, in the same transaction.
        cur.execute(COUNT_LOADED)
        conn.commit()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE executions")
        try:  # write the load's dirty pages now, not in the middle of a timed round
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            pass


def sql_floor(url: str) -> float:
    with psycopg.connect(libpq_url(url)) as conn:
        t = time.perf_counter()
        conn.execute("SELECT account_id, model, count(*), sum(input_tokens), sum(output_tokens) FROM executions "
                     "WHERE occurred_at >= %s AND occurred_at < %s GROUP BY 1, 2",
                     (PERIOD.start, PERIOD.end)).fetchall()
        return time.perf_counter() - t


def rate_all(url: str, accounts: int, chunk: int = 100) -> tuple[float, int]:
    catalog = default_catalog()
    engine = get_engine(url)
    ids = [f"r-{i:06d}" for i in range(accounts)]
    lines = 0
    t = time.perf_counter()
    for i in range(0, len(ids), chunk):
        with engine.begin() as conn:
            ratings = pricing.rate_accounts(conn, catalog, PERIOD, ids[i:i + chunk])
        lines += sum(len(r.rated.lines) for r in ratings.values())
    return time.perf_counter() - t, lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--executions", type=int, default=1_000_000)
    ap.add_argument("--database-url", default=None, help="a server to create the bench database on")
    ap.add_argument("--repeats", type=int, default=3, help="floor and rating measured this many times, alternating")
    args = ap.parse_args(argv)
    url, cleanup = fresh_database(args.database_url)
    try:
        t = time.perf_counter()
        load(url, args.accounts, args.executions)
        print(f"loaded {args.accounts:,} accounts, {args.executions:,} executions in {time.perf_counter() - t:.1f} s")
        load_before = os.getloadavg()[0]
        # Floor and rating alternate, so a burst of other work on a shared machine hits both; the
        # figure is the best of each (what the machine does when nothing else runs), every pair shown.
        pairs = []
        for _ in range(args.repeats):
            floor_s = min(sql_floor(url) for _ in range(2))
            rating_s, lines = rate_all(url, args.accounts)
            pairs.append((floor_s, rating_s))
        floor, rating = min(f for f, _ in pairs), min(r for _, r in pairs)
        per_m = rating / (args.executions / 1_000_000)
        print(f"rating   {args.executions:,} executions (half token-priced) {rating:.2f} s = {per_m:.2f} s per 1M; "
              f"{lines:,} lines | SQL GROUP BY floor {floor:.2f} s | ratio {rating / floor:.2f}x | "
              f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
        print("  each pair (floor s / rating s = ratio): "
              + ", ".join(f"{f:.2f} / {r:.2f} = {r / f:.2f}x" for f, r in pairs))
    finally:
        get_engine(url).dispose()
        if cleanup:
            cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
