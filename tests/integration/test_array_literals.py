"""Array parameters written as Postgres array literals (repositories/arrays.py) read back in Postgres as
exactly the values they were made of: any text (quotes, backslashes, braces, commas, spaces, the word
NULL, the empty string, any Unicode Postgres stores), None, bigints at both ends, booleans and Decimals
of any scale; and what is not of the array's type is refused before it reaches Postgres."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from models.db import libpq_url
from repositories.arrays import bool_array, int_array, numeric_array, text_array

# Postgres text holds any character but NUL; surrogates are not valid UTF-8.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
BIGINT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
DECIMAL = st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e12"),
                      max_value=Decimal("1e12"), places=None)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def pg(database_url):
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        yield conn


def back(pg, literal: str, pg_type: str) -> list:
    return pg.execute(f"SELECT %s::{pg_type}", (literal,)).fetchone()[0]


@FAST
@given(st.lists(st.one_of(TEXT, st.none()), max_size=20))
@example(['', 'NULL', 'null', '"', '\\', '\\"', '{a,b}', ' lead', 'trail ', 'a,b', '}{', "it's", 'é ☃ 𝄞'])
@example([None, 'NULL', None])
def test_any_text_and_none_read_back_as_themselves(pg, values):
    assert back(pg, text_array(values), "text[]") == values


@FAST
@given(st.lists(BIGINT, max_size=20), st.lists(st.booleans(), max_size=20))
@example([-(2**63), 0, 2**63 - 1], [True, False])
def test_bigints_and_booleans_read_back_as_themselves(pg, ints, bools):
    assert back(pg, int_array(ints), "bigint[]") == ints
    assert back(pg, bool_array(bools), "boolean[]") == bools


@FAST
@given(st.lists(st.one_of(DECIMAL, st.integers(min_value=-10**12, max_value=10**12)), max_size=20))
@example([Decimal("1E-8"), Decimal("-0"), Decimal("0.00000000"), Decimal("12.50"), Decimal("1E+3"), 7])
def test_decimals_read_back_with_their_value_and_scale(pg, values):
    got = back(pg, numeric_array(values), "numeric[]")
    assert got == values
    # the scale too (12.50 stays 12.50), where the Decimal has one (1E+3 reads back as 1000: the same
    # number, numeric has no positive exponent; numeric has no -0 either)
    assert [g.as_tuple().exponent for g, v in zip(got, values) if isinstance(v, Decimal) and v.as_tuple().exponent <= 0] == \
        [v.as_tuple().exponent for v in values if isinstance(v, Decimal) and v.as_tuple().exponent <= 0]


def test_an_empty_list_is_an_empty_array(pg):
    assert back(pg, text_array([]), "text[]") == []
    assert back(pg, numeric_array([]), "numeric[]") == []


@pytest.mark.parametrize("make, value", [
    (int_array, True), (int_array, 1.0), (int_array, "1"), (int_array, None),
    (bool_array, 1), (bool_array, None),
    (numeric_array, 0.1), (numeric_array, True), (numeric_array, Decimal("NaN")), (numeric_array, Decimal("Infinity")),
    (numeric_array, None),
])
def test_a_value_not_of_the_arrays_type_is_refused(make, value):
    with pytest.raises(TypeError, match=make.__name__):
        make([1 if make is not bool_array else True, value])
