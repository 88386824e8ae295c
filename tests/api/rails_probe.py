"""A stand-in capability for the rails tests: a webhook handler and a usage observer that write what
they saw into the notifications outbox (a table every test database has)."""

from __future__ import annotations

import capabilities
from repositories import notifications

FAIL_ON = set()  # event ids whose handling fails (the delivery must roll back)
OBSERVED: list[tuple[str, ...]] = []
OBSERVER_FAILS = [False]


def on_probe_event(conn, event, now) -> None:
    if event["id"] in FAIL_ON:
        raise RuntimeError(f"handler failed on {event['id']}")
    account = event["data"]["object"]["account"]
    notifications.notify(conn, account_id=account, kind="probe", dedupe_key=f"probe:{event['id']}",
                         subject=event["type"], body="", payload={"event": event["id"]})


def observe(engine, catalog, recorded) -> None:
    if OBSERVER_FAILS[0]:
        raise RuntimeError("observer down")
    OBSERVED.append(recorded.account_ids)


PROBE = capabilities.Capability(
    name="rails-probe", description="test stand-in", workflows=(), activities=lambda deps: [],
    usage_observers=("tests.api.rails_probe:observe",),
    webhook_handlers={"probe.happened": "tests.api.rails_probe:on_probe_event"},
)
