"""The gateway's one TOML file, checked against this schema (``GatewayConfig``).

``gatehouse gateway check-config FILE`` runs exactly this check. Every section but ``mqtt`` has
defaults fit for a Raspberry Pi; see config/gateway.example.toml for the commented version.
"""

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.bacnet_config import BacnetDevice, BacnetLocal, check_devices
from drivers.modbus_config import ModbusDeviceConfig
from drivers.readers.config import ReaderConfig, check_readers
from drivers.sensors import Meaning, SensorConfig
from edge.doors import DoorConfig
from edge.fire import FireSection
from edge.intrusion import IntrusionZoneConfig, check_intrusion_zones
from edge.rules import EquipmentRuleConfig, check_rules
from protocols.commands import COMMANDS
from protocols.configuration import ConfigError, read_config
from protocols.topics import GATEWAY_ID_PATTERN

_STRICT = ConfigDict(extra="forbid")


class MqttSection(BaseModel):
    model_config = _STRICT

    url: str = Field(description="mqtt://host:port, or mqtts://host:port for TLS")
    username: str = ""  # defaults to the gateway id (the broker's ACL keys on it)
    password: str = ""
    ca_file: str = ""  # CA bundle for mqtts; empty = the system's trust store
    client_id: str = ""  # defaults to the gateway id: one persistent session per gateway
    keepalive_s: Annotated[int, Field(ge=5, le=600)] = 30

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            raise ValueError(f"bad port: {e}") from None
        return v

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class OutboxSection(BaseModel):
    model_config = _STRICT

    # Cap on stored event bytes; at the cap the oldest telemetry goes first.
    max_bytes: Annotated[int, Field(ge=64 * 1024)] = 256 * 1024 * 1024
    # Group commit: wait at most this long for more producers before committing...
    commit_interval_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    # ...or commit at once when this many events are waiting. Life-safety events never wait.
    commit_max_events: Annotated[int, Field(ge=1, le=100_000)] = 2000


class UplinkSection(BaseModel):
    model_config = _STRICT

    batch_max_events: Annotated[int, Field(ge=1, le=10_000)] = 1000
    # With batches in flight, wait this long for a fuller batch; with none in flight, send at once.
    batch_max_age_ms: Annotated[float, Field(ge=0, le=60_000)] = 50.0
    window: Annotated[int, Field(ge=1, le=64)] = 8  # batches in flight awaiting the cloud's ack
    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 15.0
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = 0.25
    # Capped low so a returning broker is used within seconds; jitter spreads a fleet's reconnects.
    reconnect_max_s: Annotated[float, Field(gt=0, le=300)] = 3.0

    @model_validator(mode="after")
    def _order(self) -> "UplinkSection":
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self


class ClockSection(BaseModel):
    model_config = _STRICT

    synced: Literal["auto", "yes", "no"] = "auto"  # auto: ask the kernel's NTP state


class AccessSection(BaseModel):
    model_config = _STRICT

    timezone: str = "Asia/Shanghai"  # the site's zone: schedules and holidays are local times
    # Older than this since the cloud last confirmed the store, only offline_ok credentials open.
    stale_after_s: Annotated[float, Field(ge=60)] = 24 * 3600.0

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (e.g. Asia/Shanghai)") from None
        return v


class CommandsSection(BaseModel):
    model_config = _STRICT

    # The commands this gateway takes from the cloud; the rest are refused as unauthorised.
    allowed: list[str] = Field(default_factory=lambda: sorted(COMMANDS))

    @field_validator("allowed")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(COMMANDS))
        if unknown:
            raise ValueError(f"unknown command(s) {', '.join(unknown)}; known: {', '.join(sorted(COMMANDS))}")
        return v


class SyntheticSource(BaseModel):
    """The simulated event source of drivers/sim/synthetic.py (demo and benchmarks)."""

    model_config = _STRICT

    kind: Literal["synthetic"] = "synthetic"
    rate_per_s: Annotated[float, Field(ge=0, le=1_000_000)] = 5.0
    batch: Annotated[int, Field(ge=1, le=10_000)] = 10
    alarm_every_s: Annotated[float, Field(ge=0)] = 0.0  # 0 = never
    access_every_s: Annotated[float, Field(ge=0)] = 7.0
    seed: int = 1


class GatewayConfig(BaseModel):
    model_config = _STRICT

    gateway_id: Annotated[str, Field(pattern=GATEWAY_ID_PATTERN)]
    data_dir: str = "./var/gateway"
    config_version: Annotated[str, Field(max_length=64)] = ""
    mqtt: MqttSection
    outbox: OutboxSection = OutboxSection()
    uplink: UplinkSection = UplinkSection()
    clock: ClockSection = ClockSection()
    sources: list[SyntheticSource] = Field(default_factory=list)
    # Field devices, one list per family, and what their points mean (drivers/sensors.py).
    modbus: list[ModbusDeviceConfig] = Field(default_factory=list)
    bacnet: list[BacnetDevice] = Field(default_factory=list)
    bacnet_local: BacnetLocal = BacnetLocal()
    readers: list[ReaderConfig] = Field(default_factory=list)
    sensors: list[SensorConfig] = Field(default_factory=list)
    # Local action (edge/local.py): doors, fire release, intrusion zones, equipment rules.
    access: AccessSection = AccessSection()
    doors: list[DoorConfig] = Field(default_factory=list)
    fire: FireSection = FireSection()
    intrusion_zones: list[IntrusionZoneConfig] = Field(default_factory=list)
    rules: list[EquipmentRuleConfig] = Field(default_factory=list)
    commands: CommandsSection = CommandsSection()

    @model_validator(mode="after")
    def _points_exist(self) -> "GatewayConfig":
        check_devices(self.bacnet, self.bacnet_local)
        check_readers(self.readers)
        names = [d.name for d in self.modbus] + [d.name for d in self.bacnet] + [r.name for r in self.readers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"device names must be unique across modbus, bacnet and readers: {', '.join(dupes)}"
            )
        points = self.field_points()
        seen: set[str] = set()
        for i, s in enumerate(self.sensors):
            if s.name in seen:
                raise ValueError(f"sensors.{i}.name: {s.name!r} is used twice")
            seen.add(s.name)
            if s.point not in points:
                raise ValueError(f"sensors.{i}.point: no configured device has the point {s.point!r}")
        self._check_doors(points)
        check_intrusion_zones(self.intrusion_zones, self.sensors)
        check_rules(self.rules, points)
        return self

    def _check_doors(self, points: set[str]) -> None:
        meaning = {s.name: s.meaning for s in self.sensors}
        writable = self.writable_points()
        readers = {r.name for r in self.readers}
        names: set[str] = set()
        locks: dict[str, str] = {}
        contacts: dict[str, str] = {}
        fire_zones = {s.zone for s in self.sensors if s.meaning in (Meaning.SMOKE, Meaning.FIRE_PANEL)}
        for i, d in enumerate(self.doors):
            where = f"doors.{i} ({d.name})"
            if d.name in names:
                raise ValueError(f"{where}: the name is used twice")
            names.add(d.name)
            # One lock, one door: a second door's strike ending would lock the first one's
            # fire release.
            if d.lock in locks:
                raise ValueError(f"{where}.lock: {d.lock} already drives door {locks[d.lock]!r}")
            locks[d.lock] = d.name
            if d.contact and d.contact in contacts:
                raise ValueError(
                    f"{where}.contact: {d.contact!r} is already the contact of {contacts[d.contact]!r}"
                )
            if d.contact:
                contacts[d.contact] = d.name
            for z in d.fire_zones:
                if z not in fire_zones:
                    known = ", ".join(repr(k) for k in sorted(fire_zones)) or "none"
                    raise ValueError(
                        f"{where}.fire_zones: no smoke or fire_panel sensor has zone {z!r} "
                        f"(their zones: {known})"
                    )
            if d.lock not in points:
                raise ValueError(f"{where}.lock: no configured device has the point {d.lock!r}")
            if d.lock not in writable:
                raise ValueError(f"{where}.lock: {d.lock} is not writable (writable = true, not fire_system)")
            for key, want in (("contact", Meaning.DOOR_CONTACT), ("exit_request", Meaning.EXIT_REQUEST)):
                name = getattr(d, key)
                if name and meaning.get(name) is not want:
                    raise ValueError(f"{where}.{key}: no {want.value} sensor called {name!r} in [[sensors]]")
            for r in d.exit_readers:
                if r not in readers:
                    raise ValueError(f"{where}.exit_readers: no reader called {r!r} in [[readers]]")
        for rc in self.readers:
            if rc.door and self.doors and rc.door not in names:
                raise ValueError(f"readers ({rc.name}).door: no door called {rc.door!r} in [[doors]]")

    def writable_points(self) -> set[str]:
        """Points the gateway may write: marked writable and not part of a fire system."""
        out = {
            f"{d.name}/{p.name}" for d in self.modbus for p in d.points if p.writable and not p.fire_system
        }
        out |= {
            f"{d.name}/{o.name}"
            for d in self.bacnet
            for o in d.objects
            if not o.fire_system and o.type.endswith(("output", "value"))
        }
        return out

    def field_points(self) -> set[str]:
        """Every ``device/point`` the configured drivers read."""
        out = {f"{d.name}/{o.name}" for d in self.bacnet for o in d.objects}
        out |= {f"{d.name}/{p.name}" for d in self.modbus for p in d.points}
        return out

    @property
    def outbox_path(self) -> Path:
        return Path(self.data_dir) / "outbox.sqlite3"

    @property
    def mqtt_username(self) -> str:
        return self.mqtt.username or self.gateway_id

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or self.gateway_id


def load_gateway_config(path: str) -> GatewayConfig:
    cfg = read_config(path, GatewayConfig)
    if cfg.mqtt.ca_file and not Path(cfg.mqtt.ca_file).is_file():
        raise ConfigError(f"{path}: mqtt.ca_file: no such file {cfg.mqtt.ca_file!r}")
    return cfg
