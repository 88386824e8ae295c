"""Model routing (F-040) as operations: importing quality scores, answering ``POST /v1/route``, the
per-account slider and BYOK providers, the skills' defaults, and the savings report.

The rule is ``billing.routing`` (pure); this module loads its facts, calls it and records what it
decided. Decisions that the brief leaves open are in docs/decisions.md, "Model routing".
"""

from __future__ import annotations

import csv
import dataclasses
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Callable

from sqlalchemy import Engine

from billing.catalog import Catalog, version_windows
from billing.errors import BillingError
from billing.numbers import plain
from billing.routing import (
    RoutedExecution,
    RoutingDecision,
    SavingsLine,
    TokenMix,
    route,
    routing_savings,
    token_mix,
)
from models.db import retry_once_on_lost_connection
from repositories import accounts as accounts_repo
from repositories import platforms as platforms_repo
from repositories import routing as repo
from repositories.routing import ScoreRow
from services.errors import InvalidInput, NotFound, refused_input
from services.inputs import check_id, parse_period

UTC = timezone.utc
SCORE_COLUMNS = ("skill", "model", "score", "measured_at", "suite_id")
MAX_TEXT = 128
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_LISTED_REJECTIONS = 200
MAX_ESTIMATE_TOKENS = 10**12  # the ingest's bound per execution
TOKEN_MIX_CACHE_SECONDS = 60.0  # a skill's median token mix is reused this long per process
HUNDRED = Decimal(100)


class AccountNotFound(NotFound):
    def __init__(self, account_id: str):
        super().__init__(f"no account {account_id!r}")


def _text(value: object, name: str, max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(name, "must be a non-empty string")
    if len(value) > max_len:
        raise InvalidInput(name, f"longer than {max_len} characters")
    if "\x00" in value:
        raise InvalidInput(name, "must not contain NUL characters")
    return value


def _model(value: object, name: str, catalog: Catalog, at: datetime | None = None) -> str:
    code = _text(value, name, 64)
    known = catalog.at(at).models if at is not None else {c for v in catalog.versions for c in v.models}
    if code not in known:
        raise InvalidInput(name, f"unknown model {code!r}")
    return code


def providers_of(catalog: Catalog) -> frozenset[str]:
    """Every provider a model of the catalog names (``provider`` in catalog.toml)."""
    return frozenset(m.provider for v in catalog.versions for m in v.models.values() if m.provider)


# =============================================================================================
# Quality scores: CSV import
# =============================================================================================
@dataclass
class Rejection:
    line: int
    reason: str


@dataclass
class ScoreImport:
    accepted: int = 0  # new runs' scores recorded
    duplicates: int = 0  # already recorded with the same score (a re-import)
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    skills: list[str] = field(default_factory=list)  # skills with a newly recorded score

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            self.rejections.append(Rejection(line, reason))


def _score(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInput("score", f"{text!r} is not a number") from None
    if not value.is_finite() or not 0 <= value <= HUNDRED:
        raise InvalidInput("score", f"{text.strip()} is not between 0 and 100")
    if value.as_tuple().exponent < -2:
        raise InvalidInput("score", f"{text.strip()} has more than 2 decimal places")
    return value


def _measured_at(text: str, now: datetime) -> datetime:
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput("measured_at", f"{text!r} is not an ISO 8601 timestamp") from None
    if ts.tzinfo is None:
        raise InvalidInput("measured_at", f"{text!r} has no time zone (add Z or +00:00)")
    ts = ts.astimezone(UTC)
    if ts > now + FUTURE_TOLERANCE:
        raise InvalidInput("measured_at", f"{text.strip()} is in the future")
    return ts


def parse_score_row(values: dict[str, str], catalog: Catalog, now: datetime) -> ScoreRow:
    """One CSV record (column -> text) as a score row; ``InvalidInput`` names the first bad field."""
    return ScoreRow(skill=_text(values["skill"], "skill"), model=_model(values["model"], "model", catalog),
                    measured_at=_measured_at(values["measured_at"], now),
                    suite_id=_text(values["suite_id"], "suite_id"), score=_score(values["score"]))


def read_scores_csv(source: Iterable[str], catalog: Catalog, now: datetime,
                    report: ScoreImport) -> list[tuple[int, ScoreRow]]:
    """The valid rows of a scores CSV with their line numbers; bad records are rejected into ``report``.

    The header names the columns (any order; other columns are ignored): skill, model, score,
    measured_at, suite_id. A header without them refuses the whole file."""
    reader = csv.reader(source)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("file", "is empty; expected a header line: " + ",".join(SCORE_COLUMNS)) from None
    names = [h.strip().lower() for h in header]
    missing = [c for c in SCORE_COLUMNS if c not in names]
    if missing:
        raise InvalidInput("header", f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                                     f"(expected {','.join(SCORE_COLUMNS)})")
    index = {c: names.index(c) for c in SCORE_COLUMNS}
    rows: list[tuple[int, ScoreRow]] = []
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            report.reject(reader.line_num, f"not valid CSV ({err})")
            continue
        line = reader.line_num
        if not record or all(not v.strip() for v in record):
            continue  # blank lines are not rows
        if len(record) != len(names):
            report.reject(line, f"expected {len(names)} fields as in the header, got {len(record)}")
            continue
        try:
            rows.append((line, parse_score_row({c: record[i] for c, i in index.items()}, catalog, now)))
        except InvalidInput as err:
            report.reject(line, str(err))
    return rows


def import_scores(engine: Engine, catalog: Catalog, source: Path | str | IO[str] | Iterable[str],
                  now: datetime | None = None) -> ScoreImport:
    """Record the quality scores of a CSV file (a path) or text lines, in one transaction.

    Each bad row is rejected with its line number and reason while the good ones are recorded. A run
    (skill, model, measured_at, suite id) already recorded with the same score is a duplicate, so a
    re-import changes nothing; the same run with another score (in the file or in the database) is
    rejected: a run's score never changes, a new measurement is a new run. Newer runs supersede older
    ones per skill and model when routes read them (``billing.routing.current_scores``' rule)."""
    now = now or datetime.now(UTC)
    report = ScoreImport()
    if isinstance(source, (str, Path)):
        with open(source, newline="", encoding="utf-8-sig") as fh:
            rows = read_scores_csv(fh, catalog, now, report)
    else:
        rows = read_scores_csv(source, catalog, now, report)
    seen: dict[tuple, tuple[int, Decimal]] = {}
    fresh: list[tuple[int, ScoreRow]] = []
    for line, row in rows:
        first = seen.get(row.key)
        if first is None:
            seen[row.key] = (line, row.score)
            fresh.append((line, row))
        elif first[1] == row.score:
            report.duplicates += 1
        else:
            report.reject(line, f"score: {_run(row)} is on line {first[0]} with score {plain(first[1])}; "
                                "a run has one score")
    with engine.begin() as conn:
        recorded = repo.recorded_runs(conn, [r for _, r in fresh])
        new: list[ScoreRow] = []
        for line, row in fresh:
            held = recorded.get(row.key)
            if held is None:
                new.append(row)
            elif held == row.score:
                report.duplicates += 1
            else:
                report.reject(line, f"score: {_run(row)} is recorded with score {plain(held)}; a run's score "
                                    "never changes (a new measurement is a new run: another measured_at or suite_id)")
        inserted = repo.insert_scores(conn, new)
    report.accepted += inserted
    report.duplicates += len(new) - inserted  # recorded meanwhile by a concurrent import
    report.skills = sorted({r.skill for r in new})
    report.rejections.sort(key=lambda r: r.line)
    return report


def _run(row: ScoreRow) -> str:
    return f"suite {row.suite_id!r} measuring {row.skill!r} on {row.model!r} at {row.measured_at.isoformat()}"


def scores_in_force(engine: Engine, skill: str | None = None) -> list:
    """(skill, model, score, measured_at, suite_id) in force per skill and model."""
    with engine.connect() as conn:
        return repo.current_scores(conn, skill)


# =============================================================================================
# Skills and account settings
# =============================================================================================
def set_skill(engine: Engine, catalog: Catalog, skill_id: str, *, category: str | None = None,
              default_model: str | None = None) -> dict:
    """Record what the platform says about a skill: its category (analytics) and the model it runs on
    without routing (the savings report's counterfactual). Both replace what was recorded."""
    skill_id = _text(skill_id, "skill_id")
    if category is not None:
        category = _text(category, "category", 64)
    if default_model is not None:
        default_model = _model(default_model, "default_model", catalog)
    with engine.begin() as conn:
        repo.upsert_skill(conn, skill_id, category, default_model)
    return {"skill_id": skill_id, "category": category, "default_model": default_model}


def _slider(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise InvalidInput("slider", "must be a number from 0 (cheapest) to 1 (best quality)")
    try:
        slider = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput("slider", f"{value!r} is not a number") from None
    if not slider.is_finite() or not 0 <= slider <= 1:
        raise InvalidInput("slider", f"{value} is not between 0 (cheapest) and 1 (best quality)")
    if slider.as_tuple().exponent < -3:
        raise InvalidInput("slider", f"{value} has more than 3 decimal places")
    return slider


def _providers(value: object, catalog: Catalog) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise InvalidInput("byok_providers", "must be a list of provider names")
    known = providers_of(catalog)
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidInput("byok_providers", f"unknown provider {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return sorted(set(value))


def _owned(conn, account_id: str, platform_id: int | None):
    if platform_id is None:
        found = accounts_repo.get_account(conn, account_id)
    else:
        found = platforms_repo.account_of_platform(conn, account_id, platform_id)
    if found is None:
        raise AccountNotFound(account_id)


def set_account_routing(engine: Engine, catalog: Catalog, account_id: str, *, slider: object = None,
                        byok_providers: object = None, platform_id: int | None = None) -> dict:
    """Set the account's quality slider and/or the providers it holds keys for (as the platform reports
    them); what is not given keeps its value. ``platform_id`` None: any account (the CLI)."""
    check_id(account_id)
    new_slider = None if slider is None else _slider(slider)
    new_providers = None if byok_providers is None else _providers(byok_providers, catalog)
    with engine.begin() as conn:
        _owned(conn, account_id, platform_id)
        held = repo.get_account_routing(conn, account_id)
        current_slider = Decimal(held.slider) if held else Decimal(0)
        current_providers = list(held.byok_providers) if held else []
        values = (current_slider if new_slider is None else new_slider,
                  current_providers if new_providers is None else new_providers)
        repo.upsert_account_routing(conn, account_id, *values)
    return _settings_view(account_id, *values)


def account_routing(engine: Engine, account_id: str, platform_id: int | None = None) -> dict:
    check_id(account_id)
    with engine.connect() as conn:
        _owned(conn, account_id, platform_id)
        held = repo.get_account_routing(conn, account_id)
    return _settings_view(account_id, Decimal(held.slider) if held else Decimal(0),
                          list(held.byok_providers) if held else [])


def _settings_view(account_id: str, slider: Decimal, providers: list[str]) -> dict:
    return {"account_id": account_id, "slider": plain(slider), "byok_providers": list(providers),
            "byok": bool(providers)}


# =============================================================================================
# POST /v1/route
# =============================================================================================
@dataclass(frozen=True)
class RouteRequest:
    account_id: str
    skill_id: str
    estimate: tuple[int, int] | None
    default_model: str | None
    slider: Decimal | None


def _tokens(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(name, "must be a whole number")
    if not 0 <= value <= MAX_ESTIMATE_TOKENS:
        raise InvalidInput(name, f"must be between 0 and {MAX_ESTIMATE_TOKENS:,}")
    return value


def parse_route_request(body: object, catalog: Catalog, now: datetime) -> RouteRequest:
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    account_id = _text(body.get("account_id"), "account_id", 64)
    check_id(account_id)
    skill_id = _text(body.get("skill_id"), "skill_id")
    tin, tout = body.get("expected_input_tokens"), body.get("expected_output_tokens")
    if (tin is None) != (tout is None):
        missing = "expected_output_tokens" if tout is None else "expected_input_tokens"
        raise InvalidInput(missing, "required when the other expected token count is given")
    estimate = None if tin is None else (_tokens(tin, "expected_input_tokens"),
                                         _tokens(tout, "expected_output_tokens"))
    default = body.get("default_model")
    return RouteRequest(account_id, skill_id, estimate,
                        None if default is None else _model(default, "default_model", catalog, now),
                        None if body.get("slider") is None else _slider(body.get("slider")))


class RoutingService:
    """Answers routes for one process: facts in one indexed query, the skill's median token mix
    cached per process for ``TOKEN_MIX_CACHE_SECONDS``, the decision recorded before it is answered."""

    def __init__(self, engine: Engine, catalog: Catalog, clock: Callable[[], datetime] | None = None,
                 mix_cache_seconds: float = TOKEN_MIX_CACHE_SECONDS):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock or (lambda: datetime.now(UTC))
        self.mix_cache_seconds = mix_cache_seconds
        self._mixes: dict[str, tuple[TokenMix, float]] = {}
        self._lock = threading.Lock()

    def _conn(self):
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _history_mix(self, conn, skill: str, version) -> TokenMix:
        now = time.monotonic()
        hit = self._mixes.get(skill)
        if hit and hit[1] > now:
            return hit[0]
        settings = version.routing_settings()
        mix = token_mix(repo.recent_tokens(conn, skill, settings.token_mix_executions), settings=settings)
        with self._lock:
            if len(self._mixes) > 10_000:
                self._mixes.clear()
            self._mixes[skill] = (mix, now + self.mix_cache_seconds)
        return mix

    @retry_once_on_lost_connection
    def route(self, platform_id: int | None, body: object) -> dict:
        """Choose the model for one execution (``billing.routing.route``) and record the decision.
        ``platform_id`` None: any account (the CLI)."""
        now = self.clock()
        with refused_input():
            version = self.catalog.at(now)
        req = parse_route_request(body, self.catalog, now)
        with self._conn() as conn:
            facts = repo.route_facts(conn, req.account_id, req.skill_id, platform_id,
                                     any_platform=platform_id is None)
            if facts is None:
                raise AccountNotFound(req.account_id)
            if not facts.scores:
                raise InvalidInput("skill_id", f"no quality scores for skill {req.skill_id!r} "
                                               "(import them: `tally routing scores import FILE.csv`)")
            mix = (TokenMix(*req.estimate, "estimate") if req.estimate is not None
                   else self._history_mix(conn, req.skill_id, version))
            slider = facts.slider if req.slider is None else req.slider
            try:
                decision = route(version, req.skill_id, facts.scores, mix, slider=slider,
                                 byok_providers=facts.byok_providers or None)
            except BillingError as err:
                field_name = "skill_id" if err.field == "scores" else err.field
                raise InvalidInput(field_name, err.message) from None
            default = req.default_model or facts.skill_default_model
            if default is not None and default not in version.models:
                default = None  # the skill's recorded default left the rate card
            decision_id = repo.record_decision(conn, _decision_row(req.account_id, decision, default, now))
        return decision_view(decision_id, req.account_id, decision, default, version)


def _candidate(c, version) -> dict:
    return {"model": c.model, "provider": c.provider, "score": plain(c.score),
            "expected_cost": plain(c.expected_cost), "qualifies": c.qualifies}


def _decision_row(account_id: str, d: RoutingDecision, default: str | None, now: datetime) -> dict:
    return {
        "account_id": account_id, "skill": d.skill, "model": d.model, "default_model": default,
        "score": d.score, "expected_cost": d.expected_cost, "threshold": d.threshold, "slider": d.slider,
        "below_threshold": d.below_threshold, "byok": d.byok, "input_tokens": d.token_mix.input_tokens,
        "output_tokens": d.token_mix.output_tokens, "token_mix_source": d.token_mix.source,
        "catalog_version": d.catalog_version, "reason": d.reason,
        "alternatives": [_candidate(c, None) for c in d.alternatives], "decided_at": now,
    }


def decision_view(decision_id: int, account_id: str, d: RoutingDecision, default: str | None, version) -> dict:
    """The answer of ``POST /v1/route`` (and ``tally routing route``)."""
    return {
        "decision_id": decision_id,
        "account_id": account_id,
        "skill_id": d.skill,
        "model": d.model,
        "provider": version.models[d.model].provider,
        "reason": d.reason,
        "score": plain(d.score),
        "expected_cost": plain(d.expected_cost),
        "below_threshold": d.below_threshold,
        "threshold": plain(d.threshold),
        "base_threshold": plain(d.base_threshold),
        "slider": plain(d.slider),
        "byok": d.byok,
        "token_mix": {"input_tokens": d.token_mix.input_tokens, "output_tokens": d.token_mix.output_tokens,
                      "source": d.token_mix.source},
        "default_model": default,
        "catalog_version": d.catalog_version,
        "alternatives": [_candidate(c, version) for c in d.alternatives],
    }


# =============================================================================================
# The savings report
# =============================================================================================
@dataclass(frozen=True)
class SavingsRow:
    """``billing.routing.SavingsLine`` (its fields read through) with two counts the shell knows:
    executions that ran the model routing chose (``followed``; the others fell back) and those whose
    decision named no default model (priced at the model they ran on, so they save nothing)."""

    line: SavingsLine
    followed: int
    without_default: int

    def __getattr__(self, name: str):
        return getattr(self.line, name)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self.line), "followed": self.followed, "without_default": self.without_default}


def savings_report(engine: Engine, catalog: Catalog, period_text: str) -> list[SavingsRow]:
    """What routing saved per account and skill in a month, against each decision's default model (the
    skill's default, or the one the platform named in the route request). The month's routed executions
    are grouped in SQL (tokens summed per account, skill, version, models and BYOK) and priced by
    ``billing.routing.routing_savings``."""
    period = parse_period(period_text)
    with engine.connect() as conn:
        groups = repo.routed_execution_groups(conn, period.start, period.end,
                                              version_windows(catalog, period.start, period.end))
    extra: dict[tuple[str, str], list[int]] = {}
    routed = []
    for g in groups:
        counts = extra.setdefault((g.account_id, g.skill), [0, 0])
        counts[0] += g.followed
        if g.default_model is None:
            counts[1] += g.executions
        routed.append(RoutedExecution(g.account_id, g.skill, g.first_at, g.model, g.default_model or g.model,
                                      int(g.input_tokens), int(g.output_tokens), g.byok, g.executions))
    with refused_input():
        lines = routing_savings(catalog, routed)
    return [SavingsRow(ln, *extra[(ln.account_id, ln.skill)]) for ln in lines]


__all__ = [
    "AccountNotFound", "ScoreImport", "import_scores", "read_scores_csv", "scores_in_force", "set_skill",
    "set_account_routing", "account_routing", "RoutingService", "parse_route_request", "savings_report",
    "SavingsRow", "providers_of",
]
