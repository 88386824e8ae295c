"""Accounts: create, change terms, list, history, and the signed link to the billing page."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from sqlalchemy import Connection, Engine

from billing.catalog import Catalog, default_catalog
from billing.periods import Period
from models.settings import Settings
from billing.terms import (
    Terms,
    TermsChange,
    day_start,
    decide_change,
    new_account_terms,
    require_some_change,
)
from billing.contracts import check_leaving_enterprise
from repositories import accounts, contracts, invoices
from services.errors import Conflict, InvalidInput, NotFound, refused_input
from services.inputs import check_id

def require_account(conn: Connection, account_id: str):
    account = accounts.get_account(conn, account_id)
    if account is None:
        raise NotFound(f"no account {account_id!r}")
    return account


def create_account(engine: Engine, *, account_id: str, plan: str, seats: int = 1, overage_opt_in: bool = False,
                   email: str | None = None, billing_start: datetime | None = None, pricing: str = "executions",
                   catalog: Catalog | None = None, now: datetime | None = None) -> bool:
    """Create the account, billed from 00:00 UTC of ``billing_start`` (default: today). True when
    created; False when an identical one exists (the same command twice is fine); Conflict when one
    with other terms does."""
    check_id(account_id)
    now = now or datetime.now(timezone.utc)
    catalog = catalog or default_catalog()
    with refused_input():
        new_account_terms(catalog.at(now), Terms(plan, seats, overage_opt_in, pricing))
    with engine.begin() as conn:
        if accounts.create_account(conn, account_id=account_id, plan=plan, seats=seats, overage_opt_in=overage_opt_in,
                                   email=email, billing_starts_at=day_start(billing_start or now), pricing=pricing):
            return True
        existing = accounts.get_account(conn, account_id)
    if (existing.plan, existing.seats, existing.overage_opt_in, existing.email, existing.pricing) != (
            plan, seats, overage_opt_in, email, pricing):
        raise Conflict(
            f"account {account_id!r} already exists with plan={existing.plan} seats={existing.seats} "
            f"overage={existing.overage_opt_in} pricing={existing.pricing}; "
            "use `tally accounts change` to change its terms"
        )
    return False


@dataclass(frozen=True)
class NewAccount:
    account_id: str
    plan: str
    seats: int = 1
    overage_opt_in: bool = False
    email: str | None = None
    pricing: str = "executions"


def create_missing_accounts(engine: Engine, new: list[NewAccount], billing_start: datetime,
                            catalog: Catalog | None = None, now: datetime | None = None) -> int:
    """Create those of ``new`` that do not exist yet, in one transaction (accounts already there
    keep the terms they have now); returns how many were created. The demo's and benchmarks' seed."""
    catalog = catalog or default_catalog()
    version = catalog.at(now or datetime.now(timezone.utc))
    for a in new:
        check_id(a.account_id)
        with refused_input():
            new_account_terms(version, Terms(a.plan, a.seats, a.overage_opt_in, a.pricing))
    created = 0
    with engine.begin() as conn:
        existing = accounts.existing_account_ids(conn, [a.account_id for a in new])
        for a in new:
            if a.account_id not in existing:
                created += accounts.create_account(
                    conn, account_id=a.account_id, plan=a.plan, seats=a.seats, overage_opt_in=a.overage_opt_in,
                    email=a.email, billing_starts_at=day_start(billing_start), pricing=a.pricing)
    return created


@dataclass(frozen=True)
class TermsChanged:
    account_id: str
    effective_from: datetime  # 00:00 UTC of the day the terms take effect
    terms: Terms


def change_account(engine: Engine, account_id: str, *, plan: str | None = None, seats: int | None = None,
                   overage_opt_in: bool | None = None, pricing: str | None = None,
                   effective: datetime | None = None, reason: str = "changed by ops",
                   catalog: Catalog | None = None, now: datetime | None = None) -> TermsChanged:
    """Change the account's terms from ``effective``'s day (default: today), in one transaction."""
    with refused_input():
        require_some_change(TermsChange(plan, seats, overage_opt_in, pricing))
    now = now or datetime.now(timezone.utc)
    when = effective or now
    with engine.begin() as conn:
        terms = change_terms(conn, account_id=account_id, effective_from=when, reason=reason, plan=plan, seats=seats,
                             overage_opt_in=overage_opt_in, pricing=pricing, now=now, catalog=catalog)
    return TermsChanged(account_id, day_start(when), terms)


def change_terms(conn: Connection, *, account_id: str, effective_from: datetime, reason: str,
                 plan: str | None = None, seats: int | None = None, overage_opt_in: bool | None = None,
                 pricing: str | None = None, now: datetime | None = None, catalog: Catalog | None = None) -> Terms:
    """Record a change of terms from 00:00 UTC of ``effective_from``'s day, inside the caller's
    transaction, and return the terms recorded. Checked by ``billing.terms.decide_change`` (refused
    inside a period whose invoice is already final). Idempotent for an identical change."""
    change = TermsChange(plan, seats, overage_opt_in, pricing)
    now = now or datetime.now(timezone.utc)
    catalog = catalog or default_catalog()
    start = day_start(effective_from)
    account = accounts.lock_account(conn, account_id)
    if account is None:
        raise NotFound(f"no account {account_id!r}")
    current = accounts.terms_at(conn, account_id, start)
    invoiced = bool(invoices.invoiced_from(conn, [account_id], Period.of(start)))
    with refused_input():
        terms = decide_change(
            version=catalog.at(effective_from), account_id=account_id, billing_starts_at=account.billing_starts_at,
            effective_from=start, change=change, invoiced=invoiced,
            current=None if current is None else Terms(current.plan, current.seats, current.overage_opt_in,
                                                       current.pricing))
    if current is not None and terms.plan != current.plan and catalog.at(start).plan(current.plan).contract:
        with refused_input():  # contract days are enterprise days (billing.contracts)
            check_leaving_enterprise(start, contracts.histories(conn, contracts.contracts_of(conn, [account_id])))
    accounts.append_terms(conn, account_id=account_id, effective_from=start, terms=terms, reason=reason, now=now)
    return terms


def list_accounts(engine: Engine, plan: str | None = None, limit: int = 1000) -> list:
    with engine.begin() as conn:
        return accounts.list_accounts(conn, plan=plan, limit=limit)


def terms_history(engine: Engine, account_id: str) -> list:
    """The account's terms rows, oldest first, each with the reason it changed."""
    with engine.begin() as conn:
        require_account(conn, account_id)
        return accounts.terms_history(conn, account_id)


# ---- billing-page links -------------------------------------------------------------------------------
class BadLink(ValueError):
    pass


def _signature(secret: bytes, account_id: str, expires: int) -> str:
    mac = hmac.new(secret, f"billing-page:{account_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def billing_token(secret: bytes, account_id: str, expires: int) -> str:
    """``EXPIRES.SIGNATURE``: the link opens this account's page until ``expires`` (Unix time)."""
    return f"{expires}.{_signature(secret, account_id, expires)}"


def check_billing_token(secret: bytes, account_id: str, token: str, now: float | None = None) -> None:
    expires_text, _, sig = token.partition(".")
    if not expires_text.isdigit() or not sig or len(expires_text) > 12:
        raise BadLink("token: not a billing link token")
    expires = int(expires_text)
    if not hmac.compare_digest(sig, _signature(secret, account_id, expires)):
        raise BadLink("token: this link is not valid for this account")
    if (now if now is not None else time.time()) >= expires:
        raise BadLink("token: this link has expired; ask for a new one (`tally accounts billing-link`)")


MIN_LINK_HOURS, MAX_LINK_HOURS = 1, 30 * 24  # a billing-page link lives an hour to 30 days


def billing_link(base_url: str, secret: bytes, account_id: str, hours: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + hours * 3600)
    return (f"{base_url.rstrip('/')}/accounts/{quote(account_id, safe='')}/billing"
            f"?token={billing_token(secret, account_id, expires)}")


def account_billing_link(engine: Engine, settings: Settings, account_id: str, *, hours: int | None = None,
                         base_url: str | None = None) -> str:
    """A signed link to an existing account's billing page (anyone holding it can view the page);
    by default at ``settings.api_url``, valid ``settings.billing_link_hours``."""
    hours = settings.billing_link_hours if hours is None else hours
    if not MIN_LINK_HOURS <= hours <= MAX_LINK_HOURS:
        raise InvalidInput("hours", f"must be from {MIN_LINK_HOURS} to {MAX_LINK_HOURS} (30 days), got {hours}")
    with engine.begin() as conn:
        require_account(conn, account_id)
    return billing_link(base_url or settings.api_url, settings.effective_api_secret(), account_id, hours)
