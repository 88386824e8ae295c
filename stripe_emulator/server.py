"""``EmulatorServer``: the Starlette app on uvicorn in a background thread, the state file saver, and the
Python control API tests use (faults, clock, accounts, request log, reset)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import uvicorn

from .app import build_app
from .connection import DroppableHTTPProtocol
from .core import faults, idempotency, persistence, requestlog
from .core.resource import Resource
from .core.state import EmulatorState
from .resources import RESOURCES, all_stores
from .resources.accounts import set_account_enabled
from .resources.transfers import set_platform_balance
from .responses import dumps

log = logging.getLogger("stripe_emulator")

KEEP_ALIVE_SECONDS = 300  # idle keep-alive connections are closed after this
START_TIMEOUT = 30
GRACEFUL_STOP_SECONDS = 5  # in-flight requests (a ``delay`` fault) get this long to finish at stop
PRUNE_EVERY = 60
# uvloop where uvicorn can give it to its own thread only: before 0.36 uvicorn installed it by setting the
# process-wide event loop policy, which would change every other asyncio loop of a test process.
_LOOP = "auto" if hasattr(uvicorn.Config, "get_loop_factory") else "asyncio"


class _Uvicorn(uvicorn.Server):
    """uvicorn.Server that sets a threading event once it listens."""

    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self.started_event = started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        self.started_event.set()


def _bind(host: str, port: int) -> socket.socket:
    family, type_, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


class EmulatorServer:
    """One emulator: binds ``host:port`` (0 = a free port, see ``.port``/``.url``) at construction, serves
    from ``start()`` until ``stop()`` (also a context manager). With a ``state_file`` it loads it now and
    saves it when changed (at most every ``save_interval`` s) and at stop. ``resources`` are the Stripe
    resources it serves (all of them by default)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state_file: str | None = None,
                 save_interval: float = 1.0, resources: tuple[Resource, ...] = RESOURCES):
        self.host = host
        self.resources = resources
        self.state = EmulatorState(all_stores(self.resources))
        self.state_file = state_file
        self.save_interval = save_interval
        if state_file:
            persistence.load(self.state, state_file)
        self._socket = _bind(host, port)
        self.port = self._socket.getsockname()[1]
        self.app = build_app(self, self.resources)
        self._started = threading.Event()
        self._uvicorn = _Uvicorn(uvicorn.Config(
            self.app, http=DroppableHTTPProtocol, loop=_LOOP, ws="none", lifespan="off", log_config=None,
            access_log=False, proxy_headers=False, server_header=False, date_header=False,
            timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS,
        ), self._started)
        self._thread: threading.Thread | None = None
        self._saver: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False

    # ---- lifecycle ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> "EmulatorServer":
        """Serve in a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._serve, name=f"stripe-emulator:{self.port}", daemon=True)
        self._thread.start()
        self._started.wait(START_TIMEOUT)
        if not self._uvicorn.started:
            self._uvicorn.should_exit = True
            raise RuntimeError(f"stripe emulator did not start on {self.url} (see the log)")
        self._saver = threading.Thread(target=self._save_loop, name="stripe-emulator-saver", daemon=True)
        self._saver.start()
        return self

    def _serve(self) -> None:
        try:
            self._uvicorn.run(sockets=[self._socket])
        except BaseException:  # SystemExit from a failed start-up included
            log.exception("stripe emulator on %s failed", self.url)
        finally:
            self._started.set()  # wake start() if serving ended before it began

    def stop(self) -> None:
        """Stop serving (in-flight requests get ``GRACEFUL_STOP_SECONDS``) and save the state file."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join(timeout=GRACEFUL_STOP_SECONDS + 5)
        self._socket.close()
        if self._saver is not None:
            self._saver.join(timeout=5)
        self.save()

    def __enter__(self) -> "EmulatorServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def save(self) -> None:
        if self.state_file:
            persistence.save(self.state, self.state_file)

    def _save_loop(self) -> None:
        """Save when dirty, at most every ``save_interval`` s; a slow save (big state) backs off to keep
        the serialization (which holds the GIL and the state lock) under ~10% of the time."""
        wait = self.save_interval
        last_prune = time.monotonic()
        while not self._stopping.wait(wait):
            wait = self.save_interval
            if time.monotonic() - last_prune > PRUNE_EVERY:
                last_prune = time.monotonic()
                self.prune_expired()
            if self.state_file and self.state.dirty:
                t0 = time.monotonic()
                try:
                    self.save()
                except Exception:  # pragma: no cover
                    log.exception("saving state file %s failed", self.state_file)
                wait = max(self.save_interval, 10 * (time.monotonic() - t0))

    def prune_expired(self) -> int:
        """Forget idempotency keys and other records past their 24 h window."""
        return idempotency.prune_expired(self.state) + sum(
            r.prune_expired(self.state) for r in self.resources if r.prune_expired)

    # ---- Python control API (the same as the /_emulator/ control plane) --------------------------
    def add_fault(self, method: str = "POST", path: str = "*", kind: str = "error_500", count: int = 1,
                  retry_after: float = 1, seconds: float = 1.0) -> dict:
        return faults.add(self.state, method=method, path=path, kind=kind, count=count,
                          retry_after=retry_after, seconds=seconds)

    def clear_faults(self) -> None:
        faults.clear(self.state)

    def advance_clock(self, seconds: float) -> float:
        return self.state.advance_clock(seconds)

    def now(self) -> float:
        return self.state.now()

    def reset(self) -> None:
        self.state.reset()

    def enable_account(self, account_id: str, charges_enabled: bool = True, payouts_enabled: bool = True,
                       transfers: bool | None = None) -> dict:
        with self.state.lock:
            return json.loads(dumps(set_account_enabled(self.state, account_id, charges_enabled,
                                                        payouts_enabled, transfers)))

    def set_platform_balance(self, available: int | None) -> dict:
        """The platform's available balance in cents (None: unlimited); transfers beyond it fail with
        ``balance_insufficient``."""
        return set_platform_balance(self.state, available)

    # ---- Checkout Sessions and webhook events (stripe_emulator/webhooks.py) -------------------------
    def configure_webhooks(self, url: str | None, secret: str | None, duplicate: int = 1, delay_seconds: float = 0.0,
                           reorder: bool = False, hold: bool = False) -> dict:
        from . import webhooks

        return webhooks.configure(self.state, url, secret, duplicate, delay_seconds, reorder, hold)

    def settle_checkout(self, session_id: str, outcome: str = "paid") -> dict:
        from . import webhooks

        return json.loads(dumps(webhooks.settle_session(self.state, session_id, outcome)))

    def flush_webhooks(self) -> list[dict]:
        from . import webhooks

        return webhooks.flush(self.state)

    def webhook_deliveries(self) -> list[dict]:
        from . import webhooks

        return webhooks.deliveries(self.state)

    def requests(self, since: int = 0) -> list[dict]:
        return requestlog.since(self.state, since)

    def stats(self) -> dict:
        return requestlog.stats(self.state)


def start_emulator(port: int = 0, state_file: str | None = None, host: str = "127.0.0.1",
                   save_interval: float = 1.0) -> EmulatorServer:
    """Start an emulator in a daemon thread and return its handle (``.url``, ``.state``, ``.stop()``)."""
    return EmulatorServer(host=host, port=port, state_file=state_file, save_interval=save_interval).start()
