"""What the property API takes and answers. The services take the ``…In`` and ``…Patch`` models too
(the console builds them from its forms), so a value that reaches a service has its shape checked;
the services check what needs the database (references, uniqueness, dates against other rows).

Areas are ``Decimal`` with two places, written in JSON as strings (``"89.50"``): fees are computed
from them, so they never pass through a float. ``…Patch`` models change only the fields given.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from cloud.property.models import (
    COMMON_AREA_KINDS,
    DEFAULT_TIMEZONE,
    METER_KINDS,
    OCCUPANT_ROLES,
    PARKING_KINDS,
    UNIT_USES,
)
from protocols.topics import GATEWAY_ID_PATTERN

T = TypeVar("T")

SITE_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_AREA = Decimal("9999999999.99")  # Numeric(12, 2)


def _two_places(value: Decimal) -> str:
    return f"{value:.2f}"


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a time zone (an IANA name such as Asia/Shanghai)") from None
    return value


def _phone(value: str) -> str:
    return normalise_phone(value)


def normalise_phone(value: str) -> str:
    """A phone number as stored: digits, a leading ``+`` kept, spaces, dashes, dots and brackets
    dropped (``138-0013 8000`` and ``13800138000`` are one number). ValueError if it is not one."""
    text = value.strip()
    if not text:
        return ""
    compact = "".join(ch for ch in text if ch not in " -.()\u3000")
    digits = compact[1:] if compact.startswith("+") else compact
    if not (digits.isascii() and digits.isdigit() and 5 <= len(digits) <= 20):
        raise ValueError(f"{value!r} is not a phone number (5 to 20 digits, optionally starting with +)")
    return compact


def check_email(value: str) -> str:
    text = value.strip()
    if not text:
        return ""
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or domain.startswith(".") or any(ord(c) <= 32 for c in text):
        raise ValueError(f"{value!r} is not an email address")
    return text


def _one_line(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("control characters (a line break, a tab…) are not allowed here")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a NUL character is not allowed")
    return value


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))  # 1e3 is stored and shown as 1000.00


Code = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), AfterValidator(_one_line)
]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_one_line)
]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), AfterValidator(_no_nul)]
SiteCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=SITE_CODE_PATTERN)]
TimeZone = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_timezone)]
Phone = Annotated[str, StringConstraints(max_length=40), AfterValidator(_phone)]
Email = Annotated[str, StringConstraints(max_length=254), AfterValidator(check_email)]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
# In: a number or a string, at most two places, above zero. Out: a string with two places.
AreaIn = Annotated[Decimal, Field(gt=0, le=MAX_AREA, decimal_places=2), AfterValidator(_cents)]
AreaOut = Annotated[
    Decimal,
    PlainSerializer(_two_places, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\d+\.\d{2}$", "examples": ["89.50"]}, mode="serialization"
    ),
]
UnitUse = Literal["residential", "commercial", "office", "storage", "parking", "other"]
OccupantRole = Literal["owner", "tenant", "resident"]
MeterKind = Literal["water", "electricity", "gas", "heat"]
ParkingKind = Literal["owned", "rented", "visitor", "reserved"]
CommonAreaKind = Literal["lobby", "corridor", "garden", "plant_room", "clubhouse", "roof", "other"]
Point = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[^\s\x00]+/[^\s\x00]+$", max_length=200)
]
GatewayId = Annotated[str, StringConstraints(pattern=GATEWAY_ID_PATTERN)]

# The Literals above are the models' tuples spelt out (a Literal needs its values written); this
# keeps them from drifting apart.
assert UnitUse.__args__ == UNIT_USES  # type: ignore[attr-defined]
assert OccupantRole.__args__ == OCCUPANT_ROLES  # type: ignore[attr-defined]
assert MeterKind.__args__ == METER_KINDS  # type: ignore[attr-defined]
assert ParkingKind.__args__ == PARKING_KINDS  # type: ignore[attr-defined]
assert CommonAreaKind.__args__ == COMMON_AREA_KINDS  # type: ignore[attr-defined]


class _In(BaseModel):
    # A misspelt field is an error rather than a silently ignored one.
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorOut(BaseModel):
    detail: str
    code: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass back as ?cursor= for the next page; null: the last page"
    )


# -- companies


class CompanyIn(_In):
    code: SiteCode
    name: Name
    timezone: TimeZone = DEFAULT_TIMEZONE


class CompanyPatch(_In):
    name: Name | None = None
    timezone: TimeZone | None = None


class CompanyOut(_Out):
    id: int
    code: str
    name: str
    timezone: str
    created_at: datetime


# -- sites


class SiteIn(_In):
    company_id: Id | None = Field(
        default=None, description="The platform names the company; others leave it out"
    )
    code: SiteCode = Field(description="Unique across the cloud; the site key of gateways and access data")
    name: Name
    address: Text = ""
    timezone: TimeZone = DEFAULT_TIMEZONE


class SitePatch(_In):
    """A site's code is its key in gateways' configs and access data: it does not change."""

    name: Name | None = None
    address: Text | None = None
    timezone: TimeZone | None = None


class SiteOut(_Out):
    id: int
    company_id: int
    code: str
    name: str
    address: str
    timezone: str
    created_at: datetime


class SiteSummaryOut(BaseModel):
    site_id: int
    code: str
    name: str
    buildings: int
    units: int
    occupied_units: int = Field(description="Units with an occupancy current today (in the site's zone)")
    people: int = Field(description="People with an occupancy current today")


# -- buildings and floors


class BuildingIn(_In):
    site_id: Id
    code: Code
    name: Name


class BuildingPatch(_In):
    code: Code | None = None
    name: Name | None = None


class BuildingOut(_Out):
    id: int
    company_id: int
    site_id: int
    code: str
    name: str


class FloorIn(_In):
    building_id: Id
    level: Annotated[int, Field(ge=-20, le=300, description="1: the ground floor; -1: the first basement")]
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] = Field(
        "", description="As signed in the lift; empty: 12F, B1"
    )


class FloorPatch(_In):
    level: Annotated[int, Field(ge=-20, le=300)] | None = None
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)] | None = None


class FloorOut(_Out):
    id: int
    company_id: int
    building_id: int
    level: int
    name: str


# -- units


class UnitIn(_In):
    floor_id: Id = Field(description="The floor (and through it the building and site)")
    number: Code
    floor_area_m2: AreaIn
    use: UnitUse = "residential"


class UnitPatch(_In):
    floor_id: Id | None = Field(default=None, description="Another floor of the same building")
    number: Code | None = None
    floor_area_m2: AreaIn | None = None
    use: UnitUse | None = None


class UnitOut(_Out):
    id: int
    company_id: int
    site_id: int
    building_id: int
    floor_id: int
    number: str
    floor_area_m2: AreaOut
    use: str
    created_at: datetime


# -- people and occupancies


class PersonIn(_In):
    company_id: Id | None = Field(
        default=None, description="The platform names the company; others leave it out"
    )
    name: Name
    phone: Phone = ""
    email: Email = ""
    note: Text = ""


class PersonPatch(_In):
    name: Name | None = None
    phone: Phone | None = None
    email: Email | None = None
    note: Text | None = None


class PersonOut(_Out):
    id: int
    company_id: int
    name: str
    phone: str
    email: str
    note: str
    created_at: datetime


def _dates_in_order(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and end < start:
        raise ValueError(f"end_date {end} is before start_date {start}")


class OccupancyIn(_In):
    unit_id: Id
    person_id: Id
    role: OccupantRole
    start_date: date
    end_date: date | None = Field(default=None, description="The last day; null: open")
    primary: bool = Field(default=False, description="The unit's main contact (and payer); one at a time")

    @model_validator(mode="after")
    def _order(self) -> OccupancyIn:
        _dates_in_order(self.start_date, self.end_date)
        return self


class OccupancyPatch(_In):
    role: OccupantRole | None = None
    start_date: date | None = None
    end_date: date | None = None
    primary: bool | None = None

    @model_validator(mode="after")
    def _order(self) -> OccupancyPatch:
        _dates_in_order(self.start_date, self.end_date)
        return self


class OccupancyOut(_Out):
    id: int
    company_id: int
    unit_id: int
    person_id: int
    role: str
    start_date: date
    end_date: date | None
    primary: bool


# -- parking, common areas, meters


class ParkingSpaceIn(_In):
    site_id: Id
    code: Code
    kind: ParkingKind = "rented"
    unit_id: Id | None = None
    person_id: Id | None = None


class ParkingSpacePatch(_In):
    code: Code | None = None
    kind: ParkingKind | None = None
    unit_id: Id | None = None
    person_id: Id | None = None


class ParkingSpaceOut(_Out):
    id: int
    company_id: int
    site_id: int
    code: str
    kind: str
    unit_id: int | None
    person_id: int | None


class CommonAreaIn(_In):
    site_id: Id
    building_id: Id | None = None
    name: Name
    kind: CommonAreaKind = "other"
    area_m2: AreaIn | None = None


class CommonAreaPatch(_In):
    building_id: Id | None = None
    name: Name | None = None
    kind: CommonAreaKind | None = None
    area_m2: AreaIn | None = None


class CommonAreaOut(_Out):
    id: int
    company_id: int
    site_id: int
    building_id: int | None
    name: str
    kind: str
    area_m2: AreaOut | None


class MeterIn(_In):
    site_id: Id
    code: Code
    kind: MeterKind
    unit_id: Id | None = Field(default=None, description="Billed to this unit, or")
    common_area_id: Id | None = Field(default=None, description="shared by this common area (not both)")
    gateway_id: GatewayId | None = Field(
        default=None, description="The gateway that reads it (of the same site)"
    )
    point: Point | None = Field(default=None, description="Its event source at that gateway, device/point")
    multi_tariff: bool = False

    @model_validator(mode="after")
    def _links(self) -> MeterIn:
        _check_meter_links(self.unit_id, self.common_area_id, self.gateway_id, self.point)
        return self


def _check_meter_links(
    unit_id: int | None, common_area_id: int | None, gateway_id: str | None, point: str | None
) -> None:
    if unit_id is not None and common_area_id is not None:
        raise ValueError("a meter is billed to a unit or shared by a common area, not both")
    if (gateway_id is None) != (point is None):
        raise ValueError("gateway_id and point go together: the gateway and the source it reports")


class MeterPatch(_In):
    code: Code | None = None
    kind: MeterKind | None = None
    unit_id: Id | None = None
    common_area_id: Id | None = None
    gateway_id: GatewayId | None = None
    point: Point | None = None
    multi_tariff: bool | None = None


class MeterOut(_Out):
    id: int
    company_id: int
    site_id: int
    code: str
    kind: str
    unit_id: int | None
    common_area_id: int | None
    gateway_id: str | None
    point: str | None
    multi_tariff: bool


# -- departments


class DepartmentIn(_In):
    company_id: Id | None = Field(
        default=None, description="The platform names the company; others leave it out"
    )
    name: Name
    parent_id: Id | None = None


class DepartmentPatch(_In):
    name: Name | None = None
    parent_id: Id | None = None


class DepartmentOut(_Out):
    id: int
    company_id: int
    name: str
    parent_id: int | None


# -- import


class ProblemOut(BaseModel):
    row: int | None = Field(
        description="The row as the sheet numbers it (the header is row 1); null: the file"
    )
    column: str | None = Field(description="The column as the file names it")
    value: str | None = Field(description="What the cell holds")
    message: str


class ImportOut(BaseModel):
    ok: bool = Field(description="No problems: written (unless dry_run)")
    dry_run: bool
    rows: int = Field(description="Data rows read")
    created: int
    updated: int
    unchanged: int
    counts: dict[str, int] = Field(
        default_factory=dict, description="More: buildings and floors created, occupancies created…"
    )
    problems: list[ProblemOut]
    problem_count: int


class ImportRejectedOut(ImportOut):
    detail: str
    code: str


def patch_fields(patch: BaseModel) -> dict[str, Any]:
    """The fields a patch sets (an explicit null clears an optional link)."""
    return patch.model_dump(exclude_unset=True)
