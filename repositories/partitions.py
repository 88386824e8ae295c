"""The month partitions of ``executions`` (native range partitioning on ``occurred_at``, UTC months).

- ``executions_YYYY_MM`` holds the executions of one month: a month's rollup, the close's rating and
  usage reporting read one partition (the planner prunes the others);
- ``executions_default`` catches an execution of a month whose partition does not exist yet (none
  should: the ``execution-partitions`` schedule creates them ahead, and ingest refuses events older
  than the oldest period a close still bills). ``ensure_partitions`` moves such rows into their
  month's partition when it creates it;
- ``archive_month`` writes a month's rows to a file (COPY binary, gzip) and detaches and drops its
  partition, recording the month in ``archived_months``; ``restore_month`` loads such a file back
  into a re-attached partition and forgets the record (``archived_months`` reads them: ``invoices
  verify`` refuses an archived month).

Deduplication does not depend on partitions: every event id is recorded once per tenant in the
unpartitioned ``execution_ids`` (kept when a month is archived, so a replay of an archived event is
still a duplicate).
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from billing.periods import Period

PARENT = "executions"
DEFAULT = "executions_default"
_NAME = re.compile(r"^executions_(\d{4})_(\d{2})$")
_COLUMN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
ARCHIVE_MAGIC = b"TALLY-EXECUTIONS-ARCHIVE 1\n"
COPY_BLOCK = 1 << 20


def partition_name(period: Period) -> str:
    return f"{PARENT}_{period.year:04d}_{period.month:02d}"


def is_partition_name(name: str) -> bool:
    """A table name of an executions partition (Alembic's schema comparison leaves them out)."""
    return name == DEFAULT or _NAME.match(name) is not None


def _bounds(period: Period) -> str:
    return f"FROM ('{period.start.isoformat()}') TO ('{period.end.isoformat()}')"


def month_partitions(conn: psycopg.Connection) -> list[Period]:
    """The months that have a partition attached, oldest first."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", (PARENT,)).fetchall()
    out = []
    for (name,) in rows:
        m = _NAME.match(name)
        if m:
            out.append(Period(int(m.group(1)), int(m.group(2))))
    return sorted(out, key=lambda p: (p.year, p.month))


def _exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def create_partition(conn: psycopg.Connection, period: Period) -> bool:
    """Attach ``period``'s partition (in the caller's transaction), moving its rows out of the default
    partition. False when it was there already."""
    name = partition_name(period)
    if _exists(conn, name):
        return False
    # Lock order: parent then default, like an insert; concurrent creators wait here.
    conn.execute(f"LOCK TABLE {PARENT} IN SHARE UPDATE EXCLUSIVE MODE")
    if _exists(conn, name):
        return False
    conn.execute(f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    has_default = _exists(conn, DEFAULT)
    if has_default:
        conn.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
        conn.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE occurred_at >= %s AND occurred_at < %s RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved", (period.start, period.end))
    conn.execute(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES {_bounds(period)}")
    return True


@dataclass(frozen=True)
class EnsureResult:
    created: list[str]
    from_default: list[str]  # months found in the default partition and given their own


def ensure_partitions(conn: psycopg.Connection, now_period: Period, months_ahead: int) -> EnsureResult:
    """Partitions for this month and ``months_ahead`` more, and for every month found in the default
    partition; each in its own transaction (autocommit connection expected)."""
    wanted = [now_period]
    for _ in range(months_ahead):
        wanted.append(wanted[-1].next())
    stray: list[Period] = []
    if _exists(conn, DEFAULT):
        stray = [Period(int(y), int(m)) for y, m in conn.execute(
            f"SELECT DISTINCT extract(year FROM occurred_at AT TIME ZONE 'UTC')::int, "
            f"extract(month FROM occurred_at AT TIME ZONE 'UTC')::int FROM {DEFAULT}").fetchall()]
    created, moved = [], []
    for period in sorted(set(wanted) | set(stray), key=lambda p: (p.year, p.month)):
        with conn.transaction():
            if create_partition(conn, period):
                created.append(str(period))
                if period in stray:
                    moved.append(str(period))
    return EnsureResult(created, moved)


# ---- archive and restore ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArchivedMonth:
    period: str
    rows: int
    path: Path


def archive_file(directory: Path, period: Period) -> Path:
    return directory / f"executions-{period}.copy.gz"


def archive_month(conn: psycopg.Connection, period: Period, directory: Path) -> ArchivedMonth:
    """Write ``period``'s executions to ``directory/executions-YYYY-MM.copy.gz`` (a header line, then
    COPY binary), check the file, then detach and drop the partition, in one transaction. The file
    is written completely (and renamed into place) before anything is dropped."""
    name = partition_name(period)
    path = archive_file(directory, period)
    if path.exists():
        raise FileExistsError(f"{path} exists: {period} was archived before (restore it first, or move the file)")
    directory.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with conn.transaction():
        conn.execute(f"LOCK TABLE {name} IN SHARE MODE")  # no writer changes it while it is copied
        rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        cols = _columns(conn)
        with gzip.open(partial, "wb") as out:
            out.write(ARCHIVE_MAGIC)
            out.write(f"{period} {rows}\n{','.join(cols)}\n".encode())
            with conn.cursor().copy(f"COPY {name} ({', '.join(cols)}) TO STDOUT (FORMAT BINARY)") as copy:
                for block in copy:
                    out.write(block)
        partial.rename(path)
        conn.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name}")
        conn.execute(f"DROP TABLE {name}")
        conn.execute("INSERT INTO archived_months (period, rows, file) VALUES (%s, %s, %s) ON CONFLICT (period) "
                     "DO UPDATE SET rows = EXCLUDED.rows, file = EXCLUDED.file, archived_at = now()",
                     (str(period), rows, str(path.absolute())))
    return ArchivedMonth(str(period), rows, path)


def _columns(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum", (PARENT,)).fetchall()]


def read_header(path: Path) -> tuple[Period, int, list[str]]:
    """(month, rows, columns in file order) of an archive file."""
    with gzip.open(path, "rb") as fh:
        if fh.readline() != ARCHIVE_MAGIC:
            raise ValueError(f"{path}: not an executions archive of tally usage archive")
        period, rows = fh.readline().decode().split()
        cols = fh.readline().decode().strip().split(",")
    if not cols or not all(_COLUMN.match(c) for c in cols):
        raise ValueError(f"{path}: the header's column list is damaged")
    return Period.parse(period), int(rows), cols


def restore_month(conn: psycopg.Connection, path: Path) -> ArchivedMonth:
    """Load an archive file back: its month's partition is created and filled in one transaction
    (refused when that month has rows already)."""
    period, rows, cols = read_header(path)
    name = partition_name(period)
    with conn.transaction():
        if _exists(conn, name) and conn.execute(f"SELECT EXISTS (SELECT 1 FROM {name})").fetchone()[0]:
            raise FileExistsError(f"{period} has executions already: nothing restored")
        if not _exists(conn, name):
            create_partition(conn, period)
        with gzip.open(path, "rb") as fh:
            for _ in range(3):
                fh.readline()
            # By column name: columns added since the archive was written take their defaults.
            with conn.cursor().copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
                while block := fh.read(COPY_BLOCK):
                    copy.write(block)
        loaded = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        if loaded != rows:
            raise ValueError(f"{path}: {loaded} rows loaded, the header says {rows}: nothing restored")
        conn.execute("DELETE FROM archived_months WHERE period = %s", (str(period),))
    return ArchivedMonth(str(period), rows, path)


def archived_months(conn: psycopg.Connection, periods: list[Period] | None = None) -> list[tuple[str, int, str]]:
    """The archived months (their executions are in a file, not in the database), or those among
    ``periods``: (month, rows, file), oldest first."""
    if periods is None:
        return [tuple(r) for r in conn.execute("SELECT period, rows, file FROM archived_months ORDER BY period")]
    return [tuple(r) for r in conn.execute("SELECT period, rows, file FROM archived_months WHERE period = ANY(%s) "
                                           "ORDER BY period", ([str(p) for p in periods],))]
