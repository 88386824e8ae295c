"""The bulk file path keeps the month-to-date counters exact on each of its ways in: fresh events
COPYed straight in, batches with known ids, ids repeated in a batch, unknown accounts."""

from __future__ import annotations

import json
from datetime import timedelta

from activities.ingest import ingest_lines, known_models
from billing.catalog import load_catalog
from models.db import get_engine
from tests.factories import COUNTED_EXECUTIONS, COUNTERS, OCT_START, create_account, event, to_lines

MODELS = known_models(load_catalog())


def counters_match(url: str) -> int:
    with get_engine(url).begin() as conn:
        truth = conn.exec_driver_sql(COUNTED_EXECUTIONS).all()
        counters = conn.exec_driver_sql(COUNTERS).all()
    assert [tuple(r) for r in counters] == [tuple(r) for r in truth]
    return sum(r[5] for r in truth)


def docs(account: str, n: int, first: int = 0) -> list[dict]:
    return [event(account, i, OCT_START + timedelta(hours=i), ("claude-haiku", "gpt-4o")[i % 2],
                  byok=i % 3 == 0, sandbox=i % 7 == 0, cost_usd=None if i % 4 else "0.00375")
            for i in range(first, first + n)]


def test_every_way_in_keeps_counters_equal_to_the_executions(clean_db):
    create_account(clean_db, "b1", "payg")
    create_account(clean_db, "b2", "pro")
    fresh = ingest_lines(clean_db, to_lines(docs("b1", 300) + docs("b2", 200)), MODELS)  # COPY fast path
    assert (fresh.accepted, fresh.duplicates) == (500, 0)
    assert counters_match(clean_db) == 500
    overlap = ingest_lines(clean_db, to_lines(docs("b1", 100, first=250)), MODELS)  # 50 known ids
    assert (overlap.accepted, overlap.duplicates) == (50, 50)
    assert counters_match(clean_db) == 550
    repeated = docs("b2", 20, first=500)
    again = ingest_lines(clean_db, to_lines(repeated + repeated[:5]), MODELS)  # ids repeated in the batch
    assert (again.accepted, again.duplicates) == (20, 5)
    assert counters_match(clean_db) == 570
    mixed = docs("b1", 10, first=1000) + docs("ghost", 3)
    report = ingest_lines(clean_db, to_lines(mixed), MODELS)  # an unknown account in the batch
    assert (report.accepted, report.rejected) == (10, 3)
    assert counters_match(clean_db) == 580
    replay = ingest_lines(clean_db, to_lines(docs("b1", 300)), MODELS)
    assert (replay.accepted, replay.duplicates) == (0, 300)
    assert counters_match(clean_db) == 580


def test_text_needing_copy_escapes_is_stored_exactly(clean_db):
    create_account(clean_db, "b1", "payg")
    odd = ["tab\there", "new\nline", "back\\slash", "cr\rx", "\\N", "ünïcødé ✓"]
    lines = [json.dumps(event("b1", i, OCT_START, agent_id=a, skill_id=a)).encode() for i, a in enumerate(odd)]
    report = ingest_lines(clean_db, lines, MODELS)
    assert report.accepted == len(odd)
    with get_engine(clean_db).begin() as conn:
        stored = conn.exec_driver_sql("SELECT agent_id, skill_id FROM executions ORDER BY event_id").all()
    assert [tuple(r) for r in stored] == [(a, a) for a in odd]


def test_a_known_id_at_the_start_of_a_big_batch_loses_no_line_after_it(clean_db):
    create_account(clean_db, "b1", "payg")
    ingest_lines(clean_db, to_lines(docs("b1", 1)), MODELS)
    many = [event("b1", i, OCT_START + timedelta(seconds=i), byok=i % 3 == 0) for i in range(1, 20_001)]
    tail = [event("b1", 100_000 + i, OCT_START + timedelta(minutes=i), sandbox=True) for i in range(10)]
    batch = docs("b1", 1) + many + [{"event_id": "bad"}] + tail
    report = ingest_lines(clean_db, to_lines(batch), MODELS, batch_lines=50_000)
    assert (report.accepted, report.duplicates, report.rejected) == (20_010, 1, 1)
    assert counters_match(clean_db) == 20_011


def test_batches_loaded_at_once_sharing_event_ids_record_each_once(clean_db):
    """Two batches in flight on two connections (the bulk default) that repeat each other's ids (the
    second in reverse order, so their row locks cross): each event is recorded and counted once, a
    replay is a duplicate, and of an id used with two contents one line is kept and the other
    rejected with its line number (which one: whichever was recorded first)."""
    create_account(clean_db, "b1", "payg")
    first = docs("b1", 40)
    changed = dict(first[0], input_tokens=first[0]["input_tokens"] + 1)
    lines = to_lines(first + list(reversed(first[1:])) + [changed])
    report = ingest_lines(clean_db, lines, MODELS, batch_lines=40, loaders=2)
    assert (report.accepted, report.duplicates, report.rejected) == (40, 39, 1)
    [rejected] = report.rejections
    assert rejected.reason == "event_id reused with different content" and rejected.line in (1, 80)
    kept = changed if rejected.line == 1 else first[0]
    with get_engine(clean_db).begin() as conn:
        stored = conn.exec_driver_sql("SELECT input_tokens FROM executions WHERE event_id = 'b1-0'").scalar_one()
    assert stored == kept["input_tokens"]
    assert counters_match(clean_db) == 40
