"""long conversations: stored summaries, a run's context tokens, messages by run

Revision ID: 0005_context
Revises: 0004
Create Date: 2026-12-07 03:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_context"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "context_summaries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("through_sequence", sa.Integer(), nullable=False),
        sa.Column("through_message_id", sa.String(length=36), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_context_summaries_conversation",
        "context_summaries",
        ["conversation_id", "through_sequence"],
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("context_estimate", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("context_tokens", sa.Integer(), nullable=True))
    op.create_index("ix_messages_session", "messages", ["conversation_id", "session_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_session", table_name="messages")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("context_tokens")
        batch_op.drop_column("context_estimate")
    op.drop_index("ix_context_summaries_conversation", table_name="context_summaries")
    op.drop_table("context_summaries")
