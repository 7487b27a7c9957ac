"""What a principal may hand on: nobody gives (a role, a token's scopes) more than they hold.

A permission for every site may be given only by who holds it for every site; for some sites,
only at sites where the giver holds it. The same rule guards managing another user (resetting
their password, deactivating them, taking a role away): a site-limited administrator must not be
able to take over the company administrator's account by resetting its password.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cloud.accounts.permissions import (
    ROLE_PERMISSIONS,
    Forbidden,
    Permission,
    Principal,
    Role,
    SiteScope,
    grants_for_roles,
)


def covers(principal: Principal, permission: Permission, scope: SiteScope) -> bool:
    """Does the principal hold ``permission`` wherever ``scope`` (None: every site) reaches?"""
    if principal.is_platform:
        return True
    if permission not in principal.grants:
        return False
    mine = principal.grants[permission]
    if mine is None:
        return True
    return scope is not None and scope <= mine


def require_delegable(
    principal: Principal, permissions: Iterable[Permission], site_ids: Iterable[int] | None, *, what: str
) -> None:
    """Forbidden unless the principal holds every one of ``permissions`` at ``site_ids``."""
    scope: SiteScope = None if site_ids is None else frozenset(site_ids)
    lacking = sorted(p.value for p in permissions if not covers(principal, p, scope))
    if lacking:
        where = "at every site" if scope is None else f"at site(s) {', '.join(map(str, sorted(scope)))}"
        raise Forbidden(
            f"{what}: you cannot give what you do not hold yourself {where}: {', '.join(lacking)}"
        )


def require_role_delegable(principal: Principal, role: Role, site_id: int | None) -> None:
    require_delegable(
        principal,
        ROLE_PERMISSIONS[role],
        None if site_id is None else [site_id],
        what=f"role {role.value}",
    )


def require_outranks(principal: Principal, roles: Iterable[tuple[Role, int | None]], *, who: str) -> None:
    """Forbidden unless the principal could have given every role the other user holds."""
    grants: Mapping[Permission, SiteScope] = grants_for_roles(roles)
    lacking = sorted(p.value for p, scope in grants.items() if not covers(principal, p, scope))
    if lacking:
        raise Forbidden(f"{who} holds permissions you do not ({', '.join(lacking)}): ask someone who does")
