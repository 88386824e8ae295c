"""The account's billing page: server-rendered HTML with an inline SVG chart (no JavaScript, no CDN)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache

from jinja2 import Environment, PackageLoader, select_autoescape

from billing.alerts import format_cost
from billing.money import format_usd
from billing.periods import Period

CHART_WIDTH = 720
CHART_HEIGHT = 180
CHART_BOTTOM = 24  # room for the day labels


@dataclass(frozen=True)
class Bar:
    day: str  # YYYY-MM-DD
    executions: int
    sandbox: int
    x: float
    y: float
    width: float
    height: float

    @property
    def total(self) -> int:
        return self.executions + self.sandbox


def chart_bars(period: Period, days) -> tuple[list[Bar], float, int]:
    """One bar per day that has usage (executions plus sandbox tries), scaled to the busiest day.
    Returns (bars, slot width, busiest day's total)."""
    slot = CHART_WIDTH / period.days
    usage = {g.key: (g.executions, g.sandbox_executions) for g in days if g.executions + g.sandbox_executions}
    peak = max((a + b for a, b in usage.values()), default=0)
    plot = CHART_HEIGHT - CHART_BOTTOM
    bars = []
    for day in range(1, period.days + 1):
        key = f"{period}-{day:02d}"
        if key not in usage:
            continue
        n, s = usage[key]
        height = max(1.0, plot * (n + s) / peak)
        bars.append(Bar(key, n, s, round((day - 1) * slot + slot * 0.15, 2), round(plot - height, 2),
                        round(slot * 0.7, 2), round(height, 2)))
    return bars, slot, peak


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=PackageLoader("api", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["usd"] = lambda v: "—" if v is None else format_usd(Decimal(v))
    env.filters["num"] = lambda v: f"{v:,}"
    env.filters["cost"] = format_cost  # per-execution costs (kills): to a millionth of a dollar
    return env


def render_billing_page(data: dict) -> str:
    period: Period = data["period"]
    bars, slot, peak = chart_bars(period, data["days"])
    return _env().get_template("billing.html").render(
        **data, bars=bars, slot=slot, peak=peak, one_day=timedelta(days=1),
        chart_width=CHART_WIDTH, chart_height=CHART_HEIGHT, chart_bottom=CHART_BOTTOM,
        label_days=[d for d in range(1, period.days + 1) if d == 1 or d % 5 == 0],
    )
