"""One settings object for every Tally process (worker, CLI, API, dev stack).

Values come from environment variables (``TALLY_*``, plus the conventional ``DATABASE_URL``,
``TEMPORAL_ADDRESS`` and ``STRIPE_API_KEY``).  When a connection setting is not given, the local dev
stack (``tally dev up``) fills it in from ``$TALLY_HOME/stack.json``, which that command writes.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_FILE = "stack.json"
# The emulator accepts any key of this shape; real Stripe is used only when STRIPE_API_KEY is set.
EMULATOR_API_KEY = "sk_test_tally_emulator"
# The endpoint secret the emulator signs webhook events with; real deployments set their own.
EMULATOR_WEBHOOK_SECRET = "whsec_tally_emulator"


PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore", populate_by_name=True)

    env: str = Field(
        default="development",
        description="`production` (docker-compose sets it): connection settings must be given, never "
                    "filled in from the local dev stack or the emulator, and nothing secret is written to disk.",
    )
    home: Path = Field(default=Path(".tally"), description="Folder holding all local-stack state.")

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "TALLY_DATABASE_URL"),
        description="Postgres URL; unset means the embedded Postgres of the local stack.",
    )
    temporal_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TEMPORAL_ADDRESS", "TALLY_TEMPORAL_ADDRESS"),
        description="host:port of a Temporal frontend; unset means the local dev server.",
    )
    temporal_namespace: str = "default"
    task_queue: str = "tally"
    temporal_port: int = 7233
    temporal_ui_port: int = 8233

    stripe_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_KEY", "TALLY_STRIPE_API_KEY"),
        description="Real Stripe (test mode) key; unset means the local Stripe emulator.",
    )
    stripe_api_base: str | None = Field(
        default=None, description="Base URL of a Stripe-compatible server (the emulator)."
    )
    stripe_webhook_secret: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET", "TALLY_STRIPE_WEBHOOK_SECRET"),
        description="Signing secret of the Stripe webhook endpoint (whsec_...); unset outside production: "
                    "the emulator's.",
    )
    stripe_emulator_port: int = 12111
    stripe_max_network_retries: int = 2
    stripe_timeout_seconds: float = 20.0
    stripe_concurrency: int = Field(default=8, description="Parallel Stripe requests per activity.")
    stripe_writes_per_second: float = Field(
        default=0.0,
        description="Client-side cap on Stripe writes/s per worker (0 = none; 25 suits test mode).",
    )

    api_port: int = 8000
    api_host: str = Field(default="127.0.0.1", description="Interface `tally api` binds by default.")
    api_workers: int = Field(default=1, ge=1, description="uvicorn worker processes of `tally api`.")
    api_public_url: str | None = Field(
        default=None, description="Base URL users reach the API at (billing links); default http://localhost:PORT."
    )
    api_secret: str | None = Field(
        default=None,
        description="HMAC secret of billing-page links; unset: a random one kept in $TALLY_HOME/api-secret.",
    )
    billing_link_hours: int = Field(default=24, ge=1, le=30 * 24, description="How long a billing-page link stays valid (1 h to 30 days).")
    api_ingest_concurrency: int = Field(default=1, ge=1, description="Batch inserts at once per API process.")
    api_ingest_processes: int | None = Field(
        default=None, ge=0, le=64,
        description="Child processes per API worker that record batches; unset: the host's CPU cores divided "
                    "among the API workers, at least 1 (0: in the serving process's threads).")
    api_ingest_group: int = Field(
        default=4, ge=1, le=64,
        description="Batches waiting for a busy ingest process that it then records as one (one transaction, "
                    "one commit, each request answered as if alone); 1: each batch alone.")
    api_ingest_nice: int = Field(
        default=10, ge=0, le=19,
        description="Niceness added to those child processes: on a busy host the serving process (entitlement "
                    "checks, routes) gets the CPU before a batch does.")
    api_entitlement_view_ms: int = Field(
        default=500, ge=0, le=10_000,
        description="How often each API process re-reads the month to date of the accounts it checks "
                    "(services/entitlement_view.py); checks answer from that view, at most this stale "
                    "plus one read. 0: every check reads Postgres.")
    # Connection pools: docs/deployment.md adds them up against Postgres' max_connections.
    db_pool_size: int | None = Field(
        default=None, ge=1,
        description="Connections in a worker's pool; unset: stripe_concurrency x close_parallel_chunks + 4.",
    )
    db_max_overflow: int = Field(default=4, ge=0, description="Extra connections a worker may open past its pool.")
    api_db_pool_size: int = Field(default=10, ge=1, description="Connections in each API process's pool.")
    api_db_max_overflow: int = Field(default=10, ge=0, description="Extra connections an API process may open.")
    close_chunk_size: int = Field(default=100, description="Accounts per close child workflow.")
    close_parallel_chunks: int = Field(default=4, description="Chunk workflows running at once.")
    worker_processes: int = Field(
        default=1, ge=0,
        description="Worker processes `tally worker` runs on the task queue (a supervisor restarts one that "
                    "dies); 0: one per CPU core. Safe because every activity is idempotent.")
    late_usage_grace_hours: int = 48
    catalog_path: Path | None = Field(default=None, description="Override the catalog data file.")
    contract_poll_seconds: int = Field(
        default=3600, ge=1, le=86_400,
        description="How often a contract's term workflow checks whether its month's close has finished.")

    # ---- usage reporting to Stripe Billing Meters ----
    meters_report_every: Literal["hour", "day"] = Field(
        default="hour", description="How often the usage-report schedule runs (each run reports every hour "
                                    "not reported yet).")
    meters_lag_minutes: int = Field(default=15, ge=0, le=24 * 60,
                                    description="Wait this long after an hour ends before reporting it "
                                                "(executions still in flight).")
    meters_events_per_second: float = Field(
        default=100.0, ge=0, description="Meter events/s per worker (0 = no cap; Stripe live allows 1,000/s).")
    meters_chunk_size: int = Field(default=200, ge=1, le=10_000, description="Accounts per report activity.")
    meters_parallel_chunks: int = Field(default=2, ge=1, le=64, description="Report activities at once.")
    meters_reconcile_at_close: bool = Field(
        default=True, description="The close compares Tally's totals with Stripe's meter summaries.")
    meters_settle_minutes: int = Field(
        default=60, ge=0, le=24 * 60,
        description="Stripe's meter summaries lag behind ingestion: what was reported less than this long ago "
                    "and is missing from Stripe's summary is 'not settled yet', not drift; the reconciliation "
                    "checks it again after this long.")

    # ---- alerts and e-mail (docs/architecture.md "Alerts and anomalies") ----------------------
    smtp_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SMTP_URL", "TALLY_SMTP_URL"),
        description="smtp://[user:password@]host[:port] (STARTTLS with ?starttls=1) or smtps://...; unset: "
                    "the local stack's SMTP sink (required in production).",
    )
    smtp_port: int = Field(default=2525, description="Port of the local stack's SMTP sink (`tally dev up`).")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    mail_from: str = Field(default="Tally Billing <billing@tally.localhost>", description="From: of every e-mail.")
    ops_email: str = Field(default="ops@tally.localhost", description="Where ops notices (an account paused) go.")
    alerts_on_ingest: bool = Field(
        default=True, description="Evaluate budgets, spikes and fallbacks after each batch of executions.")
    notifications_interval_seconds: int = Field(
        default=60, ge=10, description="How often the outbox schedule delivers e-mail and starts anomaly reviews.")

    # ---- creator payouts (docs/architecture.md "Creator payouts") --------------------------------
    payouts_page_size: int = Field(default=1000, ge=1, le=10_000, description="Creators decided and paid per activity.")
    payouts_concurrency: int = Field(default=16, ge=1, le=256, description="Stripe transfers at once per run.")
    connect_refresh_url: str = Field(default="http://localhost:8000/creators/onboarding/refresh",
                                     description="Where Stripe sends a creator whose onboarding link expired.")
    connect_return_url: str = Field(default="http://localhost:8000/creators/onboarding/done",
                                    description="Where Stripe sends a creator after onboarding.")
    # ---- prepaid credits ---------------------------------------------------------------------
    credits_on_ingest: bool = Field(
        default=True, description="Book credit consumption after each batch of executions (else only the catch-up of "
                                  "the next batch of the account books it).")
    credits_poll_minutes: int = Field(
        default=15, ge=1, description="How often purchases still pending are checked with Stripe (the webhook may "
                                      "never come).")
    credits_pending_minutes: int = Field(
        default=10, ge=0, description="A purchase is polled once it has been pending this long.")
    credits_checkout_success_url: str = Field(
        default="http://localhost:8000/billing?credits=paid", description="Where Stripe Checkout sends the buyer back.")
    credits_checkout_cancel_url: str = Field(
        default="http://localhost:8000/billing?credits=cancelled", description="Where a cancelled checkout returns.")

    # ---- derived -------------------------------------------------------------------------
    @property
    def production(self) -> bool:
        return self.env.strip().lower() == PRODUCTION

    def missing_production_settings(self) -> list[str]:
        """The settings a production deployment must give explicitly and does not."""
        required = {"STRIPE_API_KEY": self.stripe_api_key, "DATABASE_URL": self.database_url,
                    "TEMPORAL_ADDRESS": self.temporal_address, "TALLY_API_SECRET": self.api_secret}
        return [name for name, value in required.items() if not value]

    def check_production(self) -> None:
        """Refuse to run a production process on development fallbacks (the emulator on 127.0.0.1, the
        dev stack's database, a link secret written to disk). Every Tally entry point calls it."""
        if self.production and (missing := self.missing_production_settings()):
            raise ConfigError(f"TALLY_ENV=production but {', '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} not set; refusing to start")

    @property
    def stack_file(self) -> Path:
        return self.home / STACK_FILE

    def stack_state(self) -> dict:
        if self.production:  # a production process never reads the local dev stack's file
            return {}
        try:
            return json.loads(self.stack_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def effective_api_ingest_processes(self) -> int:
        """``api_ingest_processes``, or when unset one per CPU core of the host shared among its
        ``api_workers`` serving processes (at least one each): one serving process (the default)
        records its batches on every core (docs/scaling.md, seventh pass)."""
        if self.api_ingest_processes is not None:
            return self.api_ingest_processes
        return max(1, (os.cpu_count() or 1) // self.api_workers)

    def effective_database_url(self) -> str:
        url = self.database_url or self.stack_state().get("database_url")
        if not url:
            self.check_production()
            raise ConfigError(
                "no database: set DATABASE_URL, or start the local stack with `tally dev up`"
            )
        return url

    def effective_temporal_address(self) -> str:
        return (
            self.temporal_address
            or self.stack_state().get("temporal_address")
            or f"localhost:{self.temporal_port}"
        )

    def effective_stripe(self) -> tuple[str, str | None]:
        """(api_key, base_url or None for real Stripe)."""
        if self.stripe_api_key:
            return self.stripe_api_key, self.stripe_api_base
        self.check_production()
        base = (
            self.stripe_api_base
            or self.stack_state().get("stripe_api_base")
            or f"http://127.0.0.1:{self.stripe_emulator_port}"
        )
        return EMULATOR_API_KEY, base

    def effective_smtp_url(self) -> str:
        """SMTP_URL, else the local stack's SMTP sink; production must set SMTP_URL."""
        url = self.smtp_url or self.stack_state().get("smtp_url")
        if url:
            return url
        if self.production:
            raise ConfigError("no SMTP server: set SMTP_URL (smtp://user:password@host:587?starttls=1)")
        return f"smtp://127.0.0.1:{self.smtp_port}"

    def effective_webhook_secret(self) -> str | None:
        """The endpoint secret webhook deliveries are verified with; None in production when unset
        (the endpoint then refuses every delivery rather than accept unsigned ones)."""
        if self.stripe_webhook_secret:
            return self.stripe_webhook_secret
        return None if self.production else EMULATOR_WEBHOOK_SECRET

    def effective_api_secret(self) -> bytes:
        """TALLY_API_SECRET, else a random secret created once in ``$TALLY_HOME/api-secret`` (shared by
        the CLI that signs billing links and the API that checks them on this machine)."""
        if self.api_secret:
            return self.api_secret.encode()
        self.check_production()
        path = self.home / "api-secret"
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        import os
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # created meanwhile by another process
            return path.read_bytes().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
        return path.read_bytes().strip()

    @property
    def api_url(self) -> str:
        return (self.api_public_url or self.stack_state().get("api_url")
                or f"http://localhost:{self.api_port}").rstrip("/")

    @property
    def temporal_ui_url(self) -> str:
        return self.stack_state().get("temporal_ui_url") or f"http://localhost:{self.temporal_ui_port}"


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message says which and how to fix it."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
