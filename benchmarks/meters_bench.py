"""``make bench``: usage reported to Stripe meters on the real stack, beside the emulator's raw rate.

    .venv/bin/python -m benchmarks.meters_bench [--accounts 10000] [--hours 24] [--active-hours 3]
        [--models 2] [--concurrency 8] [--parallel 2] [--chunk-size 500] [--floor-events N] [--keep]

1. Data: ``--accounts`` accounts, each with executions in ``--active-hours`` random hours of the last
   ``--hours`` hours that ended (1 to ``--models`` models an hour, so 3 to 1 + 2 x models meters with
   usage), ingested in time order; the Stripe meters applied; every account already a Stripe customer
   (as after its first invoice: customer creation is not what is measured).
2. Tally: ``ScheduledUsageReport`` through the Temporal dev server and a worker process (no meter-event
   cap: ``TALLY_METERS_EVENTS_PER_SECOND=0``), reporting began at the first hour, so one run reports all
   ``--hours`` hours oldest first, each fanned out in chunks (``--chunk-size``, ``--parallel`` at once,
   ``--concurrency`` Stripe requests per chunk). Wall time from start to result.
3. Floor, same run, same concurrency (``concurrency x parallel`` threads): the same meter events posted
   straight through the SDK (an idempotency key and a new identifier each, nothing recorded anywhere)
   to the same emulator, half before Tally's run and half after (a shared machine's load drifts).
Figures: meter events/s of each and their ratio (target >= 0.8), Stripe calls per account-hour and per
account-meter-hour with usage (at most 1), duplicates (identifiers Stripe holds twice: 0), CPU seconds
per process, the machine's load average. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import psutil
import psycopg

from activities.ingest import ingest_lines, known_models
from benchmarks.sdk_floor import SdkFloor, load_line, say
from benchmarks.stack import (
    BenchInterrupted,
    BenchStack,
    cpu_seconds,
    install_signal_handlers,
    remove_tree,
    stripe_client,
)
from billing.catalog import load_catalog
from billing.meters import HOUR, format_hour, last_ended_hour
from models.db import get_engine, libpq_url
from models.settings import Settings

UTC = timezone.utc


def make_usage(accounts: list[str], hours: list[datetime], active: int, models: list[str], max_models: int,
               seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    docs = []
    for a in accounts:
        for h in rnd.sample(hours, min(active, len(hours))):
            for model in rnd.sample(models, rnd.randint(1, max_models)):
                for _ in range(rnd.randint(1, 3)):
                    at = h + timedelta(seconds=rnd.randrange(3600))
                    docs.append({"event_id": uuid.uuid4().hex, "account_id": a, "agent_id": "agent", "skill_id": "s",
                                 "model": model, "input_tokens": rnd.randint(100, 5000),
                                 "output_tokens": rnd.randint(10, 900), "byok": False, "sandbox": False,
                                 "occurred_at": at.isoformat().replace("+00:00", "Z")})
    docs.sort(key=lambda d: d["occurred_at"])  # as a platform sends them: roughly in time order
    return docs


def create_accounts(url: str, accounts: list[str]) -> None:
    from services.accounts import NewAccount, create_missing_accounts

    create_missing_accounts(get_engine(url), [NewAccount(a, "payg", 1, False, None) for a in accounts],
                            datetime(2026, 1, 1, tzinfo=UTC))


def create_customers(client, url: str, accounts: list[str], threads: int) -> dict[str, str]:
    """Every account a Stripe customer already (recorded on the account, as the invoice push does)."""
    def one(a: str) -> tuple[str, str]:
        return a, client.v1.customers.create(params={"name": a, "metadata": {"tally_account_id": a}}).id

    with ThreadPoolExecutor(max_workers=threads) as pool:
        pairs = list(pool.map(one, accounts))
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("UPDATE accounts a SET stripe_customer_id = c.cid FROM unnest(%s::text[], %s::text[]) "
                     "AS c(aid, cid) WHERE a.id = c.aid", ([p[0] for p in pairs], [p[1] for p in pairs]))
    return dict(pairs)


def expected_events(docs: list[dict], customers: dict[str, str], event_names: dict[str, str]) -> list[tuple]:
    """(customer, event name, value, hour) of every meter event the report should send, from the data."""
    from billing.meters import HourUsage, quantities_by_meter

    by_hour: dict[int, list[HourUsage]] = {}
    for d in docs:
        at = datetime.fromisoformat(d["occurred_at"].replace("Z", "+00:00"))
        by_hour.setdefault(int(at.timestamp()) // 3600 * 3600, []).append(
            HourUsage(d["account_id"], d["model"], 1, d["input_tokens"], d["output_tokens"]))
    return sorted((customers[a], event_names[k], q, h) for h, rows in by_hour.items()
                  for (a, k), q in quantities_by_meter(rows).items())


def reported_shape(url: str) -> dict:
    with psycopg.connect(libpq_url(url)) as conn:
        account_hours, pairs, top = conn.execute(
            "SELECT count(DISTINCT (account_id, hour)), count(DISTINCT (account_id, meter_id, hour)), "
            "max(revision) FROM meter_reports").fetchone()
        states = dict(conn.execute("SELECT state, count(*) FROM meter_reports GROUP BY state").fetchall())
    return {"account_hours": account_hours, "account_meter_hours": pairs, "states": states, "max_revision": top}


def planned_events(url: str) -> list[tuple[str, str, int, int]]:
    """(customer, event name, value, timestamp) of every revision Tally reported: what the floor sends."""
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT a.stripe_customer_id, m.event_name, r.quantity, extract(epoch FROM r.hour)::bigint "
            "FROM meter_reports r JOIN meters m ON m.id = r.meter_id JOIN accounts a ON a.id = r.account_id "
            "ORDER BY r.hour, r.account_id, m.id").fetchall()
    return [(c, e, int(q), int(t)) for c, e, q, t in rows]


# ---- the two measurements ----------------------------------------------------------------------------------
async def run_report(settings: Settings, first: datetime, last: datetime, chunk_size: int, parallel: int):
    from models.schemas import UsageReportScheduleInput
    from workers.worker import connect
    from workflows.usage_report import ScheduledUsageReportWorkflow

    client = await connect(settings)
    return await client.execute_workflow(
        ScheduledUsageReportWorkflow.run,
        UsageReportScheduleInput(target=format_hour(last), chunk_size=chunk_size, parallel_chunks=parallel,
                                 hours_per_plan=48),
        id=f"scheduled-usage-report-bench-{uuid.uuid4().hex[:6]}", task_queue=settings.task_queue,
        execution_timeout=timedelta(hours=3))


async def hour_phases(settings: Settings, hours: list[datetime]) -> dict:
    """From the hour workflows' histories: per activity type the count and summed run time, the summed
    span of the hours, and the summed gaps between one hour's end and the next one's start."""
    from workers.worker import connect
    from workflows.usage_report import usage_report_workflow_id

    client = await connect(settings)
    out: dict[str, dict] = {}
    spans, gaps, prev_end = 0.0, 0.0, None
    for h in hours:
        hist = await client.get_workflow_handle(usage_report_workflow_id(format_hour(h))).fetch_history()
        sched, started = {}, {}
        times = [ev.event_time.ToDatetime() for ev in hist.events]
        for ev in hist.events:
            t = ev.event_time.ToDatetime()
            if ev.HasField("activity_task_scheduled_event_attributes"):
                sched[ev.event_id] = ev.activity_task_scheduled_event_attributes.activity_type.name
            elif ev.HasField("activity_task_started_event_attributes"):
                started[ev.activity_task_started_event_attributes.scheduled_event_id] = t
            elif ev.HasField("activity_task_completed_event_attributes"):
                sid = ev.activity_task_completed_event_attributes.scheduled_event_id
                d = out.setdefault(sched[sid], {"count": 0, "run": 0.0})
                d["count"] += 1
                d["run"] += (t - started[sid]).total_seconds()
        spans += (times[-1] - times[0]).total_seconds()
        if prev_end is not None:
            gaps += max(0.0, (times[0] - prev_end).total_seconds())
        prev_end = times[-1]
    out["_hours_span"] = spans
    out["_between_hours"] = gaps
    return out


def send_meter_event(client) -> Callable[[str, int, tuple], None]:
    """The floor's call: the meter event Tally sends (event name, identifier, timestamp, payload, key)."""
    def send(tag: str, i: int, ev: tuple[str, str, int, int]) -> None:
        customer, name, value, ts = ev
        client.v1.billing.meter_events.create(
            params={"event_name": name, "identifier": f"floor-{tag}-{i}", "timestamp": ts,
                    "payload": {"stripe_customer_id": customer, "value": str(value)}},
            options={"idempotency_key": f"floor-{tag}-{i}"})
    return send


def endpoint_delta(before: dict, after: dict, key: str) -> int:
    return after.get("by_endpoint", {}).get(key, 0) - before.get("by_endpoint", {}).get(key, 0)


# ---- main ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Settings()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.meters_bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--hours", type=int, default=24, help="hours reported (the last ones that ended)")
    ap.add_argument("--active-hours", type=int, default=3, help="hours with usage per account")
    ap.add_argument("--models", type=int, default=2, help="at most this many models per account-hour")
    ap.add_argument("--concurrency", type=int, default=d.stripe_concurrency, help="Stripe requests per chunk")
    ap.add_argument("--parallel", type=int, default=d.meters_parallel_chunks, help="chunks at once")
    ap.add_argument("--chunk-size", type=int, default=d.meters_chunk_size, help="accounts per chunk")
    ap.add_argument("--floor-events", type=int, default=None, help="events the floor sends (default: Tally's)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args(argv)
    if min(args.accounts, args.hours, args.active_hours, args.models) < 1:
        ap.error("--accounts, --hours, --active-hours and --models must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="tally-meters-bench-"))
    load0 = os.getloadavg()
    threads = args.concurrency * args.parallel
    say(f"tally meters bench: {args.accounts:,} accounts x {args.hours} hours ({args.active_hours} active each), "
        f"{threads} Stripe threads; load average {load0[0]:.2f} on {os.cpu_count()} CPUs; temp dir {workdir}")
    os.environ["TALLY_METERS_EVENTS_PER_SECOND"] = "0"  # the worker's pace: no cap (the floor has none)
    rc = 0
    try:
        with BenchStack(workdir, echo=say) as stack:
            stack.start_postgres()
            url = stack.fresh_database("meters")
            stack.start_temporal()
            base = stack.start_emulator()
            settings = stack.settings(url, task_queue=f"meters-bench-{uuid.uuid4().hex[:6]}",
                                      concurrency=args.concurrency, chunk_size=100, parallel=4)
            settings = settings.model_copy(update={"meters_events_per_second": 0.0})
            sdk = stripe_client(base, settings)

            last = last_ended_hour(datetime.now(UTC), timedelta(0))
            hours = [last - i * HOUR for i in range(args.hours)][::-1]
            accounts = [f"acct-{i:06d}" for i in range(args.accounts)]
            catalog = load_catalog()
            models = sorted(known_models(catalog))
            t = time.perf_counter()
            create_accounts(url, accounts)
            docs = make_usage(accounts, hours, args.active_hours, models, args.models)
            report = ingest_lines(url, (json.dumps(d).encode() for d in docs), known_models(catalog))
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE) executions")
            say(f"data: {report.accepted:,} executions ({report.rejected} rejected) in {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            customers = create_customers(sdk, url, accounts, threads)
            from activities.deps import utc_now
            from gateways.stripe import StripeGateway
            from repositories import meter_reports as repo
            from services.meters import apply_meters

            engine = get_engine(url)
            applied = apply_meters(engine, StripeGateway(settings), catalog, utc_now)
            with engine.begin() as conn:
                repo.start_reporting(conn, since=hours[0], scanned_until=repo.db_now(conn))
            expected = expected_events(docs, customers, {m.key: m.event_name for m in applied})
            say(f"customers and {len(applied)} meters ready in {time.perf_counter() - t:.1f} s; "
                f"{len(expected):,} meter events to report")

            # The floor runs in two halves, before and after Tally's run, so that the load of a shared
            # machine drifting during the run weighs on both alike.
            n_floor = args.floor_events or len(expected)
            floor_events = (expected * (n_floor // max(1, len(expected)) + 1))[:n_floor]
            halves = [floor_events[: len(floor_events) // 2], floor_events[len(floor_events) // 2:]]
            bench_proc, emu_proc = psutil.Process(), stack.emulator.proc()
            floor = SdkFloor(send_meter_event(sdk), threads, "meter events", emulator_proc=emu_proc,
                             bench_proc=bench_proc)
            floor.half(halves[0], "a")
            worker = stack.start_worker(settings)
            time.sleep(1.0)
            procs = {"worker": (worker.proc(), False), "postgres": (stack.postgres_process(), True),
                     "stripe-emulator": (emu_proc, False), "temporal": (stack.temporal.proc(), False),
                     "bench": (bench_proc, False)}
            procs = {k: v for k, v in procs.items() if v[0] is not None}
            cpu0 = {k: cpu_seconds(p, with_children=c) for k, (p, c) in procs.items()}
            stats0 = stack.emulator_stats()
            load_mid0 = os.getloadavg()
            say(f"tally: reporting {args.hours} hours (chunks of up to {args.chunk_size}, {args.parallel} at once, "
                f"{args.concurrency} requests each)")
            t = time.perf_counter()
            result = asyncio.run(run_report(settings, hours[0], hours[-1], args.chunk_size, args.parallel))
            ours_s = time.perf_counter() - t
            load_mid = os.getloadavg()
            cpu_ours = {k: cpu_seconds(p, with_children=c) - cpu0[k] for k, (p, c) in procs.items()}
            stats1 = stack.emulator_stats()
            stack.stop_worker(worker)
            posts = endpoint_delta(stats0, stats1, "POST /v1/billing/meter_events")
            all_calls = stats1["totals"]["requests"] - stats0["totals"]["requests"]
            shape = reported_shape(url)
            same = sorted(planned_events(url)) == expected
            say(f"tally: {result.hours} hours, {result.events:,} events accepted, {result.failed_count} failed, "
                f"in {ours_s:.1f} s; the events are {'exactly' if same else 'NOT'} the expected ones")
            try:
                phases = asyncio.run(hour_phases(settings, hours))
            except Exception as err:  # noqa: BLE001 - a detail; the figures stand without it
                phases = {"error": str(err)}
            floor.half(halves[1], "b")
            load1 = os.getloadavg()

            ours_rate = result.events / ours_s if ours_s else 0.0
            floor_rate = floor.rate
            print()
            print(f"usage report, {args.accounts:,} accounts x {args.hours} hours "
                  f"({shape['account_hours']:,} account-hours with usage, "
                  f"{shape['account_meter_hours']:,} account-meter-hours)")
            print(f"  Tally  ScheduledUsageReport ({result.hours} hour workflows):  {ours_s:8.1f} s  "
                  f"{result.events:>9,} events  {ours_rate:8.1f} events/s")
            print(f"  floor  SDK straight, {threads} threads (two halves):      {floor.seconds:8.1f} s  "
                  f"{floor.ok:>9,} events  {floor_rate:8.1f} events/s  ({floor.errors} errors)")
            print(f"  ratio  {ours_rate / floor_rate if floor_rate else 0:.2f}  (target >= 0.80)")
            print(f"  Stripe calls: {all_calls:,} in all ({posts:,} meter event POSTs); per account-hour "
                  f"{all_calls / max(1, shape['account_hours']):.2f}; per account-meter-hour with usage "
                  f"{posts / max(1, shape['account_meter_hours']):.2f} (at most 1)")
            print(f"  revisions: {shape['states']}; highest revision {shape['max_revision']}; failed "
                  f"{result.failed_count}; worker-counted Stripe calls {result.stripe_calls:,}; events "
                  f"{'identical to' if same else 'DIFFERENT from'} the {len(expected):,} expected")
            print("  CPU s (Tally run): " + ", ".join(f"{k} {v:.1f}" for k, v in cpu_ours.items()))
            print(floor.cpu_line())
            details = ", ".join(f"{k} {v['count']} x {v['run'] / max(1, v['count']):.2f} s"
                                for k, v in phases.items() if isinstance(v, dict))
            print(f"  hour workflows: {phases.get('_hours_span', 0):.1f} s in all, "
                  f"{phases.get('_between_hours', 0):.1f} s between hours; activities: {details}")
            print(load_line(load0[0], load_mid0[0], load_mid[0], load1[0], os.cpu_count()))
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
