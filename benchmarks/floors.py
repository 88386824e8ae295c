"""The floors the benchmark compares Tally against, measured on the same machine in the same run.

- ``copy_floor``: a plain COPY of the same rows (pre-formatted COPY text, so no parsing in Python)
  into ``executions_floor (LIKE executions INCLUDING ALL)``: same columns, primary key and index.
- ``batch_copy_floor``: the same plain COPY into ``executions`` itself, in statements of one API batch,
  after the run (rolled back): what the rows' own storage costs where the HTTP path puts them, a month
  partition already holding the month's rows, without ids, counters, screening or Python.
- ``sql_floor``: the month's GROUP BY account, model, fetched to the client.
- ``stripe_floor``: the Stripe writes the close made (customer, invoice create, add_lines with the
  same lines, finalize), straight through ``stripe.StripeClient``, no bookkeeping, at the close's
  concurrency.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from billing.money import to_cents
from billing.periods import Period
from models.db import libpq_url
from models.settings import Settings

from benchmarks.dataset import COPY_COLUMNS

COPY_BLOCK = 1 << 20


def copy_floor(database_url: str, copy_file, rows: int) -> float:
    """Seconds to COPY ``copy_file`` into a fresh table shaped like ``executions`` (dropped after)."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("DROP TABLE IF EXISTS executions_floor")
        conn.execute("CREATE TABLE executions_floor (LIKE executions INCLUDING ALL)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(f"COPY executions_floor ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
                with open(copy_file, "rb") as fh:
                    while block := fh.read(COPY_BLOCK):
                        copy.write(block)
        conn.commit()
        seconds = time.perf_counter() - started
        n = conn.execute("SELECT count(*) FROM executions_floor").fetchone()[0]
        conn.execute("DROP TABLE executions_floor")
        conn.commit()
    if n != rows:
        raise RuntimeError(f"floor COPY loaded {n} rows, expected {rows}")
    return seconds


def batch_copy_floor(database_url: str, copy_file, rows: int, batch: int) -> float:
    """Seconds to COPY ``copy_file`` (COPY text, one row a line) into ``executions`` in statements of
    ``batch`` rows, one connection, one transaction that is rolled back: the table keeps exactly what
    it held (the rows' index entries stay until VACUUM: run it last)."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        before = conn.execute("SELECT count(*) FROM executions").fetchone()[0]
        conn.commit()
        sql = f"COPY executions ({', '.join(COPY_COLUMNS)}) FROM STDIN"
        started = time.perf_counter()
        with conn.cursor() as cur, open(copy_file, "rb") as fh:
            while lines := [line for _, line in zip(range(batch), fh)]:
                with cur.copy(sql) as copy:
                    copy.write(b"".join(lines))
        seconds = time.perf_counter() - started
        n = conn.execute("SELECT count(*) FROM executions").fetchone()[0] - before
        conn.rollback()
    if n != rows:
        raise RuntimeError(f"batch COPY floor loaded {n} rows, expected {rows}")
    return seconds


def sql_floor(database_url: str, period: Period) -> tuple[float, int]:
    """(seconds, result rows) of the plain month roll-up."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        started = time.perf_counter()
        rows = conn.execute(
            "SELECT account_id, model, count(*) FROM executions "
            "WHERE occurred_at >= %s AND occurred_at < %s GROUP BY 1, 2",
            (period.start, period.end),
        ).fetchall()
        return time.perf_counter() - started, len(rows)


@dataclass
class PushedInvoice:
    account_id: str
    email: str | None
    lines: list[dict]


@dataclass
class StripeFloor:
    seconds: float
    invoices: int
    customers: int
    writes: int
    threads: int
    errors: int
    client_cpu: float = 0.0  # CPU seconds of the calling process (the SDK's own cost)
    emulator_cpu: float = 0.0


def pushed_invoices(database_url: str, period: Period) -> list[PushedInvoice]:
    """The invoices the close pushes (all but no-charge ones; after a successful close: the open
    ones), with their lines in the payload shape the gateway sends."""
    span = {"start": int(period.start.timestamp()), "end": int(period.end.timestamp())}
    out: dict[int, PushedInvoice] = {}
    with psycopg.connect(libpq_url(database_url)) as conn:
        for inv_id, account_id, email in conn.execute(
            "SELECT i.id, i.account_id, a.email FROM invoices i JOIN accounts a ON a.id = i.account_id "
            "WHERE i.period = %s AND i.status <> 'no_charge' ORDER BY i.account_id", (str(period),)
        ):
            out[inv_id] = PushedInvoice(account_id, email, [])
        for inv_id, line_id, description, amount, quantity, unit_price in conn.execute(
            "SELECT invoice_id, id, description, amount, quantity, unit_price FROM invoice_lines "
            "WHERE invoice_id = ANY(%s) ORDER BY invoice_id, position", (list(out),)
        ):
            out[inv_id].lines.append({
                "amount": to_cents(amount),
                "description": description,
                "period": span,
                "metadata": {"tally_line_id": str(line_id), "quantity": str(quantity),
                             "unit_price": str(unit_price)},
            })
    return list(out.values())


def stripe_floor(client, invoices: list[PushedInvoice], *, customers: int, threads: int,
                 period: Period, tag: str) -> StripeFloor:
    """Create customer (for the first ``customers`` invoices) + invoice + add_lines + finalize for
    each invoice, ``threads`` invoices at a time. Returns the wall time of the whole batch."""
    writes = 0
    errors = 0
    lock = threading.Lock()
    # Invoices whose customer the close did not have to create get one here, outside the timing.
    existing = {}
    for inv in invoices[customers:]:
        existing[inv.account_id] = client.v1.customers.create(
            params={"name": inv.account_id, "metadata": {"tally_account_id": inv.account_id}}).id

    def one(i: int, inv: PushedInvoice) -> None:
        nonlocal writes, errors
        n = 0
        key = f"floor-{tag}:{inv.account_id}"
        try:
            if i < customers:
                params = {"metadata": {"tally_account_id": inv.account_id}, "name": inv.account_id}
                if inv.email:
                    params["email"] = inv.email
                cust = client.v1.customers.create(params=params, options={"idempotency_key": key + ":c"})
                n += 1
                customer_id = cust.id
            else:
                customer_id = existing[inv.account_id]
            obj = client.v1.invoices.create(params={
                "customer": customer_id, "currency": "usd", "auto_advance": False,
                "collection_method": "charge_automatically", "pending_invoice_items_behavior": "exclude",
                "description": f"Tally usage {period}",
                "metadata": {"tally_invoice_id": f"{inv.account_id}:{period}",
                             "tally_account_id": inv.account_id, "tally_period": str(period)},
            }, options={"idempotency_key": key + ":i"})
            n += 1
            if inv.lines:
                client.v1.invoices.add_lines(obj.id, params={"lines": inv.lines},
                                             options={"idempotency_key": key + ":l"})
                n += 1
            client.v1.invoices.finalize_invoice(obj.id, params={"auto_advance": False},
                                                options={"idempotency_key": key + ":f"})
            n += 1
        except Exception:  # noqa: BLE001 - counted, the floor still reports its time
            with lock:
                errors += 1
        with lock:
            writes += n

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stripe-floor") as pool:
        list(pool.map(lambda a: one(*a), enumerate(invoices)))
    return StripeFloor(time.perf_counter() - started, len(invoices), min(customers, len(invoices)),
                       writes, threads, errors)


def floor_threads(settings: Settings, parallel: int) -> int:
    return settings.stripe_concurrency * parallel
