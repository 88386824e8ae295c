"""Usage reporting's operations, for the CLI (``tally meters``): set up the Stripe meters, report one hour
through Temporal, show how far reporting got, and reconcile a month with Stripe's meter summaries.

Reports and reconciliations run as workflows with business ids (``usage-report-<YYYY-MM-DDTHH>``,
``meters-reconcile-YYYY-MM``): a start while one runs attaches to it; a start after it finished runs it
again, which sends only what is missing (a report) or compares afresh (a reconciliation).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from activities.ingest import known_models
from billing.catalog import Catalog
from billing.meters import (
    HOUR,
    format_hour,
    hours_between,
    last_ended_hour,
    meter_definitions,
    oldest_reportable_hour,
    parse_hour,
    why_not_reportable,
)
from gateways.stripe import StripeGateway, StripeRejected
from gateways.stripe.ledger import StripeLedger
from models.schemas import (
    AppliedMeter,
    HourState,
    MeterDriftLine,
    MeterDriftSummary,
    MeterEventFailure,
    MeterReconcileInput,
    MetersStatus,
    ReconciliationState,
    UsageHourInput,
    UsageHourProgress,
    UsageHourResult,
)
from models.settings import Settings
from repositories import meter_reports as repo
from services.errors import InvalidInput, refused_input
from services.inputs import parse_period
from services.temporal import TemporalClient, follow
from workflows.search_attributes import BILLING_PERIOD
from workflows.usage_report import (
    MetersReconcileWorkflow,
    UsageReportWorkflow,
    reconcile_workflow_id,
    usage_report_workflow_id,
)

__all__ = ["apply_meters", "reportable_hour", "report_hour", "meters_status", "reconcile", "drift_lines",
           "usage_report_workflow_id", "reconcile_workflow_id"]


# ---- the meters -------------------------------------------------------------------------------------------
def apply_meters(engine: Engine, gateway: StripeGateway, catalog: Catalog, clock) -> list[AppliedMeter]:
    """Create (or find) one Stripe meter per definition, each once, through the recorded Stripe call
    (subject ``meter:<key>``). A meter Stripe already has under the event name is adopted. Idempotent."""
    with refused_input("model"):
        defs = meter_definitions(known_models(catalog))
    with engine.begin() as conn:
        recorded = {m.key: m for m in repo.all_meters(conn)}
    out = []
    for d in defs:
        if d.key in recorded:
            m = recorded[d.key]
            out.append(AppliedMeter(key=d.key, event_name=m.event_name, stripe_meter_id=m.stripe_meter_id,
                                    how="recorded"))
            continue
        found = {"how": "created"}

        def already_done(err: StripeRejected, d=d) -> str | None:
            # "An active meter with event_name ... already exists": adopt it.
            existing = gateway.meters.find(d.event_name) if "already exists" in str(err) else None
            if existing:
                found["how"] = "found"
            return existing

        def lookup(d=d) -> str | None:
            existing = gateway.meters.find(d.event_name)
            if existing:
                found["how"] = "found"
            return existing

        stripe_id = StripeLedger(engine, clock).perform(
            subject=f"meter:{d.key}", step="create", identity=d.event_name,
            call=lambda key, d=d: gateway.meters.create(event_name=d.event_name, display_name=d.display_name,
                                                        key=d.key, idempotency_key=key),
            lookup=lookup, already_done=already_done)
        with engine.begin() as conn:
            repo.save_meter(conn, key=d.key, quantity=d.quantity, model=d.model, event_name=d.event_name,
                            stripe_meter_id=stripe_id)
        out.append(AppliedMeter(key=d.key, event_name=d.event_name, stripe_meter_id=stripe_id, how=found["how"]))
    return out


# ---- one hour by hand ---------------------------------------------------------------------------------------
def reportable_hour(hour_text: str, now: datetime) -> str:
    """The hour, if it may be reported at ``now``: ended, and within Stripe's 35-day window."""
    with refused_input("hour"):
        hour = parse_hour(hour_text)
    reason = why_not_reportable(hour, now)
    if reason is not None:
        raise InvalidInput("hour", reason)
    return format_hour(hour)


async def report_hour(temporal: TemporalClient, settings: Settings, hour: str, *, wait: bool = True,
                      on_progress: Callable[[UsageHourProgress], None] | None = None,
                      on_start: Callable[[str], None] | None = None) -> UsageHourResult | None:
    """Start (or attach to) ``usage-report-<hour>`` and, with ``wait``, return what it did. ``hour`` is
    checked by ``reportable_hour`` first (so bad input never dials Temporal)."""
    client = await temporal()
    wid = usage_report_workflow_id(hour)
    handle = await client.start_workflow(
        UsageReportWorkflow.run,
        UsageHourInput(hour=hour, chunk_size=settings.meters_chunk_size,
                       parallel_chunks=settings.meters_parallel_chunks),
        id=wid, task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_PERIOD, hour[:7])]),
        execution_timeout=timedelta(hours=6),
    )
    if on_start is not None:
        on_start(wid)
    if not wait:
        return None
    return await follow(handle, f"usage report {hour}", query=UsageReportWorkflow.progress,
                        progress_type=UsageHourProgress, on_progress=on_progress)


# ---- status -----------------------------------------------------------------------------------------------
def meters_status(engine: Engine, settings: Settings, now: datetime) -> MetersStatus:
    """How far reporting got (from the database only: no Temporal, no Stripe)."""
    due = last_ended_hour(now, timedelta(minutes=settings.meters_lag_minutes))
    with engine.begin() as conn:
        n_meters = len(repo.all_meters(conn))
        state = repo.report_state(conn)
        status = MetersStatus(meters=n_meters, due_through=format_hour(due))
        last = repo.last_reported_hour(conn)
        status.last_reported_hour = format_hour(last) if last else None
        if state is not None:
            since = state.reporting_since
            status.reporting_since = format_hour(since)
            if due >= since:
                # gaps: hours never looked at; listed from the window Stripe still accepts
                total = int((due - since) / HOUR) + 1
                status.gaps = total - repo.known_hours_between(conn, since, due)
                recent = max(since, oldest_reportable_hour(now))
                known = repo.hour_states(conn, recent, due)
                status.first_gaps = [format_hour(h) for h in hours_between(recent, due) if h not in known][:10]
        status.hours_by_state = repo.count_hours_by_state(conn)
        status.attention = [HourState(hour=format_hour(h.hour), state=h.state, failed=h.failed, error=h.error)
                            for h in repo.hours_not_reported(conn, 20)]
        status.unsettled_events = repo.count_unsettled(conn)
        status.failures = [MeterEventFailure(account_id=r.account_id, meter=r.key, hour=format_hour(r.hour),
                                             error=f"r{r.revision} ({r.quantity}) {r.state}: {r.error or 'no answer yet'}")
                           for r in repo.unsettled_reports(conn, 20)]
        status.reconciliations = [ReconciliationState(period=p, pairs=n, drifting=d, unexplained=u, checked_at=t,
                                                      unsettled=w)
                                  for p, n, d, u, t, w in repo.reconciliation_summaries(conn)]
    return status


# ---- reconciliation ---------------------------------------------------------------------------------------
async def reconcile(temporal: TemporalClient, settings: Settings, period_text: str, *, wait: bool = True,
                    rechecks: int = 0,
                    on_start: Callable[[str], None] | None = None) -> MeterDriftSummary | None:
    """Run (or attach to) ``meters-reconcile-<period>`` and return its summary. By hand the answer comes at
    once (``rechecks`` 0: pairs Stripe's lagging summaries do not show yet are counted as not settled);
    ``rechecks`` > 0 waits the settle time and checks those again, as the close does."""
    period = parse_period(period_text)
    client = await temporal()
    wid = reconcile_workflow_id(str(period))
    handle = await client.start_workflow(
        MetersReconcileWorkflow.run,
        MeterReconcileInput(period=str(period), chunk_size=settings.close_chunk_size,
                            parallel_chunks=settings.close_parallel_chunks,
                            settle_minutes=settings.meters_settle_minutes, rechecks=rechecks),
        id=wid, task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes([SearchAttributePair(BILLING_PERIOD, str(period))]),
        execution_timeout=timedelta(hours=6),
    )
    if on_start is not None:
        on_start(wid)
    if not wait:
        return None
    return await follow(handle, f"meter reconciliation {period}")


def drift_lines(engine: Engine, period_text: str, *, everything: bool = False,
                limit: int | None = 100) -> list[MeterDriftLine]:
    """The stored comparison of a period: drifting pairs (``everything``: every pair), largest first."""
    period = parse_period(period_text)
    with engine.begin() as conn:
        rows = repo.drift_lines(conn, str(period), only_drift=not everything, limit=limit)
    return [MeterDriftLine(account_id=r.account_id, meter=r.meter, tally=r.tally, reported=r.reported,
                           stripe=r.stripe, drift=r.drift, unexplained=r.unexplained, explanation=r.explanation,
                           unsettled=r.unsettled)
            for r in rows]
