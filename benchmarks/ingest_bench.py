"""Bulk ingest with tenant-scoped event ids (issue 14): ``ingest_file`` of a fresh file and of the same
file again (every line a duplicate), against the plain COPY floor of the same rows, in one run.

    python -m benchmarks.ingest_bench [--events 300000] [--accounts 500]

What it measures against the floor: validation, the content digest of each event, the COPY into
``executions`` and ``execution_ids`` and the counters (fresh); the staging path and the digest
comparison (replay). Reports the load average: the figures mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from activities.ingest import ingest_file, known_models
from benchmarks import floors
from benchmarks.api_bench import bench_database, month_so_far, say
from benchmarks.dataset import write_dataset
from benchmarks.stack import BenchStack, install_signal_handlers
from billing.catalog import load_catalog


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--accounts", type=int, default=500)
    args = p.parse_args(argv)
    install_signal_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="tally-ingest-bench-"))
    os.chmod(workdir, 0o755)  # embedded Postgres runs as another user when we are root
    load_before = os.getloadavg()
    try:
        with BenchStack(workdir, echo=say) as stack:
            url, _, _, accounts = bench_database(stack, "ingest", args.accounts)
            ds = write_dataset(workdir, accounts, month_so_far(datetime.now(timezone.utc)), args.events, seed=11,
                               name="bulk")
            floor_s = floors.copy_floor(url, ds.copy_file, args.events)
            started = time.perf_counter()
            fresh = ingest_file(url, ds.jsonl, known_models(load_catalog()))
            fresh_s = time.perf_counter() - started
            started = time.perf_counter()
            again = ingest_file(url, ds.jsonl, known_models(load_catalog()))
            again_s = time.perf_counter() - started
    finally:  # the data files and the server's directory: ~1 GB a run at the default size
        shutil.rmtree(workdir, ignore_errors=True)
    assert (fresh.accepted, again.duplicates) == (args.events, args.events), (fresh, again)
    load_after = os.getloadavg()
    print(f"{'path':<40} {'events':>9} {'seconds':>8} {'events/s':>10} {'vs floor':>9}")
    for name, secs in (("COPY floor (plain COPY, same rows)", floor_s), ("ingest_file, fresh", fresh_s),
                       ("ingest_file, same file again (dups)", again_s)):
        print(f"{name:<40} {args.events:>9,} {secs:>8.1f} {args.events / secs:>10,.0f} {floor_s / secs:>9.2f}")
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
