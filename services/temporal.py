"""How a service reaches Temporal: the caller hands it a function that connects (the CLI's and the
API's own ``connect``), so a command that fails on its input never dials Temporal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from models.settings import Settings

TemporalClient = Callable[[], Awaitable[Client]]


class TemporalUnreachable(ConnectionError):
    """No Temporal frontend answers at the configured address."""


async def connect(settings: Settings) -> Client:
    address = settings.effective_temporal_address()
    try:
        return await Client.connect(
            address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
        )
    except RuntimeError as err:
        if "connect" not in str(err).lower():
            raise
        raise TemporalUnreachable(
            f"cannot reach Temporal at {address} (set TEMPORAL_ADDRESS, or start the local stack "
            "with `tally dev up`)"
        ) from None

