"""Pricing accounts for a period from the database: the one path the close, the invoice preview,
``invoices explain`` and the API's month-to-date charges share, so none of them can disagree with the
close on the same data.

Here the facts are LOADED (terms, usage ranked against the pooled quota, late usage and what was
billed for it); ``billing.close`` DECIDES (pure). The included quota is computed between the two
queries because the database ranks executions against it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection

from billing import close, contracts, conversion
from billing import terms as terms_rules
from billing.catalog import Catalog, version_windows
from billing.close import AccountFacts, AccountRating, ConversionFacts, EnterpriseFacts, LateUsage, PremiumFacts
from billing.credits import split_credit_funded
from billing.periods import Period
from billing.rating import TermsSegment, UsageRow, pooled_included
from repositories import accounts, invoices, usage
from repositories import credits as credit_rows
from repositories import contracts as contract_rows
from repositories import payouts as payout_rows

# How far back a close looks for usage that arrived after its period was invoiced.
LATE_USAGE_LOOKBACK_PERIODS = 3

__all__ = ["LATE_USAGE_LOOKBACK_PERIODS", "AccountRating", "ChunkFacts", "terms_segments", "load_facts",
           "load_chunk", "rate_accounts"]


def terms_segments(conn: Connection, account_ids: list[str], period: Period) -> dict[str, list[TermsSegment]]:
    """Each account's terms over the period as whole-day segments (accounts whose billing starts
    later are absent)."""
    out = {}
    for account_id, history in accounts.terms_histories(conn, account_ids, before=period.end).items():
        segs = terms_rules.segments(history, period)
        if segs:
            out[account_id] = segs
    return out


def load_facts(conn: Connection, catalog: Catalog, period: Period, account_ids: list[str],
               usage_end: datetime | None = None, late_usage: bool = False,
               known_at: datetime | None = None) -> dict[str, AccountFacts]:
    """What rating each account's period needs: its segments, its usage up to ``usage_end`` (default:
    the period end) ranked against its pooled quota, and with ``late_usage`` the earlier periods that
    received executions after their invoice was final. Accounts not billed in the period are absent.
    ``known_at``: only the executions ingested by then (``invoices verify`` re-rates what a close saw)."""
    segments = terms_segments(conn, account_ids, period)
    end = min(usage_end or period.end, period.end)
    enterprise = _enterprise_facts(conn, catalog, period, segments, end)
    rated = {a: (list(enterprise[a].split.rated_segments) if a in enterprise else segs)
             for a, segs in segments.items()}
    included = {a: pooled_included(catalog, period.start, period.end, segs) if segs else 0
                for a, segs in rated.items()}
    rows = usage.usage_rows(conn, period.start, end, {a: s for a, s in rated.items() if s}, included,
                            version_windows(catalog, period.start, period.end),
                            known_at=known_at) if end > period.start else {}
    rows = _with_credit_funded(conn, catalog, period, end, rated, rows, known_at)
    late = _late_usage(conn, catalog, period, list(segments)) if late_usage else {}
    premium = _premium_facts(conn, period, end, {a: n for a, n in included.items() if a not in enterprise},
                             known_at)
    return {
        a: AccountFacts(a, rated[a], rows.get(a, []), included[a], late.get(a, ()), enterprise=enterprise.get(a),
                        premium=premium.get(a))
        for a in account_ids if a in segments
    }


def _premium_facts(conn: Connection, period: Period, usage_end: datetime, included: dict[str, int],
                   known_at: datetime | None) -> dict[str, PremiumFacts]:
    """The accounts that ran premium skills in the period (none, and no query, while no skill is premium);
    enterprise accounts are left out (their contract lines are not attributed to skills)."""
    skills = payout_rows.premium_skills_in_force(conn)
    if not skills or usage_end <= period.start:
        return {}
    usage_of = payout_rows.premium_usage(conn, period.start, usage_end, included, sorted(skills), known_at)
    return {a: PremiumFacts(rows, skills) for a, rows in usage_of.items()}
def _with_credit_funded(conn: Connection, catalog: Catalog, period: Period, end: datetime,
                        segments: dict[str, list[TermsSegment]], rows: dict[str, list],
                        known_at: datetime | None) -> dict[str, list]:
    """Take the executions prepaid credits paid for out of the charged rows (``billing.credits
    .split_credit_funded``): the close shows them and charges the rest. No credits: unchanged."""
    funded = credit_rows.funded_executions(conn, [a for a in rows], period.start, end, known_at)
    if not funded:
        return rows
    windows = version_windows(catalog, period.start, period.end)
    groups: dict[str, dict[tuple, UsageRow]] = {}
    for e in funded:
        seg = next((i for i, s in enumerate(segments.get(e.account_id, [])) if s.start <= e.occurred_at < s.end), None)
        ver = next((name for name, start, stop in windows if start <= e.occurred_at < stop), None)
        if seg is None or ver is None:
            continue
        key = (seg, ver, e.model, e.byok, e.sandbox)
        g = groups.setdefault(e.account_id, {}).get(key) or UsageRow(segment=seg, version=ver, model=e.model,
                                                                    byok=e.byok, sandbox=e.sandbox, credit_funded=True)
        costed = e.cost_usd is not None and not e.byok
        groups[e.account_id][key] = replace(
            g, executions=g.executions + 1, input_tokens=g.input_tokens + e.input_tokens,
            output_tokens=g.output_tokens + e.output_tokens,
            cost=g.cost + (e.cost_usd if costed else 0),
            uncosted_input_tokens=g.uncosted_input_tokens + (e.input_tokens if e.cost_usd is None and not e.byok else 0),
            uncosted_output_tokens=g.uncosted_output_tokens + (e.output_tokens if e.cost_usd is None and not e.byok else 0))
    return {a: split_credit_funded(r, list(groups.get(a, {}).values())) for a, r in rows.items()}


def _enterprise_facts(conn: Connection, catalog: Catalog, period: Period, segments: dict[str, list[TermsSegment]],
                      usage_end: datetime) -> dict[str, EnterpriseFacts]:
    """The accounts with enterprise days in the period: how they split between the rater and their
    contracts (``billing.contracts``), and each span's executions ranked against its commitment."""
    candidates = [a for a, segs in segments.items()
                  if any(catalog.at(s.start).plan(s.plan).contract for s in segs)]
    if not candidates:
        return {}
    rows = contract_rows.contracts_of(conn, candidates, starting_before=period.end)
    by_account: dict[str, list] = {}
    for h in contract_rows.histories(conn, rows):
        by_account.setdefault(h.contract.account, []).append(h)
    splits = {a: contracts.split_enterprise_period(catalog, period, segments[a], by_account.get(a, []))
              for a in candidates}
    spans = [(a, sp) for a in candidates for sp in splits[a].spans]
    usage_of = contract_rows.span_usage(conn, [(a, sp.start, sp.end, sp.committed) for a, sp in spans],
                                        version_windows(catalog, period.start, period.end), usage_end)
    per_account: dict[str, list] = {a: [] for a in candidates}
    for (a, _), rows_ in zip(spans, usage_of):
        per_account[a].append(rows_)
    return {a: EnterpriseFacts(splits[a], per_account[a]) for a in candidates}


def _late_usage(conn: Connection, catalog: Catalog, period: Period, account_ids: list[str]) -> dict[str, list]:
    out: dict[str, list[LateUsage]] = {}
    for account_id, source, late in usage.late_usage(conn, account_ids, period, LATE_USAGE_LOOKBACK_PERIODS):
        again = load_facts(conn, catalog, source, [account_id]).get(account_id)
        if again is None:
            continue
        billed = invoices.billed_lines(conn, account_id, source, excluding_period=period)
        out.setdefault(account_id, []).append(LateUsage(source, late, again.segments, again.usage, billed,
                                                        again.enterprise))
    return out


@dataclass(frozen=True)
class ChunkFacts:
    accounts: list  # every billable account of the range (rows)
    to_rate: list  # those whose invoice is absent or still a draft, in id order
    facts: dict[str, AccountFacts]  # by account id, for the accounts billed in the period


def load_chunk(conn: Connection, catalog: Catalog, period: Period, after: str | None, upto: str) -> ChunkFacts:
    """Everything the close decides a range of accounts on: which invoices can still be written,
    each account's rating facts with late usage, and for pay-as-you-go accounts what the auto-convert
    decision needs (terms already changed from the next period, a final invoice there)."""
    in_range = accounts.accounts_in_range(conn, period, after, upto)
    statuses = invoices.invoice_statuses(conn, period, [a.id for a in in_range])
    to_rate = [a for a in in_range if statuses.get(a.id) in (None, "draft")]
    facts = load_facts(conn, catalog, period, [a.id for a in to_rate], late_usage=True)
    eligible = [a for a, f in facts.items() if conversion.eligible(period, f.segments)]
    if eligible:
        nxt = period.next()
        changed = accounts.accounts_with_terms_from(conn, eligible, nxt.start)
        invoiced = invoices.invoiced_from(conn, eligible, nxt)
        starts = {a.id: a.billing_starts_at for a in to_rate}
        for a in eligible:
            facts[a] = replace(facts[a], conversion=ConversionFacts(starts[a], a in changed, a in invoiced))
    return ChunkFacts(in_range, to_rate, facts)


def rate_accounts(conn: Connection, catalog: Catalog, period: Period, account_ids: list[str],
                  usage_end: datetime | None = None, late_usage: bool = False) -> dict[str, AccountRating]:
    """Rate each account's period with usage up to ``usage_end``; with ``late_usage``, plus
    prior-period lines for usage that arrived after an earlier invoice was final (as the close
    does). Accounts not billed in the period are left out."""
    facts = load_facts(conn, catalog, period, account_ids, usage_end, late_usage)
    return {a: close.rate(catalog, period, f) for a, f in facts.items()}
