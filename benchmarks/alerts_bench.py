"""What alerts cost the metering API, measured in one run on this machine:

- HTTP ingestion (``POST /v1/executions``, batches of 1,000, ``--clients`` keep-alive connections,
  ``tally api`` with ``--api-workers`` uvicorn processes) with the alerts observer ON (budgets, spikes
  and fallbacks evaluated after every committed batch) beside the same ingestion with it OFF
  (``TALLY_ALERTS_ON_INGEST=false``): the floor is the OFF run. The events are posted in alternating
  OFF/ON slices of one stream (``--rounds`` pairs) so both see the same table sizes; target ON/OFF >= 0.8.
- The cost-verdict endpoint (``POST /v1/executions/{id}/cost``) p50/p99 from a separate client process
  while the ON ingestion runs flat out (and idle, and beside the OFF run, for reference); target well
  under 10 ms. The probe runs beside both modes, so it weighs on both throughputs alike.

The month so far is loaded first (``--bulk-events`` with recorded costs, so every agent has a history
for the loop rule); one account in ten has a small budget so thresholds are crossed during the run; 1%
of the posted executions name a ``requested_model`` (the fallback scan has work). Nothing is asserted.

    python -m benchmarks.alerts_bench [--accounts 1000] [--bulk-events 300000] [--http-events 200000]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform as platform_mod
import random
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import psycopg

from activities.ingest import ingest_file, known_models
from benchmarks import onoff
from benchmarks.api_bench import batches_of, check_exact, month_so_far, pct, say
from benchmarks.dataset import write_dataset
from benchmarks.rating_bench import COUNT_LOADED
from benchmarks.stack import BenchStack, install_signal_handlers
from billing.catalog import load_catalog
from models.db import libpq_url

TARGET_RATIO = 0.8
REPORTS_PER_EXECUTION = 5  # the platform reports an in-flight execution's running cost as it grows
TARGET_P99_MS = 10.0


def probe_verdicts(base: str, key: str, pairs: list[tuple[str, str]], pause: float, stop_event, ready,
                   results) -> None:
    """In its own process: sequential cost reports on one keep-alive connection until ``stop_event``,
    as a platform sends them: each in-flight execution (of a random agent with a history) reports its
    growing running cost 5 times; one execution in twenty is a runaway (killed, recorded, e-mailed)."""
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    rnd = random.Random(5)
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    ready.set()
    latencies, server_ms, errors, kills, n = [], [], 0, 0, 0
    while not stop_event.is_set():
        if n % REPORTS_PER_EXECUTION == 0:  # the next in-flight execution, of a random agent
            account, agent = rnd.choice(pairs)
            runaway = rnd.random() < 0.05
        step = n % REPORTS_PER_EXECUTION + 1
        cost = f"{(0.2 if runaway else 0.0006) * step:.6f}"  # its running cost grows report by report
        body = orjson.dumps({"account_id": account, "agent_id": agent, "cost_usd": cost})
        n += 1
        t = time.perf_counter()
        execution = f"probe-{os.getpid()}-{(n - 1) // REPORTS_PER_EXECUTION}"
        conn.request("POST", f"/v1/executions/{execution}/cost", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        latencies.append((time.perf_counter() - t) * 1000)
        timing = resp.getheader("Server-Timing", "")
        if "dur=" in timing:
            server_ms.append(float(timing.split("dur=")[1]))
        if resp.status != 200:
            errors += 1
        elif orjson.loads(data)["verdict"] == "kill":
            kills += 1
        stop_event.wait(pause)
    conn.close()
    results.put((latencies, server_ms, errors, kills))


def with_fallbacks(jsonl: Path, every: int = 100) -> None:
    """Name a cheaper requested model on one execution in ``every`` (a fallback to scan for)."""
    out = jsonl.with_suffix(".fb.jsonl")
    with open(jsonl, "rb") as src, open(out, "wb") as dst:
        for i, line in enumerate(src):
            if i % every == 0:
                doc = orjson.loads(line)
                doc["requested_model"] = "gpt-4o-mini"
                line = orjson.dumps(doc) + b"\n"
            dst.write(line)
    out.replace(jsonl)


def prepare(url: str, account_ids: list[str]) -> list[tuple[str, str]]:
    """Recorded costs for the month so far, small budgets on one account in ten; returns the
    (account, agent) pairs the verdict probe asks about."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        with conn.transaction():  # and their counters again, by ingest's own statement
            conn.execute("UPDATE executions SET cost_usd = (input_tokens + 4 * output_tokens) * 0.000001")
            conn.execute("DELETE FROM usage_counters")
            conn.execute(COUNT_LOADED)
        conn.execute("INSERT INTO account_budgets (account_id, amount) SELECT unnest(%s::text[]), 5.00",
                     (account_ids[::10],))
        conn.execute("VACUUM (ANALYZE) executions")
        conn.execute("VACUUM (ANALYZE) usage_counters")
        return [tuple(r) for r in conn.execute(
            "SELECT account_id, agent_id FROM executions GROUP BY 1, 2 HAVING count(*) >= 20 ORDER BY 1, 2")]


def recorded(url: str) -> dict[str, int]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {name: conn.execute(sql).fetchone()[0] for name, sql in (
            ("budget crossings", "SELECT count(*) FROM budget_crossings"),
            ("anomalies", "SELECT count(*) FROM anomalies"),
            ("fallback notices", "SELECT count(*) FROM notifications WHERE kind = 'model_fallback'"),
            ("kills", "SELECT count(*) FROM execution_kills"),
            ("notices in the outbox", "SELECT count(*) FROM notifications"),
        )}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.alerts_bench", description=__doc__.split("\n\n")[0])
    return onoff.add_args(p, bulk_events=300_000, warmup_batches=12).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    workdir = onoff.workdir_for(args, "alerts")
    now = datetime.now(timezone.utc)
    span = month_so_far(now)
    load_before = os.getloadavg()
    try:
        with BenchStack(workdir, echo=say) as stack:
            url, key, accounts = onoff.database_with_accounts(stack, "alerts", args.accounts)
            ids = [a["id"] for a in accounts]
            bulk = write_dataset(workdir, accounts, span, args.bulk_events, seed=21, with_copy_file=False, name="bulk")
            stream = write_dataset(workdir, accounts, span, args.http_events, seed=22, with_copy_file=False, name="http")
            with_fallbacks(stream.jsonl)
            report = ingest_file(url, bulk.jsonl, known_models(load_catalog()))
            say(f"month so far: {report.accepted:,} executions loaded in {report.seconds:.1f} s")
            pairs = prepare(url, ids)
            bodies = batches_of(stream.jsonl, args.batch)
            slices = [bodies[i::2 * args.rounds] for i in range(2 * args.rounds)]

            def alerts_on_ingest(mode: str) -> None:
                os.environ["TALLY_ALERTS_ON_INGEST"] = "true" if mode == "on" else "false"

            runs, probes, idle = onoff.run_onoff(
                args, url=url, workdir=workdir, key=key, feature="alerts", idle_seconds=3,
                slice_of=lambda mode, r: slices[2 * r + (mode == "on")], before_api=alerts_on_ingest,
                probe=lambda base, pause: onoff.ProcessProbe(probe_verdicts, (base, key, pairs), pause))
            counts = recorded(url)
            stored, exact = check_exact(url)
            pg_version = psycopg.connect(libpq_url(url)).execute("SHOW server_version").fetchone()[0]
    finally:
        os.environ.pop("TALLY_ALERTS_ON_INGEST", None)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    load_after = os.getloadavg()
    print()
    print(f"alerts on ingestion — {os.cpu_count()} cores, Python {platform_mod.python_version()}, Postgres "
          f"{pg_version}, {args.accounts:,} accounts, {report.accepted:,} executions already this month, "
          f"batches of {args.batch:,} from {args.clients} clients, {args.api_workers} uvicorn workers")
    onoff.print_throughput(runs, {"off": "alerts OFF (floor)", "on": "alerts ON (budgets, spikes, fallbacks)"},
                           TARGET_RATIO)
    probe = probes["on"]
    for label, p in (("idle", idle), ("during OFF ingestion at full speed", probes["off"]),
                     ("during ON ingestion at full speed", probe)):
        print(f"cost verdict {label:<34} {p.line()}   (handler p50 {pct(p.server_ms, 50):.2f} ms, "
              f"p99 {pct(p.server_ms, 99):.2f} ms; kills {p.kills}, errors {p.errors})")
    print(f"target cost-verdict p99 < {TARGET_P99_MS:.0f} ms under load: "
          f"{'ok' if pct(probe.latencies, 99) < TARGET_P99_MS else 'MISSED'}")
    print("recorded: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"exact: {stored:,} executions stored; counters == executions aggregate: {'yes' if exact else 'NO'}")
    print(onoff.load_line(load_before, load_after))
    return 0 if exact and probe.errors == 0 and idle.errors == 0 and probes["off"].errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
