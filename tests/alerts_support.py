"""What the alerts tests share: a real SMTP sink (aiosmtpd, the dev stack's own) on a free port, the
delivery activity run as Temporal runs it, and a catalog with other alert numbers."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.alerts import AlertsActivities
from activities.deps import Deps
from billing.catalog import AlertSettings, Catalog, default_catalog
from models.db import get_engine
from models.schemas import DeliverNotificationsInput, DeliveryResult
from models.settings import Settings
from workers.devstack.smtp_sink import SinkMessage, SmtpSink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_sink(tmp_path):
    sink = SmtpSink(tmp_path / f"mail-{uuid.uuid4().hex[:6]}", free_port()).start()
    yield sink
    sink.stop()


def mail_settings(database_url: str, sink: SmtpSink, home: Path, **extra) -> Settings:
    return Settings(home=home, database_url=database_url, smtp_url=sink.url, smtp_timeout_seconds=5,
                    ops_email="ops@example.com", **extra)


def deliver(database_url: str, sink: SmtpSink, home: Path, **inp) -> DeliveryResult:
    """One run of the delivery activity (in an activity context, as the worker runs it)."""
    deps = Deps(mail_settings(database_url, sink, home), engine=get_engine(database_url), catalog=default_catalog())
    return ActivityEnvironment().run(AlertsActivities(deps).deliver_notifications, DeliverNotificationsInput(**inp))


def subjects(messages: list[SinkMessage]) -> list[str]:
    return [m.subject for m in messages]


def with_alert_settings(**numbers) -> Catalog:
    """The packaged catalog with other alert numbers (every version)."""
    catalog = default_catalog()
    return Catalog(versions=tuple(v.model_copy(update={"alerts": AlertSettings(**{
        **v.alert_settings().model_dump(), **numbers})}) for v in catalog.versions))


def payg_with_budget(live):
    """On a live API (tests/api/conftest.py's LiveApi): a PAYG account ($0.01 per execution) with a $1.00
    budget, 50 % at 50 executions, 80 % at 80, 100 % at 100. Its platform's client."""
    key = live.platform("p1")
    live.account("payg-1", "payg", platform="p1", email="owner@payg.example")
    client = live.client(key)
    assert client.put("/v1/accounts/payg-1/budget", json={"amount": "1.00"}).status_code == 200
    return client
