"""What the on-call API takes and answers: rotas, overrides, escalation policies, webhooks and a
person's notify preferences. The services take the ``…In`` and ``…Patch`` models too (the console
builds them from its forms), so a value reaching a service has its shape checked; the services
check what needs the database (users of the company, the site, duplicates) and the order of
escalation steps, naming the step and field that is wrong.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    StringConstraints,
    model_validator,
)

from cloud.accounts.permissions import Role
from cloud.alerts.models import LIFE_SAFETY, MAINTENANCE
from cloud.property.schemas import Id, Name, Text, TimeZone, _In, _Out

SKILLS = ("electrical", "hvac", "plumbing", "lifts", "security", "general")
TRACKS = (LIFE_SAFETY, MAINTENANCE)
CHANNELS = ("email", "sms")
TARGET_TYPES = ("oncall", "lead", "role", "user")
ROLES = tuple(r.value for r in Role)
MAX_MEMBERS = 100
MAX_STEPS = 10
MAX_TARGETS = 10
MAX_AFTER_S = 7 * 24 * 3600
MAX_URL = 2000

Skill = Literal["electrical", "hvac", "plumbing", "lifts", "security", "general"]
Track = Literal["life_safety", "maintenance"]
Channel = Literal["email", "sms"]
TargetType = Literal["oncall", "lead", "role", "user"]
RoleName = Literal[
    "company_admin", "property_manager", "finance", "service_agent", "technician", "security_guard"
]
assert Skill.__args__ == SKILLS  # type: ignore[attr-defined]
assert Track.__args__ == TRACKS  # type: ignore[attr-defined]
assert Channel.__args__ == CHANNELS  # type: ignore[attr-defined]
assert TargetType.__args__ == TARGET_TYPES  # type: ignore[attr-defined]
assert RoleName.__args__ == ROLES  # type: ignore[attr-defined]

HHMM = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$"),
    Field(description="A wall time, 00:00 to 23:59", examples=["08:00"]),
]
# Far enough either way for any rota; keeps the turn arithmetic inside datetime's range.
FirstDay = Annotated[date, Field(ge=date(2000, 1, 1), le=date(2099, 12, 31))]


def _in_range(value: datetime) -> datetime:
    """An aware time within what the database and the arithmetic take, in UTC."""
    if not (2000 <= value.year <= 2099):
        raise ValueError("must be between the years 2000 and 2099")
    return value.astimezone(UTC)


When = Annotated[AwareDatetime, AfterValidator(_in_range)]


def check_url(value: str) -> str:
    """An http or https URL with a host (loopback allowed: a receiver on the same machine)."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError for a port that is not a number or out of range
    except ValueError:
        raise ValueError(f"{value!r} is not a URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} is not an http or https URL")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "a user name or password in the URL is not allowed: the receiver checks the signature"
        )
    if any(ord(ch) <= 32 or ord(ch) == 127 for ch in text):
        raise ValueError("spaces and control characters are not allowed in the URL")
    del port
    return text


Url = Annotated[str, StringConstraints(max_length=MAX_URL), AfterValidator(check_url)]


# -- rotas


def _unique(values: list[int], field: str) -> list[int]:
    seen: set[int] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"user {value} is listed twice in {field}")
        seen.add(value)
    return values


class RotaIn(_In):
    site_id: Id
    skill: Skill
    name: Name
    members: list[Id] = Field(
        default_factory=list, max_length=MAX_MEMBERS, description="User ids in turn order"
    )
    lead_user_id: Id | None = Field(None, description="The team lead (the escalation's `lead` target)")
    handover_time: HHMM = "08:00"
    period_days: int = Field(7, ge=1, le=90, description="Days of each member's turn")
    starts_on: FirstDay | None = Field(
        None,
        description="The first handover's day; default: the last one due, so the rota is in force at once",
    )

    @model_validator(mode="after")
    def _members_once(self) -> RotaIn:
        _unique(self.members, "members")
        return self


class RotaPatch(_In):
    name: Name | None = None
    skill: Skill | None = None
    members: list[Id] | None = Field(None, max_length=MAX_MEMBERS)
    lead_user_id: Id | None = None
    handover_time: HHMM | None = None
    period_days: int | None = Field(None, ge=1, le=90)
    starts_on: FirstDay | None = None

    @model_validator(mode="after")
    def _members_once(self) -> RotaPatch:
        if self.members is not None:
            _unique(self.members, "members")
        return self


class RotaOut(_Out):
    id: int
    company_id: int
    site_id: int
    skill: str
    name: str
    members: list[int]
    lead_user_id: int | None
    handover_time: str
    period_days: int
    starts_on: date
    created_at: datetime


class OverrideIn(_In):
    user_id: Id
    starts_at: When
    ends_at: When
    reason: Text = ""

    @model_validator(mode="after")
    def _ends_after_start(self) -> OverrideIn:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class OverrideOut(_Out):
    id: int
    rota_id: int
    user_id: int
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: int | None
    created_at: datetime


class ShiftOut(BaseModel):
    user_id: int | None = Field(description="null: nobody is on call")
    name: str
    starts_at: datetime
    ends_at: datetime
    override_id: int | None


class OnCallEntryOut(BaseModel):
    skill: str
    rota_id: int
    rota_name: str
    user_id: int | None = Field(description="null: nobody (no members, or the rota has not started)")
    name: str
    override_id: int | None
    until: datetime | None = Field(description="When this shift ends (the next handover or override edge)")


class OnCallNowOut(BaseModel):
    site_id: int
    at: datetime
    items: list[OnCallEntryOut]


# -- escalation policies


class TargetIn(_In):
    type: TargetType
    role: RoleName | None = Field(None, description="`role` targets: who holds it at the site")
    skill: Skill | None = Field(
        None, description="`oncall` / `lead`: this skill's rota (default: the alert's)"
    )
    user_id: Id | None = Field(None, description="`user` targets")

    @model_validator(mode="after")
    def _what_the_type_needs(self) -> TargetIn:
        if self.type == "role" and self.role is None:
            raise ValueError(f"a role target needs role (one of {', '.join(ROLES)})")
        if self.type == "user" and self.user_id is None:
            raise ValueError("a user target needs user_id")
        if self.type != "role" and self.role is not None:
            raise ValueError(f"role is only for role targets, not {self.type}")
        if self.type != "user" and self.user_id is not None:
            raise ValueError(f"user_id is only for user targets, not {self.type}")
        if self.type not in ("oncall", "lead") and self.skill is not None:
            raise ValueError(f"skill is only for oncall and lead targets, not {self.type}")
        return self

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class StepIn(_In):
    after_s: int = Field(ge=0, le=MAX_AFTER_S, description="Seconds after the raise")
    targets: list[TargetIn] = Field(min_length=1, max_length=MAX_TARGETS)

    def stored(self) -> dict[str, Any]:
        return {"after_s": self.after_s, "targets": [t.stored() for t in self.targets]}


Steps = Annotated[list[StepIn], Field(min_length=1, max_length=MAX_STEPS)]


class PolicyIn(_In):
    company_id: Id | None = Field(None, description="The platform token only: whose policy")
    site_id: Id | None = Field(None, description="null: the company's default")
    track: Track
    skill: Skill | Literal[""] = Field("", description='"": any skill')
    name: Name
    steps: Steps
    ack_timeout_s: int | None = Field(
        None, ge=60, le=30 * 24 * 3600, description="Default 4 h (maintenance), 30 min (life safety)"
    )
    repeat_s: int | None = Field(
        None, ge=30, le=24 * 3600, description="Life safety: repeat until acknowledged"
    )


class PolicyPatch(_In):
    name: Name | None = None
    skill: Skill | Literal[""] | None = None
    steps: Steps | None = None
    ack_timeout_s: int | None = Field(None, ge=60, le=30 * 24 * 3600)
    repeat_s: int | None = Field(None, ge=30, le=24 * 3600)


class PolicyOut(_Out):
    id: int
    company_id: int
    site_id: int | None
    track: str
    skill: str
    name: str
    steps: list[dict[str, Any]]
    ack_timeout_s: int
    repeat_s: int
    created_at: datetime


# -- webhooks


Tracks = Annotated[list[Track], Field(min_length=1, max_length=2)]


def _both_tracks() -> list[Track]:
    return ["life_safety", "maintenance"]


class WebhookIn(_In):
    company_id: Id | None = Field(None, description="The platform token only: whose webhook")
    site_id: Id | None = Field(None, description="null: every site of the company")
    name: Name
    url: Url
    tracks: Tracks = Field(default_factory=_both_tracks)
    active: bool = True


class WebhookPatch(_In):
    name: Name | None = None
    url: Url | None = None
    tracks: Tracks | None = None
    active: bool | None = None


class WebhookOut(_Out):
    id: int
    company_id: int
    site_id: int | None
    name: str
    url: str
    tracks: list[str]
    active: bool
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(
        description="The HMAC-SHA256 key the receiver checks X-Gatehouse-Signature with: shown this once"
    )


# -- one's own notify preferences


class PreferencesIn(_In):
    channels: list[Channel] = Field(min_length=1, max_length=len(CHANNELS))
    quiet_start: HHMM | None = Field(None, description="Quiet hours (maintenance only), or null for none")
    quiet_end: HHMM | None = None
    timezone: TimeZone = "Asia/Shanghai"

    @model_validator(mode="after")
    def _quiet_pair(self) -> PreferencesIn:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: each channel once")
        if (self.quiet_start is None) != (self.quiet_end is None):
            raise ValueError("quiet_start and quiet_end: give both, or neither for no quiet hours")
        if self.quiet_start is not None and self.quiet_start == self.quiet_end:
            raise ValueError("quiet_end: the same as quiet_start; leave both empty for no quiet hours")
        return self


class PreferencesOut(BaseModel):
    user_id: int
    channels: list[str]
    quiet_start: str | None
    quiet_end: str | None
    timezone: str
    saved: bool = Field(description="false: nothing saved yet, these are the defaults")
