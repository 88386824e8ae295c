"""Figures of model routing and usage analytics, measured in one run on this machine:

- Route latency: ``POST /v1/route`` p50/p99 from a separate client process (http.client, one keep-alive
  connection, sequential) against ``tally api`` (uvicorn, ``--api-workers`` processes) on a database
  with a bulk-loaded month: idle, while ``POST /v1/executions`` runs as fast as ``--clients``
  connections go, and while it runs at the 10,000 events/s target. Half the routes give an expected
  token count, half use the skill's median (cached per process for a minute); a tenth of the accounts
  hold BYOK keys and a tenth have a slider. Target: p99 well under 10 ms.
- Analytics: ``services.analytics.usage_analytics`` (the seven measures, three months) on
  ``--analytics-events`` executions spread over those months, beside the floor: a plain
  ``GROUP BY account_id, model`` over the same rows, fetched to the client. Each is run
  ``--repeat`` times, alternating; medians. Target: at most 3x the floor.

    python -m benchmarks.routing_bench [--accounts 1000] [--bulk-events 200000] [--http-events 200000]
                                       [--analytics-events 1000000]
"""

from __future__ import annotations

import argparse
import io
import os
import platform as platform_mod
import random
import shutil
import statistics
import sys
import tempfile
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import orjson
import psycopg

from activities.ingest import ingest_file, known_models
from benchmarks.api_bench import (
    TARGET_HTTP,
    Probe,
    batches_of,
    create_accounts,
    create_platform,
    month_so_far,
    pct,
    post_all,
    probe_requests,
    say,
    start_api,
    stop,
)
from benchmarks.dataset import COPY_COLUMNS, bench_accounts, write_dataset
from benchmarks.floors import COPY_BLOCK
from benchmarks.stack import BenchStack, install_signal_handlers
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import get_engine, libpq_url

TARGET_ROUTE_P99_MS = 10.0
TARGET_ANALYTICS_RATIO = 3.0
SKILLS = [f"skill-{i}" for i in range(1, 21)]  # benchmarks.dataset's skills
ANALYTICS_PERIOD = Period.parse("2026-10")


# ---- route latency -----------------------------------------------------------------------------------------------
def scores_csv(models: list[str], seed: int = 5) -> str:
    rng = random.Random(seed)
    lines = ["skill,model,score,measured_at,suite_id"]
    for skill in SKILLS:
        for model in models:
            lines.append(f"{skill},{model},{rng.randint(40, 98)},2026-01-05T00:00:00Z,bench-1")
    return "\n".join(lines) + "\n"


def route_settings(url: str, account_ids: list[str]) -> None:
    """A tenth of the accounts hold BYOK keys (anthropic, openai), another tenth have a slider of 0.5."""
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("INSERT INTO account_routing (account_id, slider, byok_providers) "
                     "SELECT unnest(%s::text[]), 0, '{anthropic,openai}'", (account_ids[::10],))
        conn.execute("INSERT INTO account_routing (account_id, slider) SELECT unnest(%s::text[]), 0.5",
                     (account_ids[5::10],))


def probe_routes(base: str, key: str, account_ids: list[str], pause: float, stop_event, results) -> None:
    """In its own process: sequential routes (half with an expected token count) until ``stop_event``."""
    def make(rnd: random.Random):
        body = {"account_id": rnd.choice(account_ids), "skill_id": rnd.choice(SKILLS)}
        if rnd.random() < 0.5:
            body.update(expected_input_tokens=rnd.randint(100, 5000), expected_output_tokens=rnd.randint(50, 1000))
        return "POST", "/v1/route", orjson.dumps(body)

    probe_requests(base, key, make, pause, stop_event, results)


def route_probe(base: str, key: str, account_ids: list[str], pause: float) -> Probe:
    return Probe(base, key, account_ids, pause, target=probe_routes)


def route_figures(stack: BenchStack, args, workdir: Path) -> dict:
    url = stack.fresh_database("route")
    now = datetime.now(timezone.utc)
    platform_id, key = create_platform(url)
    accounts = bench_accounts(args.accounts)
    create_accounts(url, accounts, platform_id)
    ids = [a["id"] for a in accounts]
    catalog = load_catalog()
    span = month_so_far(now)
    say(f"route: {len(accounts):,} accounts, {args.bulk_events:,} bulk + {args.http_events:,} HTTP events of "
        f"{Period.of(now)} ...")
    bulk_ds = write_dataset(workdir, accounts, span, args.bulk_events, seed=21, with_copy_file=False, name="rbulk")
    http_ds = write_dataset(workdir, accounts, span, args.http_events + args.paced_batches * args.batch, seed=22,
                            with_copy_file=False, name="rhttp")
    bulk = ingest_file(url, bulk_ds.jsonl, known_models(catalog))
    say(f"route: bulk {bulk.accepted:,} in {bulk.seconds:.1f} s")
    from services.routing import import_scores

    imported = import_scores(get_engine(url), catalog, io.StringIO(scores_csv(sorted(catalog.at(now).models))),
                             now=now)
    route_settings(url, ids)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) executions")
    bodies = batches_of(http_ds.jsonl, args.batch)
    api, base, log = start_api(url, workdir, args.api_workers)
    try:
        say(f"route: api {base}, {imported.accepted} scores; warming up ...")
        with route_probe(base, key, ids, pause=0.001):
            time.sleep(2)
        with route_probe(base, key, ids, pause=0.002) as idle:
            time.sleep(3)
        full, paced = bodies[:len(bodies) - args.paced_batches], bodies[len(bodies) - args.paced_batches:]
        with route_probe(base, key, ids, pause=args.probe_pause_ms / 1000) as busy:
            http_s, http_accepted, failed, _ = post_all(base, key, full, args.clients)
        rate = TARGET_HTTP / args.batch
        with route_probe(base, key, ids, pause=args.probe_pause_ms / 1000) as paced_probe:
            paced_s, paced_accepted, paced_failed, _ = post_all(base, key, paced, args.clients, per_second=rate)
    finally:
        stop(api)
    with psycopg.connect(libpq_url(url)) as conn:
        decisions = conn.execute("SELECT count(*) FROM routing_decisions").fetchone()[0]
    return {"idle": idle, "busy": busy, "paced": paced_probe, "http_rate": http_accepted / http_s,
            "paced_rate": paced_accepted / paced_s, "failed": failed + paced_failed, "decisions": decisions}


# ---- analytics ----------------------------------------------------------------------------------------------------
def load_analytics_month(url: str, workdir: Path, accounts: list[dict], events: int) -> None:
    """``events`` executions over the three months up to ANALYTICS_PERIOD, COPYed straight in, and plan
    changes for the funnel and churn (a tenth of the free accounts to pro, a tenth of those to team,
    a twentieth of the team accounts down to pro)."""
    first = ANALYTICS_PERIOD.previous().previous()
    span = types.SimpleNamespace(start=first.start, end=ANALYTICS_PERIOD.end)
    ds = write_dataset(workdir, accounts, span, events, seed=31, name="analytics")
    with psycopg.connect(libpq_url(url)) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY executions ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
            with open(ds.copy_file, "rb") as fh:
                while block := fh.read(COPY_BLOCK):
                    copy.write(block)
        free = [a["id"] for a in accounts if a["plan"] == "free"]
        team = [a["id"] for a in accounts if a["plan"] == "team"]
        changes = [(a, "2026-09-10", "pro") for a in free[::10]] + [(a, "2026-10-12", "team") for a in free[::100]]
        changes += [(a, "2026-10-05", "pro") for a in team[::20]]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO account_terms (account_id, effective_from, plan, seats, overage_opt_in, "
                            "pricing, reason) VALUES (%s, %s, %s, 1, false, 'executions', 'bench')", changes)
        conn.commit()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) executions")


def floor_group_by(url: str, start, end) -> tuple[float, int]:
    with psycopg.connect(libpq_url(url)) as conn:
        t = time.perf_counter()
        rows = conn.execute("SELECT account_id, model, count(*), sum(input_tokens), sum(output_tokens) "
                            "FROM executions WHERE occurred_at >= %s AND occurred_at < %s GROUP BY 1, 2",
                            (start, end)).fetchall()
        return time.perf_counter() - t, len(rows)


def analytics_figures(stack: BenchStack, args, workdir: Path) -> dict:
    from repositories import analytics as repo
    from services.analytics import usage_analytics

    url = stack.fresh_database("analytics")
    accounts = bench_accounts(args.accounts)
    _accounts_without_platform(url, accounts)
    say(f"analytics: {args.analytics_events:,} executions over 3 months up to {ANALYTICS_PERIOD} ...")
    load_analytics_month(url, workdir, accounts, args.analytics_events)
    engine = get_engine(url)
    catalog = load_catalog()
    start = ANALYTICS_PERIOD.previous().previous().start
    floor_s, report_s, scan_s, tokens_s = [], [], [], []
    floor_groups = 0
    for i in range(args.repeat + 1):  # the first round warms the cache and is not counted
        f, floor_groups = floor_group_by(url, start, ANALYTICS_PERIOD.end)
        t = time.perf_counter()
        data = usage_analytics(engine, catalog, str(ANALYTICS_PERIOD), 3)
        r = time.perf_counter() - t
        with engine.begin() as conn:
            t = time.perf_counter()
            repo.load_usage(conn, start, ANALYTICS_PERIOD.end, [("v", start, ANALYTICS_PERIOD.end)],
                           ANALYTICS_PERIOD.start, None)
            s = time.perf_counter() - t
            t = time.perf_counter()
            repo.tokens_per_execution(conn, ANALYTICS_PERIOD.start, ANALYTICS_PERIOD.end, None)
            k = time.perf_counter() - t
        if i:
            floor_s.append(f)
            report_s.append(r)
            scan_s.append(s)
            tokens_s.append(k)
    users = data["executions_per_user"][-1]
    say(f"analytics: {users['users']:,} users in {ANALYTICS_PERIOD}, median {users['median']}, "
        f"p99 {users['p99']}; {len(data['tiers'])} tiers")
    return {"floor": statistics.median(floor_s), "report": statistics.median(report_s),
            "scan": statistics.median(scan_s), "tokens": statistics.median(tokens_s), "floor_groups": floor_groups}


def _accounts_without_platform(url: str, accounts: list[dict]) -> None:
    from services.accounts import NewAccount, create_missing_accounts

    create_missing_accounts(get_engine(url), [NewAccount(a["id"], a["plan"], a["seats"], a["overage"], a["email"])
                                              for a in accounts], datetime(2026, 1, 1, tzinfo=timezone.utc))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.routing_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=1_000)
    p.add_argument("--bulk-events", type=int, default=200_000, help="recorded before the routes (token mixes)")
    p.add_argument("--http-events", type=int, default=200_000, help="posted as fast as the clients go")
    p.add_argument("--paced-batches", type=int, default=100, help="then posted at 10,000 events/s")
    p.add_argument("--batch", type=int, default=1_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--api-workers", type=int, default=2)
    p.add_argument("--probe-pause-ms", type=float, default=5.0)
    p.add_argument("--analytics-events", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-route", action="store_true")
    p.add_argument("--skip-analytics", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="tally-routing-bench-"))
    os.chmod(workdir, 0o755)
    load_before = os.getloadavg()
    route = analytics = None
    try:
        with BenchStack(workdir, echo=say) as stack:
            stack.start_postgres()
            if not args.skip_route:
                route = route_figures(stack, args, workdir)
            if not args.skip_analytics:
                analytics = analytics_figures(stack, args, workdir)
            with psycopg.connect(libpq_url(stack.fresh_database("version"))) as conn:
                pg_version = conn.execute("SHOW server_version").fetchone()[0]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    print()
    print(f"routing and analytics — {os.cpu_count()} cores, Python {platform_mod.python_version()}, "
          f"Postgres {pg_version}, {args.accounts:,} accounts")
    ok = True
    if route:
        print(f"POST /v1/route latency (separate client process, one keep-alive connection; "
              f"{route['decisions']:,} decisions recorded):")
        for label, pr in (("idle server", route["idle"]),
                          (f"during HTTP ingestion at full speed ({route['http_rate']:,.0f}/s)", route["busy"]),
                          (f"during HTTP ingestion at {route['paced_rate']:,.0f}/s", route["paced"])):
            print(f"  {label:<52} n={len(pr.latencies):>6,}  p50 {pct(pr.latencies, 50):6.2f} ms  "
                  f"p99 {pct(pr.latencies, 99):6.2f} ms   (in the handler: p50 {pct(pr.server_ms, 50):.2f} ms, "
                  f"p99 {pct(pr.server_ms, 99):.2f} ms)  errors {pr.errors}")
        ok &= route["failed"] == 0 and all(pr.errors == 0 for pr in (route["idle"], route["busy"], route["paced"]))
        print(f"  target p99 < {TARGET_ROUTE_P99_MS:.0f} ms: idle "
              f"{'ok' if pct(route['idle'].latencies, 99) < TARGET_ROUTE_P99_MS else 'MISSED'}, at 10k/s "
              f"{'ok' if pct(route['paced'].latencies, 99) < TARGET_ROUTE_P99_MS else 'MISSED'}, at full speed "
              f"{'ok' if pct(route['busy'].latencies, 99) < TARGET_ROUTE_P99_MS else 'MISSED'}")
    if analytics:
        ratio = analytics["report"] / analytics["floor"]
        print(f"usage analytics on {args.analytics_events:,} executions (3 months, medians of {args.repeat}):")
        print(f"  floor: GROUP BY account_id, model, fetched ({analytics['floor_groups']:,} groups)  "
              f"{analytics['floor']:.3f} s   1.00")
        print(f"  tally report usage (seven measures)                    {analytics['report']:.3f} s   {ratio:.2f}")
        print(f"    of which the one scan into the aggregate {analytics['scan']:.3f} s, tokens per execution "
              f"(percentiles over the month's rows) {analytics['tokens']:.3f} s")
        print(f"  target <= {TARGET_ANALYTICS_RATIO:.0f}x the floor: {'ok' if ratio <= TARGET_ANALYTICS_RATIO else 'MISSED'}")
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in load_after)}: other work on a shared machine skews every figure")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
