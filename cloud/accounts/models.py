"""The accounts' tables: staff users and their role grants, sign-in sessions, API tokens, and the
residents' accounts. Secrets are kept only as hashes: passwords with argon2, session and API
tokens as SHA-256 (they are long random strings, so a fast hash is enough and makes the lookup
one indexed equality)."""

from datetime import datetime

from sqlalchemy import ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models import Base, BigId, JsonDoc


class User(Base):
    """A member of a company's staff. Staff who never sign in (cleaners, guards on paper rotas)
    have no password; ``department_id`` places everyone in the organisation."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    username: Mapped[str] = mapped_column(unique=True)  # the sign-in name, unique in the cloud
    display_name: Mapped[str]
    email: Mapped[str] = mapped_column(default="")
    phone: Mapped[str] = mapped_column(default="")
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    password_hash: Mapped[str | None]  # argon2id; None: cannot sign in
    totp_secret: Mapped[str | None]  # base32; set when the second factor is enrolled
    totp_enabled: Mapped[bool] = mapped_column(default=False)
    totp_last_step: Mapped[int] = mapped_column(default=0)  # a code is accepted once
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    language: Mapped[str] = mapped_column(default="zh")  # "zh" or "en"
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]

    __table_args__ = (Index("users_company", "company_id"),)


class RoleGrant(Base):
    """A role given to a user, for every site of the company (``site_id`` None) or for one site."""

    __tablename__ = "role_grants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str]  # a cloud.accounts.permissions.Role value
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))

    __table_args__ = (
        UniqueConstraint("user_id", "role", "site_id", name="role_grants_unique"),
        Index("role_grants_user", "user_id"),
    )


class SignInSession(Base):
    """A console (or resident portal) session. The cookie holds the token; the table its hash."""

    __tablename__ = "sign_in_sessions"

    token_hash: Mapped[str] = mapped_column(primary_key=True)  # sha256 hex of the cookie value
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    resident_id: Mapped[int | None] = mapped_column(ForeignKey("resident_accounts.id", ondelete="CASCADE"))
    csrf_token: Mapped[str]
    # Password accepted, TOTP code still owed: the session may do nothing but give the code.
    second_factor_pending: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ip: Mapped[str] = mapped_column(default="")
    user_agent: Mapped[str] = mapped_column(default="")

    __table_args__ = (Index("sign_in_sessions_user", "user_id"),)


class ApiToken(Base):
    """A token for an integration or the technician app: scoped to some permissions (and, like a
    role, optionally to some sites), revocable, optionally expiring."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    name: Mapped[str]
    token_hash: Mapped[str] = mapped_column(unique=True)  # sha256 hex
    prefix: Mapped[str]  # the first characters, to recognise a token in a list
    scopes: Mapped[list[str]] = mapped_column(JsonDoc)  # Permission values
    site_ids: Mapped[list[int] | None] = mapped_column(JsonDoc)  # None: every site
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class ResidentAccount(Base):
    """A resident's sign-in for the resident portal: by phone number or email, tied to a person."""

    __tablename__ = "resident_accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    login: Mapped[str] = mapped_column(unique=True)  # a phone number (digits, +) or an email, lower case
    password_hash: Mapped[str | None]
    # A one-time code the office hands the resident (printed, or by text message) to choose a
    # password at first sign-in: argon2, like a password, and good until it is used or expires.
    setup_code_hash: Mapped[str | None]
    setup_code_expires_at: Mapped[datetime | None]
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


__all__ = ["ApiToken", "ResidentAccount", "RoleGrant", "SignInSession", "User"]
