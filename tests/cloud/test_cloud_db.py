"""Telling a database outage (retry, do not ack) from content the database refuses (reject)."""

import sqlite3

import asyncpg
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from cloud.db import is_transient, redacted


def wrapped(orig: Exception, cls: type = OperationalError) -> Exception:
    try:
        raise cls("INSERT ...", {}, orig) from orig
    except Exception as e:
        return e


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        wrapped(sqlite3.OperationalError("database is locked")),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.UndefinedTableError('relation "events" does not exist'),
    ],
    ids=lambda e: type(e).__name__,
)
def test_outages_are_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.IntegrityError("NOT NULL constraint failed"),
        wrapped(sqlite3.IntegrityError("UNIQUE"), IntegrityError),
        asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape sequence"),
        asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
        asyncpg.exceptions.NumericValueOutOfRangeError("out of range"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        ValueError("not a database error at all"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refused_content_is_not_transient(error: Exception) -> None:
    assert not is_transient(error)


def test_redacted_url_hides_the_password() -> None:
    assert "s3cret" not in redacted("postgresql+asyncpg://gh:s3cret@db.internal:5432/gatehouse")
