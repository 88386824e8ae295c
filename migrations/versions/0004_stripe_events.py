"""stripe_events: every signed Stripe webhook event received, once, with its outcome

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), primary_key=True),  # Stripe's event id (evt_...)
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),  # when Stripe created it
        sa.Column("livemode", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deliveries", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("outcome", sa.String(16), nullable=False),  # handled | ignored
    )
    op.create_index("ix_stripe_events_type_created", "stripe_events", ["type", "created"])


def downgrade() -> None:
    op.drop_table("stripe_events")
