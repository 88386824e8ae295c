"""The payout activities (what ``payouts-YYYY-MM`` and ``payout-<creator>-<YYYY-MM>`` run). Each may run
twice: decisions are written once (a decided payout is never re-decided), and every transfer is one
recorded Stripe call (``StripeLedger``) whose key derives from the payout id, so no retry, crash or
concurrent ops action can pay a payout twice.

- ``decide_payouts``: LOAD a page of creators' balance facts in one query, DECIDE each with
  ``billing.payouts.decide_payout``, WRITE the decisions in one statement; return the payouts due.
- ``pay_payouts``: one transfer per payout due through ``StripeLedger.perform_batch`` (keys recorded
  in one statement before any call; ``transfer_group`` and ``metadata.tally_payout_id`` = the payout
  id; a key Stripe may have forgotten is replaced only after listing by ``transfer_group`` found
  nothing). Rejections (no transfers capability, ``balance_insufficient``) fail the payout with the
  reason; Stripe down is retried by Temporal and, from ``PayoutBudget.GIVE_UP_AT``, fails the payout.
- ``retry_payout`` / ``cancel_payout``: ops' actions on one failed payout, under its advisory lock.
"""

from __future__ import annotations

from functools import partial

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from billing.payouts import (
    CreatorAdjustment,
    Earning,
    PayoutStatus,
    PriorPayout,
    credit_funded_earnings,
    decide_payout,
)
from billing.periods import Period, PeriodError
from gateways.stripe import StripeError, StripeFailed, StripeRejected, StripeUnreachable
from gateways.stripe.ledger import Step, StripeLedger
from models.failures import Failure, PayoutBudget
from models.schemas import (
    DecidedPage,
    DecidePayoutsInput,
    PayoutActionInput,
    PayoutView,
    PayPayoutsInput,
    PayPayoutsResult,
)
from repositories import locks
from repositories import payouts as repo

TRANSFER_STEP = "transfer"


def payout_view(row) -> PayoutView:
    return PayoutView(id=row.id, creator_id=row.creator_id, period=row.period, status=row.status, amount=row.amount,
                      carried_in=row.carried_in, earnings=row.earnings, adjustments=row.adjustments, balance=row.balance, carried_out=row.carried_out, message=row.message,
                      destination=row.destination, stripe_transfer_id=row.stripe_transfer_id,
                      failure_reason=row.failure_reason, cancel_reason=row.cancel_reason, attempts=row.attempts)


def _period(text: str) -> Period:
    try:
        return Period.parse(text)
    except PeriodError as err:
        raise ApplicationError(f"period: {err}", type=Failure.INVALID_PERIOD, non_retryable=True) from None


def _rejection(err: StripeRejected) -> str:
    return f"{err.code}: {err}" if err.code else str(err)


NO_ACCOUNT = "the creator has no connected account yet (tally creators onboard {creator})"


class PayoutActivities:
    def __init__(self, deps: Deps):
        self.deps = deps

    @property
    def engine(self):
        return self.deps.engine

    def _ledger(self, db=None) -> StripeLedger:
        return StripeLedger(db if db is not None else self.engine, self.deps.clock)

    def _transfer_step(self, payout_id: str, destination: str, amount) -> Step:
        connect = self.deps.stripe.connect
        return Step(subject=payout_id, step=TRANSFER_STEP, identity=payout_id,
                    call=lambda key: connect.create_transfer(payout_id=payout_id, destination=destination,
                                                             amount=amount, idempotency_key=key),
                    lookup=partial(connect.find_transfer, payout_id))

    # ---- the monthly run ------------------------------------------------------------------------
    @activity.defn(name="accrue_credit_earnings")
    def accrue_credit_earnings(self, period_text: str) -> int:
        """Earnings of the period's credit-funded premium executions, payable at once (written once by id)."""
        period = _period(period_text)
        with self.engine.begin() as conn:
            funded = repo.credit_funded_executions(conn, period)
            if not funded:
                return 0
            skills = repo.premium_skills_in_force(conn)
            terms = self.deps.catalog.at(period.start).creator_terms()
            rows = [(account_id, period, e) for account_id, xs in sorted(funded.items())
                    for e in credit_funded_earnings(account_id, period, xs, skills, terms)]
            return repo.record_credit_earnings(conn, rows)

    @activity.defn(name="decide_payouts")
    def decide_payouts(self, inp: DecidePayoutsInput) -> DecidedPage:
        """Decide a page of creators (in id order after ``inp.after``); return the payouts due."""
        period = _period(inp.period)
        terms = self.deps.catalog.at(period.start).creator_terms()
        now = self.deps.clock()
        earlier = period.previous()
        with self.engine.begin() as conn:
            ids = repo.creator_page(conn, inp.after, inp.limit)
            rows, carried = [], 0
            for f in repo.balance_facts(conn, ids, period):
                if f.decided is not None:
                    continue
                c = f.creator_id
                d = decide_payout(
                    c, period,
                    earnings=[Earning(f"before:{c}", c, "", f.earned_before, f.earned_before, 0, (),
                                      payable_from=period.start),
                              Earning(f"within:{c}", c, "", f.earned_now, f.earned_now, 0, (), payable_from=period.end)],
                    invoice_paid_at={},
                    adjustments=[CreatorAdjustment(f"before:{c}", c, f.adjusted_before, period.start, "before"),
                                 CreatorAdjustment(f"within:{c}", c, f.adjusted_now, period.end, "within")],
                    payouts=[PriorPayout(f"earlier:{c}", c, earlier, f.paid_before, PayoutStatus.paid)],
                    terms=terms)
                if d.balance == 0 and not d.pay:
                    continue  # nothing happened and nothing is carried: no row
                carried += not d.pay
                rows.append(dict(id=d.payout_id, creator_id=c, period=str(period),
                                 status="pending" if d.pay else "carried", carried_in=d.carried_in,
                                 earnings=d.earnings, adjustments=d.adjustments, balance=d.balance, amount=d.amount,
                                 carried_out=d.carried_out, message=d.message, destination=f.destination,
                                 decided_at=now))
            repo.insert_payouts(conn, rows)
            due = [r.id for r in repo.pending_payouts(conn, period, ids)]
        return DecidedPage(creators=len(ids), to_pay=due, carried=carried,
                           next_cursor=ids[-1] if len(ids) == inp.limit else None)

    @activity.defn(name="pay_payouts")
    def pay_payouts(self, inp: PayPayoutsInput) -> PayPayoutsResult:
        """One transfer per pending payout of ``inp.payout_ids`` (safe to run again: paid ones are
        skipped, the recorded keys make Stripe replay what it committed)."""
        attempt = activity.info().attempt
        now = self.deps.clock()
        with self.engine.begin() as conn:
            rows = [r for r in repo.payouts_by_id(conn, inp.payout_ids) if r.status == "pending"]
            accounts = repo.destinations(conn, [r.creator_id for r in rows])
        out = PayPayoutsResult()
        finished: list[dict] = []
        payable = []
        for r in rows:
            dest = accounts.get(r.creator_id)
            if dest is None:
                finished.append(dict(id=r.id, status="failed", failure_reason=NO_ACCOUNT.format(creator=r.creator_id)))
                out.failed.append(r.id)
            else:
                payable.append((r, dest))
        outcomes = self._ledger().perform_batch([self._transfer_step(r.id, dest, r.amount) for r, dest in payable],
                                                workers=inp.concurrency)
        transient: list[tuple] = []
        for (r, dest), o in zip(payable, outcomes):
            if o.object_id is not None:
                finished.append(dict(id=r.id, status="paid", stripe_transfer_id=o.object_id))
                out.paid.append(r.id)
                out.amount_paid += r.amount
            elif isinstance(o.error, StripeRejected):
                finished.append(dict(id=r.id, status="failed", failure_reason=_rejection(o.error)))
                out.failed.append(r.id)
            else:
                transient.append((r, o.error))
        give_up = attempt >= PayoutBudget.GIVE_UP_AT
        if give_up:
            for r, err in transient:
                finished.append(dict(id=r.id, status="failed",
                                     failure_reason=f"Stripe unavailable after {attempt} attempts: {err}"))
                out.failed.append(r.id)
        with self.engine.begin() as conn:
            repo.set_destinations(conn, {r.id: dest for r, dest in payable})
            repo.set_payout_outcomes(conn, finished, now)
        if transient and not give_up:
            raise ApplicationError(f"{len(transient)} transfers not confirmed by Stripe yet (attempt {attempt}): "
                                   f"{transient[0][1]}", type=Failure.STRIPE_TRANSIENT)
        return out

    # ---- ops: one failed payout ----------------------------------------------------------------
    def _locked(self, payout_id: str):
        conn = self.engine.connect()
        if not locks.try_lock(conn, f"payout:{payout_id}"):
            conn.close()
            raise ApplicationError(f"{payout_id}: another process works on it now", type=Failure.PAYOUT_BUSY)
        return conn

    def _release(self, conn, payout_id: str) -> None:
        try:
            locks.unlock(conn, f"payout:{payout_id}")
        finally:
            conn.close()

    def _row(self, conn, payout_id: str):
        with conn.begin():
            row = repo.get_payout(conn, payout_id)
        if row is None:
            raise ApplicationError(f"no payout {payout_id}", type=Failure.NOT_FOUND, non_retryable=True)
        return row

    @activity.defn(name="retry_payout")
    def retry_payout(self, inp: PayoutActionInput) -> PayoutView:
        """Ops' retry of a failed payout: the same recorded transfer step (a key still trusted is reused;
        after a rejection or a key Stripe may have forgotten, the ledger lists by ``transfer_group`` first
        and creates a transfer only when none exists). A paid or cancelled payout is returned as it is."""
        attempt = activity.info().attempt
        conn = self._locked(inp.payout_id)
        try:
            row = self._row(conn, inp.payout_id)
            if row.status in ("paid", "cancelled"):
                return payout_view(row)
            if row.status not in ("failed", "pending"):
                raise ApplicationError(f"{row.id} is {row.status}: nothing to pay", type=Failure.PAYOUT_DECIDED,
                                       non_retryable=True)
            with conn.begin():
                dest = repo.destinations(conn, [row.creator_id]).get(row.creator_id)
            outcome: dict
            if dest is None:
                outcome = dict(id=row.id, status="failed", failure_reason=NO_ACCOUNT.format(creator=row.creator_id))
            else:
                step = self._transfer_step(row.id, dest, row.amount)
                try:
                    tid = self._ledger(conn).perform(subject=step.subject, step=step.step, identity=step.identity,
                                                     call=step.call, lookup=step.lookup)
                    outcome = dict(id=row.id, status="paid", stripe_transfer_id=tid)
                except StripeRejected as err:
                    outcome = dict(id=row.id, status="failed", failure_reason=_rejection(err))
                except (StripeFailed, StripeUnreachable) as err:
                    if attempt < PayoutBudget.RETRY_ATTEMPTS:
                        raise ApplicationError(f"{row.id}: {err}", type=Failure.STRIPE_TRANSIENT) from None
                    outcome = dict(id=row.id, status="failed",
                                   failure_reason=f"Stripe unavailable after {attempt} attempts: {err}")
            with conn.begin():
                if dest is not None:
                    repo.set_destinations(conn, {row.id: dest})
                repo.set_payout_outcomes(conn, [outcome], self.deps.clock())
                return payout_view(repo.get_payout(conn, row.id))
        finally:
            self._release(conn, inp.payout_id)

    @activity.defn(name="cancel_payout")
    def cancel_payout(self, inp: PayoutActionInput) -> PayoutView:
        """Cancel a failed payout (its amount returns to the creator's balance next month) unless Stripe
        has a transfer for it after all (listed by ``transfer_group``): then it is marked paid instead."""
        conn = self._locked(inp.payout_id)
        try:
            row = self._row(conn, inp.payout_id)
            if row.status == "cancelled":
                return payout_view(row)
            if row.status != "failed":
                raise ApplicationError(f"{row.id} is {row.status}: only a failed payout can be cancelled",
                                       type=Failure.PAYOUT_DECIDED, non_retryable=True)
            try:
                found = self.deps.stripe.connect.find_transfer(row.id)
            except StripeError as err:
                raise ApplicationError(f"{row.id}: cannot check Stripe for a transfer: {err}",
                                       type=Failure.STRIPE_TRANSIENT) from None
            with conn.begin():
                if found:
                    repo.set_payout_outcomes(conn, [dict(id=row.id, status="paid", stripe_transfer_id=found)],
                                             self.deps.clock())
                else:
                    repo.cancel_payout(conn, row.id, f"{inp.reason} (by {inp.by})", self.deps.clock())
                return payout_view(repo.get_payout(conn, row.id))
        finally:
            self._release(conn, inp.payout_id)


