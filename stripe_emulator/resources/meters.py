"""Billing meters, meter events and event summaries.

Meter events need an active meter for ``event_name``, the meter's customer key in ``payload`` (default
``stripe_customer_id``) and a whole-number value (default key ``value``; optional for ``count``), with a
``timestamp`` within [now - 35 days, now + 5 minutes] on the emulator clock. ``identifier`` (generated when
absent) is unique per event name for 24 h.

Event summaries, as Stripe documents them: ``start_time`` and ``end_time`` on minute boundaries (hour or UTC
day boundaries with ``value_grouping_window=hour|day``), and they lag behind ingestion: an event counts once
it is ``summary_lag_seconds`` old on the emulator clock (0 unless set: ``set_summary_lag(state, seconds)``,
or ``STRIPE_EMULATOR_METER_SUMMARY_LAG`` in the environment of the emulator's process).
"""

from __future__ import annotations

import os
import re
import uuid
from collections import defaultdict

from ..core.errors import StripeError, find, missing
from ..core.ids import new_id
from ..core.listing import newest_first, paginate
from ..core.params import ANY, LIST, known, p_enum, p_int, p_str
from ..core.resource import Operation, Resource
from ..core.state import EmulatorState, Store

METER_PAST_WINDOW = 35 * 86400
METER_FUTURE_WINDOW = 5 * 60
METER_IDENTIFIER_TTL = 24 * 3600
SUMMARY_LAG_ENV = "STRIPE_EMULATOR_METER_SUMMARY_LAG"
WINDOW_SECONDS = {"hour": 3600, "day": 86400}


def default_meter_settings() -> dict:
    """The meters' own settings; reset (and a restart) go back to these."""
    try:
        lag = float(os.environ.get(SUMMARY_LAG_ENV, "0") or 0)
    except ValueError:
        lag = 0.0
    return {"summary_lag_seconds": max(0.0, lag)}


def set_summary_lag(st: EmulatorState, seconds: float) -> None:
    """Event summaries count an event only once it is ``seconds`` old (real Stripe lags too)."""
    if seconds < 0:
        raise ValueError("the summary lag must be >= 0 seconds")
    with st.lock:
        st.meter_settings["summary_lag_seconds"] = float(seconds)


def find_meter(st: EmulatorState, mid: str) -> dict:
    return find(st.meters, "billing.meter", mid)


def create_meter(st, req):
    p = req.params
    display_name = p_str(p, "display_name", required=True)
    event_name = p_str(p, "event_name", required=True)
    agg = p.get("default_aggregation")
    if not isinstance(agg, dict) or not agg.get("formula"):
        raise missing("default_aggregation[formula]")
    formula = p_enum(agg, "formula", ("sum", "count", "last"), label="default_aggregation[formula]")
    if any(m["event_name"] == event_name and m["status"] == "active" for m in st.meters.values()):
        raise StripeError(400, f"An active meter with event_name '{event_name}' already exists.",
                          param="event_name")
    cm = p.get("customer_mapping") or {}
    vs = p.get("value_settings") or {}
    if not isinstance(cm, dict) or not isinstance(vs, dict):
        raise StripeError(400, "Invalid customer_mapping or value_settings: must be hashes")
    now = int(st.now())
    m = {
        "id": new_id("mtr"), "object": "billing.meter", "created": now,
        "customer_mapping": {"event_payload_key": cm.get("event_payload_key") or "stripe_customer_id",
                             "type": cm.get("type") or "by_id"},
        "default_aggregation": {"formula": formula}, "display_name": display_name,
        "event_name": event_name, "event_time_window": p_str(p, "event_time_window"), "livemode": False,
        "status": "active", "status_transitions": {"deactivated_at": None}, "updated": now,
        "value_settings": {"event_payload_key": vs.get("event_payload_key") or "value"},
    }
    st.meters[m["id"]] = m
    return m


def get_meter(st, req):
    return find_meter(st, req.args["id"])


def list_meters(st, req):
    status = p_enum(req.params, "status", ("active", "inactive"))
    return paginate(newest_first(st.meters, (lambda m: m["status"] == status) if status else None),
                    req, "/v1/billing/meters")


def create_meter_event(st, req):
    p = req.params
    event_name = p_str(p, "event_name", required=True)
    payload = p.get("payload")
    if payload in (None, ""):
        raise missing("payload")
    if not isinstance(payload, dict):
        raise StripeError(400, "Invalid payload: must be a hash", param="payload")
    now = st.now()
    ts = p_int(p, "timestamp", default=int(now))
    if ts < now - METER_PAST_WINDOW:
        raise StripeError(400, f"Timestamp {ts} is too far in the past: meter events must be within the "
                               "past 35 calendar days.", param="timestamp", code="timestamp_too_far_in_past")
    if ts > now + METER_FUTURE_WINDOW:
        raise StripeError(400, f"Timestamp {ts} is too far in the future: meter events can be at most 5 "
                               "minutes in the future.", param="timestamp", code="timestamp_in_future")
    identifier = p_str(p, "identifier") or str(uuid.uuid4())
    if len(identifier) > 100:
        raise StripeError(400, "Invalid identifier: must be at most 100 characters", param="identifier")
    seen = st.meter_identifiers.get((event_name, identifier))
    if seen is not None and now - seen <= METER_IDENTIFIER_TTL:
        # Real Stripe: 400 invalid_request_error with this message and Stripe-Should-Retry: false.
        raise StripeError(400, f"An event already exists with identifier {identifier}.",
                          param="identifier", headers={"Stripe-Should-Retry": "false"})
    meter = next((m for m in st.meters.values()
                  if m["event_name"] == event_name and m["status"] == "active"), None)
    if meter is None:
        raise StripeError(400, f"No active meter with event_name '{event_name}' exists.",
                          param="event_name", code="no_meter")
    ckey = meter["customer_mapping"]["event_payload_key"]
    vkey = meter["value_settings"]["event_payload_key"]
    customer = payload.get(ckey)
    if not customer or not isinstance(customer, str):
        raise StripeError(400, f"Customer mapping key {ckey} not found in payload.",
                          param=f"payload[{ckey}]", code="meter_event_no_customer_defined")
    raw = payload.get(vkey)
    if meter["default_aggregation"]["formula"] == "count" and raw in (None, ""):
        value = 1
    else:
        if not isinstance(raw, str) or not re.fullmatch(r"-?\d{1,15}", raw.strip()):
            raise StripeError(400, f"Invalid value for payload[{vkey}]: {raw!r}; meter event values must be "
                                   "whole numbers.", param=f"payload[{vkey}]", code="meter_event_invalid_value")
        value = int(raw)
    ev = {"object": "billing.meter_event", "created": int(now), "event_name": event_name,
          "identifier": identifier, "livemode": False, "payload": payload, "timestamp": ts}
    st.meter_identifiers[(event_name, identifier)] = now
    st.meter_events.append({**ev, "_customer": customer, "_value": value})
    st.meter_index[(event_name, customer)].append((ts, value, int(now)))
    return ev


def _aligned(name: str, value: int, window: str | None) -> None:
    step = WINDOW_SECONDS.get(window, 60)
    if value % step:
        unit = {"hour": "hour", "day": "day (00:00 UTC)"}.get(window, "minute")
        extra = f" when value_grouping_window is {window}" if window else ""
        raise StripeError(400, f"{name} must be aligned with {unit} boundaries{extra}; got {value}.",
                          param=name)


def meter_event_summaries(st, req):
    m = find_meter(st, req.args["id"])
    p = req.params
    customer = p_str(p, "customer", required=True)
    start = p_int(p, "start_time", required=True)
    end = p_int(p, "end_time", required=True)
    window = p_enum(p, "value_grouping_window", ("hour", "day"))
    _aligned("start_time", start, window)
    _aligned("end_time", end, window)
    if end <= start:
        raise StripeError(400, "end_time must be after start_time.", param="end_time")
    visible_before = st.now() - st.meter_settings["summary_lag_seconds"]
    events = [(t, v) for t, v, created in st.meter_index.get((m["event_name"], customer), [])
              if created <= visible_before]
    formula = m["default_aggregation"]["formula"]

    def aggregate(lo, hi):
        vals = sorted((t, v) for t, v in events if lo <= t < hi)
        if formula == "sum":
            return float(sum(v for _, v in vals))
        if formula == "count":
            return float(len(vals))
        return float(vals[-1][1]) if vals else 0.0

    step = WINDOW_SECONDS.get(window, end - start)
    summaries = []
    lo = start
    while lo < end:
        hi = min(lo + step, end)
        summaries.append({
            "id": f"mtrusg_{m['id'][4:]}_{lo}", "object": "billing.meter_event_summary",
            "aggregated_value": aggregate(lo, hi), "end_time": hi, "livemode": False, "meter": m["id"],
            "start_time": lo,
        })
        lo = hi
    return paginate(summaries, req, f"/v1/billing/meters/{m['id']}/event_summaries")


def index_meter_events(st: EmulatorState) -> dict:
    """(event_name, customer) -> [(timestamp, value, created)]: what summaries read."""
    index: dict = defaultdict(list)
    for ev in st.meter_events:
        if ev.get("_customer") is not None:
            index[(ev["event_name"], ev["_customer"])].append((ev["timestamp"], ev["_value"], ev["created"]))
    return index


def prune_identifiers(st: EmulatorState) -> int:
    """Forget identifiers accepted more than 24 h ago (they may be reused)."""
    with st.lock:
        now = st.now()
        dead = [k for k, t in st.meter_identifiers.items() if now - t > METER_IDENTIFIER_TTL]
        for k in dead:
            del st.meter_identifiers[k]
        return len(dead)


resource = Resource(
    "meters",
    stores=(
        Store("meters"),
        Store("meter_events", factory=list),  # "_customer" and "_value" are internal
        # (event_name, identifier) -> emulator time the identifier was first accepted
        Store("meter_identifiers", counted=False, dump=lambda ids: [[e, i, t] for (e, i), t in ids.items()],
              load=lambda rows: {(e, i): t for e, i, t in rows}),
        Store("meter_index", factory=lambda: defaultdict(list), counted=False, derive=index_meter_events),
        # not saved: the environment of the emulator's process (or a test) sets them
        Store("meter_settings", factory=default_meter_settings, counted=False,
              derive=lambda st: default_meter_settings()),
    ),
    operations=(
        Operation("POST", "/v1/billing/meters", create_meter,
                  known("display_name", "event_name", "event_time_window",
                        default_aggregation=known("formula"), customer_mapping=known("event_payload_key", "type"),
                        value_settings=known("event_payload_key"))),
        Operation("GET", "/v1/billing/meters", list_meters, known("status", **LIST)),
        Operation("GET", "/v1/billing/meters/{id}", get_meter, {}),
        Operation("GET", "/v1/billing/meters/{id}/event_summaries", meter_event_summaries,
                  known("customer", "start_time", "end_time", "value_grouping_window", "limit",
                        "starting_after", "ending_before")),
        Operation("POST", "/v1/billing/meter_events", create_meter_event,
                  known("event_name", "identifier", "timestamp", payload=ANY)),
    ),
    prune_expired=prune_identifiers,
)
