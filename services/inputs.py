"""Checks of the input every service shares: ids and periods, refused with the field named."""

from __future__ import annotations

import re

from billing.periods import Period
from services.errors import InvalidInput, refused_input

ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
ID_RULE = "1-64 characters of letters, digits, '_', '.', ':' or '-'"


def check_id(value: str, field: str = "account_id") -> None:
    """Account ids (and platform names) are 1-64 letters, digits, '_', '.', ':' or '-'."""
    if not ACCOUNT_ID.match(value):
        raise InvalidInput(field, ID_RULE)


def parse_period(text: str, field: str = "period") -> Period:
    """A calendar month, ``YYYY-MM``."""
    with refused_input(field):
        return Period.parse(text)
