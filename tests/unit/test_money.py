from decimal import Decimal, Inexact, localcontext

import pytest

from billing.errors import MoneyError
from billing.money import CENT, format_rate, format_usd, from_cents, parse_money, round_money, to_cents

D = Decimal


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        ("29.005", "29.01"),
        ("36.725", "36.73"),
        ("0.004", "0.00"),
        ("0.005", "0.01"),
        ("-0.005", "-0.01"),  # half away from zero
        ("1.2349", "1.23"),
        ("12", "12.00"),
        ("123456789012345678901234567890.125", "123456789012345678901234567890.13"),
    ],
)
def test_round_money_rounds_half_away_from_zero_to_two_places(x, expected):
    r = round_money(D(x))
    assert r == D(expected)
    assert r.as_tuple().exponent == -2


def test_round_money_ignores_ambient_context():
    with localcontext() as ctx:
        ctx.prec = 3
        ctx.traps[Inexact] = True
        assert round_money(D("12345.675")) == D("12345.68")
        assert to_cents(D("12345.67")) == 1234567
        assert from_cents(1234567) == D("12345.67")
        assert format_usd(D("12345.675")) == "$12,345.68"


def test_round_money_rejects_float_and_nan():
    with pytest.raises(MoneyError):
        round_money(0.1)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        round_money(D("NaN"))
    with pytest.raises(ValueError):
        round_money(D("Infinity"))


def test_cents_round_trip_exactly():
    assert CENT == D("0.01")
    assert to_cents(D("29.01")) == 2901
    assert to_cents(D("-70.00")) == -7000
    assert to_cents(D("5")) == 500
    assert from_cents(2901) == D("29.01")
    assert from_cents(0) == D("0.00")
    assert str(from_cents(5)) == "0.05"
    for n in (0, 1, 99, 100, 123456, -7000):
        assert to_cents(from_cents(n)) == n


def test_to_cents_requires_whole_cents():
    with pytest.raises(ValueError, match="whole number of cents"):
        to_cents(D("0.005"))
    with pytest.raises(MoneyError):
        from_cents(1.5)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        from_cents(True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12.50", "12.50"), (" 3 ", "3"), ("$1,234.50", "1234.50"), ("0.005", "0.005"), ("1000", "1000"), (D("2.5"), "2.5"), (7, "7")],
)
def test_parse_money_accepts_plain_grouped_and_dollar_amounts(text, expected):
    assert parse_money(text) == D(expected)


@pytest.mark.parametrize("text", ["", "abc", "1e3", "NaN", "inf", "-Infinity", "1.2.3", "1,2,3", "12.", ".5", "12,50"])
def test_parse_money_rejects_garbage(text):
    with pytest.raises(MoneyError, match=r"^budget: "):
        parse_money(text, field="budget")


def test_parse_money_rejects_float_naming_field():
    with pytest.raises(MoneyError) as ei:
        parse_money(0.1, field="price")  # type: ignore[arg-type]
    assert ei.value.field == "price"
    assert "float" in str(ei.value)
    with pytest.raises(MoneyError, match="finite"):
        parse_money(D("NaN"))


def test_parse_money_refuses_negatives_unless_allowed():
    with pytest.raises(MoneyError, match="amount: must not be negative"):
        parse_money("-1.00")
    assert parse_money("-1.00", allow_negative=True) == D("-1.00")
    assert parse_money("-0") == 0


def test_format_usd_groups_thousands_and_puts_the_sign_first():
    assert format_usd(D("1234.5")) == "$1,234.50"
    assert format_usd(D("0")) == "$0.00"
    assert format_usd(D("-70")) == "-$70.00"
    assert format_usd(D("29.005")) == "$29.01"
    assert format_usd(D("1234567.891")) == "$1,234,567.89"


def test_format_rate_keeps_sub_cent():
    assert format_rate(D("0.005")) == "$0.005"
    assert format_rate(D("0.01")) == "$0.01"
    assert format_rate(D("79")) == "$79.00"
    assert format_rate(D("0.0030")) == "$0.003"
    assert format_rate(D("1000")) == "$1,000.00"
