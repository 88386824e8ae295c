"""State file persistence across restarts (in-process and via the CLI)."""

from __future__ import annotations

import json
import os
import time

import stripe

from stripe_emulator import start_emulator

from .helpers import emulator_process


def _client(url, retries=0):
    return stripe.StripeClient("sk_test_state", base_addresses={"api": url, "meter_events": url,
                                                                "connect": url},
                               max_network_retries=retries).v1


def test_restarted_emulator_with_the_same_state_file_keeps_customers_and_keys(tmp_path):
    path = str(tmp_path / "state.json")
    emu = start_emulator(port=0, state_file=path)
    try:
        cus = _client(emu.url).customers.create(params={"email": "keep@example.com"},
                                                options={"idempotency_key": "persist-1"})
        emu.advance_clock(3600)
    finally:
        emu.stop()
    assert os.path.exists(path)

    emu2 = start_emulator(port=0, state_file=path)
    try:
        c = _client(emu2.url)
        assert c.customers.retrieve(cus.id).email == "keep@example.com"
        again = c.customers.create(params={"email": "keep@example.com"},
                                   options={"idempotency_key": "persist-1"})
        assert again.id == cus.id and len(emu2.state.customers) == 1
        assert emu2.state.clock_offset == 3600
    finally:
        emu2.stop()


def test_state_is_saved_in_the_background_while_running(tmp_path):
    path = str(tmp_path / "bg.json")
    emu = start_emulator(port=0, state_file=path, save_interval=0.1)
    try:
        cus = _client(emu.url).customers.create(params={"name": "bg"})
        deadline = time.time() + 5
        while time.time() < deadline:
            if os.path.exists(path) and cus.id in open(path).read():
                break
            time.sleep(0.05)
        assert cus.id in json.load(open(path))["customers"]
    finally:
        emu.stop()


def test_cli_saves_state_on_sigterm_and_reloads_it(tmp_path):
    path = str(tmp_path / "cli.json")
    with emulator_process(state_file=path) as url:
        cus = _client(url).customers.create(params={"name": "cli"})
    with emulator_process(state_file=path) as url:
        assert _client(url).customers.retrieve(cus.id).name == "cli"
