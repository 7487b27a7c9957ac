"""The cloud's configuration: one TOML file checked against ``CloudConfig``, plus two env overrides.

Every key has a default, so ``gatehouse cloud serve`` runs with no file at all (SQLite under
``./var/cloud``, the embedded broker, generated secrets). Secrets left empty in the file are made
once and kept under ``data_dir`` with mode 0600, so restarts keep the same token and password.
"""

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloud.alerts.settings import AlertSettings
from protocols.configuration import ConfigError, read_config

DATA_DIR_ENV = "GATEHOUSE_DATA_DIR"
DATABASE_URL_ENV = "GATEHOUSE_DATABASE_URL"
API_TOKEN_FILE = "api-token"
MQTT_PASSWORD_FILE = "mqtt-password"

_Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    # A misspelt key is an error, not a silently ignored line.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    url: str = ""
    # PostgreSQL: a statement that gets no answer for this long fails and is retried on a fresh
    # connection (a half-open connection must not stall ingest for ever).
    command_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class ApiConfig(_Section):
    host: str = "127.0.0.1"
    port: _Port = 8080
    token: str = ""
    # Who the API token stands for until there are user accounts: recorded as who asked for each
    # command sent through the API (``Command.by``) and each access import.
    token_owner: Annotated[str, Field(min_length=1, max_length=128)] = "api"


class MqttConfig(_Section):
    url: str = ""
    embedded_host: str = "127.0.0.1"
    # Not 1883: a Mosquitto may already hold the standard port on the same machine.
    embedded_port: _Port = 18830
    username: Annotated[str, Field(min_length=1)] = "gatehouse-cloud"
    password: str = ""
    ca_file: str = ""
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "gatehouse-ingest"
    share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]*$", max_length=64)] = ""

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value:
            parse_broker_url(value)  # raises ValueError with the reason
        return value


class MosquittoConfig(_Section):
    password_file: str = ""
    acl_file: str = ""
    pid_file: str = ""
    # Mosquitto's dynamic-security plugin instead of the two files: the cloud creates, re-keys and
    # deletes each gateway's broker client through $CONTROL/dynamic-security/v1, signed in as its
    # own MQTT user (which must be the plugin's admin); see config/mosquitto/README.md.
    dynsec: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> "MosquittoConfig":
        if self.dynsec and (self.password_file or self.acl_file):
            raise ValueError("dynsec replaces password_file and acl_file: set one or the other")
        return self


class IngestConfig(_Section):
    # Events per database transaction; 0 = by database: 2,000 on SQLite (its one writer is also
    # the one an alarm waits for) and 5,000 on PostgreSQL (bigger transactions drain faster, but
    # on a small machine the database's CPU is the alarm's too).
    max_batch_events: Annotated[int, Field(ge=0, le=100_000)] = 0


class AccessConfig(_Section):
    # How often ingest tells each connected gateway at the site's access version that its store is
    # current (the empty access.sync): a gateway's store goes stale after its ``stale_after_s``
    # (24 h by default) without such a word, even while it stays connected. Keep it well below the
    # gateways' limit. A gateway behind the site gets what it lacks at the same rounds.
    confirm_every_s: Annotated[float, Field(ge=60, le=86_400)] = 3600.0


class ConsoleConfig(_Section):
    # Session cookies carry the Secure flag: browsers then send them over HTTPS only (and to
    # http://localhost and 127.0.0.1, which Chromium and Firefox treat as secure). Turn off only
    # for a console served over plain HTTP on another address, such as a LAN test rig.
    secure_cookies: bool = True
    # A console session ends this long after sign-in, used or not.
    session_hours: Annotated[int, Field(ge=1, le=24 * 30)] = 12
    # This many wrong passwords (or second-factor codes) in a row lock the account for
    # lockout_minutes; a successful sign-in resets the count.
    lockout_failures: Annotated[int, Field(ge=1, le=100)] = 5
    lockout_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 15


class SmtpConfig(_Section):
    # Empty host: no email is sent; a notice for the email channel fails at once, saying so.
    host: str = ""
    port: _Port = 25
    username: str = ""  # empty: no AUTH
    password: str = ""
    from_address: Annotated[str, Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")] = "gatehouse@localhost"
    starttls: bool = False  # STARTTLS after EHLO, the server's certificate checked
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0  # each step of the SMTP conversation


class SmsConfig(_Section):
    # The provider's endpoint (JSON POST signed with HMAC-SHA256); empty: no SMS is sent.
    url: str = ""
    key_id: str = ""
    secret: str = ""
    sender: str = "Gatehouse"
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    @model_validator(mode="after")
    def _usable(self) -> "SmsConfig":
        if self.url:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url: {self.url!r}: expected http://... or https://...")
            if not self.secret:
                raise ValueError("secret: required when url is set (every request is signed with it)")
        return self


class NotifyConfig(_Section):
    # Links in messages: {base_url}/tech/alerts/{id}; the address technicians reach the cloud at.
    base_url: str = "http://127.0.0.1:8080"
    poll_s: Annotated[float, Field(gt=0, le=60)] = 1.0  # also woken at once by an enqueue in-process
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    retry_min_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    retry_max_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    # Maintenance notices to one person on one channel for one site within this go as one message.
    group_interval_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    dispatch: bool = True  # run the dispatcher inside serve/ingest (off: `gatehouse cloud notify` does)
    webhook_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # A claimed notice not marked sent within this is taken again (its dispatcher died): longer
    # than any send can take.
    lease_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    smtp: SmtpConfig = SmtpConfig()
    sms: SmsConfig = SmsConfig()

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r}: expected http://host[:port] or https://...")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> "NotifyConfig":
        if self.retry_max_s < self.retry_min_s:
            raise ValueError(
                f"retry_max_s ({self.retry_max_s:g}) is below retry_min_s ({self.retry_min_s:g})"
            )
        slowest = max(self.smtp.timeout_s, self.sms.timeout_s, self.webhook_timeout_s)
        if self.lease_s < slowest:
            raise ValueError(
                f"lease_s ({self.lease_s:g}) is shorter than a send may take ({slowest:g} s, the longest "
                "timeout): a live dispatcher's notice would be taken and sent again"
            )
        return self


class CloudConfig(_Section):
    data_dir: Annotated[str, Field(min_length=1)] = "./var/cloud"
    database: DatabaseConfig = DatabaseConfig()
    api: ApiConfig = ApiConfig()
    mqtt: MqttConfig = MqttConfig()
    mosquitto: MosquittoConfig = MosquittoConfig()
    ingest: IngestConfig = IngestConfig()
    access: AccessConfig = AccessConfig()
    console: ConsoleConfig = ConsoleConfig()
    notify: NotifyConfig = NotifyConfig()
    alerts: AlertSettings = AlertSettings()


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``; anything else raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{url!r}: expected mqtt://host:port or mqtts://host:port")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number between 1 and 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.username or parts.password:
        raise ValueError(f"{url!r}: only scheme, host and port belong in the broker URL")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls)


def load_cloud_config(path: str | None) -> CloudConfig:
    """The config in ``path`` (None: every default), with the env overrides applied.

    Raises ConfigError, whose text is one line naming the file, the key and the problem."""
    config = CloudConfig() if path is None else read_config(path, CloudConfig)
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        config = config.model_copy(update={"data_dir": data_dir})
    db_url = os.environ.get(DATABASE_URL_ENV)
    if db_url:
        # The env wins over the file so that a container can point a baked-in config at its database.
        config = config.model_copy(update={"database": config.database.model_copy(update={"url": db_url})})
    return config


def data_dir(config: CloudConfig) -> Path:
    path = Path(config.data_dir).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"data_dir: cannot create {path}: {e.strerror}") from None
    return path


def database_url(config: CloudConfig) -> str:
    """The SQLAlchemy async URL: the configured one with its async driver named, or SQLite in data_dir."""
    url = config.database.url
    if not url:
        return f"sqlite+aiosqlite:///{data_dir(config) / 'gatehouse.db'}"
    # Accept the URLs people copy from elsewhere; the engine needs the async drivers.
    for plain, asynchronous in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return asynchronous + url[len(plain) :]
    if url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        return url
    raise ConfigError(
        f"database.url: {url.split('://', 1)[0]!r} is not supported; use postgresql://... or sqlite:///..."
    )


def api_token(config: CloudConfig) -> str:
    """The API's bearer token: from the file, or made once and kept in ``{data_dir}/api-token``."""
    return config.api.token or _kept_secret(data_dir(config) / API_TOKEN_FILE)


def api_token_owner(config: CloudConfig) -> str:
    """Who the API token stands for: the name recorded as who asked (``api.token_owner``)."""
    return config.api.token_owner


def mqtt_password(config: CloudConfig) -> str:
    """The cloud's broker password: from the file, or made once and kept in ``{data_dir}/mqtt-password``."""
    return config.mqtt.password or _kept_secret(data_dir(config) / MQTT_PASSWORD_FILE)


def broker_address(config: CloudConfig) -> BrokerAddress:
    """Where the cloud's MQTT clients connect: ``mqtt.url``, or the embedded broker."""
    if config.mqtt.url:
        return parse_broker_url(config.mqtt.url)
    return BrokerAddress(config.mqtt.embedded_host, config.mqtt.embedded_port, tls=False)


def uses_embedded_broker(config: CloudConfig) -> bool:
    return not config.mqtt.url


def _kept_secret(path: Path) -> str:
    existing = _read_secret(path)
    if existing is not None:
        return existing
    # Written to a private temp file, then linked into place: link() fails if another process got
    # there first, and then both use that one. Nobody ever reads a half-written secret.
    secret = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_secret(path) or ""
    except OSError as e:
        raise ConfigError(f"{path}: cannot write: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return secret


def _read_secret(path: Path) -> str | None:
    """The secret kept in ``path``; None if there is no such file."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if not value:
        raise ConfigError(f"{path}: is empty; delete it and a new secret is made at the next start")
    return value
