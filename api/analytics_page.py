"""The usage analytics page (``/ops/usage`` and ``tally report usage --html``): one self-contained HTML
file, charts rendered on the server as SVG by pygal (no JavaScript, nothing fetched: it works offline
and under the API's ``default-src 'none'`` policy), each beside the table of its figures.

Chart geometry is the only place figures become floats (pygal draws with them); every number a person
reads is in the tables, printed from the same JSON as ``tally report usage --json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

import pygal
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from pygal.style import Style

from services.analytics import to_json

PALETTE = ("#3b6fd8", "#e07b39", "#3aa57a", "#c0504d", "#8064a2", "#4bacc6", "#9a9a2f", "#d46aa6")
STYLE = Style(background="transparent", plot_background="transparent", foreground="#1d2330",
              foreground_strong="#1d2330", foreground_subtle="#c9cedb", colors=PALETTE,
              font_family="system-ui, sans-serif", label_font_size=11, major_label_font_size=11,
              legend_font_size=11, title_font_size=13, value_font_size=10)


# pygal always writes its config into an inline <script> for its optional tooltips (js=[] only drops the
# script it would fetch): the page needs none, so it is cut out and the SVG is plain drawing.
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.DOTALL)


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    svg: Markup
    points: int  # values drawn (the page test checks each chart has them)


def _num(x) -> float:
    """A figure as a chart coordinate (geometry only; tables print the Decimal)."""
    return float(x) if x is not None else None  # type: ignore[return-value]


def _chart(kind, id: str, title: str, x_labels: list[str], series: list[tuple[str, list]], **config) -> Chart:
    chart = kind(style=STYLE, js=[], disable_xml_declaration=True, width=760, height=config.pop("height", 300),
                 title=title, x_label_rotation=config.pop("rotation", 0), show_legend=len(series) > 1, legend_at_bottom=True,
                 no_data_text="no data", print_values=False, truncate_legend=-1, **config)
    chart.x_labels = x_labels
    points = 0
    for name, values in series:
        values = [_num(v) for v in values]
        points += sum(v is not None for v in values)
        chart.add(name, values)
    return Chart(id, title, Markup(_SCRIPT.sub("", chart.render(is_unicode=True))), points)


def build_charts(data: dict) -> list[Chart]:
    """One chart per measure (two for executions per user)."""
    charts = []
    hist = data["executions_histogram"]
    charts.append(_chart(pygal.Bar, "users-histogram", f"Users by executions in {data['period']}",
                         [b["bucket"] for b in hist], [("users", [b["users"] or None for b in hist])]))
    per_user = data["executions_per_user"]
    charts.append(_chart(pygal.Bar, "users-percentiles", "Executions per user: median, p95, p99",
                         [r["month"] for r in per_user],
                         [(k, [r[k] for r in per_user]) for k in ("median", "p95", "p99")], logarithmic=True))
    tokens = data["tokens_per_execution"]
    charts.append(_chart(pygal.HorizontalBar, "tokens", "Tokens per execution by skill category and model",
                         [f"{r['category']} · {r['model']}" for r in tokens],
                         [(k, [r[k] for r in tokens]) for k in ("median", "p95")], height=max(300, 40 + 28 * len(tokens))))
    weeks = sorted({w["week"] for w in data["model_mix"]["weeks"]})
    models = sorted({w["model"] for w in data["model_mix"]["weeks"]})
    counts = {(w["week"], w["model"]): w["executions"] for w in data["model_mix"]["weeks"]}
    charts.append(_chart(pygal.StackedBar, "model-mix", "Model mix per week (executions)", weeks,
                         [(m, [counts.get((w, m)) for w in weeks]) for m in models], rotation=30))
    byok = data["byok"]
    charts.append(_chart(pygal.Bar, "byok", "BYOK adoption (% of users, % of executions)", [r["month"] for r in byok],
                         [("users %", [r["byok_users_percent"] for r in byok]),
                          ("executions %", [r["byok_executions_percent"] for r in byok])]))
    stages = data["funnel"]["stages"]
    charts.append(_chart(pygal.Bar, "funnel", "Tier conversion funnel (accounts)", [s["plan"] for s in stages],
                         [("accounts", [s["accounts"] for s in stages])]))
    deciles = data["churn"]["deciles"]
    charts.append(_chart(pygal.Bar, "churn",
                         f"Churn in {data['churn']['month']} by {data['churn']['base_month']} usage decile (%)",
                         [str(d["decile"]) for d in deciles], [("churned %", [d["churn_percent"] for d in deciles])]))
    tiers = data["tiers"]
    charts.append(_chart(pygal.Bar, "tiers", f"Revenue, LLM cost and margin per tier in {data['period']} (USD)",
                         [t["plan"] for t in tiers],
                         [("revenue", [t["revenue"] for t in tiers]), ("LLM cost", [t["llm_cost"] for t in tiers]),
                          ("margin", [t["margin"] for t in tiers])]))
    return charts


# The tables: (id, title, path into the JSON, fields). Each cell prints the JSON's value.
TABLES = (
    ("users", "Executions per user per month", ("executions_per_user",),
     ("month", "users", "executions", "mean", "median", "p95", "p99", "max")),
    ("histogram", "Users by executions", ("executions_histogram",), ("bucket", "users")),
    ("tokens", "Tokens per execution", ("tokens_per_execution",),
     ("category", "model", "executions", "mean_input", "mean_output", "median", "p95")),
    ("model-mix", "Model mix per month", ("model_mix", "months"), ("month", "model", "executions", "share_percent")),
    ("byok", "BYOK adoption", ("byok",),
     ("month", "users", "byok_users", "byok_users_percent", "executions", "byok_executions", "byok_executions_percent")),
    ("funnel", "Conversion funnel (accounts ever on each plan, in order)", ("funnel", "stages"),
     ("plan", "accounts", "percent_of_previous")),
    ("plan-changes", "Plan changes", ("funnel", "plan_changes"), ("month", "from", "to", "accounts")),
    ("churn", "Churn by usage decile", ("churn", "deciles"),
     ("decile", "accounts", "min_executions", "max_executions", "stopped", "downgraded", "churned", "churn_percent")),
    ("tiers", "Cost, revenue and margin per tier", ("tiers",),
     ("plan", "accounts", "executions", "invoices", "revenue", "llm_cost", "margin", "margin_percent")),
)


def table_rows(data: dict, path: tuple[str, ...]) -> list[dict]:
    node = data
    for key in path:
        node = node[key]
    return node


def cell(value) -> str:
    """What a table cell shows for a JSON value: thousands separators on whole numbers, '—' for none."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Decimal):
        return f"{value:,}"
    return str(value)


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=PackageLoader("api", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["cell"] = cell
    return env


def render_analytics_page(data: dict, scope: str) -> str:
    """The page for ``services.analytics.usage_analytics``' result; ``scope`` says whose accounts."""
    charts = {c.id: c for c in build_charts(data)}
    tables = [(tid, title, fields, table_rows(data, path)) for tid, title, path, fields in TABLES]
    return _env().get_template("analytics.html").render(data=data, json=to_json(data), charts=charts, tables=tables,
                                                         scope=scope)
