"""Webhook events: what the emulator sends to a configured endpoint, signed like Stripe, with switches
to misbehave the way Stripe may.

``configure(state, url, secret, duplicate=1, delay_seconds=0, reorder=False, hold=False)``:
- ``duplicate``: each event is delivered that many times (Stripe may deliver one more than once);
- ``delay_seconds``: each delivery waits this long first (a slow or backed-up Stripe);
- ``reorder``: events are held and sent newest first at ``flush`` (Stripe promises no order);
- ``hold``: events are held until ``flush`` (the endpoint was down; Stripe retries for three days).
A delivery answered with anything but 2xx stays queued and is sent again at the next ``flush``.

``settle_session(state, session_id, outcome)`` moves a Checkout Session as a buyer or a bank would and
emits the events Stripe would send: ``paid`` (``checkout.session.completed``, payment_status paid),
``async_pending`` (completed, unpaid), ``async_succeeded`` / ``async_failed``
(``checkout.session.async_payment_*``), ``expired`` (``checkout.session.expired``).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.error
import urllib.request

from .core.errors import StripeError, find
from .core.ids import new_id

OUTCOMES = ("paid", "async_pending", "async_succeeded", "async_failed", "expired")


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    import hashlib
    import hmac

    return f"t={timestamp},v1={hmac.new(secret.encode(), f'{timestamp}.'.encode() + payload, hashlib.sha256).hexdigest()}"


def configure(state, url: str | None, secret: str | None, duplicate: int = 1, delay_seconds: float = 0.0,
              reorder: bool = False, hold: bool = False) -> dict:
    if duplicate < 1:
        raise ValueError("duplicate must be at least 1")
    if delay_seconds < 0:
        raise ValueError("delay_seconds must be >= 0")
    with state.lock:
        cfg = state.webhook_config
        cfg.clear()
        cfg.update(url=url, secret=secret, duplicate=int(duplicate), delay_seconds=float(delay_seconds),
                   reorder=bool(reorder), hold=bool(hold))
        cfg.setdefault("queue", [])
        cfg.setdefault("deliveries", [])
        return {k: v for k, v in cfg.items() if k not in ("queue", "deliveries")}


def _cfg(state) -> dict:
    cfg = state.webhook_config
    cfg.setdefault("queue", [])
    cfg.setdefault("deliveries", [])
    return cfg


def emit(state, event_type: str, obj: dict) -> dict:
    """Record an event (``state.events``) and queue or send its deliveries. Call with the lock held."""
    event = {"id": new_id("evt", 24), "object": "event", "api_version": "2024-06-20", "created": int(state.now()),
             "type": event_type, "data": {"object": copy.deepcopy(obj)}, "livemode": False,
             "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}}
    state.events[event["id"]] = event
    cfg = _cfg(state)
    if not cfg.get("url"):
        return event
    copies = [event["id"]] * cfg.get("duplicate", 1)
    if cfg.get("hold") or cfg.get("reorder"):
        cfg["queue"].extend(copies)
    else:
        for event_id in copies:
            threading.Thread(target=_deliver_later, args=(state, event_id, cfg.get("delay_seconds", 0.0)),
                             daemon=True, name="stripe-emulator-webhook").start()
    return event


def _deliver_later(state, event_id: str, delay: float) -> None:
    if delay:
        time.sleep(delay)
    if deliver(state, event_id) // 100 != 2:
        with state.lock:
            _cfg(state)["queue"].append(event_id)


def deliver(state, event_id: str) -> int:
    """POST one event to the endpoint, signed now (real time: the receiver checks a 300 s tolerance).
    Returns the HTTP status (0: no answer)."""
    with state.lock:
        cfg = _cfg(state)
        url, secret = cfg.get("url"), cfg.get("secret") or ""
        event = state.events.get(event_id)
    if not url or event is None:
        return 0
    payload = json.dumps(event).encode()
    req = urllib.request.Request(url, data=payload, method="POST", headers={
        "Content-Type": "application/json", "Stripe-Signature": sign(payload, secret, int(time.time())),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status = resp.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError):
        status = 0
    with state.lock:
        _cfg(state)["deliveries"].append({"event": event_id, "type": event["type"], "status": status,
                                          "at": time.time()})
    return status


def flush(state) -> list[dict]:
    """Send every queued delivery now (newest first when ``reorder``); returns what each answered."""
    with state.lock:
        cfg = _cfg(state)
        queue, cfg["queue"] = list(cfg["queue"]), []
        reorder, delay = cfg.get("reorder", False), cfg.get("delay_seconds", 0.0)
    if reorder:
        queue.reverse()
    out = []
    for event_id in queue:
        if delay:
            time.sleep(delay)
        status = deliver(state, event_id)
        out.append({"event": event_id, "status": status})
        if status // 100 != 2:
            with state.lock:
                _cfg(state)["queue"].append(event_id)
    return out


def settle_session(state, session_id: str, outcome: str) -> dict:
    """Move a Checkout Session as the buyer/bank would and emit Stripe's events for it."""
    if outcome not in OUTCOMES:
        raise StripeError(400, f"outcome must be one of {', '.join(OUTCOMES)}", param="outcome")
    with state.lock:
        s = find(state.checkout_sessions, "checkout.session", session_id)
        if outcome == "expired":
            if s["status"] != "open":
                raise StripeError(400, f"session {session_id} is {s['status']}, not open")
            s["status"] = "expired"
            emit(state, "checkout.session.expired", s)
            return s
        if outcome in ("paid", "async_pending"):
            if s["status"] != "open":
                raise StripeError(400, f"session {session_id} is {s['status']}, not open")
            s["status"] = "complete"
            s["payment_intent"] = new_id("pi", 24)
            s["payment_status"] = "paid" if outcome == "paid" else "unpaid"
            emit(state, "checkout.session.completed", s)
            return s
        if s["status"] != "complete" or s["payment_status"] != "unpaid":
            raise StripeError(400, f"session {session_id} has no delayed payment pending")
        if outcome == "async_succeeded":
            s["payment_status"] = "paid"
            emit(state, "checkout.session.async_payment_succeeded", s)
        else:
            emit(state, "checkout.session.async_payment_failed", s)
        return s


def deliveries(state) -> list[dict]:
    with state.lock:
        return list(_cfg(state)["deliveries"])
