"""The cloud's tables: the gateway registry, the events and what ingest refused (0001); the
commands sent to gateways and each site's access-control data (0002); each gateway's company and
site, its devices and points, their latest values and the hourly event counts (0003). The property
model, the accounts and the audit log have their own modules (``cloud/property``,
``cloud/accounts``, ``cloud/audit``) on the same ``Base``.

The migrations in ``cloud/migrations`` create these tables and are the truth about their DDL;
on PostgreSQL the events table is partitioned by month, which these declarations do not show
(the indexes declared here are the SQLite ones). Every time is stored in UTC.
"""

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Index,
    Integer,
    SmallInteger,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# 64-bit ids; SQLite makes a column an alias of its rowid (and so auto-incrementing) only when it
# is declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on both databases.

    PostgreSQL keeps ``timestamptz``; SQLite has no time type, so the UTC wall time is kept as
    SQLAlchemy's text form (``2024-05-01 12:00:00.000000``), which sorts in time order."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: times are stored in UTC and must say their zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        str: Text(),
        bool: Boolean(),
        dict[str, Any]: JsonDoc,
    }


class Gateway(Base):
    """A registered gateway. Its id is its MQTT username; its state comes from the ``state`` channel."""

    __tablename__ = "gateways"

    id: Mapped[str] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(default="")
    # Mosquitto's "$7$" PBKDF2-SHA512 form: the same string goes into Mosquitto's password file.
    password_hash: Mapped[str]
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    online: Mapped[bool] = mapped_column(default=False)
    version: Mapped[str] = mapped_column(default="")
    config_version: Mapped[str] = mapped_column(default="")
    boot_id: Mapped[str] = mapped_column(default="")
    clock_synced: Mapped[bool] = mapped_column(default=False)
    store_id: Mapped[str] = mapped_column(default="")
    state_time: Mapped[datetime | None]  # the gateway's own clock when it sent its last state
    # Kept by ingest with each commit: counting a partitioned events table per request is not cheap.
    event_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # The version of its credential store the gateway last reported (its birth, or a sync done).
    access_version: Mapped[int] = mapped_column(BigInteger, default=0)
    # The company and site it serves (0003); None for a gateway registered before sites existed
    # or by the platform operator without one: only the platform token sees those.
    company_id: Mapped[int | None] = mapped_column(BigInteger)
    site_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(default="")  # e.g. "T1 plant room"
    # Revoked: it can no longer sign in (its hash is emptied); the row and its history stay.
    revoked_at: Mapped[datetime | None]
    credentials_rotated_at: Mapped[datetime | None]


class Event(Base):
    """One event as the gateway sent it, stored once per (gateway_id, store_id, seq)."""

    __tablename__ = "events"

    # Ingest order, for cursor paging. On PostgreSQL it is not the primary key (a partitioned table's
    # keys must include the partition column) but it is indexed and unique by its sequence.
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No foreign key to gateways: the check would cost every insert, and events are history that
    # outlives a gateway's registration.
    gateway_id: Mapped[str]
    store_id: Mapped[str]
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str]
    lane: Mapped[int] = mapped_column(SmallInteger)
    reported_time: Mapped[datetime]  # the gateway's wall clock (see clock_synced)
    received_time: Mapped[datetime]  # when ingest got it
    boot_id: Mapped[str]
    mono_ns: Mapped[int] = mapped_column(BigInteger)
    clock_synced: Mapped[bool]
    source: Mapped[str]
    data: Mapped[dict[str, Any]]

    # Chosen for the events list (newest first by id: cloud/events/repository.py) and ingest, which
    # pays for each. SQLite ends every index with the rowid (the id), so events_kind gives a kind's
    # events newest first and events_gateway_time a time window's ids without reading the rows; on
    # PostgreSQL (migration 0003) those two name the id as their last column, and events_kind is
    # text_pattern_ops so that a kind prefix is a range of it too.
    __table_args__ = (
        Index("events_key", "gateway_id", "store_id", "seq", unique=True),
        Index("events_gateway_time", "gateway_id", "reported_time"),
        Index("events_kind", "kind"),
        # A point's trend, a door's history: one source of one gateway over time (0003).
        Index("events_source_time", "gateway_id", "source", "reported_time"),
    )


class IngestReject(Base):
    """A message ingest refused, so that the console can show what was refused and why."""

    __tablename__ = "ingest_rejects"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    gateway_id: Mapped[str | None]  # None when the topic named no valid gateway
    topic: Mapped[str]
    reason: Mapped[str]
    store_id: Mapped[str | None]
    ranges: Mapped[list[list[int]] | None] = mapped_column(JsonDoc)

    __table_args__ = (Index("ingest_rejects_at", "at"),)


class GatewayCommand(Base):
    """A command sent to a gateway on ``cmd`` and what it answered on ``cmd/result``.

    ``status``: sent, then what the answer's code says (done, pending, refused, failed, expired).
    ``args`` are the arguments as sent, except for ``access.sync``, whose credential lists are
    kept as counts (the data itself is in the access tables)."""

    __tablename__ = "gateway_commands"

    # Paging order; the command's own id (the one on the wire) is ``id``.
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str]  # uuid4 hex
    gateway_id: Mapped[str]  # no foreign key: the history outlives a registration, as events do
    name: Mapped[str]
    args: Mapped[dict[str, Any]]
    requested_by: Mapped[str]
    requested_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    status: Mapped[str]
    result_code: Mapped[str | None]
    result_detail: Mapped[str | None]
    result_data: Mapped[dict[str, Any] | None]
    result_at: Mapped[datetime | None]  # when the cloud got the answer

    __table_args__ = (
        Index("gateway_commands_id", "id", unique=True),
        Index("gateway_commands_gateway", "gateway_id", "seq"),
    )


class AccessVersion(Base):
    """A site's access-data version: bumped once by every change that changes something."""

    __tablename__ = "access_versions"

    site: Mapped[str] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


# Each access row carries the site version at which it last changed, and ``deleted`` as a
# tombstone, so that a delta from any version is a range query (see cloud/access).


class AccessSchedule(Base):
    __tablename__ = "access_schedules"

    site: Mapped[str] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    intervals: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc)
    holiday: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc)
    version: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("access_schedules_version", "site", "version"),)


class AccessLevelRow(Base):
    __tablename__ = "access_levels"

    site: Mapped[str] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    doors: Mapped[list[str]] = mapped_column(JsonDoc)
    schedule: Mapped[str]
    version: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("access_levels_version", "site", "version"),)


class AccessHoliday(Base):
    __tablename__ = "access_holidays"

    site: Mapped[str] = mapped_column(primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    name: Mapped[str]
    version: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("access_holidays_version", "site", "version"),)


class AccessCredential(Base):
    """A credential as protocols.access.Credential has it; the PIN only as its pin_hash."""

    __tablename__ = "access_credentials"

    site: Mapped[str] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(primary_key=True)
    card: Mapped[str]
    facility: Mapped[int | None] = mapped_column(BigInteger)
    holder: Mapped[str]
    levels: Mapped[list[str]] = mapped_column(JsonDoc)
    valid_from_ms: Mapped[int | None] = mapped_column(BigInteger)
    valid_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    pin_hash: Mapped[str | None]
    suspended: Mapped[bool]
    offline_ok: Mapped[bool]
    clock_free: Mapped[bool]
    first_person_in: Mapped[bool]
    antipassback_exempt: Mapped[bool]
    version: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (
        Index("access_credentials_version", "site", "version"),
        Index("access_credentials_card", "site", "card"),
    )


class GatewayDevice(Base):
    """A field device a gateway reads, as its birth inventory (from its config) describes it."""

    __tablename__ = "gateway_devices"

    gateway_id: Mapped[str] = mapped_column(primary_key=True)
    device: Mapped[str] = mapped_column(primary_key=True)  # the driver's device name
    protocol: Mapped[str]  # modbus, bacnet, wiegand, osdp, io, ...
    description: Mapped[str] = mapped_column(default="")
    updated_at: Mapped[datetime]


class GatewayPoint(Base):
    """A point a gateway reports (telemetry source ``device/point``), with its unit."""

    __tablename__ = "gateway_points"

    gateway_id: Mapped[str] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(primary_key=True)  # "device/point", as events carry it
    device: Mapped[str]
    unit: Mapped[str] = mapped_column(default="")
    updated_at: Mapped[datetime]


class LatestValue(Base):
    """The newest event of each (gateway, source, kind): a point's latest value, a door's state, a
    device's status, without searching the events table. Kept by ingest a moment after commit."""

    __tablename__ = "latest_values"

    gateway_id: Mapped[str] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger)
    reported_time: Mapped[datetime]
    data: Mapped[dict[str, Any]]


class EventCountHourly(Base):
    """Events stored per gateway per UTC hour (by when ingest stored them): the dashboard's
    "today's events" and its hourly bars, without counting a table of hundreds of millions."""

    __tablename__ = "event_counts_hourly"

    gateway_id: Mapped[str] = mapped_column(primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)  # the hour's start, UTC
    count: Mapped[int] = mapped_column(BigInteger, default=0)
