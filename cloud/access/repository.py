"""The access tables: a site's version counter, and rows written in bulk.

An import of 100,000 credentials must not become 100,000 ORM objects: rows go in and out as plain
tuples and dicts through Core statements (one executemany upsert, one executemany tombstoning).
Every row carries the site version at which it last changed and a ``deleted`` tombstone, so the
changes after any version are one range query per table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.db import upsert_insert
from cloud.models import (
    AccessCredential,
    AccessHoliday,
    AccessLevelRow,
    AccessSchedule,
    AccessVersion,
    Gateway,
)

VERSIONS: Table = AccessVersion.__table__  # type: ignore[assignment]
SCHEDULES: Table = AccessSchedule.__table__  # type: ignore[assignment]
LEVELS: Table = AccessLevelRow.__table__  # type: ignore[assignment]
HOLIDAYS: Table = AccessHoliday.__table__  # type: ignore[assignment]
CREDENTIALS: Table = AccessCredential.__table__  # type: ignore[assignment]

# The columns that make a row what it is (besides site, key, version and deleted): a row whose
# values all match is unchanged and keeps its version.
SCHEDULE_VALUES = ("name", "intervals", "holiday")
LEVEL_VALUES = ("name", "doors", "schedule")
HOLIDAY_VALUES = ("name",)
CREDENTIAL_VALUES = (
    "card",
    "facility",
    "holder",
    "levels",
    "valid_from_ms",
    "valid_until_ms",
    "pin_hash",
    "suspended",
    "offline_ok",
    "clock_free",
    "first_person_in",
    "antipassback_exempt",
)


# Each table's value columns, by table name.
VALUES: dict[str, tuple[str, ...]] = {
    SCHEDULES.name: SCHEDULE_VALUES,
    LEVELS.name: LEVEL_VALUES,
    HOLIDAYS.name: HOLIDAY_VALUES,
    CREDENTIALS.name: CREDENTIAL_VALUES,
}


def key_of(table: Table) -> str:
    return "date" if table is HOLIDAYS else "id"


async def lock_site(session: AsyncSession, site: str) -> int:
    """The site's current version, its counter row locked until the transaction ends: changes to
    one site's access data take turns. On SQLite this first write takes the database's write
    lock up front, so the transaction cannot fail half way on a lock it could not upgrade."""
    await session.execute(
        upsert_insert(session, VERSIONS)
        .values(site=site, version=0)
        .on_conflict_do_nothing(index_elements=["site"])
    )
    version = await session.scalar(
        select(VERSIONS.c.version).where(VERSIONS.c.site == site).with_for_update()
    )
    return int(version or 0)


async def set_version(session: AsyncSession, site: str, version: int) -> None:
    await session.execute(update(VERSIONS).where(VERSIONS.c.site == site).values(version=version))


async def site_version(session: AsyncSession, site: str) -> int:
    """The site's access version; 0 if it never had access data."""
    return int(await session.scalar(select(VERSIONS.c.version).where(VERSIONS.c.site == site)) or 0)


async def existing(
    session: AsyncSession, table: Table, site: str, values: Sequence[str]
) -> dict[Any, tuple[Any, ...]]:
    """key -> (deleted, *values) of every row of the site, tombstones included."""
    key = table.c[key_of(table)]
    columns = [key, table.c.deleted, *(table.c[v] for v in values)]
    result = await session.execute(select(*columns).where(table.c.site == site))
    return {row[0]: tuple(row[1:]) for row in result}


async def upsert(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or replace rows (each a dict with every column) in one executemany."""
    if not rows:
        return
    stmt = upsert_insert(session, table)
    names = [c.name for c in table.columns if c.name not in ("site", key_of(table))]
    stmt = stmt.on_conflict_do_update(
        index_elements=["site", key_of(table)], set_={n: stmt.excluded[n] for n in names}
    )
    await session.execute(stmt, list(rows))


async def tombstone(
    session: AsyncSession, table: Table, site: str, keys: Sequence[Any], version: int
) -> None:
    """Mark rows deleted at ``version`` (they stay, so that later deltas can say they went)."""
    if not keys:
        return
    key = table.c[key_of(table)]
    stmt = (
        update(table)
        .where(table.c.site == bindparam("b_site"), key == bindparam("b_key"))
        .values(deleted=True, version=version)
    )
    await session.execute(stmt, [{"b_site": site, "b_key": k} for k in keys])


async def changed_since(
    session: AsyncSession, table: Table, site: str, since: int, upto: int, *, live_only: bool
) -> list[Any]:
    """Rows of the site changed after version ``since`` up to ``upto``, by key."""
    stmt = select(table).where(table.c.site == site, table.c.version > since, table.c.version <= upto)
    if live_only:
        stmt = stmt.where(table.c.deleted.is_(False))
    return list((await session.execute(stmt.order_by(table.c[key_of(table)]))).all())


async def live_keys(session: AsyncSession, table: Table, site: str) -> set[Any]:
    key = table.c[key_of(table)]
    return set(
        (await session.scalars(select(key).where(table.c.site == site, table.c.deleted.is_(False)))).all()
    )


async def live_count(session: AsyncSession, table: Table, site: str) -> int:
    stmt = select(func.count()).select_from(table).where(table.c.site == site, table.c.deleted.is_(False))
    return int(await session.scalar(stmt) or 0)


async def site_gateways(session: AsyncSession, site: str, *, online_only: bool) -> list[tuple[str, int]]:
    """(id, reported access version) of the site's gateways."""
    stmt = select(Gateway.id, Gateway.access_version).where(Gateway.site == site)
    if online_only:
        stmt = stmt.where(Gateway.online.is_(True))
    return [(row[0], int(row[1])) for row in await session.execute(stmt.order_by(Gateway.id))]
