"""Background work that bounds its share of a process's time rather than its delay (the entitlement
view's exact ratings, the alert evaluations)."""

from __future__ import annotations


def rest_after(took: float, share: float) -> float:
    """How long work that just took ``took`` seconds rests before it runs again, so that it keeps its
    process busy at most ``share`` of the time: ``took * (1 / share - 1)`` (9 x ``took`` for 10%)."""
    return took * (1 / share - 1)
