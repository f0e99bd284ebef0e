"""Users and their API tokens. A token is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from turnstream.ids import uuid7
from turnstream.store.models import ApiToken, User

TOKEN_PREFIX = "ts_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def ensure_user(db: AsyncSession, *, user_id: str, email: str | None = None) -> User:
    """The user, created if needed; safe when several processes create one user at once."""
    user = await db.get(User, user_id)
    if user is None:
        # INSERT … ON CONFLICT DO NOTHING: a second API process's first request (or first
        # start) for the same user must not fail on the primary key.
        insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
        await db.execute(insert(User).values(id=user_id, email=email).on_conflict_do_nothing())
        user = await db.get(User, user_id)
        assert user is not None
    if email is not None and user.email != email:
        user.email = email
    await db.flush()
    return user


async def create_token(db: AsyncSession, *, user_id: str, email: str | None = None) -> str:
    """Create the user if needed and return a new bearer token for them."""
    await ensure_user(db, user_id=user_id, email=email)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.add(ApiToken(id=uuid7(), user_id=user_id, token_hash=hash_token(token)))
    await db.commit()
    return token


async def user_for_token(db: AsyncSession, *, token: str) -> User | None:
    row = await db.execute(
        select(User).join(ApiToken).where(ApiToken.token_hash == hash_token(token))
    )
    return row.scalar_one_or_none()


async def count_users(db: AsyncSession) -> int:
    return (await db.execute(select(func.count()).select_from(User))).scalar_one()
