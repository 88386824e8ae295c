"""The emulated Stripe resources, one module each. A module declares ``resource = Resource(...)``: its
operations (method, path template, handler), the stores it keeps in the state, and optional housekeeping.

To add a resource (checkout sessions, webhook endpoints, ...): write its module and add it to RESOURCES.
Routing, authentication, idempotency, faults, the request log and the state file apply to it unchanged.
"""

from __future__ import annotations

from ..core.resource import Resource
from ..core.state import Store
from . import accounts, checkout, customers, invoice_items, invoices, meters, transfers

RESOURCES: tuple[Resource, ...] = (
    customers.resource,
    invoices.resource,
    invoice_items.resource,
    meters.resource,
    accounts.resource,
    transfers.resource,
    checkout.resource,
)


def all_stores(resources: tuple[Resource, ...] = RESOURCES) -> tuple[Store, ...]:
    return tuple(store for r in resources for store in r.stores)
