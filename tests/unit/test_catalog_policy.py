"""The catalog's policy sections ([versions.alerts], [versions.routing]) and model providers: read
from catalog.toml, defaulted when absent, validated; optional sections that a version lacks stay out of
its digest, and a version may gain them without changing anything it had."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from billing.catalog import AlertSettings, RoutingSettings, load_catalog, parse_catalog
from billing.errors import CatalogError

D = Decimal
CATALOG_TEXT = (Path(__file__).resolve().parents[2] / "billing" / "catalog.toml").read_text()
# The digest of version 2026-01-01.1 as it priced usage before any optional section existed: the
# database recorded it, so the version without its optional sections must keep it for ever.
DIGEST_2026_01_01_1 = "7de49c3b6d55491f432157ce9e138bf30c35d157a0c1ea2ddae2a4ac8401729c"


def _without_policy(text: str) -> str:
    head = text.split("  # -- Alerts and anomalies", 1)[0]
    return "\n".join(line for line in head.splitlines() if not line.strip().startswith("provider ="))


def test_the_version_in_force_without_its_optional_sections_keeps_its_recorded_digest():
    from billing.catalog import OPTIONAL_SECTIONS

    v = load_catalog().versions[0]
    bare = v.model_copy(update={name: None for name in OPTIONAL_SECTIONS})
    assert bare.digest() == DIGEST_2026_01_01_1
    assert "provider" not in v.canonical_json()  # model metadata, not part of what priced usage
    assert v.only_adds_sections_to(DIGEST_2026_01_01_1, recorded_sections=set())
    no_policy = parse_catalog(_without_policy(CATALOG_TEXT)).versions[0]
    assert no_policy.alerts is None and no_policy.routing is None
    assert no_policy.models["claude-haiku"].provider is None


def test_a_changed_policy_number_is_a_changed_version():
    v = load_catalog().versions[0]
    other = parse_catalog(CATALOG_TEXT.replace("quality_threshold = 75", "quality_threshold = 80")).versions[0]
    assert other.routing_settings().quality_threshold == 80
    assert other.digest() != v.digest()
    assert not other.only_adds_sections_to(v.digest(), recorded_sections=set(v.model_fields_set))


def test_the_shipped_sections_hold_the_documented_numbers():
    v = load_catalog().versions[0]
    assert v.alerts == AlertSettings()
    assert v.routing == RoutingSettings()
    a = v.alert_settings()
    assert (a.budget_thresholds_percent, a.loop_kill_multiplier, a.loop_min_history, a.loop_history_size) == (
        (50, 80, 100), D(3), 20, 100)
    assert (a.spike_window_minutes, a.spike_baseline_days, a.spike_multiplier, a.spike_floor_executions) == (
        5, 7, D(10), 300)
    assert (a.trend_multiplier, a.trend_history_months) == (D(2), 3)
    r = v.routing_settings()
    assert (r.quality_threshold, r.token_mix_executions, r.default_input_tokens, r.default_output_tokens) == (
        D(75), 100, 2000, 500)


def test_a_version_without_the_sections_uses_the_defaults():
    bare = parse_catalog(_without_policy(CATALOG_TEXT)).versions[0]
    assert bare.alert_settings() == AlertSettings()
    assert bare.routing_settings() == RoutingSettings()


@pytest.mark.parametrize(("old", "new", "message"), [
    ("budget_thresholds_percent = [50, 80, 100]", "budget_thresholds_percent = [80, 50]",
     "versions[0].alerts.budget_thresholds_percent: must be strictly increasing percentages, got [80, 50]"),
    ("loop_min_history = 20 ", "loop_min_history = 200 ",
     "versions[0].alerts.loop_min_history: 200 is more than loop_history_size (100)"),
    ("loop_kill_multiplier = 3 ", "loop_kill_multiplier = 0 ",
     "versions[0].alerts.loop_kill_multiplier: must be greater than zero"),
    ("quality_threshold = 75", "quality_threshold = 101", "versions[0].routing.quality_threshold"),
    ("trend_history_months = 3", "trend_history_months = 3\n  trend_months = 3",
     "versions[0].alerts.trend_months: Extra inputs are not permitted"),
])
def test_bad_policy_numbers_are_refused_naming_the_field(old, new, message):
    assert old in CATALOG_TEXT
    with pytest.raises(CatalogError) as ei:
        parse_catalog(CATALOG_TEXT.replace(old, new))
    assert message in str(ei.value)


def test_policy_multipliers_take_exact_decimals_never_floats():
    v = parse_catalog(CATALOG_TEXT.replace("trend_multiplier = 2 ", "trend_multiplier = 2.5 ")).versions[0]
    assert v.alert_settings().trend_multiplier == D("2.5")
    with pytest.raises(ValidationError, match="floats are not accepted"):
        AlertSettings(trend_multiplier=2.5)  # type: ignore[arg-type]
