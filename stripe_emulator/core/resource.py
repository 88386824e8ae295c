"""What a resource module declares, and what its handlers receive.

A handler is ``fn(state, req) -> dict``: the Stripe object for HTTP 200, or it raises ``StripeError``. The
pipeline calls it with ``state.lock`` held, after authentication, parameter decoding, idempotency and
faults, so a handler is Stripe's business rules and nothing else (no HTTP in it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .state import EmulatorState, Store


@dataclass
class ApiRequest:
    method: str
    path: str
    params: dict
    args: dict = field(default_factory=dict)  # path parameters, e.g. {"id": "cus_..."}
    api_key: str = ""


Handler = Callable[[EmulatorState, ApiRequest], dict]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # template, e.g. "/v1/customers/{id}"
    handler: Handler
    # The parameters the operation takes (core/params.py ``known``; ``expand`` is taken everywhere): any
    # other is refused as Stripe refuses it, "Received unknown parameter: <name>". None: not checked.
    params: dict | None = None


@dataclass(frozen=True)
class Resource:
    """One Stripe resource: its operations, the stores it keeps in the state, and (optionally) a periodic
    ``prune_expired(state)`` that forgets what has outlived its retention window."""

    name: str
    operations: tuple[Operation, ...]
    stores: tuple[Store, ...] = ()
    prune_expired: Callable[[EmulatorState], int] | None = None
