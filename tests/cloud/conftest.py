"""Fixtures of the cloud tests: migrated databases on SQLite (a file per test) and PostgreSQL
(a throwaway database per test module). Builders and waits are in ``tests.cloud.helpers``."""

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import SessionFactory, create_engine, session_factory
from cloud.schema import prepare_database
from tests.support.mosquitto import MosquittoProcess
from tests.support.postgres import temporary_database

BACKENDS = ["sqlite", "postgresql"]


@dataclass
class Database:
    backend: str
    url: str
    engine: AsyncEngine
    sessions: SessionFactory


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await prepare_database(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A migrated throwaway PostgreSQL database shared by the tests of one module."""
    with temporary_database("gh_cloud") as url:
        asyncio.run(_migrate(url))
        yield url


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite database migrated to head, copied for each test: running the migrations for
    every test cost half a second each, several minutes over the suite."""
    path = tmp_path_factory.mktemp("sqlite-template") / "cloud.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    # The engine is disposed: the WAL was checkpointed into the file and removed.
    assert not path.with_name("cloud.db-wal").exists()
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A fresh migrated SQLite database of the test's own."""
    target = tmp_path / "cloud.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated database on each backend."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each backend (the engine is bound to the test's event loop)."""
    engine = create_engine(database_url)
    try:
        yield Database(engine.dialect.name, database_url, engine, session_factory(engine))
    finally:
        await engine.dispose()


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    """The module's PostgreSQL database only, for what only PostgreSQL has (partitions)."""
    engine = create_engine(postgres_url)
    try:
        yield Database("postgresql", postgres_url, engine, session_factory(engine))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoProcess]:
    """A private Mosquitto per test module: nothing here depends on a broker the machine runs."""
    process = MosquittoProcess()
    process.start()
    try:
        yield process
    finally:
        process.stop()
        shutil.rmtree(process.workdir, ignore_errors=True)
