"""The versioned, effective-dated catalog: plans, LLM models (token rate card), credit costs, credit
packages (``credits``), the creator revenue-share terms (``creators``), the enterprise committed-use
tiers (``contracts``), and the alert and routing policy numbers (``alerts``, ``routing``).

The data lives in ``billing/catalog.toml``. TOML is parsed with ``parse_float=Decimal`` and prices
may also be written as strings; either way they end up ``Decimal`` and a Python float is rejected.
A price change is a new ``[[versions]]`` entry with a later ``effective_from``: usage is priced by the
version in force when it occurred (``Catalog.at``). ``CatalogVersion.digest()`` identifies the exact
content that priced a line, so the database can store it next to the version id.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
import tomllib
from datetime import datetime, timezone
from decimal import Context, Decimal
from enum import Enum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from billing.errors import CatalogError
from billing.money import is_whole_cents

UTC = timezone.utc
_WIDE = Context(prec=200)
DEFAULT_CATALOG_FILE = "catalog.toml"
REQUIRED_CREDIT_KEYS = ("fast", "standard", "heavy", "sandbox", "byok")


# --------------------------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------------------------
def _no_float(v: Any) -> Any:
    if isinstance(v, float):
        raise ValueError(
            f"floats are not accepted for prices ({v!r}); write a decimal such as \"0.005\" "
            "(the TOML loader reads bare decimals exactly)"
        )
    if isinstance(v, bool):
        raise ValueError("must be a decimal amount, not a boolean")
    return v


def _non_negative(v: Decimal) -> Decimal:
    if not v.is_finite():
        raise ValueError("must be a finite amount")
    if v < 0:
        raise ValueError(f"must not be negative, got {v}")
    return v


def _positive(v: Decimal) -> Decimal:
    if not v.is_finite() or v <= 0:
        raise ValueError(f"must be greater than zero, got {v}")
    return v


def _whole_cents(v: Decimal) -> Decimal:
    if not is_whole_cents(v):
        raise ValueError(f"must be a whole number of cents, got {v}")
    return v


Price = Annotated[Decimal, BeforeValidator(_no_float), AfterValidator(_non_negative)]
"""A non-negative Decimal that may have sub-cent precision (a rate)."""
Amount = Annotated[Decimal, BeforeValidator(_no_float), AfterValidator(_non_negative), AfterValidator(_whole_cents)]
"""A non-negative Decimal that is a whole number of cents (a fee, a cap)."""
Count = Annotated[int, Field(strict=True, ge=0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelClass(str, Enum):
    fast = "fast"
    standard = "standard"
    heavy = "heavy"


# --------------------------------------------------------------------------------------------
# Plans and models
# --------------------------------------------------------------------------------------------
class Plan(_Frozen):
    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    monthly_fee: Amount
    fee_per_seat: StrictBool = False
    included_executions: Count
    """Per seat when ``fee_per_seat``."""
    overage_rate: Price | None = None
    """Price per execution beyond the included quota; ``None`` = always blocked."""
    overage_requires_opt_in: StrictBool = True
    usage_cap: Annotated[Amount, AfterValidator(_positive)] | None = None
    """Cap on the period's usage charge (PAYG)."""
    contract: StrictBool = False
    """Enterprise: billed by contract, not by ``billing.rating``."""

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        if self.usage_cap is not None and self.overage_rate is None:
            raise ValueError("usage_cap needs an overage_rate (there is no usage charge to cap)")
        return self


class LlmModel(_Frozen):
    code: str = Field(min_length=1)
    display_name: str = Field(min_length=1)
    model_class: ModelClass
    cost_input_per_mtok: Price
    cost_output_per_mtok: Price
    price_input_per_mtok: Price | None = None
    price_output_per_mtok: Price | None = None
    provider: str | None = Field(default=None, min_length=1, exclude=True)
    """Who serves the model (``anthropic``, ``openai``, ...): the key a BYOK account must hold to run
    it (see ``billing.routing``). Routing metadata, not a price: left out of ``canonical_json`` and
    the digest, so adding it did not change the digest of a version that already priced usage."""

    def user_price_input(self, markup: Decimal) -> Decimal:
        """User price per 1M input tokens: the explicit price if set, else cost x markup."""
        if self.price_input_per_mtok is not None:
            return self.price_input_per_mtok
        return _WIDE.multiply(self.cost_input_per_mtok, markup)

    def user_price_output(self, markup: Decimal) -> Decimal:
        """User price per 1M output tokens: the explicit price if set, else cost x markup."""
        if self.price_output_per_mtok is not None:
            return self.price_output_per_mtok
        return _WIDE.multiply(self.cost_output_per_mtok, markup)


# --------------------------------------------------------------------------------------------
# Enterprise committed use (the pricing of contracts; the rules live in billing/contracts.py)
# --------------------------------------------------------------------------------------------
Executions = Annotated[int, Field(strict=True, gt=0)]


class DiscountTier(_Frozen):
    """A commitment of at least ``min_commitment`` executions a month earns ``discount`` off the
    standard rate (until the next tier's ``min_commitment``)."""

    min_commitment: Executions
    discount: Annotated[Decimal, BeforeValidator(_no_float)]

    @field_validator("discount")
    @classmethod
    def _fraction(cls, v: Decimal) -> Decimal:
        if not v.is_finite() or not 0 <= v < 1:
            raise ValueError(f"must be a fraction from 0 (inclusive) to 1 (exclusive), e.g. 0.20 for 20% off; "
                             f"got {v}")
        return v


class CommittedUse(_Frozen):
    """Enterprise committed-use pricing: the standard rate, the discount tiers and the minimums.

    A contract keeps the version that priced it for its whole term (amendments included).
    """

    standard_rate: Annotated[Price, AfterValidator(_positive)]
    """Price per execution before discount; also the price of executions above the commitment."""
    minimum_commitment: Executions
    """Executions per month."""
    minimum_months: Annotated[int, Field(strict=True, ge=1)]
    tiers: tuple[DiscountTier, ...] = Field(min_length=1)
    """Lowest first; the first tier starts at ``minimum_commitment``."""

    @model_validator(mode="after")
    def _tiers_ordered(self) -> CommittedUse:
        if self.tiers[0].min_commitment != self.minimum_commitment:
            raise ValueError(
                f"tiers[0].min_commitment: must equal minimum_commitment ({self.minimum_commitment}), "
                f"got {self.tiers[0].min_commitment}"
            )
        for i in range(1, len(self.tiers)):
            if self.tiers[i].min_commitment <= self.tiers[i - 1].min_commitment:
                raise ValueError(
                    f"tiers[{i}].min_commitment: must be greater than that of tiers[{i - 1}] "
                    f"({self.tiers[i - 1].min_commitment}); list tiers lowest first"
                )
        return self

    def tier(self, commitment: int) -> DiscountTier:
        """The tier a monthly commitment falls in (``CatalogError`` below the minimum commitment)."""
        if isinstance(commitment, bool) or not isinstance(commitment, int):
            raise CatalogError(f"must be a whole number of executions, got {commitment!r}", field="commitment")
        if commitment < self.minimum_commitment:
            raise CatalogError(
                f"must be at least {self.minimum_commitment:,} executions a month, got {commitment:,}",
                field="commitment",
            )
        return [t for t in self.tiers if t.min_commitment <= commitment][-1]

    def discounted_rate(self, commitment: int) -> Decimal:
        """Price per committed execution: ``standard_rate x (1 - discount)``, exact (not rounded)."""
        return _WIDE.multiply(self.standard_rate, _WIDE.subtract(Decimal(1), self.tier(commitment).discount))


def _fill_codes(data: Any, key: str) -> Any:
    """In the data file a plan/model's ``code`` may be omitted: it defaults to its table key."""
    if isinstance(data, dict) and isinstance(data.get(key), dict):
        filled = {}
        for code, entry in data[key].items():
            if isinstance(entry, dict) and "code" not in entry:
                entry = {"code": code, **entry}
            filled[code] = entry
        data = {**data, key: filled}
    return data


# --------------------------------------------------------------------------------------------
# Prepaid credits and creator revenue share (optional sections: hand-written catalogs may omit them)
# --------------------------------------------------------------------------------------------
PackageUnit = Literal["credits", "usd"]


class CreditPackage(_Frozen):
    """What a customer can buy: ``price`` USD buys ``amount`` of ``unit`` (credits, or usd of invoice credit)."""

    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    price: Annotated[Amount, AfterValidator(_positive)]
    unit: PackageUnit
    amount: Annotated[Decimal, BeforeValidator(_no_float), AfterValidator(_positive)]
    """Credits: a whole number. usd: whole cents (``$50 buys $55``: price 50.00, amount 55.00)."""

    @model_validator(mode="after")
    def _amount_fits_unit(self) -> CreditPackage:
        if self.unit == "credits" and self.amount != self.amount.to_integral_value():
            raise ValueError(f"amount: credits are whole numbers, got {self.amount}")
        if self.unit == "usd" and not is_whole_cents(self.amount):
            raise ValueError(f"amount: a usd amount must be a whole number of cents, got {self.amount}")
        return self


class CreditsTerms(_Frozen):
    """Prepaid credits: the packages on sale and how long a grant lasts (``billing.credits``)."""

    expiry_months: Annotated[int, Field(strict=True, ge=1, le=120)] = 12
    """A grant expires this many calendar months after the payment that bought it."""
    packages: dict[str, CreditPackage] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _codes_from_keys(cls, data: Any) -> Any:
        return _fill_codes(data, "packages")

    @model_validator(mode="after")
    def _keys_match_codes(self) -> CreditsTerms:
        for key, package in self.packages.items():
            if package.code != key:
                raise ValueError(f"packages.{key}.code: {package.code!r} does not match its key {key!r}")
        return self

    def package(self, code: str) -> CreditPackage:
        try:
            return self.packages[code]
        except (KeyError, TypeError):
            raise CatalogError(
                f"unknown credit package {code!r}; known packages: {', '.join(self.packages)}", field="package"
            ) from None


Percent = Annotated[Decimal, BeforeValidator(_no_float), AfterValidator(_positive)]


class CreatorTerms(_Frozen):
    """Creator revenue share and payouts (``billing.payouts``)."""

    share_percent: Percent
    """``share`` skills: the creator's percentage of the revenue their executions were billed for."""
    fixed_percent: Percent
    """``fixed`` skills: the creator's percentage of the fixed-price invoice line."""
    fixed_price_min: Annotated[Amount, AfterValidator(_positive)]
    fixed_price_max: Amount
    """The range a creator's price per execution must lie in (inclusive)."""
    minimum_payout: Amount
    """A creator is paid only when the payable balance is at least this; below it carries over."""

    @model_validator(mode="after")
    def _consistent(self) -> CreatorTerms:
        for name in ("share_percent", "fixed_percent"):
            if getattr(self, name) > 100:
                raise ValueError(f"{name}: must be at most 100, got {getattr(self, name)}")
        if self.fixed_price_max < self.fixed_price_min:
            raise ValueError(
                f"fixed_price_max: must be at least fixed_price_min ({self.fixed_price_min}), "
                f"got {self.fixed_price_max}"
            )
        return self



# Policy sections: alerts and routing (not prices)
# --------------------------------------------------------------------------------------------
Multiplier = Annotated[Decimal, BeforeValidator(_no_float), AfterValidator(_positive)]
"""A positive Decimal factor (3 = three times)."""
Score = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0, le=100)]
"""A quality score or threshold on the 0-100 scale."""
PositiveCount = Annotated[int, Field(strict=True, ge=1)]


class AlertSettings(_Frozen):
    """The numbers behind ``billing.alerts`` (``[versions.alerts]`` in catalog.toml).

    Every field has the default documented in docs/decisions.md ("Alerts and anomalies"), so a
    version without the section behaves exactly like the shipped catalog.
    """

    budget_thresholds_percent: tuple[PositiveCount, ...] = (50, 80, 100)
    """Percentages of the monthly budget that send a notice, each at most once per account and period."""
    loop_kill_multiplier: Multiplier = Decimal(3)
    """Kill an execution once its running cost is MORE than this many times its agent's baseline."""
    loop_min_history: PositiveCount = 20
    """Completed executions an agent needs before the loop rule acts (fewer: always ``continue``)."""
    loop_history_size: PositiveCount = 100
    """How many of the agent's most recent completed executions make its baseline (their median cost)."""
    spike_window_minutes: PositiveCount = 5
    """The sliding window whose execution count is compared with the account's own baseline."""
    spike_baseline_days: PositiveCount = 7
    """The trailing span (before the window) whose mean rate per window is the account's baseline."""
    spike_multiplier: Multiplier = Decimal(10)
    """Pause when the window holds MORE than max(multiplier x baseline, floor) executions."""
    spike_floor_executions: PositiveCount = 300
    """The absolute floor of the spike threshold (new and quiet accounts)."""
    trend_multiplier: Multiplier = Decimal(2)
    """Warn when the projected month spend is AT LEAST this many times the trailing average."""
    trend_history_months: PositiveCount = 3
    """Complete months the trailing average needs (fewer: no trend warning)."""

    @field_validator("budget_thresholds_percent")
    @classmethod
    def _increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("needs at least one threshold, e.g. [50, 80, 100]")
        if list(v) != sorted(set(v)):
            raise ValueError(f"must be strictly increasing percentages, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _history_fits(self) -> AlertSettings:
        if self.loop_min_history > self.loop_history_size:
            raise ValueError(
                f"loop_min_history: {self.loop_min_history} is more than loop_history_size "
                f"({self.loop_history_size}); the rule could never act"
            )
        if self.spike_baseline_days * 24 * 60 < self.spike_window_minutes:
            raise ValueError("spike_baseline_days: the baseline span must be longer than the window")
        return self


class RoutingSettings(_Frozen):
    """The numbers behind ``billing.routing`` (``[versions.routing]`` in catalog.toml)."""

    quality_threshold: Score = Decimal(75)
    """A model qualifies for a skill when its current score is at least this (slider at "cheapest")."""
    token_mix_executions: PositiveCount = 100
    """How many of the skill's most recent executions make its token mix (median in, median out)."""
    default_input_tokens: Annotated[int, Field(strict=True, ge=0)] = 2000
    default_output_tokens: Annotated[int, Field(strict=True, ge=0)] = 500
    """The token mix of a skill with no executions yet when the caller gives no estimate."""

    @model_validator(mode="after")
    def _default_mix(self) -> RoutingSettings:
        if self.default_input_tokens + self.default_output_tokens == 0:
            raise ValueError("default_input_tokens: the default token mix needs at least one token")
        return self


DEFAULT_ALERT_SETTINGS = AlertSettings()
DEFAULT_ROUTING_SETTINGS = RoutingSettings()


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------
def _canonical(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _canonical(value.model_dump(mode="python"))
    if isinstance(value, dict):
        return {str(k.value if isinstance(k, Enum) else k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Decimal):
        # "29", "29.0" and "29.00" are the same price: normalise so the digest reflects values.
        return format(value.normalize(_WIDE), "f") if value != 0 else "0"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


# Sections a version may lack (None). Each later capability adds its own name here.
OPTIONAL_SECTIONS = ("credits", "creators", "alerts", "routing", "contracts")


class CatalogVersion(_Frozen):
    version: str = Field(min_length=1)
    effective_from: datetime
    currency: Literal["usd"] = "usd"
    markup: Annotated[Decimal, BeforeValidator(_no_float), AfterValidator(_positive)]
    plans: dict[str, Plan] = Field(min_length=1)
    models: dict[str, LlmModel] = Field(min_length=1)
    credit_cost: dict[str, Annotated[int, Field(strict=True, ge=0)]]
    """Credits consumed per execution: by model class (fast/standard/heavy), ``sandbox``, ``byok``."""
    credits: CreditsTerms | None = None
    """Credit packages and grant expiry; ``None`` when the version sells no credits."""
    creators: CreatorTerms | None = None
    """Creator revenue-share terms; ``None`` when the version has none."""

    alerts: AlertSettings | None = None
    """``[versions.alerts]``; ``None`` = the defaults."""
    routing: RoutingSettings | None = None
    """``[versions.routing]``; ``None`` = the defaults."""
    contracts: CommittedUse | None = None
    """Enterprise committed-use pricing; ``None`` in a version that does not price contracts."""

    @model_validator(mode="before")
    @classmethod
    def _codes_from_keys(cls, data: Any) -> Any:
        return _fill_codes(_fill_codes(data, "plans"), "models")

    @field_validator("effective_from")
    @classmethod
    def _aware_utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None or v.tzinfo.utcoffset(v) is None:
            raise ValueError("must be timezone-aware, e.g. 2026-01-01T00:00:00Z")
        return v.astimezone(UTC)

    @field_validator("credit_cost")
    @classmethod
    def _credit_keys(cls, v: dict[str, int]) -> dict[str, int]:
        missing = [k for k in REQUIRED_CREDIT_KEYS if k not in v]
        unknown = [k for k in v if k not in REQUIRED_CREDIT_KEYS]
        if missing or unknown:
            raise ValueError(
                f"needs exactly the keys {', '.join(REQUIRED_CREDIT_KEYS)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        return v

    @model_validator(mode="after")
    def _keys_match_codes(self) -> CatalogVersion:
        for kind, table in (("plans", self.plans), ("models", self.models)):
            for key, item in table.items():
                if item.code != key:
                    raise ValueError(f"{kind}.{key}.code: {item.code!r} does not match its key {key!r}")
        return self

    def plan(self, code: str) -> Plan:
        try:
            return self.plans[code]
        except (KeyError, TypeError):
            raise CatalogError(
                f"unknown plan {code!r}; known plans: {', '.join(self.plans)}", field="plan"
            ) from None

    def model(self, code: str) -> LlmModel:
        try:
            return self.models[code]
        except (KeyError, TypeError):
            raise CatalogError(
                f"unknown model {code!r}; known models: {', '.join(self.models)}", field="model"
            ) from None

    def credit_package(self, code: str) -> CreditPackage:
        """The credit package ``code`` (``CatalogError`` naming ``package`` if unknown or none on sale)."""
        if self.credits is None:
            raise CatalogError(f"catalog version {self.version} sells no credit packages", field="package")
        return self.credits.package(code)

    def creator_terms(self) -> CreatorTerms:
        """The creator revenue-share terms (``CatalogError`` naming ``creators`` if this version has none)."""
        if self.creators is None:
            raise CatalogError(f"catalog version {self.version} has no [creators] section", field="creators")
        return self.creators

    def alert_settings(self) -> AlertSettings:
        """The alert numbers in force with this version (its section, else the defaults)."""
        return self.alerts if self.alerts is not None else DEFAULT_ALERT_SETTINGS

    def routing_settings(self) -> RoutingSettings:
        """The routing numbers in force with this version (its section, else the defaults)."""
        return self.routing if self.routing is not None else DEFAULT_ROUTING_SETTINGS

    def canonical_json(self) -> str:
        """Canonical JSON of this version (sorted keys, normalised decimals, UTC instants).

        An optional section the version does not have is left out, so adding a new kind of section
        to the catalog (credits, contracts, ...) does not change the digest of a version without it."""
        doc = _canonical(self)
        for name in OPTIONAL_SECTIONS:
            if doc.get(name) is None:
                doc.pop(name, None)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def digest(self) -> str:
        """sha256 (hex) of ``canonical_json()``: which exact content priced a line."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def only_adds_sections_to(self, recorded_digest: str, recorded_sections: set[str]) -> bool:
        """True when this version is the recorded one plus optional sections it did not have (a new
        capability's terms), every value it had unchanged. Such a version may replace the recorded
        document; any other difference is a changed version, which is refused."""
        added = {name: None for name in OPTIONAL_SECTIONS
                 if name not in recorded_sections and getattr(self, name) is not None}
        return bool(added) and self.model_copy(update=added).digest() == recorded_digest


class Catalog(_Frozen):
    versions: tuple[CatalogVersion, ...]
    """At least one; strictly increasing ``effective_from``; unique ``version`` ids."""

    @model_validator(mode="after")
    def _ordered(self) -> Catalog:
        if not self.versions:
            raise ValueError("versions: the catalog needs at least one [[versions]] entry")
        seen: set[str] = set()
        for i, v in enumerate(self.versions):
            if v.version in seen:
                raise ValueError(f"versions[{i}].version: duplicate version id {v.version!r}")
            seen.add(v.version)
            if i and v.effective_from <= self.versions[i - 1].effective_from:
                raise ValueError(
                    f"versions[{i}].effective_from: {v.effective_from.isoformat()} ({v.version}) must be later "
                    f"than that of versions[{i - 1}] ({self.versions[i - 1].version}, "
                    f"{self.versions[i - 1].effective_from.isoformat()}); list versions oldest first"
                )
        return self

    def at(self, ts: datetime) -> CatalogVersion:
        """The version in force at ``ts`` (an ``effective_from`` instant belongs to the new version)."""
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
            raise CatalogError(f"must be a timezone-aware datetime, got {ts!r}", field="ts")
        starts = [v.effective_from for v in self.versions]
        i = bisect.bisect_right(starts, ts) - 1
        if i < 0:
            raise CatalogError(
                f"no catalog version in force at {ts.astimezone(UTC).isoformat()}; "
                f"the first ({self.versions[0].version}) is effective from {starts[0].isoformat()}",
                field="ts",
            )
        return self.versions[i]

    def versions_overlapping(self, start: datetime, end: datetime) -> list[CatalogVersion]:
        """Versions in force at some instant of ``[start, end)``, oldest first.

        Time before the first version is not covered by any version and is simply not represented.
        """
        for name, ts in (("start", start), ("end", end)):
            if not isinstance(ts, datetime) or ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
                raise CatalogError(f"must be a timezone-aware datetime, got {ts!r}", field=name)
        if end <= start:
            raise CatalogError(f"must be after start ({start.isoformat()}), got {end.isoformat()}", field="end")
        out = []
        for i, v in enumerate(self.versions):
            v_end = self.versions[i + 1].effective_from if i + 1 < len(self.versions) else None
            if v.effective_from < end and (v_end is None or v_end > start):
                out.append(v)
        return out

    def version(self, version_id: str) -> CatalogVersion:
        """Look a version up by its id (e.g. the id stored on an invoice line)."""
        for v in self.versions:
            if v.version == version_id:
                return v
        raise CatalogError(
            f"unknown catalog version {version_id!r}; known: {', '.join(v.version for v in self.versions)}",
            field="catalog_version",
        )

    @property
    def latest(self) -> CatalogVersion:
        return self.versions[-1]


def version_windows(catalog: Catalog, start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """(version, from, to) for every catalog version in force during ``[start, end)``: an execution
    is priced by the version whose window holds its ``occurred_at``."""
    out = []
    versions = catalog.versions
    for i, v in enumerate(versions):
        v_end = versions[i + 1].effective_from if i + 1 < len(versions) else end
        lo, hi = max(v.effective_from, start), min(v_end, end)
        if lo < hi:
            out.append((v.version, lo, hi))
    return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # pydantic adds validator names such as "function-after[...]"; they mean nothing to an editor.
            if isinstance(part, str) and ("[" in part and part.endswith("]") and part.startswith(("function-", "json-"))):
                continue
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_SUBPATH_RE = re.compile(r"^([A-Za-z_][\w.\[\]-]*): (.*)$", re.S)


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    """Parse and validate catalog TOML text. Errors: ``CatalogError`` naming ``source``, field path, reason."""
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"{source}: not valid TOML: {e}") from None
    try:
        return Catalog.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            loc = _loc(err["loc"])
            # Our model validators name the offending sub-field as "path: reason": fold it into the path.
            m = _SUBPATH_RE.match(msg)
            if m and err["type"] == "value_error":
                sub, msg = m.group(1), m.group(2)
                loc = sub if loc == "(top level)" else (f"{loc}{sub}" if sub.startswith("[") else f"{loc}.{sub}")
            problems.append(f"{loc}: {msg}")
        err = CatalogError(f"{source}: invalid catalog: " + "; ".join(problems))
        err.field = problems[0].split(": ", 1)[0]  # the first offending field path
        raise err from None


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Load the catalog file (default: ``catalog.toml`` packaged next to this module)."""
    if path is None:
        ref = resources.files(__package__ or "billing").joinpath(DEFAULT_CATALOG_FILE)
        source = str(ref)
        try:
            text = ref.read_text(encoding="utf-8")
        except OSError as e:
            raise CatalogError(f"{source}: cannot read: {e}") from None
    else:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise CatalogError(f"{source}: cannot read: {e}") from None
    return parse_catalog(text, source)


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    """The packaged catalog, loaded once per process (it is immutable)."""
    return load_catalog()


__all__ = [
    "ModelClass",
    "Plan",
    "LlmModel",
    "CreditPackage",
    "CreditsTerms",
    "CreatorTerms",

    "AlertSettings",
    "RoutingSettings",
    "DEFAULT_ALERT_SETTINGS",
    "DEFAULT_ROUTING_SETTINGS",
    "CatalogVersion",
    "Catalog",
    "CommittedUse",
    "DiscountTier",
    "CatalogError",
    "load_catalog",
    "parse_catalog",
    "default_catalog",
    "REQUIRED_CREDIT_KEYS",
]
