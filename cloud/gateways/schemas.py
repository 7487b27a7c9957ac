"""The gateways API's requests and answers."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud.config import parse_broker_url
from cloud.registry import MAX_NAME_LENGTH
from protocols.topics import GATEWAY_ID_PATTERN

MAX_ID = 2**63 - 1  # ids are 64-bit: a larger one is a bad request, not a database error


class GatewayOut(BaseModel):
    """A registered gateway and the state it last reported. Never its password or hash."""

    # populate_by_name: the detail is built from a dump of this model, where last_seen has its name.
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: str
    name: str
    site: str  # the site's code (the key of its access data), or a name kept from before sites
    company_id: int | None  # None: registered by the platform without a site of the property model
    site_id: int | None
    online: bool
    last_seen: datetime | None = Field(validation_alias="last_seen_at")
    version: str
    config_version: str
    boot_id: str
    clock_synced: bool
    store_id: str
    state_time: datetime | None
    event_count: int
    created_at: datetime
    access_version: int
    credentials_rotated_at: datetime | None
    revoked_at: datetime | None  # set: it can no longer sign in; its history stays


class GatewayPageOut(BaseModel):
    items: list[GatewayOut]
    next_cursor: str | None


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    device: str
    protocol: str
    description: str
    updated_at: datetime


class PointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    source: str  # "device/point", as its telemetry events carry it
    device: str
    unit: str
    updated_at: datetime


class LatestValueOut(BaseModel):
    """The newest event of one (source, kind): a point's value, a door's state, a device's status."""

    model_config = ConfigDict(from_attributes=True)

    source: str
    kind: str
    event_id: int
    reported_time: datetime
    data: dict[str, Any]


class GatewayDetailOut(GatewayOut):
    """A gateway with its inventory (from its config, as it last reported it) and latest values."""

    devices: list[DeviceOut]
    points: list[PointOut]
    latest_values: list[LatestValueOut]


def _check_broker_url(value: str | None) -> str | None:
    if value is not None:
        parse_broker_url(value)  # raises ValueError naming the problem
    return value


class GatewayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[
        str, Field(pattern=GATEWAY_ID_PATTERN, description="The gateway id, also its MQTT username")
    ]
    site_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = Field(
        default=None, description="The site it serves; required unless the platform registers it"
    )
    # No control characters: PostgreSQL refuses NUL in text, and a name is shown as it is.
    name: Annotated[str, Field(max_length=MAX_NAME_LENGTH, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    mqtt_url: str | None = Field(
        default=None,
        description="The broker URL the gateway's config names (default: the broker the cloud uses)",
    )

    _url = field_validator("mqtt_url")(_check_broker_url)


class CredentialsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mqtt_url: str | None = Field(default=None, description="As for registering")

    _url = field_validator("mqtt_url")(_check_broker_url)


class BrokerOut(BaseModel):
    applied: bool  # the broker has the change (or needs none)
    detail: str  # what happened there, or what is left to do


class CredentialsOut(BaseModel):
    """New credentials: the password is shown this once, inside a ready gateway config."""

    gateway: GatewayOut
    password: str
    config_toml: str
    broker: BrokerOut


class RevokedOut(BaseModel):
    gateway: GatewayOut
    broker: BrokerOut
