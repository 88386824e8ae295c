"""Tally's pure billing core: money, periods, the versioned catalog and rating. No I/O, no clock."""

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
from billing.errors import BillingError, CatalogError, MoneyError, PeriodError, RatingError
from billing.money import CENT, format_usd, from_cents, parse_money, round_money, to_cents
from billing.periods import Period
from billing.rating import (
    AccountTerms,
    LineKind,
    ModelUsage,
    RatedInvoice,
    RatedLine,
    included_executions,
    rate_period,
    split_billable,
)

__all__ = [
    "AccountTerms", "BillingError", "CENT", "Catalog", "CatalogError", "CatalogVersion", "LineKind",
    "LlmModel", "ModelClass", "ModelUsage", "MoneyError", "Period", "PeriodError", "Plan",
    "RatedInvoice", "RatedLine", "RatingError", "default_catalog", "format_usd", "from_cents",
    "included_executions", "load_catalog", "parse_catalog", "parse_money", "rate_period",
    "round_money", "split_billable", "to_cents",
]
