"""Users and their API tokens. A token is shown once; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from turnstream.ids import uuid7
from turnstream.store.models import ApiToken, User, utcnow

TOKEN_PREFIX = "ts_"
# How much of a token is stored in clear, to tell tokens apart: `ts_` and 4 of its 43
# random characters (24 of 256 bits).
SHOWN_CHARS = len(TOKEN_PREFIX) + 4


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
    token, _row = await issue_token(db, user_id=user_id, email=email)
    return token


async def issue_token(
    db: AsyncSession, *, user_id: str, email: str | None = None
) -> tuple[str, ApiToken]:
    """Like create_token, and also the stored row (its id and prefix, never the secret)."""
    await ensure_user(db, user_id=user_id, email=email)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id=uuid7(),
        user_id=user_id,
        token_hash=hash_token(token),
        prefix=token[:SHOWN_CHARS],
        created_at=utcnow(),
    )
    db.add(row)
    await db.commit()
    return token, row


async def list_tokens(db: AsyncSession, *, user_id: str | None = None) -> list[ApiToken]:
    """Every token (or one user's), oldest first: ids, prefixes and times, no secrets."""
    query = select(ApiToken).order_by(ApiToken.user_id, ApiToken.created_at, ApiToken.id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return list((await db.execute(query)).scalars())


async def revoke_token(db: AsyncSession, *, token_or_id: str) -> ApiToken | None:
    """Delete the token given by its id or by its value; the row it was, or None."""
    digest = hash_token(token_or_id)
    row = (
        await db.execute(
            select(ApiToken).where((ApiToken.id == token_or_id) | (ApiToken.token_hash == digest))
        )
    ).scalar_one_or_none()
    if row is not None:
        await db.delete(row)
        await db.commit()
    return row


async def user_for_token(db: AsyncSession, *, token: str) -> User | None:
    row = await db.execute(
        select(User).join(ApiToken).where(ApiToken.token_hash == hash_token(token))
    )
    return row.scalar_one_or_none()


async def count_users(db: AsyncSession) -> int:
    return (await db.execute(select(func.count()).select_from(User))).scalar_one()
