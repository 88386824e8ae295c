"""The Postgres schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create exactly this.

Money columns are NUMERIC: amounts NUMERIC(14,2) (whole cents), unit prices NUMERIC(18,8) (sub-cent
rates such as $0.005/execution).  Nothing here is ever a float.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

MONEY = Numeric(14, 2)
RATE = Numeric(24, 12)  # per-token prices are tiny: $0.02 per 1M tokens = 0.00000002

ACCOUNT_PLANS = ("free", "pro", "team", "payg", "enterprise")
INVOICE_STATUSES = ("draft", "pushing", "open", "paid", "void", "no_charge", "push_failed")

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("email", Text),
    Column("plan", String(32), nullable=False),
    Column("seats", Integer, nullable=False, server_default="1"),
    Column("overage_opt_in", Boolean, nullable=False, server_default=text("false")),
    Column("pricing", String(16), nullable=False, server_default="executions"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("stripe_customer_id", String(64)),
    # The first instant the account is billed for; a period ending on or before it is not billed.
    Column("billing_starts_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("seats >= 1", name="seats_positive"),
    CheckConstraint(f"plan IN {ACCOUNT_PLANS!r}", name="plan_known"),
    CheckConstraint("status IN ('active', 'paused', 'closed')", name="status_known"),
)

catalog_versions = Table(
    "catalog_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False, unique=True),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("document", JSONB, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per execution. Its event id is unique per tenant (platform): ``execution_ids`` holds that
# uniqueness; the row's own key is (account_id, event_id, occurred_at). Partitioned by month of
# occurred_at (executions_YYYY_MM, repositories/partitions.py; a key must hold the partition column).
executions = Table(
    "executions",
    metadata,
    Column("event_id", String(128), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("agent_id", String(128), nullable=False),
    Column("skill_id", String(128)),
    Column("model", String(64), nullable=False),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("byok", Boolean, nullable=False, server_default=text("false")),
    Column("sandbox", Boolean, nullable=False, server_default=text("false")),
    Column("cost_usd", Numeric(18, 8)),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("input_tokens >= 0 AND output_tokens >= 0", name="tokens_non_negative"),
    PrimaryKeyConstraint("account_id", "event_id", "occurred_at"),
    # Covering (migration 0013): the close's usage aggregation reads a chunk's accounts by an
    # index-only scan of their slice instead of fetching rows from all over the month's heap.
    Index("ix_executions_account_occurred", "account_id", "occurred_at",
          postgresql_include=["event_id", "model", "byok", "sandbox", "input_tokens", "output_tokens", "cost_usd",
                              "ingested_at"]),
    postgresql_partition_by="RANGE (occurred_at)",
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("period", String(7), nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False, server_default="draft"),
    Column("currency", String(3), nullable=False, server_default="usd"),
    Column("plan", String(32), nullable=False),
    Column("seats", Integer, nullable=False),
    Column("overage_opt_in", Boolean, nullable=False),
    Column("catalog_version_id", Integer, ForeignKey("catalog_versions.id"), nullable=False),
    Column("executions", BigInteger, nullable=False, server_default="0"),
    Column("billable_executions", BigInteger, nullable=False, server_default="0"),
    Column("sandbox_executions", BigInteger, nullable=False, server_default="0"),
    Column("byok_executions", BigInteger, nullable=False, server_default="0"),
    # Our LLM cost behind the invoice (recorded costs; rate-card cost where none was recorded).
    Column("platform_cost", Numeric(18, 8), nullable=False, server_default="0"),
    Column("subtotal", MONEY, nullable=False),
    Column("total", MONEY, nullable=False),
    Column("stripe_invoice_id", String(64)),
    Column("last_error", Text),
    Column("rated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("pushed_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("account_id", "period"),
    CheckConstraint(f"status IN {INVOICE_STATUSES!r}", name="status_known"),
    CheckConstraint("total >= 0", name="total_non_negative"),
    Index("ix_invoices_period_status", "period", "status"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("model", String(64)),
    Column("description", Text, nullable=False),
    Column("quantity", Numeric(20, 4), nullable=False),
    Column("unit_price", RATE, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("catalog_version_id", Integer, ForeignKey("catalog_versions.id"), nullable=False),
    Column("key", Text, nullable=False, server_default=""),  # line identity within its period
    Column("rate_version", String(64)),  # catalog version whose rate priced the line
    Column("direction", String(8)),  # input / output for token lines
    Column("line_executions", BigInteger, nullable=False, server_default="0"),
    Column("cost", Numeric(18, 8), nullable=False, server_default="0"),
    Column("source_period", String(7)),  # prior-period lines: the period the usage belongs to
    UniqueConstraint("invoice_id", "position"),
    Index("ix_invoice_lines_source_period", "source_period"),
)

# An account's terms over time (effective-dated, append-only). A period is priced segment by
# segment; ``accounts`` keeps the current terms for quick reads.
account_terms = Table(
    "account_terms",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("plan", String(32), nullable=False),
    Column("seats", Integer, nullable=False),
    Column("overage_opt_in", Boolean, nullable=False),
    Column("pricing", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("account_id", "effective_from"),
    CheckConstraint("pricing IN ('executions', 'tokens')", name="pricing_known"),
)

# Late usage billed on a later invoice: how many executions of which earlier period it covered.
prior_period_adjustments = Table(
    "prior_period_adjustments",
    metadata,
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="CASCADE"), primary_key=True),
    Column("account_id", String(64), nullable=False),
    Column("source_period", String(7), primary_key=True),
    Column("executions", BigInteger, nullable=False),
    Index("ix_prior_period_adjustments_account_period", "account_id", "source_period"),
)

# Customer notifications waiting for delivery (e-mail comes with the alerts issue): an outbox.
notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("dedupe_key", String(160), nullable=False, unique=True),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
)

# Every Stripe write Tally makes, recorded BEFORE the call with the idempotency key it will carry.
# A retry finds the row and reuses the key (or, when Stripe may have forgotten it or saved a failure
# under it, looks the object up by metadata before minting the next attempt's key).
stripe_requests = Table(
    "stripe_requests",
    metadata,
    Column("idempotency_key", String(255), primary_key=True),
    Column("subject", String(128), nullable=False),  # e.g. "invoice:42", "customer:acct_1"
    Column("step", String(32), nullable=False),  # customer | create | add_lines | finalize
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("state", String(16), nullable=False, server_default="started"),
    Column("stripe_object_id", String(64)),
    Column("http_status", Integer),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    UniqueConstraint("subject", "step", "attempt"),
    CheckConstraint("state IN ('started', 'succeeded', 'failed')", name="state_known"),
)

# ---- metering service (HTTP API) ---------------------------------------------------------------
# A platform calling the API; its key is stored only as a sha256 hex digest (shown once at creation).
platforms = Table(
    "platforms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("api_key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The platform an account belongs to: the API refuses (404) an account of another platform.
accounts.append_column(Column("platform_id", Integer, ForeignKey("platforms.id"), nullable=True))

# Month-to-date counters per account, maintained in the same statement as the executions insert
# (counting only rows actually inserted), so they are exact under concurrent ingestion. The
# executions table stays the source of truth; these serve entitlements, live views and the close's
# rating of the accounts that did not pass a positive quota (repositories.usage.usage_rows).
usage_counters = Table(
    "usage_counters",
    metadata,
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("period", String(7), primary_key=True),  # 'YYYY-MM' of occurred_at in UTC
    Column("model", String(64), primary_key=True),
    Column("byok", Boolean, primary_key=True),
    Column("sandbox", Boolean, primary_key=True),
    Column("executions", BigInteger, nullable=False, server_default="0"),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost_usd", Numeric(20, 8), nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The tokens of the executions that came without a recorded cost (what the close prices at the rate
    # card's cost). NULL: a row counted before they were (migration 0015); its month is rated from
    # its executions.
    Column("uncosted_input_tokens", BigInteger, nullable=True),
    Column("uncosted_output_tokens", BigInteger, nullable=True),
)

# Every signed Stripe webhook event received, recorded once by Stripe's event id (Stripe delivers an
# event more than once and in no order): a redelivery is counted, never handled twice.
stripe_events = Table(
    "stripe_events",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("type", String(128), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("livemode", Boolean, nullable=False, server_default=text("false")),
    Column("payload", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deliveries", Integer, nullable=False, server_default="1"),
    Column("outcome", String(16), nullable=False),  # handled | ignored
    Index("ix_stripe_events_type_created", "type", "created"),
)

# ---- enterprise committed-use contracts (billing/contracts.py) ------------------------------------
# A contract as signed: ``ends_at`` is the exclusive end as amended (extensions, early termination),
# kept with every amendment for lookups; the rules replay the amendments (contract_amendments).
contracts = Table(
    "contracts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("account_id", String(64), ForeignKey("accounts.id"), nullable=False),
    Column("commitment", BigInteger, nullable=False),  # executions per month, as signed
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("months", Integer, nullable=False),  # as signed
    Column("catalog_version", String(64), nullable=False),  # the version that prices the whole term
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("account_id", "starts_at"),
    CheckConstraint("commitment > 0 AND months > 0 AND ends_at > starts_at", name="positive_term"),
)

# Accepted amendments in the order they were accepted; ``request_id`` (the Temporal update id) makes
# recording one idempotent.
contract_amendments = Table(
    "contract_amendments",
    metadata,
    Column("contract_id", BigInteger, ForeignKey("contracts.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("request_id", String(255), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("effective", DateTime(timezone=True), nullable=False),
    Column("commitment", BigInteger),
    Column("extra_months", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('raise_commitment', 'extend_term', 'terminate')", name="kind_known"),
)

# The monthly reconciliation of a contract month, written by the close with the invoice that bills it
# (rewritten while that invoice is a draft, never after); ``reconciled_at``: when the contract's term
# workflow took it as final.
contract_months = Table(
    "contract_months",
    metadata,
    Column("contract_id", BigInteger, ForeignKey("contracts.id"), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("committed", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("overage", BigInteger, nullable=False),
    Column("shortfall", BigInteger, nullable=False),
    Column("utilisation", Numeric(12, 4), nullable=False),
    Column("committed_charge", MONEY, nullable=False),
    Column("overage_charge", MONEY, nullable=False),
    Column("termination_fee", MONEY, nullable=False),
    Column("total", MONEY, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("reconciled_at", DateTime(timezone=True)),
    Index("ix_contract_months_invoice_id", "invoice_id"),
)

# The contract summary at term end, written once by the term workflow.
contract_summaries = Table(
    "contract_summaries",
    metadata,
    Column("contract_id", BigInteger, ForeignKey("contracts.id"), primary_key=True),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("terminated_early", Boolean, nullable=False),
    Column("months", Integer, nullable=False),
    Column("committed", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("overage", BigInteger, nullable=False),
    Column("shortfall", BigInteger, nullable=False),
    Column("committed_charges", MONEY, nullable=False),
    Column("overage_charges", MONEY, nullable=False),
    Column("termination_fee", MONEY, nullable=False),
    Column("total_charges", MONEY, nullable=False),
    Column("average_utilisation", Numeric(12, 4), nullable=False),
    Column("months_under_commitment", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# ---- model routing (capability "routing": billing/routing.py, services/routing.py) -------------------
# Quality scores of behavioural test runs: one row per (skill, model, run). Every run is kept; the score
# in force per skill and model is the newest measured_at (then the greater suite id, in C order).
quality_scores = Table(
    "quality_scores",
    metadata,
    Column("skill", String(128), primary_key=True),
    Column("model", String(64), primary_key=True),
    Column("measured_at", DateTime(timezone=True), primary_key=True),
    Column("suite_id", String(128), primary_key=True),
    Column("score", Numeric(5, 2), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("score >= 0 AND score <= 100", name="score_range"),
)

# What the platform tells Tally about a skill: its category (analytics) and the model it runs on
# without routing (the savings report's counterfactual).
skills = Table(
    "skills",
    metadata,
    Column("skill_id", String(128), primary_key=True),
    Column("category", String(64)),
    Column("default_model", String(64)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Per account: the quality slider (0 cheapest .. 1 best quality) and the providers it holds its own
# keys for (BYOK), as the platform reports them. No row: slider 0, platform keys.
account_routing = Table(
    "account_routing",
    metadata,
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("slider", Numeric(4, 3), nullable=False, server_default="0"),
    Column("byok_providers", ARRAY(String(32)), nullable=False, server_default=text("'{}'")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("slider >= 0 AND slider <= 1", name="slider_range"),
)

# Every answer of POST /v1/route; executions that followed one carry its id.
routing_decisions = Table(
    "routing_decisions",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("skill", String(128), nullable=False),
    Column("model", String(64), nullable=False),
    Column("default_model", String(64)),  # the counterfactual of the savings report; None: not known
    Column("score", Numeric(5, 2), nullable=False),
    Column("expected_cost", Numeric, nullable=False),  # exact user price of the token mix (sub-cent)
    Column("threshold", Numeric, nullable=False),  # effective, after the slider
    Column("slider", Numeric(4, 3), nullable=False),
    Column("below_threshold", Boolean, nullable=False),
    Column("byok", Boolean, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("token_mix_source", String(8), nullable=False),
    Column("catalog_version", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("alternatives", JSONB, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Index("ix_routing_decisions_account_decided", "account_id", "decided_at"),
)

# An execution that followed a routing decision: the model routing chose and the decision's id. The
# skill index serves the route's token mix (the skill's most recent executions).
executions.append_column(Column("routed_model", String(64)))
executions.append_column(Column("routing_decision_id", BigInteger))
Index("ix_executions_skill_occurred", executions.c.skill_id, executions.c.occurred_at)

# ---- usage reporting to Stripe Billing Meters (billing/meters.py) ----------------------------------
# A BRIN on occurred_at (tiny, cheap to keep up while COPY appends): executions arrive roughly in time
# order, so "the executions of hour H" reads a few block ranges. "The executions ingested since T" (the
# credits booking after every batch, the meters, late usage) reads a B-tree (migration 0017): a BRIN
# also reads every block range VACUUM has not summarized yet, i.e. the month's whole recent tail.
Index("ix_executions_occurred_at_brin", executions.c.occurred_at, postgresql_using="brin")
Index("ix_executions_ingested_at", executions.c.ingested_at)

# The Stripe meters Tally reports to (``tally meters apply``): one per quantity and model.
meters = Table(
    "meters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(96), nullable=False, unique=True),  # executions | input_tokens:<model> | ...
    Column("quantity", String(16), nullable=False),
    Column("model", String(64)),
    Column("event_name", String(100), nullable=False, unique=True),
    Column("stripe_meter_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# What was reported, per account, meter and hour: one row per revision (a late event adds the next
# revision with the difference). Written 'sending' before the Stripe call (through the recorded call,
# subject ``usage:<account>:m<meter>:<hour>``, step ``r<revision>``), settled after it.
meter_reports = Table(
    "meter_reports",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("meter_id", Integer, ForeignKey("meters.id"), primary_key=True),
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("quantity", BigInteger, nullable=False),  # the difference this revision reports
    Column("identifier", String(100), nullable=False),
    Column("state", String(16), nullable=False, server_default="sending"),
    Column("error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True)),
    CheckConstraint("state IN ('sending', 'reported', 'failed')", name="state_known"),
    CheckConstraint("quantity > 0 AND revision >= 1", name="positive"),
    Index("ix_meter_reports_hour", "hour"),
)

# Every hour a run looked at: reported, partial (some events failed: the next run retries), late
# (executions arrived after it was reported: the next run sends the corrections), running, or expired
# (usage older than Stripe's 35-day window that was never reported: an error for ops).
meter_report_hours = Table(
    "meter_report_hours",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("accounts", Integer, nullable=False, server_default="0"),
    Column("events", Integer, nullable=False, server_default="0"),  # meter events Stripe accepted
    Column("already", Integer, nullable=False, server_default="0"),  # found reported before
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("runs", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("state IN ('running', 'reported', 'partial', 'late', 'expired')", name="state_known"),
)

# One row: since when hours are reported (gaps are counted from there) and up to when ingested
# executions were scanned for corrections.
meter_report_state = Table(
    "meter_report_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reporting_since", DateTime(timezone=True), nullable=False),
    Column("scanned_until", DateTime(timezone=True), nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

# The close's comparison of Tally's totals with Stripe's meter summaries, per account and meter.
meter_reconciliations = Table(
    "meter_reconciliations",
    metadata,
    Column("period", String(7), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("meter_id", Integer, ForeignKey("meters.id"), primary_key=True),
    Column("tally", BigInteger, nullable=False),
    Column("reported", BigInteger, nullable=False),
    Column("stripe", BigInteger),  # NULL: Stripe could not be asked (no customer)
    Column("drift", BigInteger, nullable=False),
    Column("unexplained", BigInteger, nullable=False),
    Column("explanation", Text, nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Sent within the settle time and not in Stripe's summary yet (its summaries lag): not drift.
    Column("unsettled", BigInteger, nullable=False, server_default="0"),
)

# ---- alerts and anomalies (issue 12; docs/architecture.md "Alerts and anomalies") ----------------
# The model the platform asked for when an execution ran on another one (a fallback); NULL: not said.
executions.append_column(Column("requested_model", String(64)))
# The agent's recent executions, newest first: the loop rule's baseline (POST /v1/executions/{id}/cost).
Index("ix_executions_account_agent_occurred", executions.c.account_id, executions.c.agent_id,
      executions.c.occurred_at)
# Executions that ran on another model than requested, by when they were recorded: the fallback scan
# reads only these (a handful among millions).
Index("ix_executions_fallback_candidates", executions.c.account_id, executions.c.ingested_at,
      postgresql_where=text("requested_model IS NOT NULL AND requested_model <> model"))

# A monthly budget the user set (absent: the plan's own monthly charge, billing.alerts.default_budget).
account_budgets = Table(
    "account_budgets",
    metadata,
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("amount", MONEY, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount > 0", name="amount_positive"),
)

# Each budget threshold an account crossed in a period, once (the primary key): written in the same
# transaction as its notice, so "at most once" holds whatever retries or concurrent writers do.
budget_crossings = Table(
    "budget_crossings",
    metadata,
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("period", String(7), primary_key=True),
    Column("threshold", Integer, primary_key=True),  # percent of the budget
    Column("budget", MONEY, nullable=False),
    Column("charges", MONEY, nullable=False),
    Column("notified", Boolean, nullable=False),  # this crossing's notice went out (the highest of its batch)
    Column("crossed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Every execution the loop rule killed, with the evidence of the verdict (once per execution).
execution_kills = Table(
    "execution_kills",
    metadata,
    Column("execution_id", String(128), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("agent_id", String(128), nullable=False),
    Column("cost", Numeric(18, 8), nullable=False),
    Column("baseline", Numeric(18, 8), nullable=False),
    Column("threshold", Numeric(24, 12), nullable=False),
    Column("multiplier", Numeric(8, 4), nullable=False),
    Column("history_size", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("killed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_execution_kills_account_killed", "account_id", "killed_at"),
)

ANOMALY_STATES = ("open", "confirmed", "resumed")

# A spike that paused an account, and the human decision on it (workflow ``anomaly-<account>-<start>``).
# An account is paused while it has an anomaly that is open or confirmed: at most one (the partial
# unique index), so concurrent batches that all see the spike pause it once.
anomalies = Table(
    "anomalies",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("workflow_id", String(200), nullable=False, unique=True),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),  # the instant it was detected
    Column("state", String(16), nullable=False, server_default="open"),
    Column("evidence", JSONB, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("review_started_at", DateTime(timezone=True)),  # the review workflow was started
    Column("decided_at", DateTime(timezone=True)),
    Column("decided_by", Text),
    Column("decision_reason", Text),
    CheckConstraint(f"state IN {ANOMALY_STATES!r}", name="state_known"),
    Index("uq_anomalies_account_unresolved", "account_id", unique=True,
          postgresql_where=text("state IN ('open', 'confirmed')")),
)

# Where each account's fallback scan stands: executions recorded from ``scanned_from`` on are read.
alert_cursors = Table(
    "alert_cursors",
    metadata,
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("fallbacks_from", DateTime(timezone=True), nullable=False),
)

# E-mail delivery of the outbox: who it goes to, the HTML part, and the delivery record. The
# Message-ID is written before the first send and reused by every later attempt.
notifications.append_column(Column("audience", String(16), nullable=False, server_default="account"))
notifications.append_column(Column("html", Text))  # an HTML fragment; NULL: made from the text
notifications.append_column(Column("message_id", String(255)))
notifications.append_column(Column("attempts", Integer, nullable=False, server_default="0"))
notifications.append_column(Column("claimed_until", DateTime(timezone=True)))
notifications.append_column(Column("last_error", Text))
notifications.append_column(Column("delivered_to", Text))
notifications.append_column(Column("failed_at", DateTime(timezone=True)))  # given up (a permanent refusal)
Index("ix_notifications_pending", notifications.c.id,
      postgresql_where=text("sent_at IS NULL AND failed_at IS NULL"))

# ---- reliability (issue 14) ----------------------------------------------------------------------
# Every event id a tenant recorded, with a digest of the event's content: deduplication is scoped to
# the tenant (the account's platform; 0 for an account of no platform), and a replay is a duplicate
# only when its content is the same (activities.ingest.content_hash, EXECUTION_CONTENT_HASH_SQL).
# Unpartitioned on purpose: the uniqueness spans every month of ``executions``.
execution_ids = Table(
    "execution_ids",
    metadata,
    Column("platform_id", Integer, primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("content_hash", LargeBinary, nullable=False),
)

# The months whose executions ``tally usage archive`` wrote to a file and dropped (their partition is
# gone): recorded in the transaction that drops the partition, removed in the one that restores it.
# ``invoices verify`` refuses these months (it would re-rate them from no executions).
archived_months = Table(
    "archived_months",
    metadata,
    Column("period", String(7), primary_key=True),
    Column("rows", BigInteger, nullable=False),
    Column("file", Text, nullable=False),
    Column("archived_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# ---- prepaid credits (billing/credits.py, services/credits.py) ---------------------------------------
CREDIT_UNITS = ("credits", "usd")
CREDIT_ENTRY_KINDS = ("grant", "consume", "expire", "adjust", "invoice_application")
CREDIT_PURCHASE_STATUSES = ("pending", "paid", "failed", "expired")
CREDIT_AMOUNT = Numeric(18, 2)  # credits are whole numbers, usd whole cents: both fit

# Accounts that hold (or held) credits, and the credits-only ones (no plan charges: every execution is
# paid with credits or refused). The usage observer reads only accounts listed here.
credit_accounts = Table(
    "credit_accounts",
    metadata,
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("credits_only", Boolean, nullable=False, server_default=text("false")),
    # The consumption read every execution ingested before this (minus a margin for transactions still
    # open then): the next booking looks only at executions ingested since (credit_bookings filters).
    Column("booked_through", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A package bought through a Stripe Checkout Session: pending until Stripe says it was paid (webhook or
# poll), then paid (its grant exists), or failed / expired (nothing granted).
credit_purchases = Table(
    "credit_purchases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("package", String(64), nullable=False),
    Column("catalog_version", String(64), nullable=False),
    Column("unit", String(8), nullable=False),
    Column("amount", CREDIT_AMOUNT, nullable=False),
    Column("price", MONEY, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("stripe_session_id", String(128), unique=True),
    Column("checkout_url", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True)),
    Column("detail", Text),  # why it failed / expired, or the payment intent that paid
    CheckConstraint(f"status IN {CREDIT_PURCHASE_STATUSES!r}", name="status_known"),
    CheckConstraint(f"unit IN {CREDIT_UNITS!r}", name="unit_known"),
    Index("ix_credit_purchases_pending", "created_at", postgresql_where=text("status = 'pending'")),
)

credit_grants = Table(
    "credit_grants",
    metadata,
    Column("id", String(96), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("unit", String(8), nullable=False),
    Column("amount", CREDIT_AMOUNT, nullable=False),
    Column("price", MONEY, nullable=False),
    Column("package", String(64)),
    Column("purchase_id", String(64), ForeignKey("credit_purchases.id"), unique=True),
    Column("reference", Text, nullable=False),  # the purchase id, or the ops reason
    Column("granted_by", Text),  # ops: who gave it (audit); NULL for a purchase
    Column("granted_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # What is left: the sum of the grant's ledger entries, kept by a trigger on every insert into
    # credit_ledger (migration 0018), so the booking and the entitlement check never sum the month's entries.
    Column("remaining", CREDIT_AMOUNT, nullable=False, server_default="0"),
    CheckConstraint(f"unit IN {CREDIT_UNITS!r}", name="unit_known"),
    CheckConstraint("amount > 0 AND price >= 0 AND expires_at > granted_at", name="valid"),
    Index("ix_credit_grants_account_expires", "account_id", "expires_at"),
)

# THE ledger: append-only (a trigger refuses UPDATE and DELETE), one signed entry per grant and fact,
# deterministic ids (billing.credits) so every write is idempotent. A balance is a sum over it.
credit_ledger = Table(
    "credit_ledger",
    metadata,
    Column("id", String(320), primary_key=True),
    Column("account_id", String(64), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("grant_id", String(96), ForeignKey("credit_grants.id"), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("unit", String(8), nullable=False),
    Column("amount", CREDIT_AMOUNT, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("reference", Text, nullable=False, server_default=""),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id")),  # invoice_application: the invoice it paid
    Column("actor", Text),  # ops actions: who (audit)
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"kind IN {CREDIT_ENTRY_KINDS!r}", name="kind_known"),
    CheckConstraint("(kind = 'grant') = (amount > 0) AND amount <> 0", name="sign"),
    Index("ix_credit_ledger_grant", "grant_id"),
    Index("ix_credit_ledger_account_occurred", "account_id", "occurred_at"),
    Index("ix_credit_ledger_consumed_event", "account_id", "reference", postgresql_where=text("kind = 'consume'")),
)

# Each execution of a credit account that the consumption has decided on (paid with credits or not),
# so the catch-up reads only executions not decided yet. Not money: the ledger is. Keyed by account and
# event id (event ids are unique per tenant).
credit_bookings = Table(
    "credit_bookings",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("credits", Integer, nullable=False),
    Column("funded", Boolean, nullable=False),
)

# ---- creator revenue share and payouts (issue 10; docs/architecture.md "Creator payouts") -------------
# A premium skill's creator, with the state of their Stripe Connect Express account as the last
# ``account.updated`` webhook described it (``account_event_at``: that event's time; older ones are ignored).
creators = Table(
    "creators",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("stripe_account_id", String(64), unique=True),
    Column("charges_enabled", Boolean, nullable=False, server_default=text("false")),
    Column("payouts_enabled", Boolean, nullable=False, server_default=text("false")),
    Column("details_submitted", Boolean, nullable=False, server_default=text("false")),
    Column("transfers_capability", String(16), nullable=False, server_default="inactive"),
    Column("account_event_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("transfers_capability IN ('active', 'inactive', 'pending')", name="transfers_known"),
)

# A skill its creator marked premium: ``share`` (30% of its revenue) or ``fixed`` (a price per execution
# on the user's invoice, 70% to the creator). The close reads the terms in force when it rates.
premium_skills = Table(
    "premium_skills",
    metadata,
    Column("skill_id", String(128), primary_key=True),
    Column("creator_id", String(64), ForeignKey("creators.id"), nullable=False),
    Column("model", String(8), nullable=False),
    Column("fixed_price", MONEY),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("(model = 'share' AND fixed_price IS NULL) OR (model = 'fixed' AND fixed_price > 0)",
                    name="model_price"),
)

# What a creator earned from one source (``billing.payouts.Earning``): an invoice line (written with the
# invoice by the close, rewritten while it is a draft) or an account's credit-funded executions of a
# period (payable from ``payable_from``). ``skills``: [{skill_id, executions, revenue}].
creator_earnings = Table(
    "creator_earnings",
    metadata,
    Column("id", Text, primary_key=True),
    Column("creator_id", String(64), ForeignKey("creators.id"), nullable=False),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="CASCADE")),
    Column("account_id", String(64), nullable=False),
    Column("period", String(7), nullable=False),  # the period whose usage earned it
    Column("source", Text, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("revenue", Numeric(24, 12), nullable=False),
    Column("executions", BigInteger, nullable=False),
    Column("skills", JSONB, nullable=False),
    Column("payable_from", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_creator_earnings_creator_id", "creator_id"),
    Index("ix_creator_earnings_invoice_id", "invoice_id"),
)

# When an invoice was paid (``invoice.paid`` webhook, or ops' mark-paid): its earnings are payable from then.
invoice_payments = Table(
    "invoice_payments",
    metadata,
    Column("invoice_id", BigInteger, ForeignKey("invoices.id", ondelete="CASCADE"), primary_key=True),
    Column("paid_at", DateTime(timezone=True), nullable=False),
    Column("source", String(16), nullable=False),  # webhook | ops
    Column("stripe_charge_id", String(64)),
    Column("amount", MONEY, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_invoice_payments_stripe_charge_id", "stripe_charge_id"),
)

# Corrections to a creator's balance (refunds, disputes), counted in the payout month of ``occurred_at``.
creator_adjustments = Table(
    "creator_adjustments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("creator_id", String(64), ForeignKey("creators.id"), nullable=False),
    Column("invoice_id", BigInteger, ForeignKey("invoices.id")),
    Column("amount", MONEY, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_creator_adjustments_creator_id", "creator_id"),
)

PAYOUT_STATUSES = ("carried", "pending", "paid", "failed", "cancelled")

# One row per creator and month (``payout-<creator>-<YYYY-MM>``): the decision (``billing.payouts.
# decide_payout``), written once and never re-decided, and what became of its transfer.
payouts = Table(
    "payouts",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("creator_id", String(64), ForeignKey("creators.id"), nullable=False),
    Column("period", String(7), nullable=False),
    Column("status", String(16), nullable=False),
    Column("carried_in", MONEY, nullable=False),
    Column("earnings", MONEY, nullable=False),
    Column("adjustments", MONEY, nullable=False),
    Column("balance", MONEY, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("carried_out", MONEY, nullable=False),
    Column("message", Text, nullable=False),
    Column("destination", String(64)),
    Column("stripe_transfer_id", String(64)),
    Column("failure_reason", Text),
    Column("cancel_reason", Text),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("paid_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("creator_id", "period"),
    CheckConstraint(f"status IN {PAYOUT_STATUSES!r}", name="status_known"),
    CheckConstraint("amount >= 0", name="amount_non_negative"),
    Index("ix_payouts_period_status", "period", "status"),
)
