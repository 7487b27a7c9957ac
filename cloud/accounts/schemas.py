"""The accounts API's requests and answers. Secrets go in (passwords, codes) and come out once
(a new API token, a resident's set-up code); no answer ever carries a hash."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.accounts.passwords import MAX_LENGTH
from cloud.accounts.permissions import Permission, Role

Password = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]
Language = Literal["zh", "en"]
# No control characters in what is stored and shown (PostgreSQL text cannot even hold a NUL).
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=PLAIN_TEXT)]


class _In(BaseModel):
    # A misspelt field is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


# --- signing in -------------------------------------------------------------------------------


class SignInIn(_In):
    username: Annotated[str, Field(min_length=1, max_length=128)]
    password: Password


class TotpCodeIn(_In):
    code: Annotated[str, Field(min_length=1, max_length=16, description="The 6-digit code from the app")]


class SignedInUserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    display_name: str
    language: str


class SessionOut(BaseModel):
    csrf_token: str = Field(description="Echo it in X-CSRF-Token (or a csrf_token form field) on changes")
    user: SignedInUserOut
    second_factor_required: bool = Field(description="True: POST /api/v1/session/totp with the code next")
    expires_at: datetime


class ResidentSignInIn(_In):
    login: Annotated[str, Field(min_length=1, max_length=128, description="Phone number or email")]
    password: Password | None = None
    code: Annotated[str | None, Field(max_length=32, description="The one-time set-up code")] = None
    new_password: Password | None = Field(default=None, description="With code: the password to set")


class ResidentOut(BaseModel):
    id: int
    company_id: int
    person_id: int
    login: str
    active: bool
    has_password: bool
    setup_code_expires_at: datetime | None
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None


class ResidentSessionOut(BaseModel):
    csrf_token: str
    resident: ResidentOut
    expires_at: datetime


# --- one's own account ------------------------------------------------------------------------


class RoleGrantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    role: Role
    site_id: int | None = Field(description="null: every site of the company")


class CompanyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str


class MeOut(BaseModel):
    kind: Literal["platform", "user", "token"]
    id: int | None
    name: str
    username: str | None = None
    email: str | None = None
    language: str
    company: CompanyOut | None
    roles: list[RoleGrantOut]
    permissions: dict[Permission, list[int] | None] = Field(
        description="Each permission held, with the site ids it holds for (null: every site)"
    )
    totp_enabled: bool = False
    csrf_token: str | None = Field(default=None, description="Cookie sessions: the CSRF token to echo")


class PasswordChangeIn(_In):
    old_password: Password
    new_password: Password


class TotpEnrolmentOut(BaseModel):
    secret: str = Field(description="Base32; type it into the app, or use the URI (as a QR code)")
    otpauth_uri: str


class TotpStateOut(BaseModel):
    totp_enabled: bool


class ResidentUnitOut(BaseModel):
    unit_id: int
    number: str
    building: str
    site: str
    site_code: str
    role: str
    primary: bool


class ResidentPersonOut(BaseModel):
    id: int
    name: str
    phone: str
    email: str


class ResidentMeOut(BaseModel):
    resident: ResidentOut
    person: ResidentPersonOut
    units: list[ResidentUnitOut]
    csrf_token: str | None = None


# --- users and roles --------------------------------------------------------------------------


class RoleIn(_In):
    role: Role
    site_id: int | None = Field(default=None, description="null: every site of the company")


class UserIn(_In):
    company_id: int | None = Field(default=None, description="Only the platform operator names one")
    username: Annotated[str, Field(min_length=2, max_length=64)]
    display_name: Name
    email: Annotated[str, Field(max_length=254, pattern=PLAIN_TEXT)] = ""
    phone: Annotated[str, Field(max_length=32, pattern=PLAIN_TEXT)] = ""
    department_id: int | None = None
    language: Language = "zh"
    password: Password | None = Field(default=None, description="None: the user cannot sign in yet")
    roles: list[RoleIn] = Field(default_factory=list, max_length=50)


class UserPatch(_In):
    display_name: Name | None = None
    email: Annotated[str | None, Field(max_length=254, pattern=PLAIN_TEXT)] = None
    phone: Annotated[str | None, Field(max_length=32, pattern=PLAIN_TEXT)] = None
    department_id: int | None = Field(default=None, description="Send null to take the user out of one")
    language: Language | None = None


class PasswordSetIn(_In):
    password: Password


class UserOut(BaseModel):
    id: int
    company_id: int
    username: str
    display_name: str
    email: str
    phone: str
    department_id: int | None
    language: str
    active: bool
    has_password: bool
    totp_enabled: bool
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None
    roles: list[RoleGrantOut]


class UserPageOut(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


# --- API tokens -------------------------------------------------------------------------------


class TokenIn(_In):
    company_id: int | None = Field(default=None, description="Only the platform operator names one")
    name: Name
    scopes: list[Permission] = Field(min_length=1, max_length=len(Permission))
    site_ids: list[int] | None = Field(default=None, max_length=500, description="null: every site")
    expires_at: datetime | None = Field(default=None, description="ISO-8601 with a zone; null: never")


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    company_id: int
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it")
    scopes: list[str]
    site_ids: list[int] | None
    created_by: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The bearer token: shown this once, never again")


class TokenPageOut(BaseModel):
    items: list[TokenOut]
    next_cursor: str | None


# --- residents' accounts ----------------------------------------------------------------------


class ResidentIn(_In):
    person_id: Annotated[int, Field(ge=1, le=2**63 - 1)]  # a database id: 64 bits
    login: Annotated[str | None, Field(max_length=128)] = Field(
        default=None, description="Phone or email; default: the person's phone, else their email"
    )
    password: Password | None = Field(default=None, description="None: a one-time set-up code is made")


class ResidentCreatedOut(ResidentOut):
    setup_code: str | None = Field(description="Hand it to the resident: shown this once")


class ResidentPageOut(BaseModel):
    items: list[ResidentOut]
    next_cursor: str | None
