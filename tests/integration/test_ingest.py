"""Bulk ingestion on real Postgres: duplicates skipped and counted, bad lines rejected with reasons."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from activities.ingest import ingest_lines, known_models
from billing.catalog import load_catalog
from models.db import get_engine
from tests.factories import OCT_START, create_account, event, events, ingest, to_lines

MODELS = known_models(load_catalog())


def count_executions(url: str) -> int:
    with get_engine(url).begin() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM executions").scalar()


def test_duplicate_event_ids_are_counted_and_skipped_within_and_across_files(clean_db):
    create_account(clean_db, "a1", "pro")
    docs = list(events("a1", 50))
    first = ingest(clean_db, docs + docs[:5])  # 5 repeated inside the same file
    assert (first.accepted, first.duplicates, first.rejected) == (50, 5, 0)
    again = ingest(clean_db, docs)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 50, 0)
    assert count_executions(clean_db) == 50


def test_bad_lines_are_rejected_with_line_number_and_reason_while_good_lines_load(clean_db):
    create_account(clean_db, "a1", "pro")
    good = event("a1", 1, OCT_START)
    lines = [
        json.dumps(good).encode(),                                        # 1 ok
        b"{not json",                                                     # 2
        json.dumps({**good, "event_id": "x2", "model": "gpt-9"}).encode(),  # 3 unknown model
        json.dumps({**good, "event_id": "x3", "input_tokens": -4}).encode(),  # 4 negative tokens
        json.dumps({**good, "event_id": "x4", "occurred_at": "2026-10-02T10:00:00"}).encode(),  # 5 naive
        json.dumps({**good, "event_id": "x5", "account_id": "ghost"}).encode(),  # 6 unknown account
        json.dumps({k: v for k, v in good.items() if k != "agent_id"} | {"event_id": "x6"}).encode(),  # 7
        json.dumps({**good, "event_id": "x7", "occurred_at": "2999-01-01T00:00:00Z"}).encode(),  # 8 future
        b"[1, 2]",                                                        # 9 not an object
        b"",                                                              # 10 blank: ignored
        json.dumps({**good, "event_id": "ok-2"}).encode(),                # 11 ok
    ]
    report = ingest_lines(clean_db, lines, MODELS)
    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, 8)
    reasons = {r.line: r.reason for r in report.rejections}
    assert reasons[2].startswith("not valid JSON")
    assert reasons[3] == "model: unknown model 'gpt-9'"
    assert reasons[4] == "input_tokens: must not be negative"
    assert "occurred_at" in reasons[5] and "time zone" in reasons[5]
    assert reasons[6] == "account_id: unknown account 'ghost'"
    assert reasons[7] == "agent_id: required"
    assert "future" in reasons[8]
    assert reasons[9] == "not a JSON object"
    assert count_executions(clean_db) == 2


def test_a_file_of_only_bad_lines_writes_nothing(clean_db):
    report = ingest_lines(clean_db, [b"nope", json.dumps({"event_id": "e"}).encode()], MODELS)
    assert report.accepted == 0 and report.rejected == 2
    assert count_executions(clean_db) == 0


def test_large_input_streams_in_batches_with_the_same_counts(clean_db):
    create_account(clean_db, "big", "payg")
    docs = list(events("big", 2_500, step=timedelta(seconds=30)))
    report = ingest_lines(clean_db, to_lines(docs + docs[:100]), MODELS, batch_lines=700)
    assert (report.accepted, report.duplicates, report.rejected) == (2_500, 100, 0)
    assert count_executions(clean_db) == 2_500


def test_timestamps_are_stored_in_utc_whatever_offset_they_arrive_with(clean_db):
    create_account(clean_db, "tz", "payg")
    doc = event("tz", 1, OCT_START)
    doc["occurred_at"] = "2026-10-31T20:30:00-04:00"  # = 2026-11-01T00:30Z: November
    ingest(clean_db, [doc])
    with get_engine(clean_db).begin() as conn:
        ts = conn.exec_driver_sql("SELECT occurred_at FROM executions").scalar()
    assert ts == datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc)


def test_the_first_line_wins_although_the_next_batch_loads_at_the_same_time(clean_db, monkeypatch):
    """Two loaders: the batch of line 1 is slow (held 1 s), the batch of line 2 repeats its id with other
    content. Line 2's batch waits for line 1's to commit, so line 1 is kept and line 2 rejected."""
    import time

    import activities.ingest as ingest_module

    create_account(clean_db, "fw2", "payg")
    first = event("fw2", 1, OCT_START + timedelta(days=3), "claude-haiku", input_tokens=100, output_tokens=10)
    later = {**first, "model": "claude-opus", "input_tokens": 999}
    load_batch = ingest_module._load_batch

    def slow_first(conn, batch, *args, **kwargs):
        if batch[0][0] == 1:
            time.sleep(1.0)
        return load_batch(conn, batch, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "_load_batch", slow_first)
    report = ingest_lines(clean_db, to_lines([first, later]), MODELS, batch_lines=1, loaders=2)
    assert [(r.line, r.reason) for r in report.rejections] == [(2, "event_id reused with different content")]
    with get_engine(clean_db).begin() as conn:
        assert conn.exec_driver_sql("SELECT model, input_tokens FROM executions WHERE event_id = %s",
                                    (first["event_id"],)).all() == [("claude-haiku", 100)]


@pytest.mark.parametrize("batch_lines", [100_000, 1], ids=["one-batch", "a-batch-per-line"])
def test_repeated_event_id_in_one_file_keeps_the_first_line_and_rejects_a_later_different_one(clean_db, batch_lines):
    create_account(clean_db, "fw", "payg")
    first = event("fw", 1, OCT_START + timedelta(days=3), "claude-haiku", input_tokens=100, output_tokens=10)
    other = event("fw", 2, OCT_START + timedelta(days=4), "gpt-4o")
    later = {**first, "model": "claude-opus", "input_tokens": 999, "output_tokens": 99, "byok": True,
             "occurred_at": "2026-10-20T12:00:00Z"}
    report = ingest_lines(clean_db, to_lines([first, other, later]), MODELS, batch_lines=batch_lines)
    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, 1)
    assert [(r.line, r.reason) for r in report.rejections] == [(3, "event_id reused with different content")]
    with get_engine(clean_db).begin() as conn:
        row = conn.exec_driver_sql(
            "SELECT model, input_tokens, output_tokens, byok, occurred_at FROM executions WHERE event_id = %s",
            (first["event_id"],)).one()
        counters = conn.exec_driver_sql(
            "SELECT model, byok, executions, input_tokens FROM usage_counters WHERE account_id = 'fw' "
            "ORDER BY model").all()
    assert tuple(row) == ("claude-haiku", 100, 10, False, OCT_START + timedelta(days=3))
    # the counters saw the first line only, once
    assert [tuple(c) for c in counters] == [("claude-haiku", False, 1, 100), ("gpt-4o", False, 1, other["input_tokens"])]
