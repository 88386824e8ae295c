"""CLI: ``python -m stripe_emulator --host 127.0.0.1 --port 12111 [--state-file PATH]``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .server import EmulatorServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stripe_emulator", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=12111)
    ap.add_argument("--state-file", default=None,
                    help="load state from this JSON file at start; save it (atomically) about once a "
                         "second when changed, and at shutdown")
    ap.add_argument("--log-level", default="WARNING")
    ap.add_argument("--write-rate-cap", type=float, default=0,
                    help="answer POSTs beyond this many per second with 429, like Stripe (0: no cap)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    emu = EmulatorServer(host=args.host, port=args.port, state_file=args.state_file)
    if args.write_rate_cap:
        from .core.ratecap import WriteCap

        emu.write_cap = WriteCap(args.write_rate_cap)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emu.start()
    print(f"stripe-emulator listening on {emu.url}"
          + (f" (state file {args.state_file})" if args.state_file else ""), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
    print("stripe-emulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
