from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from billing.catalog import (
    Catalog,
    CatalogVersion,
    LlmModel,
    ModelClass,
    Plan,
    default_catalog,
    load_catalog,
    parse_catalog,
)
from billing.errors import CatalogError

D = Decimal
UTC = timezone.utc
CATALOG_TEXT = (Path(__file__).resolve().parents[2] / "billing" / "catalog.toml").read_text()

# The brief's token table: cost in/out, user price in/out (per 1M tokens), class.
BRIEF_MODELS = {
    "claude-haiku": ("0.25", "1.25", "0.50", "2.50", "fast"),
    "claude-sonnet": ("3.00", "15.00", "6.00", "30.00", "standard"),
    "gpt-4o-mini": ("0.15", "0.60", "0.30", "1.20", "fast"),
    "gpt-4o": ("2.50", "10.00", "5.00", "20.00", "standard"),
    "groq-llama": ("0.05", "0.08", "0.10", "0.16", "fast"),
    "deepseek-r1": ("0", "0", "0.05", "0.10", "fast"),
    "ollama-local": ("0", "0", "0.02", "0.05", "fast"),
    "claude-opus": ("15.00", "75.00", "30.00", "150.00", "heavy"),
}


@pytest.fixture(scope="module")
def v() -> CatalogVersion:
    return load_catalog().versions[0]


def _walk(obj):
    if isinstance(obj, dict):
        for x in obj.values():
            yield from _walk(x)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _walk(x)
    else:
        yield obj


def test_packaged_catalog_loads_by_default_and_from_a_path_alike():
    c = load_catalog()
    assert len(c.versions) == 1
    v = c.versions[0]
    assert v.version == "2026-01-01.1"
    assert v.effective_from == datetime(2026, 1, 1, tzinfo=UTC)
    assert v.effective_from.utcoffset() == timedelta(0)
    assert v.currency == "usd"
    assert v.markup == D(2)
    assert load_catalog(Path(__file__).resolve().parents[2] / "billing" / "catalog.toml") == c
    assert default_catalog() is default_catalog()
    assert default_catalog() == c


def test_no_floats_anywhere():
    for value in _walk(load_catalog().model_dump()):
        assert not isinstance(value, float), value


def test_plans_match_brief(v):
    assert list(v.plans) == ["free", "pro", "team", "payg", "enterprise"]
    free, pro, team, payg, ent = (v.plan(c) for c in v.plans)
    assert (free.monthly_fee, free.included_executions, free.overage_rate) == (0, 100, None)
    assert (pro.monthly_fee, pro.included_executions, pro.overage_rate, pro.overage_requires_opt_in) == (
        D("29"), 5000, D("0.005"), True)
    assert (team.monthly_fee, team.fee_per_seat, team.included_executions, team.overage_rate,
            team.overage_requires_opt_in) == (D("79"), True, 25000, D("0.003"), True)
    assert (payg.monthly_fee, payg.included_executions, payg.overage_rate, payg.overage_requires_opt_in,
            payg.usage_cap) == (0, 0, D("0.01"), False, D("50.00"))
    assert ent.contract and ent.monthly_fee == 0 and ent.included_executions == 0 and ent.overage_rate is None
    for p in (free, pro, team, payg):
        assert not p.contract
    assert payg.name == "Pay-as-you-go"
    for p in v.plans.values():
        assert isinstance(p.monthly_fee, Decimal)


def test_models_match_brief(v):
    assert set(v.models) == set(BRIEF_MODELS)
    for code, (ci, co, pi, po, cls) in BRIEF_MODELS.items():
        m = v.model(code)
        assert m.code == code
        assert m.model_class is ModelClass(cls)
        assert (m.cost_input_per_mtok, m.cost_output_per_mtok) == (D(ci), D(co))
        assert m.user_price_input(v.markup) == D(pi), code
        assert m.user_price_output(v.markup) == D(po), code
        assert isinstance(m.user_price_input(v.markup), Decimal)
    explicit = {c for c, m in v.models.items() if m.price_input_per_mtok is not None or m.price_output_per_mtok is not None}
    assert explicit == {"deepseek-r1", "ollama-local"}


def test_credit_costs_per_execution_match_the_brief(v):
    assert v.credit_cost == {"fast": 1, "standard": 5, "heavy": 25, "sandbox": 2, "byok": 1}


def test_unknown_plan_or_model_error_lists_the_known_ones(v):
    with pytest.raises(CatalogError) as ei:
        v.plan("gold")
    assert str(ei.value) == "plan: unknown plan 'gold'; known plans: free, pro, team, payg, enterprise"
    assert isinstance(ei.value, ValueError)
    with pytest.raises(CatalogError, match="unknown model 'gpt-5'; known models: claude-haiku, "):
        v.model("gpt-5")


def test_digest_stable_and_sensitive(v):
    d = v.digest()
    assert len(d) == 64 and int(d, 16) >= 0
    assert load_catalog().versions[0].digest() == d
    # representation of the same value does not matter ...
    same = parse_catalog(CATALOG_TEXT.replace("monthly_fee = 29.00", 'monthly_fee = "29"')).versions[0]
    assert same.digest() == d
    # ... a price does.
    other = parse_catalog(CATALOG_TEXT.replace("overage_rate = 0.005", "overage_rate = 0.006")).versions[0]
    assert other.digest() != d


def test_prices_as_strings_become_decimal():
    c = parse_catalog(CATALOG_TEXT.replace("overage_rate = 0.005", 'overage_rate = "0.005"'))
    assert c.versions[0].plan("pro").overage_rate == D("0.005")


def test_python_float_price_is_rejected():
    with pytest.raises(ValidationError, match="floats are not accepted"):
        Plan(code="x", name="X", monthly_fee=0.1, included_executions=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="floats are not accepted"):
        LlmModel(code="m", display_name="M", model_class="fast", cost_input_per_mtok=0.25,  # type: ignore[arg-type]
                 cost_output_per_mtok=D(1))


def test_catalog_entries_cannot_be_changed_in_place(v):
    with pytest.raises(ValidationError):
        v.plan("pro").monthly_fee = D(1)  # type: ignore[misc]


# ---- versions --------------------------------------------------------------------------------
def _version_block(version: str, effective: str, pro_fee: str = "29.00") -> str:
    block = CATALOG_TEXT.split("\n[[versions]]\n", 1)[1]
    block = block.replace('version = "2026-01-01.1"', f'version = "{version}"')
    block = block.replace("effective_from = 2026-01-01T00:00:00Z", f"effective_from = {effective}")
    block = block.replace("monthly_fee = 29.00", f"monthly_fee = {pro_fee}")
    return "[[versions]]\n" + block


def _two_versions() -> Catalog:
    text = _version_block("2026-01-01.1", "2026-01-01T00:00:00Z") + "\n" + _version_block(
        "2026-07-01.1", "2026-07-01T00:00:00Z", "35.00")
    return parse_catalog(text)


def test_at_boundary_belongs_to_new_version():
    c = _two_versions()
    switch = datetime(2026, 7, 1, tzinfo=UTC)
    assert c.at(switch).version == "2026-07-01.1"
    assert c.at(switch - timedelta(microseconds=1)).version == "2026-01-01.1"
    assert c.at(datetime(2030, 1, 1, tzinfo=UTC)).plan("pro").monthly_fee == D(35)
    assert c.at(datetime(2026, 1, 1, tzinfo=UTC)).version == "2026-01-01.1"
    # the instant in another zone
    assert c.at(datetime(2026, 7, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))).version == "2026-07-01.1"
    assert c.latest.version == "2026-07-01.1"
    assert c.version("2026-01-01.1").plan("pro").monthly_fee == D(29)
    with pytest.raises(CatalogError, match="unknown catalog version"):
        c.version("nope")


def test_at_refuses_instants_before_the_first_version_and_naive_ones():
    c = load_catalog()
    with pytest.raises(CatalogError, match="no catalog version in force"):
        c.at(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))
    with pytest.raises(CatalogError, match="timezone-aware"):
        c.at(datetime(2026, 5, 1))


def test_versions_overlapping_lists_versions_in_force_during_a_window():
    c = _two_versions()
    ids = lambda vs: [v.version for v in vs]  # noqa: E731
    jun = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
    jul = (datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 8, 1, tzinfo=UTC))
    assert ids(c.versions_overlapping(*jun)) == ["2026-01-01.1"]
    assert ids(c.versions_overlapping(*jul)) == ["2026-07-01.1"]
    assert ids(c.versions_overlapping(jun[0], jul[1])) == ["2026-01-01.1", "2026-07-01.1"]
    assert ids(c.versions_overlapping(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC))) == []
    with pytest.raises(CatalogError):
        c.versions_overlapping(jul[1], jul[0])


def test_versions_must_have_strictly_increasing_effective_dates():
    text = _version_block("b", "2026-07-01T00:00:00Z") + "\n" + _version_block("a", "2026-01-01T00:00:00Z")
    with pytest.raises(CatalogError) as ei:
        parse_catalog(text, "cat.toml")
    assert ei.value.field == "versions[1].effective_from"
    assert "oldest first" in str(ei.value)
    same = _version_block("a", "2026-01-01T00:00:00Z") + "\n" + _version_block("b", "2026-01-01T00:00:00Z")
    with pytest.raises(CatalogError, match="must be later"):
        parse_catalog(same)


def test_version_ids_must_be_unique():
    text = _version_block("a", "2026-01-01T00:00:00Z") + "\n" + _version_block("a", "2026-07-01T00:00:00Z")
    with pytest.raises(CatalogError, match=r"versions\[1\]\.version: duplicate version id 'a'"):
        parse_catalog(text)


def test_catalog_needs_at_least_one_version():
    with pytest.raises(CatalogError, match="versions"):
        parse_catalog("versions = []")
    with pytest.raises(CatalogError, match="versions"):
        parse_catalog("")


# ---- bad files --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "field", "reason"),
    [
        ("monthly_fee = 29.00", 'monthly_fee = "abc"', "versions[0].plans.pro.monthly_fee", "decimal"),
        ("monthly_fee = 29.00", "monthly_fee = 29.001", "versions[0].plans.pro.monthly_fee", "whole number of cents"),
        ("overage_rate = 0.005", "overage_rate = -0.005", "versions[0].plans.pro.overage_rate", "negative"),
        ("included_executions = 5000", 'included_executions = "5000"', "versions[0].plans.pro.included_executions", "integer"),
        ('model_class = "heavy"', 'model_class = "huge"', "versions[0].models.claude-opus.model_class", "fast"),
        ('name = "Pro"', 'name = "Pro"\n  seats = 3', "versions[0].plans.pro.seats", "Extra inputs"),
        ("usage_cap = 50.00", "usage_cap = 0", "versions[0].plans.payg.usage_cap", "greater than zero"),
        ("effective_from = 2026-01-01T00:00:00Z", "effective_from = 2026-01-01T00:00:00",
         "versions[0].effective_from", "timezone-aware"),
        ('currency = "usd"', 'currency = "eur"', "versions[0].currency", "usd"),
        ("markup = 2 ", "markup = 0 ", "versions[0].markup", "greater than zero"),
        ("  byok = 1\n", "", "versions[0].credit_cost", "missing byok"),
        ("[versions.plans.pro]\n", '[versions.plans.pro]\n  code = "pro2"\n', "versions[0].plans.pro.code", "does not match"),
        ("  amount = 1100\n", "  amount = 1100.5\n", "versions[0].credits.packages.starter.amount", "whole numbers"),
        ("  amount = 55.00\n", "  amount = 55.001\n", "versions[0].credits.packages.prepaid-50.amount", "cents"),
        ('  unit = "usd"\n', '  unit = "eur"\n', "versions[0].credits.packages.prepaid-50.unit", "credits"),
        ("  price = 10.00\n", "  price = 0\n", "versions[0].credits.packages.starter.price", "greater than zero"),
        ("  expiry_months = 12\n", "  expiry_months = 0\n", "versions[0].credits.expiry_months", "greater than"),
        ("  share_percent = 30 ", "  share_percent = 130 ", "versions[0].creators.share_percent", "at most 100"),
        ("  fixed_price_max = 0.50\n", "  fixed_price_max = 0.005\n", "versions[0].creators.fixed_price_max",
         "cents"),
        ("  fixed_price_max = 0.50\n", "  fixed_price_max = 0.00\n", "versions[0].creators.fixed_price_max",
         "at least fixed_price_min"),
    ],
)
def test_bad_file_names_file_field_and_reason(tmp_path, old, new, field, reason):
    assert old in CATALOG_TEXT
    bad = tmp_path / "bad.toml"
    bad.write_text(CATALOG_TEXT.replace(old, new, 1))
    with pytest.raises(CatalogError) as ei:
        load_catalog(bad)
    msg = str(ei.value)
    assert str(bad) in msg
    assert field in msg
    assert reason in msg
    assert ei.value.field == field
    assert "Tuple should have" not in msg


def test_broken_toml_and_missing_file_name_the_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[[versions]\n")
    with pytest.raises(CatalogError, match=r"broken\.toml: not valid TOML"):
        load_catalog(bad)
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.toml")


# ---- optional sections: credit packages and creator terms -------------------------------------------
def _without_optional_sections(text: str) -> str:
    return text[: text.index("  # -- Prepaid credits")]


def test_a_catalog_without_credits_or_creators_sections_still_parses():
    v = parse_catalog(_without_optional_sections(CATALOG_TEXT)).versions[0]
    assert v.credits is None and v.creators is None
    with pytest.raises(CatalogError) as ei:
        v.credit_package("growth")
    assert ei.value.field == "package"
    with pytest.raises(CatalogError) as ei:
        v.creator_terms()
    assert ei.value.field == "creators"


def test_packages_and_creator_terms_are_read_as_decimals(v):
    assert v.credit_package("growth").price == D("50.00") and v.credit_package("prepaid-50").amount == D("55.00")
    assert v.creator_terms().minimum_payout == D("25.00")
    with pytest.raises(CatalogError, match="unknown credit package 'mega'; known packages: starter, growth, scale, prepaid-50"):
        v.credit_package("mega")


def test_adding_an_optional_section_keeps_the_digest_of_versions_without_it():
    from billing.catalog import OPTIONAL_SECTIONS

    v = load_catalog().versions[0]
    bare = v.model_copy(update={name: None for name in OPTIONAL_SECTIONS})
    assert bare.canonical_json() == bare.model_copy().canonical_json()
    assert all(f'"{name}"' not in bare.canonical_json() for name in OPTIONAL_SECTIONS)
    # the shipped version is the bare one plus its sections: it may replace a recorded bare document
    assert v.only_adds_sections_to(bare.digest(), recorded_sections=set())
    assert not bare.only_adds_sections_to(bare.digest(), recorded_sections=set())  # nothing added


def test_a_changed_price_is_not_an_added_section():
    from billing.catalog import OPTIONAL_SECTIONS

    v = load_catalog().versions[0]
    bare = v.model_copy(update={name: None for name in OPTIONAL_SECTIONS})
    pro = bare.plans["pro"].model_copy(update={"monthly_fee": D("30.00")})
    changed = v.model_copy(update={"plans": {**v.plans, "pro": pro}})
    assert not changed.only_adds_sections_to(bare.digest(), recorded_sections=set())

# ---- the digest is a stored identity: it must never change for the same content ------------------------
@pytest.fixture
def tokyo(monkeypatch):
    """The machine's time zone must not leak into anything the catalog computes."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_digest_of_the_packaged_version_is_pinned_because_databases_store_it(tokyo):
    # catalog_versions rows keep this digest; a changed canonical form would make every stored version
    # look edited and be refused. (The version as recorded before it gained its optional sections.)
    from billing.catalog import OPTIONAL_SECTIONS

    v = load_catalog().versions[0].model_copy(update={name: None for name in OPTIONAL_SECTIONS})
    assert v.digest() == "7de49c3b6d55491f432157ce9e138bf30c35d157a0c1ea2ddae2a4ac8401729c"
    assert v.canonical_json().startswith(
        '{"credit_cost":{"byok":1,"fast":1,"heavy":25,"sandbox":2,"standard":5},"currency":"usd",'
        '"effective_from":"2026-01-01T00:00:00+00:00","markup":"2","models":{"claude-haiku":{"code":"claude-haiku",'
        '"cost_input_per_mtok":"0.25","cost_output_per_mtok":"1.25","display_name":"Claude Haiku","model_class":"fast"')
    assert '"usage_cap":"50"' in v.canonical_json() and '"monthly_fee":"0"' in v.canonical_json()


def test_canonical_form_keeps_text_unescaped_and_every_digit_of_a_price():
    text = (CATALOG_TEXT.replace('display_name = "Claude Haiku"', 'display_name = "Modèle Haiku"')
            .replace("cost_input_per_mtok = 0.25", "cost_input_per_mtok = 0.123456789012345678901234567890123")
            .replace("cost_output_per_mtok = 1.25", "cost_output_per_mtok = 1.00"))
    canonical = parse_catalog(text).versions[0].canonical_json()
    assert '"display_name":"Modèle Haiku"' in canonical
    assert '"cost_input_per_mtok":"0.123456789012345678901234567890123"' in canonical
    assert '"cost_output_per_mtok":"1"' in canonical


# ---- exact errors --------------------------------------------------------------------------------------
def test_versions_lookup_errors_name_the_field(tokyo):
    c = _two_versions()
    with pytest.raises(CatalogError) as ei:
        c.version("nope")
    assert str(ei.value) == "catalog_version: unknown catalog version 'nope'; known: 2026-01-01.1, 2026-07-01.1"
    with pytest.raises(CatalogError) as ei:
        c.at(datetime(2026, 5, 1))
    assert str(ei.value) == "ts: must be a timezone-aware datetime, got datetime.datetime(2026, 5, 1, 0, 0)"
    with pytest.raises(CatalogError) as ei:
        c.at(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert str(ei.value) == ("ts: no catalog version in force at 2025-12-31T23:59:59+00:00; the first "
                             "(2026-01-01.1) is effective from 2026-01-01T00:00:00+00:00")
    with pytest.raises(CatalogError) as ei:
        c.versions[0].model("gpt-5")
    assert ei.value.field == "model"


def test_zoneinfo_instants_find_their_version():
    from zoneinfo import ZoneInfo

    assert _two_versions().at(datetime(2026, 7, 1, 2, 0, tzinfo=ZoneInfo("Europe/Paris"))).version == "2026-07-01.1"


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (datetime(2026, 7, 1), datetime(2026, 8, 1, tzinfo=UTC),
         "start: must be a timezone-aware datetime, got datetime.datetime(2026, 7, 1, 0, 0)"),
        (datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 8, 1),
         "end: must be a timezone-aware datetime, got datetime.datetime(2026, 8, 1, 0, 0)"),
        ("2026-07-01", datetime(2026, 8, 1, tzinfo=UTC), "start: must be a timezone-aware datetime, got '2026-07-01'"),
        (datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC),
         "end: must be after start (2026-07-01T00:00:00+00:00), got 2026-07-01T00:00:00+00:00"),
    ],
)
def test_versions_overlapping_rejects_a_bad_window_naming_the_bound(start, end, message):
    with pytest.raises(CatalogError) as ei:
        _two_versions().versions_overlapping(start, end)
    assert str(ei.value) == message


def test_versions_overlapping_with_three_versions_ends_each_at_the_next():
    text = "\n".join([_version_block("jan", "2026-01-01T00:00:00Z"), _version_block("jul", "2026-07-01T00:00:00Z"),
                      _version_block("oct", "2026-10-01T00:00:00Z")])
    c = parse_catalog(text)
    aug = [v.version for v in c.versions_overlapping(datetime(2026, 8, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC))]
    assert aug == ["jul"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("monthly_fee = 29.00", "monthly_fee = true", "versions[0].plans.pro.monthly_fee: must be a decimal amount, not a boolean"),
        ("monthly_fee = 29.00", 'monthly_fee = "NaN"', "versions[0].plans.pro.monthly_fee: Input should be a finite number"),
        ('[versions.plans.pro]\n', '[versions.plans."json-lines"]\n  monthly_fee = -1\n  name = "J"\n  included_executions = 1\n'
                                   '[versions.plans.pro]\n',
         'versions[0].plans.json-lines.monthly_fee: must not be negative, got -1'),
        ('[versions.plans.pro]\n', '[versions.plans."pro[eu]"]\n  monthly_fee = -1\n  name = "P"\n  included_executions = 1\n'
                                   '[versions.plans.pro]\n',
         'versions[0].plans.pro[eu].monthly_fee: must not be negative, got -1'),
    ],
)
def test_bad_value_messages_name_the_path_exactly(old, new, message):
    with pytest.raises(CatalogError) as ei:
        parse_catalog(CATALOG_TEXT.replace(old, new, 1))
    assert str(ei.value) == f"<catalog>: invalid catalog: {message}"
    assert ei.value.field == message.split(": ", 1)[0]


def test_python_float_message_says_how_to_write_a_price():
    with pytest.raises(ValidationError) as ei:
        Plan(code="x", name="X", monthly_fee=0.1, included_executions=1)  # type: ignore[arg-type]
    assert ('floats are not accepted for prices (0.1); write a decimal such as "0.005" '
            "(the TOML loader reads bare decimals exactly)") in str(ei.value)


def test_a_markup_of_one_and_a_cap_of_one_dollar_are_valid():
    c = parse_catalog(CATALOG_TEXT.replace("markup = 2 ", "markup = 1 ").replace("usage_cap = 50.00", "usage_cap = 1.00"))
    assert c.versions[0].markup == 1 and c.versions[0].plan("payg").usage_cap == D("1.00")


def test_malformed_tables_are_catalog_errors_listing_every_problem():
    with pytest.raises(CatalogError) as ei:
        parse_catalog("versions = [1]")
    assert str(ei.value) == ("<catalog>: invalid catalog: versions[0]: Input should be a valid dictionary or "
                             "instance of CatalogVersion")
    with pytest.raises(CatalogError) as ei:
        parse_catalog('[[versions]]\nversion = "a"\n[versions.plans]\npro = 5')
    assert str(ei.value).startswith("<catalog>: invalid catalog: versions[0].effective_from: Field required; "
                                    "versions[0].markup: Field required; versions[0].plans.pro: Input should be")
    assert ei.value.field == "versions[0].effective_from"


def test_packaged_catalog_that_cannot_be_read_names_its_path(monkeypatch):
    import billing.catalog as catalog_module

    monkeypatch.setattr(catalog_module, "DEFAULT_CATALOG_FILE", "missing.toml")
    with pytest.raises(CatalogError) as ei:
        load_catalog()
    assert str(ei.value).startswith(str(Path(catalog_module.__file__).parent / "missing.toml") + ": cannot read: ")


def test_catalog_files_are_read_as_utf8_whatever_the_locale(tmp_path, monkeypatch):
    import locale

    import billing.catalog as catalog_module

    (tmp_path / "catalog.toml").write_text(
        CATALOG_TEXT.replace('display_name = "Claude Haiku"', 'display_name = "Modèle Haiku"'), encoding="utf-8")
    monkeypatch.setattr(catalog_module.resources, "files", lambda package: tmp_path)
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale: the default encoding would fail on "è"
    try:
        assert load_catalog().versions[0].model("claude-haiku").display_name == "Modèle Haiku"
        assert load_catalog(tmp_path / "catalog.toml").versions[0].model("claude-haiku").display_name == "Modèle Haiku"
    finally:
        locale.setlocale(locale.LC_CTYPE, before)


def test_versions_overlapping_accepts_zoneinfo_bounds():
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    found = _two_versions().versions_overlapping(datetime(2026, 7, 1, 2, tzinfo=paris), datetime(2026, 8, 1, tzinfo=paris))
    assert [v.version for v in found] == ["2026-07-01.1"]
