"""The accounts' rows as the API shows them: never a hash, a secret or a TOTP seed."""

from __future__ import annotations

from cloud.accounts.models import ApiToken, ResidentAccount
from cloud.accounts.schemas import ResidentOut, RoleGrantOut, TokenOut, UserOut
from cloud.accounts.users import StaffMember


def user_out(member: StaffMember) -> UserOut:
    user = member.user
    return UserOut(
        id=user.id,
        company_id=user.company_id,
        username=user.username,
        display_name=user.display_name,
        email=user.email,
        phone=user.phone,
        department_id=user.department_id,
        language=user.language,
        active=user.active,
        has_password=user.password_hash is not None,
        totp_enabled=user.totp_enabled,
        locked_until=user.locked_until,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
        roles=[RoleGrantOut.model_validate(g) for g in member.roles],
    )


def resident_out(account: ResidentAccount) -> ResidentOut:
    return ResidentOut(
        id=account.id,
        company_id=account.company_id,
        person_id=account.person_id,
        login=account.login,
        active=account.active,
        has_password=account.password_hash is not None,
        setup_code_expires_at=account.setup_code_expires_at if account.setup_code_hash else None,
        locked_until=account.locked_until,
        created_at=account.created_at,
        last_login_at=account.last_login_at,
    )


def token_out(row: ApiToken) -> TokenOut:
    return TokenOut.model_validate(row)
