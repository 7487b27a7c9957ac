"""The async engine and sessions, and how to tell a database outage from a bad row.

SQLite (one machine, the demo) and PostgreSQL (production) are both first-class: every query here
and in the repositories runs on both, and the hot insert path has one fast variant for each.
"""

import sqlite3
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SessionFactory = async_sessionmaker[AsyncSession]

# How long a SQLite writer waits for another's lock before "database is locked". Ingest retries
# after that anyway; a few seconds rides out a checkpoint or a console export without an error.
DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 5000


DATABASE_COMMAND_TIMEOUT_S = 30.0
DATABASE_CONNECT_TIMEOUT_S = 10.0


def create_engine(
    url: str,
    *,
    sqlite_busy_timeout_ms: int = DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
    command_timeout_s: float = DATABASE_COMMAND_TIMEOUT_S,
) -> AsyncEngine:
    """An engine for ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://`` URLs."""
    if is_sqlite(url):
        engine = create_async_engine(url)
        _sqlite_pragmas(engine, sqlite_busy_timeout_ms)
        return engine
    return create_async_engine(
        url,
        # A replica outlives database restarts: test a pooled connection before handing it out
        # rather than failing the next transaction on a dead socket.
        pool_pre_ping=True,
        connect_args={
            "server_settings": {"application_name": "gatehouse-cloud"},
            # A database that vanishes without a reset (a half-open TCP connection: a dropped
            # route, a host gone dark) would otherwise leave a query waiting for ever and ingest
            # stuck with it; a timeout turns it into an outage that ingest retries.
            "command_timeout": command_timeout_s,
            "timeout": min(DATABASE_CONNECT_TIMEOUT_S, command_timeout_s),
        },
    )


def session_factory(engine: AsyncEngine) -> SessionFactory:
    # expire_on_commit=False: rows read in a transaction stay usable after it (async code cannot
    # lazily reload an expired attribute).
    return async_sessionmaker(engine, expire_on_commit=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def redacted(url: str) -> str:
    """The URL fit for a log line: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL: the API reads while ingest writes. synchronous=NORMAL in WAL loses at most the last
        # commits on power loss, never consistency; the gateway resends what it was not acked.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


# SQLSTATE classes that are about the rows sent, not about the server: data exceptions (22:
# bad encoding, NUL in text, out of range), integrity violations (23), program limits (54).
_DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    DataError,
    IntegrityError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
)


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` says the database is unavailable (gone, restarting, locked, deadlocked):
    the same work will succeed later. False if it says the work itself cannot be stored (bad data),
    or is no database error at all: retrying that would stall ingest for ever."""
    for err in _causes(exc):
        state = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            return state[:2] not in _DATA_SQLSTATE_CLASSES
        if isinstance(err, _DATA_ERRORS):
            return False
    for err in _causes(exc):
        if isinstance(err, sqlite3.Error | SQLAlchemyError | OSError | TimeoutError):
            return True
        if type(err).__module__.startswith("asyncpg"):
            # asyncpg's connection and protocol errors carry no SQLSTATE.
            return True
    return False


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        todo.extend([getattr(err, "orig", None), err.__cause__, err.__context__])


def upsert_insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT of the session's dialect, so ``on_conflict_do_nothing`` / ``do_update`` can follow
    (the same on PostgreSQL and SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
