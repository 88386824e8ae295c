"""How a service reaches Temporal: the caller hands it a function that connects (the CLI's and the
API's own ``connect``), so a command that fails on its input never dials Temporal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio.client import Client

TemporalClient = Callable[[], Awaitable[Client]]
