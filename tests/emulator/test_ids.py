"""Object ids are never handed out twice (issue 14: 2,107 customers created, 2,077 distinct ids)."""

from __future__ import annotations

import http.client
import itertools
import threading
from urllib.parse import urlsplit

from stripe_emulator.core import ids

from .helpers import control, emulator_process


def test_ids_stay_distinct_when_the_counter_grows_by_a_digit(monkeypatch):
    # The old generator shortened the salt as the counter grew: with salt "bbb..." counter 63 ("bb")
    # produced the same id as counter 1 ("b"). Start the counter from 1 and cross 62 and 62**2.
    monkeypatch.setattr(ids, "_counter", itertools.count(1))
    monkeypatch.setattr(ids, "_SALT", "b" * 24)
    made = [ids.new_id("cus") for _ in range(62 ** 2 + 200)]
    assert len(set(made)) == len(made)
    assert {len(i) for i in made} == {len("cus_") + 14}


def test_customers_created_concurrently_on_a_fresh_emulator_all_get_distinct_ids():
    # A fresh process, as `tally dev up` starts one: its id counter starts at 1, as in issue 14.
    threads, per_thread = 16, 160
    created: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    with emulator_process() as url:
        host = urlsplit(url)

        def create(n: int) -> None:
            try:
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
                for i in range(per_thread):
                    conn.request("POST", "/v1/customers", body=f"metadata[tally_account_id]=a-{n}-{i}",
                                 headers={"Authorization": "Bearer sk_test_ids",
                                          "Content-Type": "application/x-www-form-urlencoded"})
                    resp = conn.getresponse()
                    body = resp.read()
                    assert resp.status == 200, body
                    created[n].append(body.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode())
                conn.close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        workers = [threading.Thread(target=create, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors, errors[0]
        stored = control(url, "GET", "/_emulator/stats")[1]["objects"]["customers"]

    all_ids = [i for chunk in created for i in chunk]
    assert len(all_ids) == threads * per_thread
    assert len(set(all_ids)) == len(all_ids)
    assert stored == len(all_ids)  # no customer overwrote another in the store
