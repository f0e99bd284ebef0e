"""Claude Code's sessions, kept per conversation: the session it resumes, its transcript

Revision ID: 0006_claude_sessions
Revises: 0005_context
Create Date: 2026-12-08 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_claude_sessions"
down_revision = "0005_context"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claude_sessions",
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("through_run", sa.String(length=160), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("full", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id"),
    )
    op.create_table(
        "claude_session_entries",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("project_key", sa.String(length=255), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("subpath", sa.String(length=255), nullable=False),
        sa.Column("uuid", sa.String(length=64), nullable=True),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint(
            "conversation_id",
            "project_key",
            "session_id",
            "subpath",
            "uuid",
            name="uq_claude_session_entries_key_uuid",
        ),
    )


def downgrade() -> None:
    op.drop_table("claude_session_entries")
    op.drop_table("claude_sessions")
