"""The property model's tables.

Every row a company owns carries ``company_id``, even where it could be reached through a parent:
isolation between companies is then one equality in every query, checked in one place
(``cloud.accounts.permissions``), and each table is indexed by it.

A site's ``code`` is unique across the cloud: it is the site key the gateway registry and the
access tables (0002) already use, so those need no second id.
"""

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Index, Numeric, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, BigId

# Floor areas in m² with two decimals: money is computed from them (fee per m²), so never a float.
Area = Numeric(12, 2, asdecimal=True)

UNIT_USES = ("residential", "commercial", "office", "storage", "parking", "other")
OCCUPANT_ROLES = ("owner", "tenant", "resident")
METER_KINDS = ("water", "electricity", "gas", "heat")
PARKING_KINDS = ("owned", "rented", "visitor", "reserved")
COMMON_AREA_KINDS = ("lobby", "corridor", "garden", "plant_room", "clubhouse", "roof", "other")
DEFAULT_TIMEZONE = "Asia/Shanghai"


class Company(Base):
    """A property company: one tenant of the cloud, isolated from every other."""

    __tablename__ = "companies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(unique=True)  # short slug, e.g. "harbour"
    name: Mapped[str]
    timezone: Mapped[str] = mapped_column(default=DEFAULT_TIMEZONE)
    created_at: Mapped[datetime]


class Site(Base):
    """An estate (小区) or a stand-alone building complex."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    code: Mapped[str] = mapped_column(unique=True)  # the site key of gateways and access data
    name: Mapped[str]
    address: Mapped[str] = mapped_column(default="")
    timezone: Mapped[str] = mapped_column(default=DEFAULT_TIMEZONE)  # times are shown in it
    created_at: Mapped[datetime]

    __table_args__ = (Index("sites_company", "company_id"),)


class Building(Base):
    __tablename__ = "buildings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    code: Mapped[str]  # e.g. "T1", unique within the site
    name: Mapped[str]

    __table_args__ = (UniqueConstraint("site_id", "code", name="buildings_site_code"),)


class Floor(Base):
    __tablename__ = "floors"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    building_id: Mapped[int] = mapped_column(ForeignKey("buildings.id"))
    level: Mapped[int]  # 1 = ground floor above; -1 = first basement
    name: Mapped[str]  # as signed in the lift, e.g. "B1", "12F"

    __table_args__ = (UniqueConstraint("building_id", "level", name="floors_building_level"),)


class Unit(Base):
    """A house, flat, shop or office (房屋)."""

    __tablename__ = "units"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    building_id: Mapped[int] = mapped_column(ForeignKey("buildings.id"))
    floor_id: Mapped[int] = mapped_column(ForeignKey("floors.id"))
    number: Mapped[str]  # e.g. "1203", unique within the building
    floor_area_m2: Mapped[Decimal] = mapped_column(Area)
    use: Mapped[str] = mapped_column(default="residential")  # one of UNIT_USES
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("building_id", "number", name="units_building_number"),
        Index("units_company_site", "company_id", "site_id"),
    )


class Person(Base):
    """An owner, tenant or resident; linked to units through occupancies."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    name: Mapped[str]
    phone: Mapped[str] = mapped_column(default="")
    email: Mapped[str] = mapped_column(default="")
    note: Mapped[str] = mapped_column(default="")
    created_at: Mapped[datetime]

    __table_args__ = (Index("people_company_phone", "company_id", "phone"),)


class Occupancy(Base):
    """A person's link to a unit: as owner, tenant or resident, from a date, until a date or open."""

    __tablename__ = "occupancies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    role: Mapped[str]  # one of OCCUPANT_ROLES
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    primary: Mapped[bool] = mapped_column(default=False)  # the unit's main contact (and payer)

    __table_args__ = (
        Index("occupancies_unit", "unit_id"),
        Index("occupancies_person", "person_id"),
    )


class ParkingSpace(Base):
    __tablename__ = "parking_spaces"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    code: Mapped[str]  # e.g. "B1-042", unique within the site
    kind: Mapped[str] = mapped_column(default="rented")  # one of PARKING_KINDS
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))

    __table_args__ = (UniqueConstraint("site_id", "code", name="parking_spaces_site_code"),)


class CommonArea(Base):
    __tablename__ = "common_areas"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id"))
    name: Mapped[str]
    kind: Mapped[str] = mapped_column(default="other")  # one of COMMON_AREA_KINDS
    area_m2: Mapped[Decimal | None] = mapped_column(Area)


class Meter(Base):
    """A utility meter, billed to a unit or shared by a common area, read by a gateway point."""

    __tablename__ = "meters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    code: Mapped[str]  # the number on the meter, unique within the site
    kind: Mapped[str]  # one of METER_KINDS
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    common_area_id: Mapped[int | None] = mapped_column(ForeignKey("common_areas.id"))
    # The gateway point that reads it: events of this gateway with this source.
    gateway_id: Mapped[str | None]
    point: Mapped[str | None]  # the event source, "device/point"
    multi_tariff: Mapped[bool] = mapped_column(default=False)  # peak/valley registers

    __table_args__ = (
        UniqueConstraint("site_id", "code", name="meters_site_code"),
        Index("meters_point", "gateway_id", "point"),
    )


class Department(Base):
    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    name: Mapped[str]
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))

    __table_args__ = (UniqueConstraint("company_id", "name", name="departments_company_name"),)
