"""Fixtures: one emulator per test session (reset before each test) and real stripe SDK clients."""

from __future__ import annotations

import pytest
import stripe

from stripe_emulator import start_emulator


@pytest.fixture(scope="session")
def _session_emu():
    emu = start_emulator(port=0)
    yield emu
    emu.stop()


@pytest.fixture
def emu(_session_emu):
    _session_emu.reset()
    yield _session_emu
    _session_emu.reset()


@pytest.fixture
def fast_retries(monkeypatch):
    """Shrink the SDK's retry back-off (0.5 s minimum) so retry tests stay fast; logic is unchanged."""
    monkeypatch.setattr(stripe._http_client.HTTPClient, "INITIAL_DELAY", 0.02)
    monkeypatch.setattr(stripe._http_client.HTTPClient, "MAX_DELAY", 0.05)


@pytest.fixture
def make_client(emu):
    clients = []

    def make(max_network_retries: int = 0, api_key: str = "sk_test_emulator", timeout: float = 10):
        client = stripe.StripeClient(
            api_key,
            base_addresses={"api": emu.url, "meter_events": emu.url, "connect": emu.url},
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )
        clients.append(client)
        return client.v1

    return make


@pytest.fixture
def client(make_client):
    return make_client()
