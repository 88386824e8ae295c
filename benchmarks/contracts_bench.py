"""Rating contract accounts in the close (``python -m benchmarks.contracts_bench``; part of ``make bench``).

Loads a month of executions for accounts on Pro with overage, then times, in the same run and on the
same rows:
- the floor: the plain SQL aggregation of the month (GROUP BY account, model);
- the rater's path: every account rated as Pro (executions ranked against the included quota);
- the contracts' path: the same accounts under a 100,000-a-month contract from the 1st (the month split,
  each contract month ranked against its commitment, reconciled, its lines built).
Prints seconds per million executions, the ratios, and the load average. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import time

from billing import contracts as rules
from billing.catalog import default_catalog
from billing.terms import Terms
from models.db import get_engine
from repositories import accounts as account_rows
from repositories import contracts as contract_rows

from benchmarks.rating_bench import PERIOD, fresh_database, load, rate_all, sql_floor

COMMITMENT = 100_000


def move_to_contracts(url: str, accounts: int) -> None:
    """Every account becomes enterprise from the period's start under a 12-month contract."""
    catalog = default_catalog()
    with get_engine(url).begin() as conn:
        for i in range(accounts):
            account = f"r-{i:06d}"
            c = rules.Contract(account, COMMITMENT, PERIOD.start, 12, catalog.at(PERIOD.start).version)
            contract_rows.insert_contract(conn, c, rules.anniversary(PERIOD.start, 12))
            account_rows.append_terms(conn, account_id=account, effective_from=PERIOD.start,
                                      terms=Terms(rules.ENTERPRISE_PLAN), reason="bench", now=PERIOD.end)


def to_pro(url: str) -> None:
    with get_engine(url).begin() as conn:
        conn.exec_driver_sql("UPDATE account_terms SET plan = 'pro', seats = 1, pricing = 'executions', "
                             "overage_opt_in = true")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--executions", type=int, default=1_000_000)
    ap.add_argument("--database-url", default=None, help="a server to create the bench database on")
    args = ap.parse_args(argv)
    url, cleanup = fresh_database(args.database_url)
    try:
        t = time.perf_counter()
        load(url, args.accounts, args.executions)
        to_pro(url)
        print(f"loaded {args.accounts:,} accounts, {args.executions:,} executions in {time.perf_counter() - t:.1f} s")
        floor = min(sql_floor(url) for _ in range(2))
        rated = min(rate_all(url, args.accounts)[0] for _ in range(2))
        move_to_contracts(url, args.accounts)
        runs = [rate_all(url, args.accounts) for _ in range(2)]
        contracts, lines = min(r[0] for r in runs), runs[0][1]
        per_m = 1_000_000 / args.executions
        print(f"contracts {args.accounts:,} accounts, {args.executions:,} executions: {contracts:.2f} s "
              f"({contracts * per_m:.2f} s per 1M, {lines:,} lines) | as Pro {rated:.2f} s | "
              f"SQL GROUP BY floor {floor:.2f} s | ratio to Pro {contracts / rated:.2f}x, "
              f"to floor {contracts / floor:.2f}x | load average {os.getloadavg()[0]:.2f}")
    finally:
        get_engine(url).dispose()
        if cleanup:
            cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
