"""Dynamic model routing (F-040): the cheapest model that is good enough for a skill, by the rate card.

Pure: scores, token counts and the catalog version in, a decision out; no clock, no I/O. The
numbers come from the catalog's ``[versions.routing]`` (``CatalogVersion.routing_settings()``).

How a shell answers ``POST /v1/route`` (account, skill, optional expected tokens):

1. ``current_scores(all imported QualityScore rows)`` -> newest score per (skill, model);
   ``skill_scores(current, skill)`` -> ``{model: score}`` for the skill. (Or the same "newest per
   skill and model" in SQL: ``DISTINCT ON (skill, model) ORDER BY measured_at DESC, suite_id DESC``.)
2. ``token_mix(recent, estimate=...)`` -> the skill's token mix: the caller's estimate, else the
   median input and output tokens of its last ``token_mix_executions`` executions (SQL may compute
   ``percentile_cont(0.5)`` and round half up), else the catalog's default mix.
3. ``route(version, skill, scores, mix, slider=..., byok_providers=...)`` -> ``RoutingDecision``:
   the model, the reason, its expected cost per execution and the alternatives.

The rule (docs/decisions.md, "Model routing"): a model qualifies when its score is at least the
effective threshold ``base + slider x (best - base)``; the cheapest qualifying model by expected
cost wins (ties: higher score, then model code); if none qualifies, the best-scoring model, flagged.
BYOK accounts get the best-scoring model among the providers they hold keys for.

``routing_savings`` turns routed executions into the per account, skill and month savings report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from billing.catalog import DEFAULT_ROUTING_SETTINGS, Catalog, CatalogVersion, RoutingSettings
from billing.errors import BillingError, CatalogError
from billing.money import round_money
from billing.numbers import WIDE, check_count, check_decimal, median, plain
from billing.periods import Period

UTC = timezone.utc
PER_MILLION = Decimal(1_000_000)
HUNDRED = Decimal(100)


class RoutingError(BillingError):
    """The input to routing is unusable (a score out of range, no candidate model, ...)."""


def _text(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RoutingError(f"must be a non-empty string, got {value!r}", field=field_name)
    return value


# =============================================================================================
# Quality scores: newer runs supersede older ones per skill and model
# =============================================================================================
@dataclass(frozen=True)
class QualityScore:
    """One row of a behavioural test run: how well ``model`` did on ``skill`` (0-100)."""

    skill: str
    model: str
    score: Decimal
    measured_at: datetime
    suite_id: str

    def __post_init__(self) -> None:
        _text(self.skill, "skill")
        _text(self.model, "model")
        _text(self.suite_id, "suite_id")
        object.__setattr__(self, "score", check_decimal(self.score, "score", RoutingError,
                                                        maximum=HUNDRED))
        ts = self.measured_at
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            raise RoutingError(f"must be a timezone-aware datetime, got {ts!r}", field="measured_at")
        object.__setattr__(self, "measured_at", ts.astimezone(UTC))


def current_scores(scores: Iterable[QualityScore]) -> dict[tuple[str, str], QualityScore]:
    """The score in force per ``(skill, model)``: the newest ``measured_at`` wins.

    Two runs measured at the same instant are ordered by ``suite_id`` (the greater wins), so the
    answer never depends on the order rows were imported in. The same row twice (a re-import) is
    harmless; the same run (skill, model, measured_at, suite_id) with two different scores is a
    conflict and raises ``RoutingError``.
    """
    out: dict[tuple[str, str], QualityScore] = {}
    for s in scores:
        key = (s.skill, s.model)
        held = out.get(key)
        if held is None or (s.measured_at, s.suite_id) > (held.measured_at, held.suite_id):
            out[key] = s
        elif (s.measured_at, s.suite_id) == (held.measured_at, held.suite_id) and s.score != held.score:
            raise RoutingError(
                f"suite {s.suite_id!r} measured {s.skill!r} on {s.model!r} at {s.measured_at.isoformat()} "
                f"twice, as {held.score} and {s.score}", field="score")
    return out


def skill_scores(current: Mapping[tuple[str, str], QualityScore], skill: str) -> dict[str, Decimal]:
    """``{model: score}`` of one skill from ``current_scores``' result."""
    return {model: s.score for (sk, model), s in sorted(current.items()) if sk == skill}


# =============================================================================================
# Token mix and expected cost per execution
# =============================================================================================
@dataclass(frozen=True)
class TokenMix:
    """Tokens of one typical execution of a skill, and where the figure came from."""

    input_tokens: int
    output_tokens: int
    source: Literal["estimate", "history", "default"] = "estimate"

    def __post_init__(self) -> None:
        check_count(self.input_tokens, "input_tokens", RoutingError)
        check_count(self.output_tokens, "output_tokens", RoutingError)


def token_mix(recent: Sequence[tuple[int, int]], *, estimate: tuple[int, int] | None = None,
              settings: RoutingSettings = DEFAULT_ROUTING_SETTINGS) -> TokenMix:
    """The token mix a route is priced at.

    The caller's ``estimate`` (input, output) when given: it knows this execution. Else the
    medians of ``recent`` (input, output) pairs of the skill's latest executions (at most
    ``settings.token_mix_executions``; each median taken on its own, rounded half up to a token).
    Else, for a skill never run, the catalog's default mix.
    """
    if estimate is not None:
        return TokenMix(estimate[0], estimate[1], "estimate")
    if recent:
        for i, o in recent:
            check_count(i, "input_tokens", RoutingError)
            check_count(o, "output_tokens", RoutingError)
        return TokenMix(_half_up(median(i for i, _ in recent)), _half_up(median(o for _, o in recent)), "history")
    return TokenMix(settings.default_input_tokens, settings.default_output_tokens, "default")


def _half_up(x: Decimal) -> int:
    return int(x.to_integral_value(rounding=ROUND_HALF_UP, context=WIDE))


def _model(version: CatalogVersion, code: str, field_name: str):
    try:
        return version.model(code)
    except CatalogError as e:
        raise CatalogError(e.message, field=field_name) from None


def expected_cost(version: CatalogVersion, model: str, mix: TokenMix) -> Decimal:
    """User price of one execution of ``mix`` on ``model``: tokens x the rate card's user price
    per 1M (``LlmModel.user_price_input/output(markup)``). Exact, not rounded: sub-cent amounts
    are the point of comparing them."""
    m = _model(version, model, "model")
    return _tokens_at(mix.input_tokens, mix.output_tokens, m.user_price_input(version.markup),
                      m.user_price_output(version.markup))


def _tokens_at(inp: int, out: int, per_m_in: Decimal, per_m_out: Decimal) -> Decimal:
    return WIDE.divide(WIDE.add(WIDE.multiply(Decimal(inp), per_m_in), WIDE.multiply(Decimal(out), per_m_out)),
                       PER_MILLION)


# =============================================================================================
# Routing
# =============================================================================================
@dataclass(frozen=True)
class Candidate:
    """A model that has a score for the skill (and, for BYOK, a provider the account holds)."""

    model: str
    provider: str | None
    score: Decimal
    expected_cost: Decimal
    qualifies: bool
    """score >= the decision's effective threshold."""


@dataclass(frozen=True)
class RoutingDecision:
    skill: str
    model: str
    score: Decimal
    expected_cost: Decimal
    """User price of one execution of ``token_mix`` on ``model`` (BYOK: what it would be; Tally
    charges BYOK executions no token price)."""
    reason: str
    base_threshold: Decimal
    threshold: Decimal
    """The effective threshold after the slider."""
    slider: Decimal
    below_threshold: bool
    """Flag: no model reached the threshold, so the best-scoring one was chosen."""
    byok: bool
    token_mix: TokenMix
    catalog_version: str
    alternatives: tuple[Candidate, ...] = field(default=())
    """Every other candidate, cheapest first (ties: higher score, then code)."""


def effective_threshold(base: Decimal, best: Decimal, slider: Decimal) -> Decimal:
    """``base + slider x (best - base)`` when ``best >= base``, else ``base``.

    slider 0 ("cheapest"): the base threshold, so the cheapest model at or above it wins.
    slider 1 ("best quality"): the best score, so only the best-scoring models qualify (the cheapest
    of them wins). In between, the bar rises linearly. It never rises above the best score, so a
    slider never turns "some model qualifies" into "none does".
    """
    if best <= base:
        return base
    return WIDE.add(base, WIDE.multiply(slider, WIDE.subtract(best, base)))


def _by_cost(c: Candidate) -> tuple:
    return (c.expected_cost, -c.score, c.model)


def _by_quality(c: Candidate) -> tuple:
    return (-c.score, c.expected_cost, c.model)


def route(version: CatalogVersion, skill: str, scores: Mapping[str, Decimal], mix: TokenMix, *,
          slider: Decimal = Decimal(0), threshold: Decimal | None = None,
          byok_providers: Iterable[str] | None = None) -> RoutingDecision:
    """Choose the model for one execution of ``skill``.

    ``scores``: ``{model: current score}`` for the skill (``skill_scores``); models the catalog
    version does not list are skipped. ``threshold``: the base threshold (default: the catalog's,
    75). ``slider``: 0 (cheapest) to 1 (best quality), see ``effective_threshold``.
    ``byok_providers``: ``None`` for a platform-key account; else the providers the account holds
    keys for, and only models of those providers (``LlmModel.provider``) are candidates, chosen by
    score alone (ties: cheaper, then code) since Tally charges them no token price; the slider
    plays no part.

    Raises ``RoutingError`` when there is no candidate at all (no score for the skill, or none
    among the BYOK providers): there is nothing to choose from, and guessing would hide it.
    """
    _text(skill, "skill")
    if not isinstance(mix, TokenMix):
        raise RoutingError(f"must be a TokenMix, got {type(mix).__name__}", field="mix")
    settings = version.routing_settings()
    base = check_decimal(settings.quality_threshold if threshold is None else threshold, "threshold",
                         RoutingError, maximum=HUNDRED)
    slider = check_decimal(slider, "slider", RoutingError, maximum=Decimal(1))
    providers = None if byok_providers is None else frozenset(byok_providers)

    pool: list[tuple[str, str | None, Decimal]] = []
    for model, score in scores.items():
        score = check_decimal(score, f"scores[{model}]", RoutingError, maximum=HUNDRED)
        m = version.models.get(model)
        if m is None or (providers is not None and m.provider not in providers):
            continue
        pool.append((model, m.provider, score))
    if not pool:
        where = "" if providers is None else f" among the providers {', '.join(sorted(providers)) or '(none)'}"
        raise RoutingError(f"no model with a quality score for skill {skill!r}{where}",
                           field="byok_providers" if providers is not None and scores else "scores")

    best = max(score for _, _, score in pool)
    eff = base if providers is not None else effective_threshold(base, best, slider)
    candidates = [Candidate(model, prov, score, expected_cost(version, model, mix), score >= eff)
                  for model, prov, score in pool]
    qualifying = [c for c in candidates if c.qualifies]
    n_text = lambda n: f"{n} model{'' if n == 1 else 's'}"  # noqa: E731
    if providers is not None:
        chosen = min(candidates, key=_by_quality)
        reason = (f"BYOK: best quality among {n_text(len(candidates))} of "
                  f"{', '.join(sorted({c.provider for c in candidates}))} (score {plain(chosen.score)})")
        if not chosen.qualifies:
            reason += f"; below the threshold {plain(base)}"
    elif qualifying:
        chosen = min(qualifying, key=_by_cost)
        reason = f"cheapest of {n_text(len(qualifying))} at or above {plain(eff, 2)}"
        if slider != 0:
            reason += f" (threshold {plain(base)} raised by the quality slider at {plain(slider)})"
    else:
        chosen = min(candidates, key=_by_quality)
        reason = f"no model reaches {plain(base)}; the best score is {plain(chosen.score)}"
    return RoutingDecision(
        skill=skill, model=chosen.model, score=chosen.score, expected_cost=chosen.expected_cost,
        reason=reason, base_threshold=base, threshold=eff, slider=slider,
        below_threshold=not chosen.qualifies, byok=providers is not None, token_mix=mix,
        catalog_version=version.version,
        alternatives=tuple(sorted((c for c in candidates if c is not chosen), key=_by_cost)),
    )


# =============================================================================================
# Savings report
# =============================================================================================
@dataclass(frozen=True)
class RoutedExecution:
    """An execution that ran on a routed model, with the model that would have run without routing.

    Or ``executions`` of them that share everything but their tokens (account, skill, models, BYOK,
    and the month and catalog version of ``occurred_at``), with their tokens summed: prices are
    linear in tokens, so a group prices exactly as its executions one by one, and the shell can
    aggregate a month in SQL instead of loading it row by row.
    """

    account_id: str
    skill: str
    occurred_at: datetime
    model: str
    """The model it ran on (the routing decision's)."""
    default_model: str
    """The skill's default model: what the platform would have run had it not asked Tally."""
    input_tokens: int
    output_tokens: int
    byok: bool = False
    executions: int = 1


@dataclass(frozen=True)
class SavingsLine:
    """What routing saved one account on one skill in one month.

    ``*_price``: at the user price (what a token-priced account's bill saved); ``*_cost``: at our
    rate-card cost (what the platform's LLM bill saved, which is what routing saves on accounts
    priced per execution). Each figure is rounded to the cent once, and ``saved = default - routed``
    exactly; negative when routing chose a dearer model than the default (the default did not
    qualify). BYOK executions are counted but not priced: neither side pays Tally for their tokens.
    """

    account_id: str
    skill: str
    period: str
    executions: int
    byok_executions: int
    default_price: Decimal
    routed_price: Decimal
    saved_price: Decimal
    default_cost: Decimal
    routed_cost: Decimal
    saved_cost: Decimal


def routing_savings(catalog: Catalog, executions: Iterable[RoutedExecution]) -> list[SavingsLine]:
    """Savings lines per (account, period, skill), sorted so; each execution priced at its own tokens
    by the catalog version in force when it occurred, on both its routed and its default model."""
    sums: dict[tuple[str, str, str], list] = {}
    for e in executions:
        for name in ("account_id", "skill", "model", "default_model"):
            _text(getattr(e, name), name)
        inp = check_count(e.input_tokens, "input_tokens", RoutingError)
        out = check_count(e.output_tokens, "output_tokens", RoutingError)
        n = check_count(e.executions, "executions", RoutingError)
        ts = e.occurred_at
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            raise RoutingError(f"must be a timezone-aware datetime, got {ts!r}", field="occurred_at")
        key = (e.account_id, str(Period.of(ts)), e.skill)
        acc = sums.setdefault(key, [0, 0, Decimal(0), Decimal(0), Decimal(0), Decimal(0)])
        acc[0] += n
        v = catalog.at(ts)
        routed, default = _model(v, e.model, "model"), _model(v, e.default_model, "default_model")
        if e.byok:
            acc[1] += n
            continue
        for i, (m, user_price) in enumerate(((default, True), (routed, True), (default, False), (routed, False)),
                                            start=2):
            per_m = ((m.user_price_input(v.markup), m.user_price_output(v.markup)) if user_price
                     else (m.cost_input_per_mtok, m.cost_output_per_mtok))
            acc[i] = WIDE.add(acc[i], _tokens_at(inp, out, *per_m))
    lines = []
    for (account, period, skill), (n, byok, dp, rp, dc, rc) in sorted(sums.items()):
        dp, rp, dc, rc = (round_money(x) for x in (dp, rp, dc, rc))
        lines.append(SavingsLine(account, skill, period, n, byok, dp, rp, dp - rp, dc, rc, dc - rc))
    return lines


__all__ = [
    "RoutingError", "QualityScore", "current_scores", "skill_scores", "TokenMix", "token_mix",
    "expected_cost", "Candidate", "RoutingDecision", "effective_threshold", "route",
    "RoutedExecution", "SavingsLine", "routing_savings",
]
