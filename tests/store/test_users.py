"""Users and API tokens: only the SHA-256 of a token is stored."""

from __future__ import annotations

import asyncio
import hashlib

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.store import users
from turnstream.store.models import User


async def test_create_token_stores_only_its_sha256(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as db:
        token = await users.create_token(db, user_id="alice", email="alice@example.com")

    assert token.startswith("ts_")
    assert len(token) > 30
    async with sessions() as db:
        rows = (await db.execute(text("SELECT * FROM api_tokens"))).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    assert row["user_id"] == "alice"
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    # The raw token (or its random part) is in no column of the table.
    secret = token.removeprefix("ts_")
    for value in row.values():
        assert secret not in str(value)


async def test_user_for_token_finds_the_owner_and_rejects_other_tokens(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as db:
        alice1 = await users.create_token(db, user_id="alice", email="alice@example.com")
    async with sessions() as db:
        alice2 = await users.create_token(db, user_id="alice")
    async with sessions() as db:
        bob = await users.create_token(db, user_id="bob")

    assert len({alice1, alice2, bob}) == 3
    async with sessions() as db:
        found = {t: await users.user_for_token(db, token=t) for t in (alice1, alice2, bob)}
        wrong = [
            await users.user_for_token(db, token=t)
            for t in (
                "ts_wrong",
                "",
                alice1 + "x",
                alice1[:-1],
                alice1.upper(),
                hashlib.sha256(alice1.encode()).hexdigest(),  # the stored hash is no token
            )
        ]
        count = await users.count_users(db)

    assert {t: u.id if u else None for t, u in found.items()} == {
        alice1: "alice",
        alice2: "alice",
        bob: "bob",
    }
    assert found[alice1] is not None
    assert found[alice1].email == "alice@example.com"  # a second token keeps the email
    assert wrong == [None] * 6
    assert count == 2


async def test_ensure_user_creates_once_and_updates_the_email(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as db, db.begin():
        await users.ensure_user(db, user_id="carol")
    async with sessions() as db, db.begin():
        await users.ensure_user(db, user_id="carol", email="carol@example.com")
    async with sessions() as db, db.begin():
        await users.ensure_user(db, user_id="carol")

    async with sessions() as db:
        rows = list(await db.scalars(select(User)))
    assert [(u.id, u.email) for u in rows] == [("carol", "carol@example.com")]


async def test_two_processes_creating_one_user_at_once_both_succeed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Two API processes whose first request is the same new (JWT) user."""

    async def create() -> str:
        async with sessions() as db:
            return await users.create_token(db, user_id="dave")

    tokens = await asyncio.gather(*(create() for _ in range(4)))
    async with sessions() as db:
        rows = list(await db.scalars(select(User)))
        found = [await users.user_for_token(db, token=t) for t in tokens]
    assert [u.id for u in rows] == ["dave"]
    assert [u.id for u in found] == ["dave"] * 4
