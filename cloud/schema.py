"""Bringing the database schema up to date: Alembic, configured in code (there is no alembic.ini).

``migrate``, ``serve`` and ``ingest`` all upgrade at start. Several processes may start together
against one database, so the upgrade runs under a lock: a PostgreSQL advisory lock, or SQLite's
write lock taken up front. The second process then finds the schema at head and does nothing.
"""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.events.partitions import ensure_event_partitions

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: "gh-migr" as ASCII.
_LOCK_KEY = 0x67682D6D696772


def alembic_config(url: str | None = None) -> Config:
    """The Alembic config for the cloud's migrations; with ``url``, usable from Alembic's own commands."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # Not set_main_option: that runs the value through ConfigParser interpolation, which chokes
        # on the %-escapes of a URL-encoded password.
        config.attributes["database_url"] = url
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the cloud's migrations have a head"
    return head


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> str:
    """Apply the migrations up to ``revision``; returns the revision the database is now at."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        else:
            # Python's sqlite3 would otherwise run the DDL outside any transaction.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        return await conn.run_sync(_upgrade, revision)


async def prepare_database(engine: AsyncEngine) -> str:
    """What a starting cloud process does: upgrade, then make sure the coming months have partitions."""
    revision = await upgrade_database(engine)
    async with engine.begin() as conn:
        await ensure_event_partitions(conn)
    return revision


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def _upgrade(connection: Connection, revision: str) -> str:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
    current = MigrationContext.configure(connection).get_current_revision()
    return current or ""
