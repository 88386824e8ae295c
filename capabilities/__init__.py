"""The capability registry: what each capability of Tally brings to a worker, a namespace and the CLI.

A capability (the monthly close today; usage reporting, credits, payouts, contracts and alerts next)
declares, in ONE entry of ``CAPABILITIES``:
- its workflow classes (hosted by every worker),
- an activities factory taking the one dependency object (``activities.deps.Deps``) and returning
  objects whose ``@activity.defn`` methods the worker registers,
- its Temporal Schedules (``tally schedules apply`` creates or updates them),
- the search attributes its workflows set (the dev stack, the test fixtures and
  deploy/temporal/search-attributes.txt register exactly these),
- its CLI groups, as ``"module:attribute"`` paths, imported only by the CLI,
- its usage observers (``"module:function"``): ``fn(engine, catalog, RecordedUsage)``, called after
  every committed batch of executions (file ingest and the HTTP API) with the accounts that got new
  executions. They must be idempotent and catch up (book everything not yet booked for those accounts):
  a crash between the batch and the observer is repaired by the next batch of the account,
- its Stripe webhook handlers: event type -> ``"module:function"``: ``fn(conn, event, now)``, run in the
  transaction that records the event once (``services/webhooks.py``); Stripe redelivers and reorders,
  so a handler acts on the state the event names, never on its arrival order.

The worker, ``tally schedules apply``, the dev stack, deploy/ and the test fixtures read this list;
none of them names a workflow, an activity or a search attribute of their own. How to add a
capability: docs/architecture.md, "Adding a workflow".
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable

from temporalio.common import SearchAttributeKey

from workflows import alerts as alerts_workflows
from workflows import close as close_workflows
from workflows import contracts as contract_workflows
from workflows import credits as credit_workflows
from workflows import payouts as payout_workflows
from workflows import usage_report as usage_report_workflows
from workflows import partitions as partition_workflows
from workflows.search_attributes import (
    ANOMALY_STATE,
    BILLING_ACCOUNT_IDS,
    BILLING_PERIOD,
    METER_DRIFT,
    METER_FAILURES,
    PAYOUT_STATUS,
    kind_name,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from activities.deps import Deps
    from billing.catalog import Catalog
    from models.schemas import RecordedUsage
    from models.settings import Settings
    from capabilities.schedules import ScheduleDef


@dataclass(frozen=True)
class Capability:
    name: str
    description: str
    workflows: tuple[type, ...]
    activities: Callable[[Deps], list[Any]]
    schedules: Callable[[Settings], list[ScheduleDef]] = lambda _settings: []
    search_attributes: tuple[SearchAttributeKey, ...] = ()
    cli_groups: tuple[str, ...] = field(default=())
    usage_observers: tuple[str, ...] = field(default=())
    webhook_handlers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def _close_activities(deps: Deps) -> list[Any]:
    from activities.close import CloseActivities

    return [CloseActivities(deps)]


def _close_schedules(settings: Settings) -> list[ScheduleDef]:
    from capabilities.schedules import monthly_close_schedule

    return [monthly_close_schedule(settings)]


def _contract_activities(deps: Deps) -> list[Any]:
    from activities.contracts import ContractActivities

    return [ContractActivities(deps)]


def _meter_activities(deps: Deps) -> list[Any]:
    from activities.meters import MeterActivities

    return [MeterActivities(deps)]


def _meter_schedules(settings: Settings) -> list[ScheduleDef]:
    from capabilities.schedules import usage_report_schedule

    return [usage_report_schedule(settings)]


def _alerts_activities(deps: Deps) -> list[Any]:
    from activities.alerts import AlertsActivities

    return [AlertsActivities(deps)]


def _alerts_schedules(settings: Settings) -> list[ScheduleDef]:
    from capabilities.schedules import mid_month_trend_schedule, notifications_outbox_schedule

    return [notifications_outbox_schedule(settings), mid_month_trend_schedule(settings)]


def _payout_activities(deps: Deps) -> list[Any]:
    from activities.payouts import PayoutActivities

    return [PayoutActivities(deps)]


def _payout_schedules(settings: Settings) -> list[ScheduleDef]:
    from capabilities.schedules import monthly_payouts_schedule

    return [monthly_payouts_schedule(settings)]


def _credit_activities(deps: Deps) -> list[Any]:
    from activities.credits import CreditActivities

    return [CreditActivities(deps)]


def _credit_schedules(settings: Settings) -> list[ScheduleDef]:
    from capabilities.schedules import credit_grants_sweep_schedule, credit_purchases_poll_schedule

    return [credit_purchases_poll_schedule(settings), credit_grants_sweep_schedule(settings)]


_CREDIT_WEBHOOKS = MappingProxyType({
    "checkout.session.completed": "services.credits:on_checkout_completed",
    "checkout.session.async_payment_succeeded": "services.credits:on_async_payment_succeeded",
    "checkout.session.async_payment_failed": "services.credits:on_async_payment_failed",
    "checkout.session.expired": "services.credits:on_checkout_expired",
})


def _partition_activities(deps: Deps) -> list[Any]:
    from activities.partitions import PartitionActivities

    return [PartitionActivities(deps)]


def _partition_schedules(settings: Settings) -> list[ScheduleDef]:
    from capabilities.schedules import execution_partitions_schedule

    return [execution_partitions_schedule(settings)]


CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        name="close",
        description="the monthly close: rate every account, write invoices, push them to Stripe",
        workflows=close_workflows.WORKFLOWS,
        activities=_close_activities,
        schedules=_close_schedules,
        search_attributes=(BILLING_PERIOD, BILLING_ACCOUNT_IDS),
        cli_groups=("workers.cli.close:close", "workers.cli.invoices:invoices"),
    ),
    Capability(
        name="contracts",
        description="enterprise committed-use contracts: one workflow per term (contract-<id>) reconciles each "
                    "month after its close, takes amendments as updates and writes the term summary",
        workflows=contract_workflows.WORKFLOWS,
        activities=_contract_activities,
        search_attributes=(BILLING_ACCOUNT_IDS, BILLING_PERIOD),
        cli_groups=("workers.cli.contracts:contracts",),
    ),
    Capability(
        name="routing",
        description="dynamic model routing: quality scores, POST /v1/route, the savings report",
        workflows=(),
        activities=lambda _deps: [],
        cli_groups=("workers.cli.routing:routing",),
    ),
    Capability(
        name="usage_reporting",
        description="every account's usage reported hourly to Stripe Billing Meters, never twice, caught up "
                    "after outages, reconciled at close",
        workflows=usage_report_workflows.WORKFLOWS,
        activities=_meter_activities,
        schedules=_meter_schedules,
        search_attributes=(BILLING_PERIOD, METER_DRIFT, METER_FAILURES),
        cli_groups=("workers.cli.meters:meters",),
    ),
    Capability(
        name="alerts",
        description="budgets, cost anomalies (loop kill, spike pause, fallback, trend) and the e-mail "
                    "delivery of every notice in the outbox",
        workflows=alerts_workflows.WORKFLOWS,
        activities=_alerts_activities,
        schedules=_alerts_schedules,
        search_attributes=(ANOMALY_STATE, BILLING_ACCOUNT_IDS, BILLING_PERIOD),
        cli_groups=("workers.cli.alerts:anomalies", "workers.cli.alerts:notifications"),
        usage_observers=("services.alerts:on_usage",),
    ),
    Capability(
        name="payouts",
        description="creator revenue share: premium skills, earnings per invoice line payable when the invoice "
                    "is paid, the monthly payouts-YYYY-MM run ($25 minimum, carry-over), failed payouts "
                    "waiting for ops (payout-<creator>-<YYYY-MM>)",
        workflows=payout_workflows.WORKFLOWS,
        activities=_payout_activities,
        schedules=_payout_schedules,
        search_attributes=(PAYOUT_STATUS, BILLING_PERIOD),
        cli_groups=("workers.cli.payouts:creators", "workers.cli.payouts:payouts", "workers.cli.payouts:skills"),
        webhook_handlers=MappingProxyType({
            "invoice.paid": "services.payouts:on_invoice_paid",
            "charge.refunded": "services.payouts:on_charge_refunded",
            "charge.dispute.created": "services.payouts:on_dispute_created",
            "charge.dispute.closed": "services.payouts:on_dispute_closed",
            "account.updated": "services.payouts:on_account_updated",
        }),
    ),
    Capability(
        name="credits",
        description="prepaid credits: packages bought through Stripe Checkout, granted once from the signed "
                    "webhook or the poll, consumed as executions arrive, expired by one workflow per grant "
                    "(credit-grant-<id>)",
        workflows=credit_workflows.WORKFLOWS,
        activities=_credit_activities,
        schedules=_credit_schedules,
        search_attributes=(BILLING_ACCOUNT_IDS,),
        cli_groups=("workers.cli.credits:credits",),
        usage_observers=("services.credits:on_usage",),
        webhook_handlers=_CREDIT_WEBHOOKS,
    ),
    Capability(
        name="partitions",
        description="executions partitioned by month: partitions created ahead daily, old months archived "
                    "to files and restorable (tally usage archive / restore)",
        workflows=partition_workflows.WORKFLOWS,
        activities=_partition_activities,
        schedules=_partition_schedules,
    ),
)


# ---- what the worker, schedules, dev stack and fixtures read ----------------------------------------
def workflows() -> list[type]:
    return [wf for cap in CAPABILITIES for wf in cap.workflows]


def activity_objects(deps: Deps) -> list[Any]:
    return [obj for cap in CAPABILITIES for obj in cap.activities(deps)]


def activities(deps: Deps) -> list[Callable]:
    """Every ``@activity.defn`` method of every capability's activity objects, bound to them."""
    found = []
    for obj in activity_objects(deps):
        # Look on the class: reading every attribute of the instance would build its lazy resources.
        for name, fn in inspect.getmembers(type(obj), inspect.isfunction):
            if hasattr(fn, "__temporal_activity_definition"):
                found.append(getattr(obj, name))
    return found


def schedules(settings: Settings) -> list[ScheduleDef]:
    return [d for cap in CAPABILITIES for d in cap.schedules(settings)]


def _resolve(path: str) -> Any:
    import importlib

    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def cli_groups() -> list[Any]:
    """Each capability's Click groups, imported by path (only the CLI imports Click)."""
    return [_resolve(path) for cap in CAPABILITIES for path in cap.cli_groups]


def observe_usage(engine: Engine, catalog: Catalog, recorded: RecordedUsage) -> None:
    """Tell every capability that watches usage about a committed batch. An observer that fails is
    logged, never fails the ingest (the executions are recorded): it catches up on the next batch."""
    if not recorded.account_ids:
        return
    for cap in CAPABILITIES:
        for path in cap.usage_observers:
            try:
                _resolve(path)(engine, catalog, recorded)
            except Exception:  # noqa: BLE001 - an observer must never lose the batch it watches
                logging.getLogger("tally.usage").exception("usage observer %s failed; it catches up later", path)


def webhook_handlers() -> dict[str, list[Callable]]:
    """Stripe event type -> the handlers of every capability that acts on it."""
    out: dict[str, list[Callable]] = {}
    for cap in CAPABILITIES:
        for event_type, path in cap.webhook_handlers.items():
            out.setdefault(event_type, []).append(_resolve(path))
    return out


def search_attributes() -> dict[str, SearchAttributeKey]:
    """name -> key, each once (two capabilities may share one attribute, never with two types)."""
    out: dict[str, SearchAttributeKey] = {}
    for cap in CAPABILITIES:
        for key in cap.search_attributes:
            seen = out.get(key.name)
            if seen is not None and seen.indexed_value_type != key.indexed_value_type:
                raise ValueError(f"search attribute {key.name} declared with two types")
            out[key.name] = key
    return out


def search_attribute_kinds() -> dict[str, str]:
    """name -> operator type name (Keyword, KeywordList, ...), for the dev server and deploy/."""
    return {name: kind_name(key) for name, key in search_attributes().items()}


SEARCH_ATTRIBUTES_FILE_HEADER = (
    "# Generated from capabilities/__init__.py by `python -m capabilities search-attributes`; a test keeps\n"
    "# it equal to the registry. Read by deploy/temporal/setup-namespace.sh (one `Name Type` a line).\n"
)


def search_attributes_file() -> str:
    return SEARCH_ATTRIBUTES_FILE_HEADER + "".join(
        f"{name} {kind}\n" for name, kind in sorted(search_attribute_kinds().items()))

