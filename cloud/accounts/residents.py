"""Residents' accounts for the resident portal: made by the office for a person of the company,
signed in to by phone number or email.

The office either sets an initial password or (better: it never knows the password) hands the
resident a one-time set-up code, good for ``SETUP_CODE_DAYS``, with which the resident chooses
their own password at first sign-in (``service.resident_sign_in``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts import logins
from cloud.accounts.models import ResidentAccount
from cloud.accounts.passwords import check_policy, hash_password, new_setup_code, normalised_setup_code
from cloud.accounts.permissions import Principal
from cloud.accounts.schemas import ResidentIn
from cloud.accounts.sessions import end_resident_sessions
from cloud.audit.chain import record
from cloud.db import SessionFactory
from cloud.kit.errors import Conflict, InvalidInput, NotFound
from cloud.kit.pagination import decode_cursor, encode_cursor
from cloud.property.models import DEFAULT_TIMEZONE, Building, Company, Occupancy, Person, Site, Unit

SETUP_CODE_DAYS = 14
DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclass(frozen=True)
class NewResident:
    account: ResidentAccount
    setup_code: str | None  # for the resident's eyes only


@dataclass
class ResidentPage:
    items: list[ResidentAccount]
    next_cursor: str | None


@dataclass(frozen=True)
class ResidentUnit:
    unit_id: int
    number: str
    building: str
    site: str
    site_code: str
    role: str
    primary: bool


@dataclass(frozen=True)
class ResidentProfile:
    account: ResidentAccount
    person: Person
    units: list[ResidentUnit]


def _now() -> datetime:
    return datetime.now(UTC)


def _state(account: ResidentAccount) -> dict[str, Any]:
    return {"login": account.login, "person_id": account.person_id, "active": account.active}


async def create_resident(
    sessions: SessionFactory, principal: Principal, draft: ResidentIn, *, ip: str = ""
) -> NewResident:
    """An account for a person of the principal's company (one per person)."""
    # Hashed before the transaction: no connection is held while argon2 works.
    password_hash = None
    code = code_hash = None
    if draft.password is not None:
        check_policy(draft.password)
        password_hash = await hash_password(draft.password)
    else:
        code = new_setup_code()
        code_hash = await hash_password(normalised_setup_code(code))
    now = _now()
    async with sessions() as session, session.begin():
        person = await session.get(Person, draft.person_id)
        if person is None or not (principal.is_platform or person.company_id == principal.company_id):
            raise NotFound(f"person_id {draft.person_id}: no such person")
        given = draft.login or person.phone or person.email
        if not given:
            raise InvalidInput("login: the person has no phone number or email: give one")
        login = logins.resident_login(given)
        taken = await session.scalar(
            select(ResidentAccount).where(
                or_(ResidentAccount.person_id == person.id, ResidentAccount.login == login)
            )
        )
        if taken is not None:
            if taken.person_id == person.id:
                raise Conflict(f"person {person.id} already has a resident account ({taken.id})")
            raise Conflict(f"login: {login!r} is another resident's")
        account = ResidentAccount(
            company_id=person.company_id,
            person_id=person.id,
            login=login,
            password_hash=password_hash,
            setup_code_hash=code_hash,
            setup_code_expires_at=now + timedelta(days=SETUP_CODE_DAYS) if code else None,
            created_at=now,
        )
        session.add(account)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict(f"login: {login!r} is another resident's") from None
        await record(
            session,
            principal,
            "resident.create",
            "resident",
            account.id,
            company_id=account.company_id,
            after={**_state(account), "setup_code_made": code is not None},
            ip=ip,
        )
        return NewResident(account, code)


async def list_residents(
    session: AsyncSession,
    principal: Principal,
    *,
    person_id: int | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> ResidentPage:
    stmt = select(ResidentAccount).where(principal.company_clause(ResidentAccount.company_id))
    if person_id is not None:
        stmt = stmt.where(ResidentAccount.person_id == person_id)
    if cursor:
        stmt = stmt.where(ResidentAccount.id > decode_cursor(cursor))
    rows = list((await session.scalars(stmt.order_by(ResidentAccount.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return ResidentPage(rows, encode_cursor(rows[-1].id) if more and rows else None)


async def get_resident(session: AsyncSession, principal: Principal, resident_id: int) -> ResidentAccount:
    account = await session.get(ResidentAccount, resident_id)
    if account is None or not (principal.is_platform or account.company_id == principal.company_id):
        raise NotFound(f"resident account {resident_id}: no such account")
    return account


async def renew_setup_code(
    sessions: SessionFactory, principal: Principal, resident_id: int, *, ip: str = ""
) -> NewResident:
    """A new one-time code (the resident forgot their password or lost the first code). The
    password stays usable until the resident sets a new one with the code."""
    code = new_setup_code()
    code_hash = await hash_password(normalised_setup_code(code))
    async with sessions() as session, session.begin():
        account = await get_resident(session, principal, resident_id)
        account.setup_code_hash = code_hash
        account.setup_code_expires_at = _now() + timedelta(days=SETUP_CODE_DAYS)
        await record(
            session,
            principal,
            "resident.setup_code",
            "resident",
            account.id,
            company_id=account.company_id,
            after={"setup_code_expires_at": account.setup_code_expires_at},
            ip=ip,
        )
        return NewResident(account, code)


async def set_resident_active(
    sessions: SessionFactory, principal: Principal, resident_id: int, active: bool, *, ip: str = ""
) -> ResidentAccount:
    async with sessions() as session, session.begin():
        account = await get_resident(session, principal, resident_id)
        if account.active == active:
            return account
        account.active = active
        if not active:
            await end_resident_sessions(session, account.id)
        await record(
            session,
            principal,
            "resident.activate" if active else "resident.deactivate",
            "resident",
            account.id,
            company_id=account.company_id,
            before={"active": not active},
            after={"active": active},
            ip=ip,
        )
        return account


async def unlock_resident(
    sessions: SessionFactory, principal: Principal, resident_id: int, *, ip: str = ""
) -> ResidentAccount:
    async with sessions() as session, session.begin():
        account = await get_resident(session, principal, resident_id)
        before = {"failed_logins": account.failed_logins, "locked_until": account.locked_until}
        account.failed_logins = 0
        account.locked_until = None
        await record(
            session,
            principal,
            "resident.unlock",
            "resident",
            account.id,
            company_id=account.company_id,
            before=before,
            ip=ip,
        )
        return account


async def resident_profile(
    session: AsyncSession, principal: Principal, today: date | None = None
) -> ResidentProfile:
    """The signed-in resident's person and the units they live in or own now (occupancies that
    have begun and not ended, by the company's calendar: dates there are local dates)."""
    if principal.kind != "resident" or principal.id is None or principal.person_id is None:
        raise NotFound("no resident is signed in")
    account = await session.get(ResidentAccount, principal.id)
    person = await session.get(Person, principal.person_id)
    if account is None or person is None or person.company_id != principal.company_id:
        raise NotFound("no such resident")
    if today is None:
        company = await session.get(Company, person.company_id)
        today = datetime.now(_zone(company.timezone if company else DEFAULT_TIMEZONE)).date()
    rows = (
        await session.execute(
            select(Occupancy, Unit, Building, Site)
            .join(Unit, Unit.id == Occupancy.unit_id)
            .join(Building, Building.id == Unit.building_id)
            .join(Site, Site.id == Unit.site_id)
            .where(
                Occupancy.person_id == person.id,
                Occupancy.company_id == principal.company_id,
                Occupancy.start_date <= today,
                or_(Occupancy.end_date.is_(None), Occupancy.end_date >= today),
            )
            .order_by(Site.code, Building.code, Unit.number, Occupancy.id)
        )
    ).all()
    units = [
        ResidentUnit(
            unit_id=unit.id,
            number=unit.number,
            building=building.name,
            site=site.name,
            site_code=site.code,
            role=occupancy.role,
            primary=occupancy.primary,
        )
        for occupancy, unit, building, site in rows
    ]
    return ResidentProfile(account, person, units)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)
