"""api_tokens.prefix: the first characters of a token, for `turnstream token list`

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: tokens made before this revision have no known prefix (only their hash).
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prefix", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("prefix")
