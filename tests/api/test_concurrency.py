"""Many clients posting overlapping batches at once (plus a bulk file load of the same events): every
event is recorded and counted exactly once, and the counters equal the executions table."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta

from models.db import get_engine
from tests.api.conftest import NOW
from tests.factories import COUNTED_EXECUTIONS, COUNTERS, OCT_START, event, ingest

THREADS = 8
BATCHES = 8
BATCH = 400


def test_overlapping_concurrent_batches_count_each_event_once(api):
    key = api.platform("p")
    accounts = ["c1", "c2", "c3"]
    for a in accounts:
        api.account(a, "payg", platform="p")
    pool = [event(accounts[i % 3], i, OCT_START + timedelta(seconds=37 * i),
                  ("claude-haiku", "gpt-4o", "claude-sonnet")[i % 3], byok=i % 5 == 0, sandbox=i % 11 == 0,
                  cost_usd=f"0.00{i % 9}1")
            for i in range(5_000)]
    for doc in pool:
        doc["event_id"] = f"evt-{doc['event_id']}"
    hot = pool[:BATCH]  # every client sends this batch first, all at the same moment
    start = threading.Barrier(THREADS + 1)
    accepted: list[str] = []
    duplicates = 0
    lock = threading.Lock()
    errors: list[str] = []

    def client(seed: int) -> None:
        nonlocal duplicates
        rnd = random.Random(seed)
        c = api.client(key)
        batches = [hot] + [rnd.sample(pool, BATCH) for _ in range(BATCHES - 1)]
        start.wait()
        for batch in batches:
            resp = c.post("/v1/executions", json={"executions": batch})
            if resp.status_code != 200:
                errors.append(resp.text)
                continue
            body = resp.json()
            with lock:
                accepted.extend(r["event_id"] for r in body["results"] if r["status"] == "accepted")
                duplicates += body["duplicates"]
                if body["rejected"]:
                    errors.append(str(body["results"]))

    bulk_report = {}

    def bulk() -> None:
        docs = random.Random(99).sample(pool, 2_000)
        start.wait()
        bulk_report["r"] = ingest(api.database_url, docs, now=NOW)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)] + [threading.Thread(target=bulk)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors[:3]

    posted = {d["event_id"] for d in [*hot]} | set()
    for seed in range(THREADS):
        rnd = random.Random(seed)
        posted |= {d["event_id"] for _ in range(BATCHES - 1) for d in rnd.sample(pool, BATCH)}
    bulk_ids = {d["event_id"] for d in random.Random(99).sample(pool, 2_000)}
    distinct = posted | bulk_ids

    twice = [e for e, n in Counter(accepted).items() if n > 1]
    assert not twice, f"accepted more than once: {twice[:5]}"
    assert len(accepted) + bulk_report["r"].accepted == len(distinct)
    assert bulk_report["r"].accepted + bulk_report["r"].duplicates == 2_000

    with get_engine(api.database_url).begin() as conn:
        stored = conn.exec_driver_sql("SELECT count(*) FROM executions").scalar()
        truth = conn.exec_driver_sql(COUNTED_EXECUTIONS).all()
        counters = conn.exec_driver_sql(COUNTERS).all()
    assert stored == len(distinct)
    assert [tuple(r) for r in counters] == [tuple(r) for r in truth]

    # and the entitlement reads the same numbers the table holds
    for a in accounts:
        e = api.client(key).get(f"/v1/accounts/{a}/entitlement", params={"model": "claude-haiku"}).json()
        assert e["used"] == sum(r[5] for r in truth if r[0] == a and not r[4])
