"""The activities of alerts and anomalies: e-mail delivery of the outbox, the anomaly reviews to start,
a person's decision on an anomaly, and the mid-month trend check. Each may run twice.

- ``deliver_notifications``: claims pending notices (a lease: nobody else sends them meanwhile),
  their Message-ID written before the first send; sends each over one SMTP session; marks it sent.
  SMTP unreachable: the notice is released with the reason and the activity fails
  (``SmtpUnavailable``) so Temporal retries it later; a permanent refusal (5xx, no address) marks
  that notice failed and goes on with the others. A crash between the send and the mark resends the
  notice when its lease ends, with the same Message-ID.
- ``decide_anomaly``: moves the anomaly to ``resumed``/``confirmed`` with who and why, and queues the
  user's notice, in one transaction; a retry after the commit finds the decision and returns it.
- ``check_trend_chunk``: projects each account's month like ``tally invoices preview`` and compares
  it with the account's last three monthly invoices (``billing.alerts.check_trend``).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import pricing
from activities.deps import Deps
from billing import alerts as rules
from billing.errors import BillingError
from billing.periods import Period, PeriodError
from billing.projection import project_month
from gateways.mail import MailRejected, MailUnreachable, SmtpMailer, compose_notice
from gateways.mail.messages import mail_domain
from models.failures import Failure
from models.schemas import (
    AccountRange,
    AnomalyDecisionInput,
    AnomalyReviewInput,
    AnomalyView,
    ChunkPage,
    DeliverNotificationsInput,
    DeliveryResult,
    ListChunksInput,
    ReviewsToStart,
    TrendChunkInput,
    TrendChunkResult,
)
from models.settings import ConfigError
from repositories import accounts, notifications
from repositories import alerts as repo

log = logging.getLogger("tally.alerts")
CLAIM_BATCH = 50
TREND_MONTHS_BACK = 3


def anomaly_view(row) -> AnomalyView:
    return AnomalyView(anomaly_id=row.id, account_id=row.account_id, workflow_id=row.workflow_id, state=row.state,
                       window_start=row.window_start, window_end=row.window_end, opened_at=row.opened_at,
                       decided_at=row.decided_at, decided_by=row.decided_by, decision_reason=row.decision_reason,
                       evidence=dict(row.evidence or {}))


class AlertsActivities:
    def __init__(self, deps: Deps):
        self.deps = deps

    @property
    def engine(self):
        return self.deps.engine

    # ---- anomaly reviews ------------------------------------------------------------------------
    @activity.defn(name="anomalies_to_review")
    def anomalies_to_review(self) -> ReviewsToStart:
        with self.engine.begin() as conn:
            rows = repo.anomalies_to_review(conn)
        return ReviewsToStart(reviews=[AnomalyReviewInput(anomaly_id=r.id, account_id=r.account_id,
                                                          workflow_id=r.workflow_id, window_start=r.window_start)
                                       for r in rows])

    @activity.defn(name="mark_reviews_started")
    def mark_reviews_started(self, anomaly_ids: list[int]) -> int:
        with self.engine.begin() as conn:
            repo.mark_reviews_started(conn, anomaly_ids)
        return len(anomaly_ids)

    @activity.defn(name="decide_anomaly")
    def decide_anomaly(self, inp: AnomalyDecisionInput) -> AnomalyView:
        moves = {"resume": ("resumed", ("open", "confirmed")), "confirm": ("confirmed", ("open",))}
        if inp.decision not in moves:
            raise ApplicationError(f"decision: must be resume or confirm, got {inp.decision!r}",
                                   type=Failure.ANOMALY_DECIDED, non_retryable=True)
        to_state, allowed = moves[inp.decision]
        with self.engine.begin() as conn:
            row = repo.get_anomaly(conn, inp.anomaly_id)
            if row is None:
                raise ApplicationError(f"no anomaly {inp.anomaly_id}", type=Failure.NOT_FOUND, non_retryable=True)
            if row.state == to_state and row.decided_by == inp.by and row.decision_reason == inp.reason:
                return anomaly_view(row)  # this decision was committed by an earlier attempt
            updated = repo.decide_anomaly(conn, inp.anomaly_id, to_state=to_state, from_states=allowed, by=inp.by,
                                          reason=inp.reason)
            if updated is None:
                raise ApplicationError(f"anomaly {row.workflow_id} is {row.state}: cannot {inp.decision}",
                                       type=Failure.ANOMALY_DECIDED, non_retryable=True)
            notifications.notify_notice(conn, row.account_id, rules.anomaly_decision_notice(
                row.account_id, row.workflow_id, inp.decision, inp.by, inp.reason))
        return anomaly_view(updated)

    # ---- e-mail delivery ------------------------------------------------------------------------
    @activity.defn(name="deliver_notifications")
    def deliver_notifications(self, inp: DeliverNotificationsInput) -> DeliveryResult:
        settings = self.deps.settings
        try:
            url = settings.effective_smtp_url()
        except ConfigError as err:
            raise ApplicationError(str(err), type=Failure.MAIL_NOT_CONFIGURED, non_retryable=True) from None
        result = DeliveryResult()
        domain = mail_domain(settings.mail_from)
        lease = timedelta(seconds=inp.lease_seconds)
        with SmtpMailer(url, timeout=settings.smtp_timeout_seconds) as mailer:
            while result.sent + result.failed < inp.max_messages:
                with self.engine.begin() as conn:
                    claimed = notifications.claim_pending(
                        conn, limit=min(CLAIM_BATCH, inp.max_messages - result.sent - result.failed), lease=lease,
                        domain=domain)
                if not claimed:
                    break
                for i, row in enumerate(claimed):
                    activity.heartbeat(row.id)
                    self._deliver_one(mailer, row, result, claimed[i + 1:])
        with self.engine.begin() as conn:
            result.pending = notifications.count_pending(conn)
        return result

    def _deliver_one(self, mailer: SmtpMailer, row, result: DeliveryResult, rest: list) -> None:
        settings = self.deps.settings
        to = settings.ops_email if row.audience == "ops" else row.email
        if not to:
            with self.engine.begin() as conn:
                notifications.give_up(conn, row.id, f"account {row.account_id} has no e-mail address")
            result.failed += 1
            return
        try:
            mailer.send(compose_notice(row, to=to, sender=settings.mail_from), to)
        except MailRejected as err:
            with self.engine.begin() as conn:
                notifications.give_up(conn, row.id, str(err))
            result.failed += 1
            log.warning("notification %s to %s refused for good: %s", row.id, to, err)
            return
        except MailUnreachable as err:
            with self.engine.begin() as conn:  # this one and the rest of the claim: pending again now
                for r in [row, *rest]:
                    notifications.release(conn, r.id, str(err))
            raise ApplicationError(f"SMTP unavailable: {err}", type=Failure.SMTP_UNAVAILABLE) from None
        with self.engine.begin() as conn:
            notifications.mark_sent(conn, row.id, to)
        result.sent += 1

    # ---- mid-month trend --------------------------------------------------------------------------
    def _period(self, text: str) -> Period:
        try:
            return Period.parse(text)
        except PeriodError as err:
            raise ApplicationError(str(err), type=Failure.INVALID_PERIOD, non_retryable=True) from None

    @activity.defn(name="trend_account_chunks")
    def trend_account_chunks(self, inp: ListChunksInput) -> ChunkPage:
        period = self._period(inp.period)
        with self.engine.begin() as conn:
            chunks, cursor = accounts.account_chunks(conn, period, inp.after, inp.chunk_size, inp.max_chunks)
        return ChunkPage(chunks=[AccountRange(after=a, upto=u, count=n) for a, u, n in chunks], next_cursor=cursor)

    @activity.defn(name="check_trend_chunk")
    def check_trend_chunk(self, inp: TrendChunkInput) -> TrendChunkResult:
        """Project each account's month at ``inp.at`` as the preview does (usage so far scaled to the
        month, the fee once, quotas and caps applied) and warn, once per account and month, where it is
        at least the multiplier times the average of its last three monthly invoice totals."""
        period = self._period(inp.period)
        catalog = self.deps.catalog
        settings = catalog.at(inp.at).alert_settings()
        out = TrendChunkResult()
        with self.engine.begin() as conn:
            ids = [a.id for a in accounts.accounts_in_range(conn, period, inp.accounts.after, inp.accounts.upto)]
            ratings = pricing.rate_accounts(conn, catalog, period, ids, usage_end=inp.at, late_usage=True)
            history = repo.trailing_invoice_totals(conn, ids, period, TREND_MONTHS_BACK)
            for account_id in ids:
                r = ratings.get(account_id)
                if r is None:
                    continue
                out.checked += 1
                try:
                    projected = project_month(catalog, period.start, period.end, inp.at, r.segments, r.usage,
                                              r.included, r.rated)
                except BillingError as err:
                    log.warning("trend of %s not projected: %s", account_id, err)
                    continue
                verdict = rules.check_trend(projected.total, history.get(account_id, []), settings=settings)
                if verdict.warn and notifications.notify_notice(conn, account_id,
                                                                rules.trend_notice(account_id, period, verdict)):
                    out.warned.append(account_id)
        return out


__all__ = ["AlertsActivities", "anomaly_view"]
