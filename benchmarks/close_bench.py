"""``make bench``: bulk ingest and the monthly close on the real stack, each beside its floor.

    .venv/bin/python -m benchmarks.close_bench [--accounts 2000] [--executions 1000000]
        [--chunk-size N] [--parallel N] [--concurrency N] [--skip-ingest-floor] [--memory-check]
        [--keep] [--event-ids random|ordered] [--period YYYY-MM] [--ingest-only]
        [--stall-timeout 120] [--close-timeout 1800]

1. Ingest: a synthetic month (``benchmarks.dataset``) as JSONL, loaded with
   ``activities.ingest.ingest_file`` (validation + duplicate detection); the same rows by plain COPY into
   ``executions_floor (LIKE executions INCLUDING ALL)``; then the same file again (all duplicates).
2. Close: ``services.close.run_close`` through Postgres, the Temporal dev server, the Stripe
   emulator and one worker, each in its own process. Wall time, invoices pushed, Stripe calls per
   invoice (emulator ``/_emulator/stats``), worker peak RSS (``VmHWM``), CPU seconds per process, and
   the time the chunk activities took (from the Temporal histories).
3. Floor of the close, same run: the month's plain GROUP BY + the same Stripe writes made directly with
   the SDK at ``concurrency x parallel`` threads.
4. ``--memory-check``: a second close at a quarter of the accounts (same executions per account),
   on a fresh database and a fresh worker, to compare the worker's peak RSS.

Prints figures; asserts nothing. A close in which no invoice moves for ``--stall-timeout`` seconds
(Temporal would keep retrying a failing activity) is reported as STALLED instead of waited for.
Everything it starts is stopped at the end (also on Ctrl-C/SIGTERM); the temp dir is removed unless
``--keep`` (after a crash only its ``logs/`` stay).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from activities.ingest import IngestReport, ingest_file, known_models
from billing.catalog import load_catalog
from billing.periods import Period
from models.db import libpq_url
from models.settings import Settings

from benchmarks import floors
from benchmarks.dataset import Dataset, bench_accounts, billing_start, write_dataset
from benchmarks.stack import (
    BenchInterrupted,
    BenchStack,
    RssSampler,
    cpu_seconds,
    install_signal_handlers,
    peak_rss_bytes,
    remove_tree,
    stripe_client,
)

MB = 1024 * 1024


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def n(x: float) -> str:
    return f"{x:,.0f}"


# ---- data ---------------------------------------------------------------------------------------------
def create_accounts(database_url: str, accounts: list[dict], period: Period) -> float:
    """Through ``services.accounts.create_missing_accounts`` (so whatever else an account needs is
    written too), one transaction. Returns seconds."""
    from models.db import get_engine
    from services.accounts import NewAccount, create_missing_accounts

    started = time.perf_counter()
    create_missing_accounts(get_engine(database_url),
                            [NewAccount(a["id"], a["plan"], a["seats"], a["overage"], a["email"]) for a in accounts],
                            billing_start(period))
    return time.perf_counter() - started


def vacuum_analyze(database_url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) executions")
    return time.perf_counter() - started


def db_counters(database_url: str) -> dict:
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched, tup_returned "
            "FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    return dict(zip(("commits", "rollbacks", "inserted", "updated", "fetched", "returned"), row))


def invoice_shape(database_url: str, period: Period) -> dict:
    with psycopg.connect(libpq_url(database_url)) as conn:
        by_status = dict(conn.execute(
            "SELECT status, count(*) FROM invoices WHERE period = %s GROUP BY 1", (str(period),)).fetchall())
        lines = conn.execute(
            "SELECT coalesce(avg(c), 0), coalesce(max(c), 0) FROM (SELECT count(l.id) AS c FROM invoices i "
            "LEFT JOIN invoice_lines l ON l.invoice_id = i.id WHERE i.period = %s AND i.status = 'open' "
            "GROUP BY i.id) x", (str(period),)).fetchone()
    return {"by_status": by_status, "lines_avg": float(lines[0]), "lines_max": int(lines[1])}


# ---- results --------------------------------------------------------------------------------------------
@dataclass
class IngestFigures:
    events: int
    report: IngestReport
    floor_seconds: float | None = None
    again: IngestReport | None = None


@dataclass
class CloseFigures:
    accounts: int
    executions: int
    seconds: float
    result: object
    stripe_before: dict
    stripe_after: dict
    peak_rss: int | None
    sampled_peak_rss: int
    idle_rss: int | None
    cpu: dict[str, float]
    phases: dict = field(default_factory=dict)
    db: dict = field(default_factory=dict)
    shape: dict = field(default_factory=dict)
    sql_floor: tuple[float, int] | None = None
    stripe_floor: floors.StripeFloor | None = None
    stalled: str | None = None

    def endpoint_deltas(self) -> dict[str, int]:
        before = self.stripe_before.get("by_endpoint", {})
        after = self.stripe_after.get("by_endpoint", {})
        return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# ---- the close --------------------------------------------------------------------------------------------
async def close_phases(settings: Settings, workflow_id: str, chunks: int) -> dict:
    """Per activity type: count, summed run time, max, summed queue wait (from the chunk histories)."""
    from workers.worker import connect

    client = await connect(settings)
    out: dict[str, dict] = {}
    first = last = None
    for i in range(chunks):
        hist = await client.get_workflow_handle(f"{workflow_id}-c{i:05d}").fetch_history()
        sched: dict[int, tuple[str, datetime]] = {}
        started: dict[int, datetime] = {}
        for ev in hist.events:
            t = ev.event_time.ToDatetime()
            first = t if first is None or t < first else first
            last = t if last is None or t > last else last
            if ev.HasField("activity_task_scheduled_event_attributes"):
                sched[ev.event_id] = (ev.activity_task_scheduled_event_attributes.activity_type.name, t)
            elif ev.HasField("activity_task_started_event_attributes"):
                started[ev.activity_task_started_event_attributes.scheduled_event_id] = t
            elif ev.HasField("activity_task_completed_event_attributes"):
                sid = ev.activity_task_completed_event_attributes.scheduled_event_id
                name, t_sched = sched[sid]
                t_start = started.get(sid, t_sched)
                d = out.setdefault(name, {"count": 0, "run": 0.0, "max": 0.0, "wait": 0.0})
                d["count"] += 1
                run = (t - t_start).total_seconds()
                d["run"] += run
                d["max"] = max(d["max"], run)
                d["wait"] += (t_start - t_sched).total_seconds()
    out["_span"] = (last - first).total_seconds() if first and last else 0.0
    # the close's own history (its last run): what continue-as-new keeps bounded
    hist = await client.get_workflow_handle(workflow_id).fetch_history()
    start = hist.events[0].workflow_execution_started_event_attributes if hist.events else None
    out["_close_history"] = {"events": len(hist.events), "bytes": sum(ev.ByteSize() for ev in hist.events),
                             "continued": bool(start and start.continued_execution_run_id)}
    chunk = await client.get_workflow_handle(f"{workflow_id}-c00000").fetch_history()
    out["_chunk_history"] = {"events": len(chunk.events), "bytes": sum(ev.ByteSize() for ev in chunk.events)}
    return out


class CloseStalled(RuntimeError):
    pass


def invoice_progress(database_url: str, period: str) -> tuple[int, int]:
    """(invoices no longer draft/pushing, invoices) of the period: moves while the close works."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute(
            "SELECT count(*) FILTER (WHERE status NOT IN ('draft', 'pushing')), count(*) "
            "FROM invoices WHERE period = %s", (period,)).fetchone()


async def close_period(settings: Settings, period: str, *, chunk_size: int, parallel: int,
                       worker_log: Path | None = None, timeout: float = 1800.0, stall: float = 120.0,
                       rerun: bool = False):
    """Run the close and wait for it, echoing the first activity failure the worker logs. Temporal
    retries a failing activity for a long time, so the wait ends when no invoice has moved for
    ``stall`` seconds (CloseStalled) or after ``timeout``."""
    from services.close import run_close
    from workers.worker import connect

    task = asyncio.ensure_future(run_close(lambda: connect(settings), settings, period, chunk_size=chunk_size,
                                           parallel=parallel, rerun=rerun))
    deadline = time.monotonic() + timeout
    offset = worker_log.stat().st_size if worker_log and worker_log.exists() else 0
    warned = False
    last_progress, last_move = None, time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=2.0)
            if done:
                return task.result()
            progress = await asyncio.to_thread(invoice_progress, settings.database_url, period)
            if progress != last_progress:
                last_progress, last_move = progress, time.monotonic()
            elif time.monotonic() - last_move > stall:
                raise CloseStalled(f"no invoice moved for {stall:.0f} s; {progress[0]:,} of {progress[1]:,} "
                                   "invoices written so far are final (open / no charge / failed)")
            if worker_log and not warned:
                with open(worker_log, "rb") as fh:
                    fh.seek(offset)
                    text = fh.read().decode("utf-8", "replace")
                if "Traceback" in text or "Completing activity as failed" in text:
                    warned = True
                    errs = [ln for ln in text.splitlines() if "Error" in ln or "failed" in ln][-3:]
                    say("WARNING: an activity of the close failed (Temporal retries it); worker log "
                        f"{worker_log}:\n    " + "\n    ".join(ln[:300] for ln in errs))
            if time.monotonic() > deadline:
                raise RuntimeError(f"the close did not finish within {timeout:.0f} s; see {worker_log}")
    finally:
        if not task.done():
            task.cancel()


def run_one_close(stack: BenchStack, settings: Settings, period: Period, *, accounts: int, executions: int,
                  parallel: int, chunk_size: int, label: str, close_timeout: float = 1800.0,
                  stall: float = 120.0, rerun: bool = False) -> CloseFigures:
    worker = stack.start_worker(settings)
    wproc = worker.proc()
    time.sleep(1.0)
    idle_rss = wproc.memory_info().rss if wproc else None
    procs = {"worker": (wproc, False), "postgres": (stack.postgres_process(), True),
             "stripe-emulator": (stack.emulator.proc(), False), "temporal": (stack.temporal.proc(), False)}
    if procs["postgres"][0] is None:  # DATABASE_URL: not our process to measure
        del procs["postgres"]
    import psutil

    me = psutil.Process()
    cpu0 = {k: cpu_seconds(p, with_children=c) for k, (p, c) in procs.items()}
    cpu0["bench"] = cpu_seconds(me)
    stats0 = stack.emulator_stats()
    db0 = db_counters(settings.database_url)
    say(f"{label}: closing {period} for {accounts:,} accounts (chunks of {chunk_size}, {parallel} in parallel, "
        f"{settings.stripe_concurrency} Stripe requests per chunk)")
    stalled = None
    with RssSampler(worker.pid) as sampler:
        started = time.perf_counter()
        try:
            result = asyncio.run(close_period(settings, str(period), chunk_size=chunk_size, parallel=parallel,
                                              worker_log=worker.log, timeout=close_timeout, stall=stall,
                                              rerun=rerun))
        except CloseStalled as err:
            stalled, result = str(err), None
        seconds = time.perf_counter() - started
    cpu = {k: cpu_seconds(p, with_children=c) - cpu0[k] for k, (p, c) in procs.items()}
    cpu["bench"] = cpu_seconds(me) - cpu0["bench"]
    peak = peak_rss_bytes(worker.pid)
    stats1 = stack.emulator_stats()
    if result is not None:
        say(f"{label}: close done in {seconds:.1f} s: {result.accounts:,} accounts, {result.pushed:,} pushed, "
            f"{len(result.failed)} failed, {result.stripe_calls:,} Stripe calls (worker count)")
    else:
        say(f"{label}: close STALLED after {seconds:.1f} s: {stalled}; giving up on it")
    fig = CloseFigures(accounts=accounts, executions=executions, seconds=seconds, result=result,
                       stripe_before=stats0, stripe_after=stats1, peak_rss=peak,
                       sampled_peak_rss=sampler.peak, idle_rss=idle_rss, cpu=cpu, stalled=stalled)
    fig.db = {"before": db0}
    try:
        chunks = result.chunks if result is not None else math.ceil(accounts / chunk_size)
        fig.phases = asyncio.run(close_phases(settings, f"close-{period}", chunks))
    except Exception as err:  # noqa: BLE001 - a detail; the figures stand without it
        say(f"(could not read the chunk histories: {err})")
    fig.shape = invoice_shape(settings.database_url, period)
    stack.stop_worker(worker)
    return fig


# ---- main ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Settings()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.close_bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=2_000)
    ap.add_argument("--executions", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=d.close_chunk_size, help="accounts per chunk workflow")
    ap.add_argument("--parallel", type=int, default=d.close_parallel_chunks, help="chunk workflows at once")
    ap.add_argument("--concurrency", type=int, default=d.stripe_concurrency,
                    help="parallel Stripe requests per push activity")
    ap.add_argument("--skip-ingest-floor", action="store_true", help="skip the plain-COPY floor")
    ap.add_argument("--memory-check", action="store_true",
                    help="also close a quarter of the accounts (same executions per account) and compare "
                         "the worker's peak RSS")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (data files, logs, pg data)")
    ap.add_argument("--event-ids", choices=("random", "ordered"), default="random",
                    help="random UUIDv4 (default) or time-ordered UUIDv7-like event ids")
    ap.add_argument("--period", default=None, help="YYYY-MM (default: the latest closable month)")
    ap.add_argument("--ingest-only", action="store_true", help="stop after the ingest figures")
    ap.add_argument("--close-timeout", type=float, default=1800.0, help="give up waiting for a close (s)")
    ap.add_argument("--stall-timeout", type=float, default=120.0,
                    help="give up on a close when no invoice has moved for this long (s)")
    args = ap.parse_args(argv)
    if args.accounts < 1 or args.executions < 1:
        ap.error("--accounts and --executions must be positive")
    return args


def default_period() -> Period:
    from workers.demo import latest_closable_period

    return latest_closable_period(datetime.now(timezone.utc), Settings().late_usage_grace_hours)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    period = Period.parse(args.period) if args.period else default_period()
    workdir = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    say(f"tally close bench: {args.accounts:,} accounts, {args.executions:,} executions, period {period}, "
        f"temp dir {workdir}; load average {load0[0]:.2f} on {os.cpu_count()} CPUs")
    rc = 0
    failed = False
    try:
        with BenchStack(workdir, echo=say) as stack:
            figures = run(args, stack, period, workdir)
        say(f"everything stopped; whole run {time.perf_counter() - t_start:.0f} s")
        print_table(args, figures, load0, os.getloadavg())
    except KeyboardInterrupt as err:
        what = f" ({err})" if isinstance(err, BenchInterrupted) else ""
        say(f"interrupted{what}; everything started was stopped")
        rc = 130
    except Exception:
        failed = True
        raise
    finally:
        if args.keep:
            say(f"kept {workdir}")
        elif failed and (workdir / "logs").is_dir():
            for p in workdir.iterdir():
                if p.name != "logs":
                    remove_tree(p) if p.is_dir() else p.unlink(missing_ok=True)
            say(f"failed: logs kept in {workdir / 'logs'}")
        else:
            remove_tree(workdir)
    return rc


def run(args, stack: BenchStack, period: Period, workdir: Path) -> dict:
    figures: dict = {}
    stack.start_postgres()
    db = stack.fresh_database("bench")
    accounts = bench_accounts(args.accounts)
    t = create_accounts(db, accounts, period)
    say(f"accounts: {len(accounts):,} created in {t:.1f} s")
    say(f"data: writing {args.executions:,} executions ({args.event_ids} event ids) ...")
    ds = write_dataset(workdir, accounts, period, args.executions, event_ids=args.event_ids,
                       with_copy_file=not args.skip_ingest_floor)
    say(f"data: {ds.jsonl} ({ds.jsonl.stat().st_size / MB:,.0f} MB) in {ds.seconds:.1f} s")
    figures["ingest"] = bench_ingest(args, db, ds)
    if args.ingest_only:
        return figures

    t = vacuum_analyze(db)
    say(f"VACUUM (ANALYZE) executions: {t:.1f} s (not counted)")
    stack.start_temporal()
    stack.start_emulator()

    sql_seconds, sql_rows = floors.sql_floor(db, period)
    say(f"floor: month roll-up GROUP BY account, model: {sql_seconds:.2f} s ({sql_rows:,} rows)")

    settings = stack.settings(db, task_queue="bench-main", concurrency=args.concurrency,
                              chunk_size=args.chunk_size, parallel=args.parallel)
    close = run_one_close(stack, settings, period, accounts=args.accounts, executions=args.executions,
                          parallel=args.parallel, chunk_size=args.chunk_size, label="close",
                          close_timeout=args.close_timeout, stall=args.stall_timeout)
    close.sql_floor = (sql_seconds, sql_rows)

    invoices = floors.pushed_invoices(db, period)
    customers = close.endpoint_deltas().get("POST /v1/customers", 0)
    threads = floors.floor_threads(settings, args.parallel)
    say(f"floor: {len(invoices):,} invoices straight through the Stripe SDK, {threads} threads ...")
    import psutil

    me, emu = psutil.Process(), stack.emulator.proc()
    cpu_me, cpu_emu = cpu_seconds(me), cpu_seconds(emu)
    close.stripe_floor = floors.stripe_floor(stripe_client(stack.emulator_url, settings), invoices,
                                             customers=customers, threads=threads, period=period, tag="main")
    sf = close.stripe_floor
    sf.client_cpu, sf.emulator_cpu = cpu_seconds(me) - cpu_me, cpu_seconds(emu) - cpu_emu
    say(f"floor: {sf.writes:,} Stripe writes in {sf.seconds:.1f} s ({sf.errors} errors)")
    close.db["after"] = db_counters(db)
    figures["close"] = close

    if args.memory_check and close.stalled:
        say("memory check skipped: the main close stalled")
    elif args.memory_check:
        small_n = max(1, args.accounts // 4)
        small_x = max(1, args.executions * small_n // args.accounts)
        db2 = stack.fresh_database("bench_small")
        small = bench_accounts(small_n)
        create_accounts(db2, small, period)
        ds2 = write_dataset(workdir, small, period, small_x, event_ids=args.event_ids, with_copy_file=False,
                            name="executions-small")
        rep = ingest_file(db2, ds2.jsonl, known_models(load_catalog()))
        vacuum_analyze(db2)
        say(f"memory check: {small_n:,} accounts, {rep.accepted:,} executions loaded")
        stack.emulator_reset()
        settings2 = stack.settings(db2, task_queue="bench-small", concurrency=args.concurrency,
                                   chunk_size=args.chunk_size, parallel=args.parallel)
        figures["small"] = run_one_close(stack, settings2, period, accounts=small_n, executions=small_x,
                                         parallel=args.parallel, chunk_size=args.chunk_size,
                                         label="memory check", close_timeout=args.close_timeout,
                                         stall=args.stall_timeout,
                                         # the same Temporal server knows close-<period> from the main
                                         # close: a new run of it (else the finished one is returned)
                                         rerun=True)
    return figures


def bench_ingest(args, db: str, ds: Dataset) -> IngestFigures:
    models = known_models(load_catalog())
    say("ingest: ingest_file (validate, COPY to staging, INSERT .. ON CONFLICT DO NOTHING) ...")
    report = ingest_file(db, ds.jsonl, models)
    say(f"ingest: {report.accepted:,} accepted, {report.duplicates:,} duplicates, {report.rejected:,} rejected "
        f"in {report.seconds:.1f} s")
    if report.rejected:
        say(f"ingest: first rejections: {report.rejections[:3]}")
    fig = IngestFigures(events=ds.executions, report=report)
    if not args.skip_ingest_floor:
        say("ingest floor: plain COPY of the same rows into executions_floor ...")
        fig.floor_seconds = floors.copy_floor(db, ds.copy_file, report.accepted)
        say(f"ingest floor: {fig.floor_seconds:.1f} s")
    say("re-ingest: the same file again (all duplicates) ...")
    fig.again = ingest_file(db, ds.jsonl, models)
    say(f"re-ingest: {fig.again.accepted:,} accepted, {fig.again.duplicates:,} duplicates in "
        f"{fig.again.seconds:.1f} s")
    return fig


# ---- report -------------------------------------------------------------------------------------------------
def _mb(b: int | None) -> str:
    return f"{b / MB:,.0f} MB" if b else "n/a"


def print_table(args, figures: dict, load0, load1) -> None:
    lines = []
    ing: IngestFigures = figures["ingest"]
    r = ing.report
    rate = r.lines / r.seconds if r.seconds else 0
    s = f"ingest   {ing.events:,} events  {r.seconds:.1f} s  {n(rate)} ev/s"
    if ing.floor_seconds:
        frate = r.accepted / ing.floor_seconds
        s += f" | plain COPY {ing.floor_seconds:.1f} s {n(frate)} rows/s | ratio {r.seconds / ing.floor_seconds:.2f}x"
    lines.append(s)
    if ing.again:
        a = ing.again
        lines.append(f"re-ingest {a.lines:,} events (all duplicates: {a.duplicates:,})  {a.seconds:.1f} s  "
                     f"{n(a.lines / a.seconds if a.seconds else 0)} ev/s")
    c: CloseFigures | None = figures.get("close")
    if c is not None:
        sql_s = c.sql_floor[0]
        sf = c.stripe_floor
        floor = sql_s + sf.seconds
        floor_txt = f"floor {floor:.1f} s (SQL {sql_s:.1f} s + {sf.writes:,} Stripe calls {sf.seconds:.1f} s)"
        if c.stalled:
            lines.append(f"close    {c.accounts:,} accounts    STALLED after {c.seconds:.1f} s ({c.stalled}) | "
                         f"{floor_txt} for the invoices rated so far")
        else:
            lines.append(f"close    {c.accounts:,} accounts    {c.seconds:.1f} s  {c.accounts / c.seconds:,.1f} acct/s | "
                         f"{floor_txt} | ratio {c.seconds / floor:.2f}x")
        ep = c.endpoint_deltas()
        pushed_n = c.result.pushed if c.result is not None else c.shape.get("by_status", {}).get("open", 0)
        pushed = pushed_n or 1
        inv_writes = {k: v for k, v in ep.items() if k.startswith("POST /v1/invoices")}
        cust = ep.get("POST /v1/customers", 0)
        reads = sum(v for k, v in ep.items() if k.startswith("GET "))
        total = sum(ep.values())
        names = ", ".join(f"{k.split('/')[-1] if '{id}' in k else 'create'} {v / pushed:.2f}"
                          for k, v in sorted(inv_writes.items()))
        lines.append(
            f"stripe   {sum(inv_writes.values()) / pushed:.2f} writes/invoice ({names}) + "
            f"{cust / pushed:.2f} customer create per pushed invoice ({cust:,} new customers); "
            f"{reads / pushed:.2f} reads/invoice; {total / pushed:.2f} calls/invoice in all "
            f"({pushed_n:,} invoices pushed)")
        mem = f"memory   worker peak RSS {_mb(c.peak_rss)} at {c.accounts:,} accounts"
        sm: CloseFigures | None = figures.get("small")
        if sm is not None:
            mem += f", {_mb(sm.peak_rss)} at {sm.accounts:,} accounts"
            if sm.peak_rss and c.peak_rss:
                mem += (f" (x{c.peak_rss / sm.peak_rss:.2f} for x{c.accounts / sm.accounts:.1f} accounts; "
                        f"idle {_mb(sm.idle_rss)} / {_mb(c.idle_rss)})")
        else:
            mem += f" (idle after start {_mb(c.idle_rss)})"
        lines.append(mem)

    print()
    print("details")
    if c is not None:
        res = c.result
        if res is not None:
            print(f"  close: {res.chunks} chunks, {res.invoices_rated:,} rated, {res.no_charge:,} no charge, "
                  f"{res.pushed:,} pushed, {len(res.failed)} failed, total ${res.total:,}")
        print(f"  invoice statuses {c.shape.get('by_status')}; lines per pushed invoice avg "
              f"{c.shape.get('lines_avg', 0):.1f}, max {c.shape.get('lines_max')}")
        busy = sum(c.cpu.values())
        print("  cpu seconds during the close: " + ", ".join(f"{k} {v:.1f}" for k, v in c.cpu.items())
              + f" (sum {busy:.1f} of {os.cpu_count()} x {c.seconds:.1f} = {os.cpu_count() * c.seconds:.1f} available)")
        for name, d in sorted((k, v) for k, v in c.phases.items() if not k.startswith("_")):
            print(f"  activity {name}: {d['count']} runs, {d['run']:.1f} s summed "
                  f"(mean {d['run'] / d['count']:.2f} s, max {d['max']:.2f} s), queue wait {d['wait']:.1f} s summed")
        ch, kh = c.phases.get("_close_history"), c.phases.get("_chunk_history")
        if ch:
            print(f"  Temporal history: the close {ch['events']:,} events / {ch['bytes'] / 1024:,.0f} KiB in its "
                  f"last run ({'continued as new before it' if ch['continued'] else 'the only run'}); a chunk "
                  f"{kh['events']} events / {kh['bytes'] / 1024:,.0f} KiB; Temporal suggests continue-as-new at "
                  "4,096 events or 4 MiB (server defaults)")
        b, a = c.db.get("before"), c.db.get("after")
        if b and a:
            commits = a["commits"] - b["commits"]
            pushed_n = res.pushed if res is not None else c.shape.get("by_status", {}).get("open", 0)
            print(f"  postgres during close + Stripe floor: ~{commits:,} commits "
                  f"(~{commits / (pushed_n or 1):.1f} per pushed invoice), "
                  f"{a['updated'] - b['updated']:,} rows updated, {a['inserted'] - b['inserted']:,} inserted")
        print(f"  Stripe endpoints during the close: {c.endpoint_deltas()}")
        print(f"  worker RSS: VmHWM {_mb(c.peak_rss)}, sampled peak {_mb(c.sampled_peak_rss)}")
        sf = c.stripe_floor
        print(f"  Stripe floor: {sf.invoices:,} invoices ({sf.customers:,} customers) on {sf.threads} threads: "
              f"{sf.writes:,} writes, {sf.errors} errors, {sf.writes / sf.seconds:,.0f} writes/s, cpu seconds: "
              f"client (SDK) {sf.client_cpu:.1f}, stripe-emulator {sf.emulator_cpu:.1f}; "
              f"the close made {res.stripe_calls if res else '?'} calls per the worker's own count")
        print(f"  settings: chunk size {args.chunk_size}, parallel chunks {args.parallel}, "
              f"Stripe concurrency {args.concurrency}")
    print(f"  load average: {load0[0]:.2f} at start, {load1[0]:.2f} at end ({os.cpu_count()} CPUs; "
          "other work on the machine skews every figure)")
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
