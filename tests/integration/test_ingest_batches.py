"""Ingest's two ways in on real Postgres, a handful of rows each: the bulk loader's batches (the COPY
straight in, the general way, the counters, what the observers hear) and the HTTP API's batches
(``services.ingest.BatchRecorder``: a result per item). Fast, so a mutation run (``make
mutation-ingest``) can run them for every mutant of ingest."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

import capabilities
import services.ingest as service
from activities.ingest import ingest_file, ingest_lines, known_models
from billing.catalog import load_catalog
from models.db import get_engine
from repositories import accounts, platforms
from services.ingest import BatchRecorder, ingest_jsonl

CATALOG = load_catalog()
MODELS = known_models(CATALOG)
NOW = datetime(2026, 10, 25, 12, tzinfo=timezone.utc)


def doc(event_id: str, account: str = "acme", day: int = 10, **kw) -> dict:
    return {"event_id": event_id, "account_id": account, "agent_id": "bot", "model": "claude-haiku",
            "input_tokens": 10, "output_tokens": 2, "occurred_at": f"2026-10-{day:02d}T10:00:00Z"} | kw


def lines(*docs) -> list[bytes]:
    return [d if isinstance(d, bytes) else json.dumps(d).encode() for d in docs]


@pytest.fixture
def db(clean_db):
    engine = get_engine(clean_db)
    with engine.begin() as conn:
        for a, start in (("acme", 1), ("globex", 1), ("late", 5)):
            accounts.create_account(conn, account_id=a, plan="payg", seats=1, overage_opt_in=False, email=None,
                                    billing_starts_at=datetime(2026, 1 if start == 1 else 10, start,
                                                               tzinfo=timezone.utc))
    return clean_db


def platform(url: str, name: str, *account_ids: str) -> int:
    engine = get_engine(url)
    with engine.begin() as conn:
        pid = platforms.create_platform(conn, name, f"hash-{name}")
        pid = pid if isinstance(pid, int) else platforms.platform_by_name(conn, name).id
        for a in account_ids:
            conn.exec_driver_sql("UPDATE accounts SET platform_id = %s WHERE id = %s", (pid, a))
    return pid


def executions(url: str) -> list[tuple]:
    with get_engine(url).begin() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT event_id, account_id, input_tokens FROM executions ORDER BY event_id").all()]


def counters(url: str) -> list[tuple]:
    with get_engine(url).begin() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT account_id, period, model, executions, input_tokens, output_tokens, cost_usd "
            "FROM usage_counters ORDER BY account_id, period, model").all()]


# ---- the bulk loader -------------------------------------------------------------------------------------
def test_fresh_lines_go_straight_in_with_their_counters_and_the_observer_hears_each_batch(db):
    heard = []
    report = ingest_lines(db, lines(doc("e1"), doc("e2", cost_usd="0.25"), doc("g1", "globex"), doc("e3")),
                          MODELS, NOW, batch_lines=3, on_batch=lambda a, at: heard.append((sorted(a), at)))
    assert (report.accepted, report.duplicates, report.rejected, report.lines) == (4, 0, 0, 4)
    assert executions(db) == [("e1", "acme", 10), ("e2", "acme", 10), ("e3", "acme", 10), ("g1", "globex", 10)]
    assert counters(db) == [("acme", "2026-10", "claude-haiku", 3, 30, 6, Decimal("0.25")),
                            ("globex", "2026-10", "claude-haiku", 1, 10, 2, Decimal("0"))]
    assert heard == [(["acme", "globex"], NOW), (["acme"], NOW)]
    assert report.seconds > 0


def test_known_ids_are_duplicates_or_reused_and_only_new_rows_count(db):
    ingest_lines(db, lines(doc("e1"), doc("e2")), MODELS, NOW)
    heard = []
    report = ingest_lines(db, lines(doc("e1"), doc("e2", input_tokens=99), doc("e3")), MODELS, NOW,
                          on_batch=lambda a, at: heard.append(sorted(a)))
    assert (report.accepted, report.duplicates, report.rejected) == (1, 1, 1)
    assert [(r.line, r.reason) for r in report.rejections] == [(2, "event_id reused with different content")]
    assert counters(db) == [("acme", "2026-10", "claude-haiku", 3, 30, 6, Decimal("0"))]
    assert heard == [["acme"]]


def test_a_batch_with_nothing_new_tells_no_observer(db):
    ingest_lines(db, lines(doc("e1")), MODELS, NOW)
    heard = []
    report = ingest_lines(db, lines(doc("e1"), b"", b"  "), MODELS, NOW, on_batch=lambda a, at: heard.append(a))
    assert (report.accepted, report.duplicates, report.rejected) == (0, 1, 0)
    assert heard == []


def test_the_general_way_rejects_unknown_accounts_and_unbillable_rows_and_records_the_rest(db):
    report = ingest_lines(db, lines(doc("e1"), doc("x1", "ghost"), doc("l1", "late", day=4), doc("l2", "late", day=6),
                                    doc("e1"), doc("old", occurred_at="2026-06-30T23:59:59Z"), b"nope"),
                          MODELS, NOW)
    assert (report.accepted, report.duplicates, report.rejected) == (2, 1, 4)
    reasons = {r.line: r.reason for r in report.rejections}
    assert reasons[2] == "account_id: unknown account 'ghost'"
    assert reasons[3].startswith("occurred_at: 2026-10-04T10:00:00Z is before the account's billing start")
    assert reasons[6].startswith("occurred_at: 2026-06-30T23:59:59Z is before 2026-07,")
    assert reasons[7].startswith("not valid JSON")
    assert [r.line for r in report.rejections] == [2, 3, 6, 7]
    assert executions(db) == [("e1", "acme", 10), ("l2", "late", 10)]
    assert counters(db) == [("acme", "2026-10", "claude-haiku", 1, 10, 2, Decimal("0")),
                            ("late", "2026-10", "claude-haiku", 1, 10, 2, Decimal("0"))]


def test_a_batch_of_only_bad_lines_or_blank_lines_writes_nothing(db):
    report = ingest_lines(db, lines(b"", doc("x", "ghost")), MODELS, NOW, batch_lines=1)
    assert (report.accepted, report.rejected) == (0, 1)
    assert executions(db) == [] and counters(db) == []


def test_event_ids_are_unique_per_platform(db):
    platform(db, "p1", "acme")
    platform(db, "p2", "globex")
    report = ingest_lines(db, lines(doc("same"), doc("same", "globex")), MODELS, NOW)
    assert (report.accepted, report.duplicates) == (2, 0)
    again = ingest_lines(db, lines(doc("same", "globex"), doc("same", input_tokens=5)), MODELS, NOW)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 1, 1)


def test_a_file_is_read_from_a_path_or_a_stream(db, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_bytes(b"\n".join(lines(doc("e1"), doc("e2"))) + b"\n")
    assert ingest_file(db, path, MODELS, NOW).accepted == 2
    assert ingest_file(db, str(path), MODELS, NOW).duplicates == 2
    assert ingest_file(db, io.BytesIO(b"\n".join(lines(doc("e3")))), MODELS, NOW).accepted == 1


def test_ingest_jsonl_tells_the_capabilities_which_accounts_got_usage(db, monkeypatch):
    heard = []
    monkeypatch.setattr(capabilities, "observe_usage",
                        lambda engine, catalog, rec: heard.append((rec.account_ids, rec.recorded_at, catalog)))
    report = ingest_jsonl(db, io.BytesIO(b"\n".join(lines(doc("e1"), doc("g1", "globex")))), CATALOG, NOW)
    assert report.accepted == 2
    assert [(sorted(a), at, c) for a, at, c in heard] == [(["acme", "globex"], NOW, CATALOG)]


def test_ingest_jsonl_passes_the_grace_to_the_oldest_billed_period(db):
    # 2026-11-02 12:00: within 48 h of October's close the look-back starts at July, with 12 h at August
    now = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    july = doc("j1", occurred_at="2026-07-15T00:00:00Z")
    assert ingest_jsonl(db, io.BytesIO(json.dumps(july).encode()), CATALOG, now).accepted == 1
    again = {**july, "event_id": "j2"}
    assert ingest_jsonl(db, io.BytesIO(json.dumps(again).encode()), CATALOG, now, grace_hours=12).rejected == 1


# ---- the HTTP API's batches --------------------------------------------------------------------------------
@pytest.fixture
def recorder(db):
    return BatchRecorder(get_engine(db), CATALOG)


def test_a_batch_answers_each_item_and_counts_them(recorder, db):
    pid = platform(db, "p1", "acme", "globex")
    out = recorder.record(pid, [doc("e1"), doc("g1", "globex"), {"event_id": "bad", "model": "gpt-9"}, [1]], NOW)
    assert out["results"][:2] == [{"event_id": "e1", "status": "accepted", "errors": []},
                                  {"event_id": "g1", "status": "accepted", "errors": []}]
    bad = out["results"][2]
    assert (bad["event_id"], bad["status"]) == ("bad", "rejected")
    assert bad["errors"][0] == {"field": "model", "reason": "unknown model 'gpt-9'"}
    assert {"field": "account_id", "reason": "required"} in bad["errors"]
    assert out["results"][3] == {"event_id": None, "status": "rejected",
                                 "errors": [{"field": None, "reason": "not a JSON object"}]}
    assert (out["accepted"], out["duplicates"], out["rejected"]) == (2, 0, 2)
    assert counters(db) == [("acme", "2026-10", "claude-haiku", 1, 10, 2, Decimal("0")),
                            ("globex", "2026-10", "claude-haiku", 1, 10, 2, Decimal("0"))]


def test_a_rejected_item_without_a_string_event_id_is_answered_with_none(recorder, db):
    pid = platform(db, "p1", "acme")
    out = recorder.record(pid, [{"event_id": 5, "model": "gpt-9"}], NOW)
    assert out["results"][0]["event_id"] is None


def test_a_replayed_batch_is_duplicates_and_a_reused_id_is_rejected_on_event_id(recorder, db):
    pid = platform(db, "p1", "acme")
    recorder.record(pid, [doc("e1"), doc("e2")], NOW)
    out = recorder.record(pid, [doc("e1"), doc("e2", input_tokens=99), doc("e3")], NOW)
    assert out["results"] == [
        {"event_id": "e1", "status": "duplicate", "errors": []},
        {"event_id": "e2", "status": "rejected",
         "errors": [{"field": "event_id", "reason": "event_id reused with different content"}]},
        {"event_id": "e3", "status": "accepted", "errors": []}]
    assert (out["accepted"], out["duplicates"], out["rejected"]) == (1, 1, 1)
    assert counters(db) == [("acme", "2026-10", "claude-haiku", 3, 30, 6, Decimal("0"))]


def test_a_repeat_inside_one_batch_is_a_duplicate_and_another_platforms_account_is_unknown(recorder, db):
    pid = platform(db, "p1", "acme", "late")
    platform(db, "p2", "globex")
    out = recorder.record(pid, [doc("e1"), doc("e1"), doc("g1", "globex"), doc("l1", "late", day=4)], NOW)
    assert [r["status"] for r in out["results"]] == ["accepted", "duplicate", "rejected", "rejected"]
    assert out["results"][2]["errors"] == [{"field": "account_id", "reason": "unknown account 'globex'"}]
    assert out["results"][3]["errors"][0]["field"] == "occurred_at"


def test_the_capabilities_hear_the_accounts_that_got_new_executions_only(recorder, db, monkeypatch):
    heard = []
    monkeypatch.setattr(capabilities, "observe_usage",
                        lambda engine, catalog, rec: heard.append((rec.account_ids, rec.recorded_at)))
    pid = platform(db, "p1", "acme", "globex")
    recorder.record(pid, [doc("g1", "globex"), doc("e1")], NOW)
    recorder.record(pid, [doc("e1")], NOW)
    recorder.record(pid, [{"bad": 1}], NOW)
    assert heard == [(("acme", "globex"), NOW)]


def test_an_empty_batch_records_nothing(recorder):
    assert recorder.record(1, [], NOW) == {"results": [], "accepted": 0, "duplicates": 0, "rejected": 0}


def _deadlock() -> DBAPIError:
    return DBAPIError("INSERT", {}, psycopg.errors.DeadlockDetected("deadlock detected"))


def test_a_batch_that_loses_a_deadlock_is_recorded_again_and_other_errors_are_raised(recorder, db, monkeypatch):
    pid = platform(db, "p1", "acme")
    real, calls = recorder._insert, []

    def flaky(*args):
        calls.append(1)
        if len(calls) < service.RECORD_ATTEMPTS:
            raise _deadlock()
        return real(*args)

    monkeypatch.setattr(recorder, "_insert", flaky)
    monkeypatch.setattr(service.time, "sleep", lambda s: None)
    assert recorder.record(pid, [doc("e1")], NOW)["accepted"] == 1
    assert len(calls) == service.RECORD_ATTEMPTS == 3

    calls.clear()
    monkeypatch.setattr(recorder, "_insert", lambda *a: (calls.append(1), (_ for _ in ()).throw(_deadlock()))[1])
    with pytest.raises(DBAPIError):
        recorder.record(pid, [doc("e2")], NOW)
    assert len(calls) == 3

    calls.clear()
    other = DBAPIError("INSERT", {}, psycopg.errors.UniqueViolation("dup"))
    monkeypatch.setattr(recorder, "_insert", lambda *a: (calls.append(1), (_ for _ in ()).throw(other))[1])
    with pytest.raises(DBAPIError):
        recorder.record(pid, [doc("e3")], NOW)
    assert len(calls) == 1


def test_transient_errors_are_deadlocks_serialization_failures_and_lost_connections():
    assert service._is_transient(_deadlock())
    assert service._is_transient(DBAPIError("x", {}, psycopg.errors.SerializationFailure("s")))
    assert not service._is_transient(DBAPIError("x", {}, psycopg.errors.UniqueViolation("u")))
    lost = DBAPIError("x", {}, psycopg.OperationalError("gone"), connection_invalidated=True)
    assert service._is_transient(lost)


def test_a_recorder_uses_the_catalogs_models_and_its_grace(db):
    rec = BatchRecorder(get_engine(db), CATALOG, grace_hours=12)
    assert rec.models == MODELS and rec.grace_hours == 12
    now = datetime(2026, 11, 2, 12, tzinfo=timezone.utc)
    pid = platform(db, "p1", "acme")
    out = rec.record(pid, [doc("j1", occurred_at="2026-07-15T00:00:00Z")], now)
    assert out["rejected"] == 1
    assert BatchRecorder(get_engine(db), CATALOG).record(pid, [doc("j2", occurred_at="2026-07-15T00:00:00Z")],
                                                         now)["accepted"] == 1


# ---- batches recorded as one (group commit: BatchRecorder.record_many) -------------------------------------
def stored(url: str) -> list[tuple]:
    with get_engine(url).begin() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT a.platform_id, e.event_id, e.input_tokens FROM executions e "
            "JOIN accounts a ON a.id = e.account_id ORDER BY 1, 2").all()]


def test_batches_recorded_as_one_each_get_the_answers_they_would_get_alone_in_order(recorder, db, monkeypatch):
    heard = []
    monkeypatch.setattr(capabilities, "observe_usage",
                        lambda engine, catalog, rec: heard.append((rec.account_ids, rec.recorded_at)))
    pid = platform(db, "p1", "acme", "globex")
    first = [doc("e1"), {"event_id": "bad", "model": "gpt-9"}, doc("e2"), doc("z1", "nobody")]
    second = [doc("g1", "globex"), doc("e1"), doc("e2", input_tokens=99), doc("e3")]
    out = recorder.record_many([(pid, first, NOW), (pid, second, NOW + timedelta(seconds=1))])
    assert [r["status"] for r in out[0]["results"]] == ["accepted", "rejected", "accepted", "rejected"]
    assert out[0]["results"][3]["errors"] == [{"field": "account_id", "reason": "unknown account 'nobody'"}]
    assert (out[0]["accepted"], out[0]["duplicates"], out[0]["rejected"]) == (2, 0, 2)
    # the second batch sees the first one's ids as if it had been recorded after it: the first line wins
    assert out[1]["results"] == [
        {"event_id": "g1", "status": "accepted", "errors": []},
        {"event_id": "e1", "status": "duplicate", "errors": []},
        {"event_id": "e2", "status": "rejected",
         "errors": [{"field": "event_id", "reason": "event_id reused with different content"}]},
        {"event_id": "e3", "status": "accepted", "errors": []}]
    assert (out[1]["accepted"], out[1]["duplicates"], out[1]["rejected"]) == (2, 1, 1)
    assert executions(db) == [("e1", "acme", 10), ("e2", "acme", 10), ("e3", "acme", 10), ("g1", "globex", 10)]
    assert counters(db) == [("acme", "2026-10", "claude-haiku", 3, 30, 6, Decimal("0")),
                            ("globex", "2026-10", "claude-haiku", 1, 10, 2, Decimal("0"))]
    assert heard == [(("acme", "globex"), NOW + timedelta(seconds=1))]  # once for the group, at its latest clock
    # and alone, afterwards, the same items are what they were
    again = recorder.record_many([(pid, [doc("e2", input_tokens=99)], NOW), (pid, [doc("g1", "globex")], NOW)])
    assert [a["results"][0]["status"] for a in again] == ["rejected", "duplicate"]


def test_a_group_records_a_known_id_by_the_general_statement_without_losing_the_fresh_batch(recorder, db):
    pid = platform(db, "p1", "acme")
    recorder.record(pid, [doc("e1")], NOW)
    out = recorder.record_many([(pid, [doc("e2"), doc("e3")], NOW), (pid, [doc("e1"), doc("e4")], NOW)])
    assert [[r["status"] for r in o["results"]] for o in out] == [["accepted", "accepted"],
                                                                   ["duplicate", "accepted"]]
    assert counters(db) == [("acme", "2026-10", "claude-haiku", 4, 40, 8, Decimal("0"))]


def test_a_group_keeps_each_batch_to_its_own_platform_and_clock(recorder, db):
    p1 = platform(db, "p1", "acme")
    p2 = platform(db, "p2", "globex")
    later = NOW + timedelta(days=2)  # 2026-10-27: an event of the 26th is in the past only at this clock
    out = recorder.record_many([
        (p1, [doc("x1"), doc("x2", "globex"), doc("f1", day=26)], NOW),
        (p2, [doc("x1", "globex"), doc("x3", "acme"), doc("f2", "globex", day=26)], later)])
    assert [r["status"] for r in out[0]["results"]] == ["accepted", "rejected", "rejected"]
    assert out[0]["results"][1]["errors"] == [{"field": "account_id", "reason": "unknown account 'globex'"}]
    assert out[0]["results"][2]["errors"][0]["field"] == "occurred_at"
    assert [r["status"] for r in out[1]["results"]] == ["accepted", "rejected", "accepted"]  # x1 is p2's own id
    assert stored(db) == [(p1, "x1", 10), (p2, "f2", 10), (p2, "x1", 10)]


def test_a_group_straddling_a_month_end_tells_the_observers_once_per_month(recorder, db, monkeypatch):
    heard = []
    monkeypatch.setattr(capabilities, "observe_usage",
                        lambda engine, catalog, rec: heard.append((rec.account_ids, rec.recorded_at)))
    pid = platform(db, "p1", "acme", "globex")
    october = datetime(2026, 10, 31, 23, 59, 59, tzinfo=timezone.utc)
    november = datetime(2026, 11, 1, 0, 0, 1, tzinfo=timezone.utc)
    recorder.record_many([(pid, [doc("e1")], october), (pid, [doc("g1", "globex")], november),
                          (pid, [doc("e2", day=30)], october), (pid, [doc("e1")], november)])
    assert heard == [(("acme",), october), (("globex",), november)]


def test_when_the_group_fails_as_one_each_batch_is_recorded_alone_and_answered_for_itself(recorder, db, monkeypatch):
    pid = platform(db, "p1", "acme", "globex")
    real = recorder._insert
    tried = []

    def poisoned(requests):
        tried.append(len(requests))
        if any(row[1] == "globex" for r in requests for _, row, _ in r.valid):  # globex's batch breaks its transaction
            raise DBAPIError("COPY", {}, psycopg.errors.NumericValueOutOfRange("out of range"))
        return real(requests)

    monkeypatch.setattr(recorder, "_insert", poisoned)
    out = recorder.record_many([(pid, [doc("e1"), doc("e2")], NOW), (pid, [doc("g1", "globex")], NOW),
                                (pid, [doc("e3"), {"nope": 1}], NOW)])
    assert tried == [3, 1, 1, 1]  # the group, then each alone
    assert [r["status"] for r in out[0]["results"]] == ["accepted", "accepted"]
    assert isinstance(out[1], DBAPIError)
    assert [r["status"] for r in out[2]["results"]] == ["accepted", "rejected"]
    assert executions(db) == [("e1", "acme", 10), ("e2", "acme", 10), ("e3", "acme", 10)]
    assert counters(db) == [("acme", "2026-10", "claude-haiku", 3, 30, 6, Decimal("0"))]


def test_a_group_that_loses_a_deadlock_is_recorded_again_as_one(recorder, db, monkeypatch):
    pid = platform(db, "p1", "acme")
    real, calls = recorder._insert, []

    def flaky(requests):
        calls.append(len(requests))
        if len(calls) == 1:
            raise _deadlock()
        return real(requests)

    monkeypatch.setattr(recorder, "_insert", flaky)
    monkeypatch.setattr(service.time, "sleep", lambda s: None)
    out = recorder.record_many([(pid, [doc("e1")], NOW), (pid, [doc("e2")], NOW)])
    assert calls == [2, 2] and [o["accepted"] for o in out] == [1, 1]


def test_a_group_of_one_request_is_recorded_as_record_does(recorder, db):
    pid = platform(db, "p1", "acme")
    assert recorder.record_many([(pid, [doc("e1"), doc("e1")], NOW)]) == [recorder.record(pid, [], NOW) | {
        "results": [{"event_id": "e1", "status": "accepted", "errors": []},
                    {"event_id": "e1", "status": "duplicate", "errors": []}], "accepted": 1, "duplicates": 1}]
