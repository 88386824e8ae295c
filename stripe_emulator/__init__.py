"""A focused Stripe-compatible emulator for development and tests (never imported by production code).

    from stripe_emulator import start_emulator
    emu = start_emulator(port=0)          # serves in a daemon thread
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": emu.url, ...})
    ...
    emu.stop()

See README.md in this folder for endpoints, faults and the /_emulator/ control plane.
"""

from .server import EmulatorServer, start_emulator
from .core.state import EmulatorState

__all__ = ["EmulatorServer", "EmulatorState", "start_emulator"]
