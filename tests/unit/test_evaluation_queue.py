"""The alert evaluations' queue (services.alerts.EvaluationQueue): batches committed while an evaluation
runs are evaluated together in the next round, and the rounds take at most their share of the process's
time, on a clock the test moves (no real waiting)."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from services.alerts import EVALUATION_SHARE, EvaluationQueue

AT = datetime(2026, 10, 20, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self):
        self.t = 100.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(round(seconds, 6))
            self.t += seconds


class Evaluator:
    """Takes ``took`` seconds of the clock per round; ``during(n)`` runs inside round n (batches that
    arrive while it evaluates)."""

    def __init__(self, clock: Clock, took: float):
        self.clock, self.took = clock, took
        self.rounds: list[tuple[float, list[str]]] = []
        self.during = {}

    def evaluate(self, account_ids, at):
        self.rounds.append((self.clock.t, list(account_ids)))
        self.clock.t += self.took
        hook = self.during.get(len(self.rounds))
        if hook:
            hook()


def queue_of(took: float, background: bool = True):
    clock = Clock()
    evaluator = Evaluator(clock, took)
    queue = EvaluationQueue(evaluator, min_interval=0.5, background=background, sleep=clock.sleep, monotonic=clock)
    return queue, evaluator, clock


def test_a_round_that_took_long_is_followed_by_a_rest_nine_times_as_long():
    queue, evaluator, clock = queue_of(took=0.2)
    evaluator.during[1] = lambda: queue.submit(["b", "c"], AT)  # batches committed during round 1
    queue.submit(["a"], AT)
    assert queue.settle(10)
    assert [ids for _, ids in evaluator.rounds] == [["a"], ["b", "c"]]
    assert EVALUATION_SHARE == 0.1
    # 0.2 s of work, then 9 x 0.2 s of rest (after the last round too, before the drainer finds nothing)
    assert clock.sleeps == [1.8, 1.8]
    assert round(evaluator.rounds[1][0] - evaluator.rounds[0][0], 6) == 2.0


def test_quick_rounds_still_rest_the_minimum_interval():
    queue, evaluator, clock = queue_of(took=0.01)
    evaluator.during[1] = lambda: queue.submit(["b"], AT)
    queue.submit(["a"], AT)
    assert queue.settle(10)
    assert clock.sleeps == [0.5, 0.5]  # 9 x 0.01 s is less than the minimum
    assert len(evaluator.rounds) == 2


def test_a_batch_after_the_drainer_finished_waits_for_the_rest_of_the_last_round():
    queue, evaluator, clock = queue_of(took=0.3)
    queue._sleep = lambda seconds: None  # after round 1 the drainer finds nothing pending and finishes
    queue.submit(["a"], AT)
    assert queue.settle(10) and len(evaluator.rounds) == 1
    queue._sleep = clock.sleep
    clock.t += 1.0  # a batch 1 s after round 1 ended: 1.7 s of its 2.7 s rest remain
    queue.submit(["b"], AT)
    assert queue.settle(10)
    assert [ids for _, ids in evaluator.rounds] == [["a"], ["b"]]
    assert round(evaluator.rounds[1][0] - evaluator.rounds[0][0], 6) == 0.3 + 2.7
    assert clock.sleeps[0] == 1.7


def test_in_line_a_batch_is_evaluated_before_its_observer_returns():
    """Sequential ingestion (a file import, a test) is evaluated batch by batch, whatever the share."""
    queue, evaluator, clock = queue_of(took=0.2, background=False)
    queue.submit(["a"], AT)
    assert [ids for _, ids in evaluator.rounds] == [["a"]] and clock.sleeps == []
    queue.submit(["b"], AT)
    assert [ids for _, ids in evaluator.rounds] == [["a"], ["b"]] and clock.sleeps == []
