"""Exporting a site's units and people as CSV or .xlsx, with the import's columns, so that an export
imports again as it is (into the same site: nothing changes; into another: the same units and people).

Headers and values are in Chinese (楼栋, 住宅, 业主, 是) or English (building, residential, owner, yes),
the principal's language unless asked. Rows are read from the database as they are written out
(a server-side cursor on PostgreSQL), so a large site does not sit in memory as objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Select, select

from cloud.accounts.permissions import Permission, Principal
from cloud.db import SessionFactory
from cloud.property.importing import (
    PEOPLE_COLUMNS,
    ROLE_LABELS_ZH,
    UNIT_COLUMNS,
    USE_LABELS_ZH,
)
from cloud.property.models import Building, Floor, Occupancy, Person, Site, Unit
from cloud.property.scope import site_for
from cloud.property.sheets import CSV_TYPE, XLSX_TYPE, Column, FileFormat, csv_chunks, xlsx_chunks

P = Permission
Language = Literal["zh", "en"]


@dataclass(frozen=True)
class Export:
    filename: str
    media_type: str
    chunks: AsyncIterator[bytes]


def _header(columns: Sequence[Column], lang: Language) -> list[str]:
    return [c.zh if lang == "zh" else c.key for c in columns]


async def export_units(
    sessions: SessionFactory, principal: Principal, site_id: int, fmt: FileFormat, lang: Language
) -> Export:
    """The site's units (SITES_READ there), by building, floor and number."""
    async with sessions() as session:
        site = await site_for(session, principal, site_id, P.SITES_READ)
    stmt = (
        select(Building.code, Building.name, Floor.level, Unit.number, Unit.floor_area_m2, Unit.use)
        .join(Building, Building.id == Unit.building_id)
        .join(Floor, Floor.id == Unit.floor_id)
        .where(Unit.site_id == site.id)
        .order_by(Building.code, Floor.level, Unit.number)
    )

    def row(r: Any) -> list[Any]:
        use = USE_LABELS_ZH.get(r.use, r.use) if lang == "zh" else r.use
        return [r.code, r.name, r.level, r.number, r.floor_area_m2, use]

    return _export(sessions, site, "units", stmt, row, UNIT_COLUMNS, fmt, lang, (12, 16, 8, 10, 12, 10))


async def export_people(
    sessions: SessionFactory, principal: Principal, site_id: int, fmt: FileFormat, lang: Language
) -> Export:
    """Everyone linked to the site's units (PEOPLE_READ there): a row per occupancy."""
    async with sessions() as session:
        site = await site_for(session, principal, site_id, P.PEOPLE_READ)
    stmt = (
        select(
            Person.name,
            Person.phone,
            Person.email,
            Building.code,
            Unit.number,
            Occupancy.role,
            Occupancy.start_date,
            Occupancy.end_date,
            Occupancy.primary,
            Person.note,
        )
        .join(Person, Person.id == Occupancy.person_id)
        .join(Unit, Unit.id == Occupancy.unit_id)
        .join(Building, Building.id == Unit.building_id)
        .where(Unit.site_id == site.id)
        .order_by(Building.code, Unit.number, Occupancy.start_date, Occupancy.id)
    )
    yes, no = ("是", "否") if lang == "zh" else ("yes", "no")

    def row(r: Any) -> list[Any]:
        role = ROLE_LABELS_ZH.get(r.role, r.role) if lang == "zh" else r.role
        return [
            r.name,
            r.phone,
            r.email,
            r.code,
            r.number,
            role,
            r.start_date,
            r.end_date,
            yes if r.primary else no,
            r.note,
        ]

    widths = (10, 16, 24, 10, 10, 8, 12, 12, 8, 24)
    return _export(sessions, site, "people", stmt, row, PEOPLE_COLUMNS, fmt, lang, widths)


def _export(
    sessions: SessionFactory,
    site: Site,
    what: str,
    stmt: Select[*tuple[Any, ...]],
    row: Any,
    columns: Sequence[Column],
    fmt: FileFormat,
    lang: Language,
    widths: Sequence[int],
) -> Export:
    async def rows() -> AsyncIterator[list[Any]]:
        async with sessions() as session:
            result = await session.stream(stmt.execution_options(yield_per=1000))
            async for r in result:
                yield row(r)

    header = _header(columns, lang)
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    filename = f"{site.code}-{what}-{stamp}.{fmt}"
    if fmt == "xlsx":
        return Export(filename, XLSX_TYPE, xlsx_chunks(header, rows(), title=what, widths=widths))
    return Export(filename, CSV_TYPE, csv_chunks(header, rows()))
