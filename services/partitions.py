"""The month partitions of executions (repositories/partitions.py): created ahead (the
``execution-partitions`` schedule, ``tally usage partitions``), archived (``tally usage archive``)
and restored (``tally usage restore``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import psycopg

from activities.pricing import LATE_USAGE_LOOKBACK_PERIODS
from billing.periods import Period, oldest_billed_period
from models.db import libpq_url
from repositories import partitions as repo
from services.errors import InvalidInput

MONTHS_AHEAD = 3


def ensure(database_url: str, now: datetime, months_ahead: int = MONTHS_AHEAD) -> repo.EnsureResult:
    """This month's partition and ``months_ahead`` more; months found in the default partition get theirs."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        return repo.ensure_partitions(conn, Period.of(now), months_ahead)


def archive(database_url: str, before: Period, directory: Path, now: datetime,
            grace_hours: int = 48) -> list[repo.ArchivedMonth]:
    """Archive every month before ``before`` to ``directory`` (a file per month) and drop its
    partition. Refused for months a close may still read (late usage reaches back
    LATE_USAGE_LOOKBACK_PERIODS periods before the latest close that may still run)."""
    oldest = oldest_billed_period(now, LATE_USAGE_LOOKBACK_PERIODS, grace_hours)
    if (before.year, before.month) > (oldest.year, oldest.month):
        raise InvalidInput("before", f"{before} is too recent: a close still reads executions of {oldest} "
                                     f"(late usage reaches back {LATE_USAGE_LOOKBACK_PERIODS} periods); "
                                     f"archive --before {oldest} at the latest")
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        repo.ensure_partitions(conn, Period.of(now), MONTHS_AHEAD)  # strays in the default partition first
        months = [p for p in repo.month_partitions(conn) if (p.year, p.month) < (before.year, before.month)]
        return [repo.archive_month(conn, p, directory) for p in months]


def archived(database_url: str) -> list[tuple[str, int, str]]:
    """The archived months: (month, rows, file), oldest first."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        return repo.archived_months(conn)


def restore(database_url: str, path: Path) -> repo.ArchivedMonth:
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        return repo.restore_month(conn, path)
