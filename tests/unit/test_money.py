from decimal import Decimal, Inexact, localcontext

import pytest

from billing.errors import MoneyError
from billing.money import CENT, format_rate, format_usd, from_cents, parse_money, round_money, to_cents
from tests.unit.helpers import assert_error

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


# ---- exact errors: each names its field and says what was wrong --------------------------------------
@pytest.mark.parametrize(
    ("call", "message", "field"),
    [
        (lambda: round_money(0.1), "amount: must be a Decimal, not float (0.1)", "amount"),
        (lambda: round_money(True), "amount: must be a Decimal, not bool (True)", "amount"),
        (lambda: round_money("1.00"), "amount: must be a Decimal, not str", "amount"),
        (lambda: round_money(D("NaN")), "amount: must be a finite number, got NaN", "amount"),
        (lambda: to_cents(D("0.005")), "amount: 0.005 is not a whole number of cents; round it first", "amount"),
        (lambda: from_cents(1.5), "cents: cents must be an int, not float", "cents"),
        (lambda: from_cents(True), "cents: cents must be an int, not bool", "cents"),
        (lambda: parse_money(0.1, field="price"),
         "price: must be a decimal string such as '12.50', not a float (0.1); floats cannot represent money exactly",
         "price"),
        (lambda: parse_money(True), "amount: must be a decimal string such as '12.50', not a bool (True); "
                                    "floats cannot represent money exactly", "amount"),
        (lambda: parse_money(D("NaN"), field="x"), "x: must be a finite amount, got NaN", "x"),
        (lambda: parse_money("abc", field="budget"), "budget: must be a decimal amount such as '12.50', got 'abc'",
         "budget"),
        (lambda: parse_money([1], field="budget"), "budget: must be a decimal string, not list", "budget"),
        (lambda: parse_money("-2.50", field="budget"), "budget: must not be negative, got -2.50", "budget"),
    ],
)
def test_money_errors_name_the_field_and_the_reason(call, message, field):
    assert_error(MoneyError, call, message, field)


def test_round_money_takes_whole_ints():
    assert round_money(5) == D("5.00") and str(round_money(5)) == "5.00"


def test_huge_amounts_round_and_convert_exactly_whatever_their_exponent():
    # precision follows the number: 41 integer digits need more than the usual 28
    assert round_money(D("1E+40")) == D(10) ** 40
    assert str(round_money(D("1E+40"))) == "1" + "0" * 40 + ".00"
    assert to_cents(D("1E+30")) == 10**32


def test_parse_money_never_returns_negative_zero():
    assert str(parse_money("-0.00")) == "0.00"
    assert str(parse_money("-0", allow_negative=True)) == "0"


def test_format_rate_keeps_every_digit_of_a_long_rate_and_signs_negatives():
    long_rate = "0.12345678901234567890123456789012345"  # 35 significant digits
    assert format_rate(D(long_rate)) == "$" + long_rate
    assert format_rate(D("1." + "1" * 34)) == "$1." + "1" * 34
    assert format_rate(D("-0.005")) == "-$0.005"
    assert format_rate(D("0")) == "$0.00"
    assert format_rate(D("0.000")) == "$0.00"


def test_round_money_is_exact_at_every_size_whatever_was_rounded_before():
    # The contexts are made once per precision and reused (billing.money._context_for): rounding a
    # small amount first must not leave a too-narrow context for a huge one, nor the other way round.
    from decimal import ROUND_HALF_UP, Context

    def reference(x: Decimal) -> Decimal:
        digits = max(28, len(x.as_tuple().digits) + 2, x.adjusted() + 4)
        return x.quantize(CENT, rounding=ROUND_HALF_UP, context=Context(prec=digits, rounding=ROUND_HALF_UP))

    values = [D("0.005"), D("9" * 60 + ".995"), D("1.2349"), D("-" + "4" * 120 + ".125"), D("0.00000001"),
              D("123456789012345678901234567890123.455"), D("7"), D("-0.004")]
    for order in (values, values[::-1]):
        for x in order:
            r = round_money(x)
            assert r == reference(x) and r.as_tuple() == reference(x).as_tuple()
    assert round_money(D("9" * 60 + ".995")) == D("1" + "0" * 60)
    assert format_usd(D("-" + "4" * 40 + ".125")) == "-$" + f"{int('4' * 40):,}" + ".13"


def test_format_rate_depends_only_on_the_value():
    # billing.rating remembers the text of each rate by value: equal Decimals must give equal text.
    for a, b in [("0.5", "0.50"), ("0.500000", "0.5"), ("79", "79.00"), ("0.005", "0.0050"), ("0", "0.000"),
                 ("-0", "0"), ("1E+2", "100"), ("2.5E-7", "0.00000025"), ("1234.5", "1234.500")]:
        assert D(a) == D(b)
        assert format_rate(D(a)) == format_rate(D(b))
