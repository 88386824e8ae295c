"""Every custom search attribute of Tally, named once.

Workflows upsert these keys; services set them when they start a workflow; the capability registry
(capabilities/__init__.py) says which capability uses which, and everything that registers attributes on a
Temporal namespace (the dev stack, the test fixtures, deploy/temporal/search-attributes.txt, checked by
a test) reads the list from the registry. Ops query them in the Temporal UI, e.g.
``BillingAccountIds = 'acct_42' AND BillingPeriod = '2026-10'``.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

BILLING_PERIOD = SearchAttributeKey.for_keyword("BillingPeriod")
"""``YYYY-MM``: on every workflow that works on one billing period."""

BILLING_ACCOUNT_IDS = SearchAttributeKey.for_keyword_list("BillingAccountIds")
"""The accounts a run billed (close chunks, invoice pushes)."""

METER_DRIFT = SearchAttributeKey.for_int("MeterDrift")
"""Account-meter totals whose Stripe meter summary differs from Tally's (meter reconciliation, and the
close that ran it): ``MeterDrift > 0 AND BillingPeriod = '2026-10'``."""

METER_FAILURES = SearchAttributeKey.for_int("MeterFailures")
"""Meter events an hour's usage report (or a scheduled run) could not send: ``MeterFailures > 0``."""

ANOMALY_STATE = SearchAttributeKey.for_keyword("AnomalyState")
"""``open`` (waiting for a person's decision), ``confirmed`` (kept paused), ``resumed``: on every
``anomaly-<account>-<start>`` workflow. Ops find the open ones with ``AnomalyState = 'open'``."""

PAYOUT_STATUS = SearchAttributeKey.for_keyword("PayoutStatus")
"""``failed`` (waiting for ops: ``tally payouts retry|cancel``), ``paid``, ``cancelled``: on every
``payout-<creator>-<YYYY-MM>`` workflow. Ops find the failed ones with ``PayoutStatus = 'failed'``."""


def kind_name(key: SearchAttributeKey) -> str:
    """The CLI/operator name of a key's type: Keyword, KeywordList, Text, Int, Double, Bool, Datetime."""
    names = {
        "KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList", "TEXT": "Text", "INT": "Int",
        "FLOAT": "Double", "BOOL": "Bool", "DATETIME": "Datetime",
    }
    return names[key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")]
