"""The serving process's hand-off to its alerts process (api.ingest_process.AlertsProcess): one call in
flight at a time, the accounts that arrive meanwhile gathered per period and sent with the next one,
and a process that died replaced by the next call."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone

import pytest

from api import ingest_process
from api.ingest_process import AlertsProcess

OCT = datetime(2026, 10, 31, 23, 0, tzinfo=timezone.utc)
NOV = datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc)


class FakePool:
    """Records the calls; the test answers them."""

    pools: list["FakePool"] = []

    def __init__(self, *args, **kwargs):
        self.calls: list[tuple[object, tuple, Future]] = []
        self.broken = False
        FakePool.pools.append(self)

    def submit(self, fn, *args):
        if self.broken:
            raise BrokenProcessPool("dead")
        future: Future = Future()
        self.calls.append((fn, args, future))
        return future


@pytest.fixture
def alerts(monkeypatch):
    FakePool.pools = []
    monkeypatch.setattr(ingest_process, "ProcessPoolExecutor", FakePool)
    return AlertsProcess("postgresql://unused", None)


def sent(pool: FakePool) -> list[list[tuple[tuple[str, ...], datetime]]]:
    return [[(tuple(sorted(ids)), at) for ids, at in args[0]] for _, args, _ in pool.calls]


def test_accounts_arriving_while_a_call_is_in_flight_go_together_with_the_next_call(alerts):
    async def scenario():
        pool = FakePool.pools[0]
        alerts.submit([(("a1", "a2"), OCT)])
        alerts.submit([(("a2", "a3"), OCT)])
        alerts.submit([(("a4",), OCT.replace(minute=30)), (("b1",), NOV)])
        assert sent(pool) == [[(("a1", "a2"), OCT)]]  # one call at a time
        pool.calls[0][2].set_result(None)
        await asyncio.sleep(0.01)  # the answer reaches the event loop
        assert sent(pool)[1] == [(("a2", "a3", "a4"), OCT.replace(minute=30)), (("b1",), NOV)]
        pool.calls[1][2].set_result(None)
        await asyncio.sleep(0.01)
        assert len(pool.calls) == 2  # nothing left to send

    asyncio.run(scenario())


def test_a_dead_alerts_process_is_replaced_by_the_next_call(alerts):
    async def scenario():
        first = FakePool.pools[0]
        alerts.submit([(("a1",), OCT)])
        first.broken = True
        first.calls[0][2].set_exception(BrokenProcessPool("killed"))  # it died holding the call
        await asyncio.sleep(0.01)
        alerts.submit([(("a2",), OCT)])
        assert len(FakePool.pools) == 2
        assert sent(FakePool.pools[1]) == [[(("a2",), OCT)]]

    asyncio.run(scenario())
