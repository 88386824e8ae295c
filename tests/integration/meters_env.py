"""What the usage-reporting integration tests share: accounts and executions in given hours, the meters
applied in the emulator, the workflows run on the time-skipping server with a real worker, and the
emulator's meter events read back exactly."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import stripe
from sqlalchemy import text

from activities.deps import Deps, utc_now
from billing.meters import HOUR, format_hour, last_ended_hour
from gateways.stripe import StripeGateway
from models.db import get_engine
from models.schemas import (
    MeterReconcileInput,
    UsageHourInput,
    UsageReportScheduleInput,
)
from models.settings import EMULATOR_API_KEY, Settings
from repositories import meter_reports as repo
from services.meters import apply_meters
from tests.factories import create_account, event, ingest
from workers.worker import build_worker
from workflows.usage_report import (
    MetersReconcileWorkflow,
    ScheduledUsageReportWorkflow,
    UsageReportWorkflow,
    usage_report_workflow_id,
)

UTC = timezone.utc
_seq = itertools.count()


def recent_hour(hours_ago: int = 1) -> datetime:
    """An hour that ended ``hours_ago`` hours before now (1: the last one that ended)."""
    return last_ended_hour(datetime.now(UTC), timedelta(0)) - (hours_ago - 1) * HOUR


@dataclass
class MetersEnv:
    settings: Settings
    emulator: object
    env: object  # the Temporal WorkflowEnvironment

    def __post_init__(self):
        self.engine = get_engine(self.settings.database_url)
        self.deps = Deps(self.settings)
        self.client = stripe.StripeClient(EMULATOR_API_KEY, base_addresses={"api": self.emulator.url})

    # ---- data ---------------------------------------------------------------------------------------
    def account(self, account_id: str, plan: str = "pro", **kw) -> str:
        create_account(self.settings.database_url, account_id, plan, **kw)
        return account_id

    def use(self, account_id: str, hour: datetime, n: int = 1, *, model: str = "claude-haiku",
            minute: int = 5, **extra) -> list[dict]:
        """``n`` executions of the account in the hour (tokens 1000+i in, 200+i out)."""
        docs = []
        for _ in range(n):
            i = next(_seq)
            doc = event(account_id, i, hour + timedelta(minutes=minute, seconds=i % 60), model,
                        input_tokens=1000 + i, output_tokens=200 + i, **extra)
            doc["event_id"] = f"{account_id}-{uuid.uuid4().hex[:12]}"
            docs.append(doc)
        report = ingest(self.settings.database_url, docs)
        assert report.rejected == 0, report.rejections[:3]
        return docs

    def apply_meters(self):
        return apply_meters(self.engine, StripeGateway(self.settings), self.deps.catalog, utc_now)

    def meter_id(self, key: str) -> int:
        with self.engine.begin() as conn:
            return next(m.id for m in repo.all_meters(conn) if m.key == key)

    def customer(self, account_id: str) -> str | None:
        with self.engine.begin() as conn:
            return conn.execute(text("SELECT stripe_customer_id FROM accounts WHERE id = :a"),
                                {"a": account_id}).scalar_one()

    def start_reporting(self, since: datetime) -> None:
        """As if reporting had begun at ``since`` (what the first scheduled run records)."""
        with self.engine.begin() as conn:
            repo.start_reporting(conn, since=since, scanned_until=repo.db_now(conn))

    # ---- what Stripe holds ------------------------------------------------------------------------------
    def events(self, account_id: str | None = None) -> list[dict]:
        """Meter events the emulator accepted, in arrival order: event_name, customer, value, timestamp,
        identifier."""
        customers = None if account_id is None else {self.customer(account_id)}
        with self.emulator.state.lock:
            evs = list(self.emulator.state.meter_events)
        return [dict(event_name=e["event_name"], customer=e["_customer"], value=e["_value"],
                     timestamp=e["timestamp"], identifier=e["identifier"])
                for e in evs if customers is None or e["_customer"] in customers]

    def let_stripe_settle(self) -> None:
        """Time passes on the emulator clock until Stripe's summaries show every event sent so far (they lag
        behind ingestion: ``STRIPE_EMULATOR_METER_SUMMARY_LAG``, set in tests/conftest.py)."""
        self.emulator.state.advance_clock(self.emulator.state.meter_settings["summary_lag_seconds"] + 1)

    def lose_event(self, identifier: str) -> None:
        """Stripe loses an event it had accepted (what the reconciliation exists to catch)."""
        st = self.emulator.state
        with st.lock:
            [ev] = [e for e in st.meter_events if e["identifier"] == identifier]
            st.meter_events.remove(ev)
            st.meter_index[(ev["event_name"], ev["_customer"])].remove((ev["timestamp"], ev["_value"], ev["created"]))

    def meter_posts(self) -> list[dict]:
        return [r for r in self.emulator.requests() if r["method"] == "POST"
                and r["path"] == "/v1/billing/meter_events"]

    def customer_posts(self) -> list[dict]:
        return [r for r in self.emulator.requests() if r["method"] == "POST" and r["path"] == "/v1/customers"]

    # ---- workflows ----------------------------------------------------------------------------------------
    def without_sdk_retries(self) -> Deps:
        """Dependencies whose Stripe client retries nothing: each fault reaches Tally's own retries."""
        return Deps(self.settings.model_copy(update={"stripe_max_network_retries": 0}))

    def worker(self, deps: Deps | None = None):
        return build_worker(self.env.client, self.settings, deps or self.deps, fail_fast=True)

    async def report(self, hour: datetime, deps: Deps | None = None, **inp):
        async with self.worker(deps):
            return await self.env.client.execute_workflow(
                UsageReportWorkflow.run,
                UsageHourInput(hour=format_hour(hour), **{"chunk_size": 2, "parallel_chunks": 2, **inp}),
                id=usage_report_workflow_id(format_hour(hour)), task_queue=self.settings.task_queue)

    async def scheduled(self, target: datetime, deps: Deps | None = None, **inp):
        async with self.worker(deps):
            return await self.env.client.execute_workflow(
                ScheduledUsageReportWorkflow.run,
                UsageReportScheduleInput(target=format_hour(target),
                                         **{"chunk_size": 2, "parallel_chunks": 2, **inp}),
                id=f"scheduled-usage-report-{uuid.uuid4().hex[:8]}", task_queue=self.settings.task_queue)

    def later(self, minutes: int) -> Deps:
        """Dependencies whose clock (Tally's) runs ``minutes`` ahead: a reconciliation run that much later."""
        return Deps(self.settings, clock=lambda: utc_now() + timedelta(minutes=minutes))

    async def reconcile(self, period: str, deps: Deps | None = None):
        async with self.worker(deps):
            handle = await self.env.client.start_workflow(
                MetersReconcileWorkflow.run, MeterReconcileInput(period=period, chunk_size=2, parallel_chunks=2),
                id=f"meters-reconcile-{period}-{uuid.uuid4().hex[:6]}", task_queue=self.settings.task_queue)
            return await handle.result(), handle
