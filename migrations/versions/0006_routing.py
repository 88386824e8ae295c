"""model routing: quality scores, skills, per-account routing settings, routing decisions; executions
carry the routed model and the decision id (and an index on (skill_id, occurred_at) for the token mix)

Revision ID: routing_1
Revises: contracts_1
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "routing_1"
down_revision = "contracts_1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_scores",
        sa.Column("skill", sa.String(128), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suite_id", sa.String(128), nullable=False),
        sa.Column("score", sa.Numeric(5, 2), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("score >= 0 AND score <= 100", name=op.f("ck_quality_scores_score_range")),
        sa.PrimaryKeyConstraint("skill", "model", "measured_at", "suite_id", name=op.f("pk_quality_scores")),
    )
    op.create_table(
        "skills",
        sa.Column("skill_id", sa.String(128), nullable=False),
        sa.Column("category", sa.String(64), nullable=True),
        sa.Column("default_model", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("skill_id", name=op.f("pk_skills")),
    )
    op.create_table(
        "account_routing",
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("slider", sa.Numeric(4, 3), server_default="0", nullable=False),
        sa.Column("byok_providers", postgresql.ARRAY(sa.String(32)), server_default=sa.text("'{}'"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("slider >= 0 AND slider <= 1", name=op.f("ck_account_routing_slider_range")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_account_routing_account_id_accounts")),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_routing")),
    )
    op.create_table(
        "routing_decisions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("skill", sa.String(128), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("default_model", sa.String(64), nullable=True),
        sa.Column("score", sa.Numeric(5, 2), nullable=False),
        sa.Column("expected_cost", sa.Numeric(), nullable=False),
        sa.Column("threshold", sa.Numeric(), nullable=False),
        sa.Column("slider", sa.Numeric(4, 3), nullable=False),
        sa.Column("below_threshold", sa.Boolean(), nullable=False),
        sa.Column("byok", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("token_mix_source", sa.String(8), nullable=False),
        sa.Column("catalog_version", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("alternatives", postgresql.JSONB(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_routing_decisions_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_decisions")),
    )
    op.create_index("ix_routing_decisions_account_decided", "routing_decisions", ["account_id", "decided_at"])
    op.add_column("executions", sa.Column("routed_model", sa.String(64), nullable=True))
    op.add_column("executions", sa.Column("routing_decision_id", sa.BigInteger(), nullable=True))
    op.create_index("ix_executions_skill_occurred", "executions", ["skill_id", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_executions_skill_occurred", table_name="executions")
    op.drop_column("executions", "routing_decision_id")
    op.drop_column("executions", "routed_model")
    op.drop_table("routing_decisions")
    op.drop_table("account_routing")
    op.drop_table("skills")
    op.drop_table("quality_scores")
