"""Throwaway PostgreSQL databases for tests: one per test module, random name, dropped afterwards.

The server is the one on 127.0.0.1:5432 (trust auth); ``GATEHOUSE_TEST_PG`` names another admin
DSN. Tests create and drop their own databases there and never reconfigure the server.
"""

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

ADMIN_DSN = os.environ.get("GATEHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def create_database(prefix: str = "gh_test") -> str:
    """Create an empty database with a random name; returns its SQLAlchemy asyncpg URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _url_for(name)


async def drop_database(url: str) -> None:
    """Drop a database made by ``create_database``, even with connections still open to it."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextmanager
def temporary_database(prefix: str = "gh_test") -> Iterator[str]:
    """For a synchronous (e.g. module-scoped) fixture: yields the URL, drops the database after."""
    url = asyncio.run(create_database(prefix))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


def _url_for(database: str) -> str:
    base = ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{base}/{database}"
