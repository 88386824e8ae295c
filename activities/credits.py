"""Activities of prepaid credits: a grant's expiry (its dates, the notice, the remainder), the poll of
purchases still pending and the sweep for grants whose workflow is missing. Each is idempotent: the
ledger's deterministic entry ids, the outbox's dedupe keys and the purchase's pending state make a
second run write nothing."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from models.failures import Failure
from models.schemas import (
    CreditGrantTimes,
    CreditPollResult,
    CreditSweepInput,
    CreditSweepPage,
)
from repositories import credits as repo
from services import credits as service

# New grants whose workflows the poll starts: those created this long ago or less (a webhook's grant
# gets its workflow at the next poll; older ones are the daily sweep's).
RECENT_GRANTS = timedelta(hours=2)


class CreditActivities:
    def __init__(self, deps: Deps):
        self.deps = deps

    @activity.defn(name="credit_grant_times")
    def credit_grant_times(self, grant_id: str) -> CreditGrantTimes:
        t = service.grant_times(self.deps.engine, grant_id)
        if t is None:
            raise ApplicationError(f"no credit grant {grant_id!r}", type=Failure.GRANT_NOT_FOUND, non_retryable=True)
        return CreditGrantTimes(grant_id=t.grant_id, account_id=t.account_id, expires_at=t.expires_at,
                                notice_at=t.notice_at, expired=t.expired)

    @activity.defn(name="credit_expiry_notice")
    def credit_expiry_notice(self, grant_id: str) -> bool:
        """Queue the 7-days-before notice (once per grant; nothing when nothing is left)."""
        return service.queue_expiry_notice(self.deps.engine, grant_id)

    @activity.defn(name="credit_expire_grant")
    def credit_expire_grant(self, grant_id: str) -> str:
        """Expire the remainder exactly once (after the pending consumption is booked); the amount."""
        try:
            return str(service.expire_grant(self.deps.engine, grant_id))
        except service.GrantNotFound as err:
            raise ApplicationError(str(err), type=Failure.GRANT_NOT_FOUND, non_retryable=True) from err

    @activity.defn(name="credit_poll_purchases")
    def credit_poll_purchases(self) -> CreditPollResult:
        """Ask Stripe about purchases pending too long (grant the paid, settle the expired), and name the
        grants created recently, whose workflows the caller makes sure exist."""
        settings = self.deps.settings
        now = self.deps.clock()
        res = service.poll_pending(self.deps.engine, self.deps.catalog, self.deps.stripe, now,
                                   settings.credits_pending_minutes)
        with self.deps.engine.connect() as conn:
            recent = repo.grants_created_since(conn, now - RECENT_GRANTS)
        return CreditPollResult(checked=res.checked, failed=res.failed, granted=res.granted,
                                grants_to_watch=sorted(set(recent) | set(res.granted)))

    @activity.defn(name="credit_sweep_page")
    def credit_sweep_page(self, inp: CreditSweepInput) -> CreditSweepPage:
        """One page of grants not expired yet (id order, after ``cursor``); grants whose expiry and grace
        have passed are expired here at once (a restored database, a workflow that is gone for good)."""
        after, limit, grace = inp.cursor, inp.page_size, inp.grace_hours
        now = self.deps.clock()
        with self.deps.engine.connect() as conn:
            ids = repo.grants_needing_workflows(conn, after, limit)
            overdue = repo.grants_overdue(conn, ids, now - timedelta(hours=grace))
        expired = 0
        for gid in overdue:
            expired += service.expire_grant(self.deps.engine, gid) > 0
        return CreditSweepPage(grant_ids=[g for g in ids if g not in set(overdue)],
                               next_cursor=ids[-1] if len(ids) == limit else None, overdue_expired=expired)
