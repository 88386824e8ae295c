"""The one dependency object every capability's activities are built from.

A worker builds one ``Deps`` from its settings and hands it to each capability's activities factory
(capabilities/__init__.py). Tests pass their own engine, gateway, catalog or clock. Heavy pieces (the
connection pool, the Stripe client, the catalog file) are created on first use, so a worker that never
touches Stripe never builds a Stripe client.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Callable

from billing.catalog import Catalog, load_catalog
from models.db import get_engine, worker_pool
from models.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from gateways.stripe import StripeGateway

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Deps:
    """Settings, a Postgres engine, the Stripe gateway, the catalog and a clock."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, engine: Engine | None = None,
                 stripe: StripeGateway | None = None, catalog: Catalog | None = None):
        self.settings = settings
        self.clock: Clock = clock or utc_now
        if engine is not None:
            self.engine = engine
        if stripe is not None:
            self.stripe = stripe
        if catalog is not None:
            self.catalog = catalog

    @cached_property
    def engine(self) -> Engine:
        # Sized in models.db.worker_pool.
        pool_size, max_overflow = worker_pool(self.settings)
        return get_engine(self.settings.effective_database_url(), pool_size=pool_size, max_overflow=max_overflow)

    @cached_property
    def stripe(self) -> StripeGateway:
        from gateways.stripe import StripeGateway

        return StripeGateway(self.settings)

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.settings.catalog_path)
