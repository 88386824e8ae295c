"""Which executions stand behind each invoice line (pure): what ``invoices explain`` shows.

The executions are sorted by the rating's own rule (``billing.rating.split_at_quota``: time order,
the first ``included`` non-sandbox ones included, the rest billable), attributed to the terms segment
and catalog version in force when they occurred (as the close's SQL does), and matched to a line by
its kind, model, rate version and the segment in its key (``billing.line_keys``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from billing import line_keys
from billing.rating import TermsSegment, split_at_quota


class ExecutionRecord(Protocol):
    event_id: str
    occurred_at: datetime
    model: str
    byok: bool
    sandbox: bool


@dataclass(frozen=True)
class Selection:
    executions: list  # the matching executions, in billing order
    description: str  # how they were selected, for people


def _billing_order(e: ExecutionRecord) -> tuple[datetime, str]:
    return e.occurred_at, e.event_id


class PeriodExecutions:
    """An account's executions of one period, sorted into what rating made of them.

    ``segments``: the period's terms segments (executions before the first one, i.e. before the
    billing start, are not billed); ``windows``: (version, from, to) of the catalog versions in
    force (``billing.catalog.version_windows``); ``included``: the pooled quota.
    """

    def __init__(self, executions: Sequence[ExecutionRecord], segments: Sequence[TermsSegment],
                 windows: Sequence[tuple[str, datetime, datetime]], included: int):
        self.segments = list(segments)
        self.windows = list(windows)
        self.included = included
        start = self.segments[0].start if self.segments else None
        billed = [e for e in executions if start is not None and e.occurred_at >= start]
        self.within_quota, past = split_at_quota([e for e in billed if not e.sandbox], included, key=_billing_order)
        self._past_quota = {e.event_id for e in past}
        self.platform = self.within_quota + past  # billing order
        self.sandbox = sorted((e for e in billed if e.sandbox), key=_billing_order)

    def version_of(self, ts: datetime) -> str | None:
        return next((v for v, lo, hi in self.windows if lo <= ts < hi), None)

    def segment_of(self, ts: datetime) -> int | None:
        return next((i for i, sg in enumerate(self.segments) if sg.start <= ts < sg.end), None)

    def for_line(self, kind: str, model: str | None, rate_version: str | None, key: str) -> Selection:
        """The executions behind one invoice line (prior-period lines are explained by their period)."""
        if kind == "included_usage":
            return Selection(list(self.within_quota), f"non-sandbox executions ranked 1..{self.included:,}")
        if kind == "sandbox":
            return Selection(list(self.sandbox), "sandbox tries")
        if kind not in ("usage", "blocked_usage", "token_usage") or not model:
            return Selection([], "—")
        sel = [e for e in self.platform if e.model == model]
        what = [f"model {model}"]
        if kind in ("usage", "blocked_usage"):
            sel = [e for e in sel if e.event_id in self._past_quota]
            what.append(f"ranked past the {self.included:,} included (occurred_at, event id)")
        if kind == "token_usage":
            sel = [e for e in sel if not e.byok]
            what.append("platform key (not BYOK)")
        if rate_version and len(self.windows) > 1:
            sel = [e for e in sel if self.version_of(e.occurred_at) == rate_version]
            what.append(f"occurred while {rate_version} was in force")
        seg_idx = line_keys.segment_of(key)
        if seg_idx is not None and seg_idx < len(self.segments):
            sel = [e for e in sel if self.segment_of(e.occurred_at) == seg_idx]
            seg = self.segments[seg_idx]
            what.append(f"during {seg.start:%Y-%m-%d}..{seg.end:%Y-%m-%d}")
        return Selection(sel, ", ".join(what))


__all__ = ["ExecutionRecord", "Selection", "PeriodExecutions"]
