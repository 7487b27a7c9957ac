"""The access-control data the cloud keeps and each gateway decides from: credentials, access
levels (door groups with a weekly schedule), schedules, holidays, and the versioned deltas that
carry changes from the cloud to a site's gateways (command ``access.sync``).

Versions: the cloud numbers every change of a site's access data; a gateway's store is at one
version and applies a delta only when ``delta.base`` is that version (or ``reset`` is set, which
replaces everything). A delta too big for one MQTT message is sent in ``parts`` that share base and
version; the gateway keeps parts aside until it has all of them and then applies them in one
transaction, so a store is never half way between two versions.

Schedules are in the site's local time (the gateway's ``[access] timezone``). An interval
``start``–``end`` on ``days`` (0 = Monday .. 6 = Sunday) begins on each of those days; an ``end``
at or before ``start`` runs past midnight into the next day ("22:00"–"06:00" on Friday covers
Friday 22:00 to Saturday 06:00), and ``end = "24:00"`` means to midnight. An interval belongs to
the day it starts on: when that day is a holiday, the schedule's ``holiday`` intervals (which
ignore ``days``) apply to it instead of the weekly ones; a schedule with no holiday intervals is
closed on holidays.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ID = Annotated[str, Field(min_length=1, max_length=64)]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
_INT64 = Annotated[int, Field(ge=0, le=2**63 - 1)]

# One part of a delta holds at most this many credentials: at ~150 bytes each in JSON and about
# 5x gzip, a part stays well inside one 128 KiB MQTT message.
CREDENTIALS_PER_PART = 2000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Interval(_Model):
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(default_factory=lambda: list(range(7)))
    start: str = "00:00"
    end: str = "24:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"{v!r} is not a time of day HH:MM (00:00 .. 24:00)")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> Interval:
        if self.start == "24:00":
            raise ValueError("an interval cannot start at 24:00")
        return self


class Schedule(_Model):
    id: _ID
    name: str = ""
    intervals: list[Interval] = Field(default_factory=list)
    holiday: list[Interval] = Field(default_factory=list)  # on holidays instead of ``intervals``


class Holiday(_Model):
    date: date
    name: str = ""


class AccessLevel(_Model):
    """A group of doors and when they open for the credentials holding this level."""

    id: _ID
    name: str = ""
    doors: list[Annotated[str, Field(min_length=1, max_length=64)]]
    schedule: str = ""  # a schedule id; "" = at all times


class Credential(_Model):
    id: _ID  # the cloud's id: events name it, deltas update and remove by it
    card: Annotated[str, Field(pattern=r"^[0-9]{1,20}$")]  # the card number as a decimal string
    facility: Annotated[int, Field(ge=0)] | None = None  # None: matches a card of any facility code
    holder: Annotated[str, Field(max_length=128)] = ""
    levels: list[str] = Field(default_factory=list)
    valid_from_ms: _INT64 | None = None  # UTC; None = no start
    valid_until_ms: _INT64 | None = None  # UTC; None = no end
    pin_hash: str | None = None  # pin_hash(id, pin); a reader with a keypad then asks for the PIN
    suspended: bool = False
    # Honoured when the store is older than the gateway's staleness limit (the cloud unreachable
    # for long): security staff, maintenance on call.
    offline_ok: bool = False
    # Honoured before the gateway's clock is synchronised, when no schedule can be trusted.
    clock_free: bool = False
    first_person_in: bool = False  # may open a first-person-in door for the rest of its window
    antipassback_exempt: bool = False

    @model_validator(mode="after")
    def _dates(self) -> Credential:
        if (
            self.valid_from_ms is not None
            and self.valid_until_ms is not None
            and self.valid_until_ms < self.valid_from_ms
        ):
            raise ValueError("valid_until_ms is before valid_from_ms")
        return self


class AccessDelta(_Model):
    """One part of a change from version ``base`` to ``version`` (see the module docstring).

    ``base == version`` with nothing in it is the cloud saying "you are current": the gateway's
    store counts as fresh from then on (the staleness limit runs from the last such contact)."""

    base: Annotated[int, Field(ge=0)]
    version: Annotated[int, Field(ge=1)]
    reset: bool = False  # replace the whole store (``base`` is then ignored)
    part: Annotated[int, Field(ge=1)] = 1
    parts: Annotated[int, Field(ge=1, le=10_000)] = 1
    schedules: list[Schedule] = Field(default_factory=list)
    levels: list[AccessLevel] = Field(default_factory=list)
    holidays: list[Holiday] | None = None  # None: unchanged; a list replaces them all
    credentials: list[Credential] = Field(default_factory=list)
    removed_credentials: list[str] = Field(default_factory=list)
    removed_levels: list[str] = Field(default_factory=list)
    removed_schedules: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _order(self) -> AccessDelta:
        if not self.reset and self.version < self.base:
            raise ValueError(f"version {self.version} is older than base {self.base}")
        if not self.reset and self.version == self.base and not self.empty:
            raise ValueError(f"a delta from {self.base} to itself cannot carry changes")
        if self.part > self.parts:
            raise ValueError(f"part {self.part} of {self.parts}")
        return self

    @property
    def empty(self) -> bool:
        return not (
            self.schedules
            or self.levels
            or self.holidays is not None
            or self.credentials
            or self.removed_credentials
            or self.removed_levels
            or self.removed_schedules
        )


class Decision(StrEnum):
    """Why a card was refused (``access.denied`` data ``reason``)."""

    UNKNOWN = "unknown"  # no such credential
    SUSPENDED = "suspended"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    WRONG_DOOR = "wrong_door"  # none of its levels holds this door
    OUTSIDE_SCHEDULE = "outside_schedule"
    ANTI_PASSBACK = "anti_passback"  # entering an area it never left (or leaving one it never entered)
    PIN_REQUIRED = "pin_required"
    WRONG_PIN = "wrong_pin"
    STORE_STALE = "store_stale"  # the store is older than the limit and the card is not offline_ok
    CLOCK_UNSYNCED = "clock_unsynced"  # no trusted clock and the card is not clock_free
    FIRE_RELEASE = "fire_release"  # not a refusal: the door is already released for a fire


PIN_ITERATIONS = 10_000  # a PIN has few digits: the hash only keeps it from being read off a disk


def pin_hash(credential_id: str, pin: str) -> str:
    """The stored form of a credential's PIN, the same on the cloud and the gateway."""
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise ValueError("a PIN is 4 to 12 digits")
    salt = f"gatehouse-pin:{credential_id}".encode()
    return hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, PIN_ITERATIONS).hex()


def split_delta(delta: AccessDelta, per_part: int = CREDENTIALS_PER_PART) -> list[AccessDelta]:
    """``delta`` as parts of at most ``per_part`` credentials; schedules, levels, holidays and
    removals ride in the first part."""
    creds = delta.credentials
    if len(creds) <= per_part:
        return [delta]
    chunks = [creds[i : i + per_part] for i in range(0, len(creds), per_part)]
    out = []
    for i, chunk in enumerate(chunks):
        first = i == 0
        out.append(
            delta.model_copy(
                update={
                    "part": i + 1,
                    "parts": len(chunks),
                    "credentials": chunk,
                    "schedules": delta.schedules if first else [],
                    "levels": delta.levels if first else [],
                    "holidays": delta.holidays if first else None,
                    "removed_credentials": delta.removed_credentials if first else [],
                    "removed_levels": delta.removed_levels if first else [],
                    "removed_schedules": delta.removed_schedules if first else [],
                }
            )
        )
    return out
