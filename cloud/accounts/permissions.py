"""Who may do what: the one place where permissions are decided.

Every API route and console page declares the permission it needs with ``Depends(Authorize(P))``
(a router-wide dependency or the route's own); ``tests/cloud/test_permission_matrix.py`` walks every
route of the app and fails if one declares none and is not listed in ``PUBLIC_PATHS``. A route
that touches one site's data then asks the principal about that site (``principal.require``).

A principal is whoever makes the request:

- a staff **user** signed in to the console (cookie session) — their permissions are the union of
  their roles' permissions, each role for every site of the company or only for some;
- an **API token** — the permissions it was given (its scopes), for its sites;
- a **resident** signed in to the resident portal — no staff permission at all;
- the **platform** operator's token (``api.token`` in the cloud's config) — every permission in
  every company: it runs the cloud (registers companies, provisions gateways before there are
  users), and is never handed to a company.

Companies are isolated from one another: every query of company data filters by
``principal.company_id`` (``company_clause``), and an object of another company is answered 404,
as if it did not exist, never 403 (which would tell that it does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from fastapi import Request
from sqlalchemy import ColumnElement, true

from cloud.kit.errors import CloudError, NotFound


class Forbidden(CloudError):
    status_code = 403
    code = "forbidden"


class Permission(StrEnum):
    SITES_READ = "sites.read"  # the property model: sites, buildings, floors, units, parking, areas
    PROPERTY_WRITE = "property.write"  # change it, import it
    PEOPLE_READ = "people.read"  # owners, tenants, residents: personal data
    PEOPLE_WRITE = "people.write"
    GATEWAYS_READ = "gateways.read"  # gateways, their devices and points
    GATEWAYS_MANAGE = "gateways.manage"  # register, rotate and revoke gateway credentials
    GATEWAYS_COMMAND = "gateways.command"  # commands other than doors' (reload, snapshot...)
    EVENTS_READ = "events.read"  # events, latest values, trends, the live stream
    DOORS_CONTROL = "doors.control"  # remote unlock and door modes
    ACCESS_READ = "access.read"  # credentials, access levels, schedules
    ACCESS_WRITE = "access.write"
    USERS_READ = "users.read"  # staff, departments, roles
    USERS_MANAGE = "users.manage"  # create staff, grant roles, reset passwords, residents' accounts
    TOKENS_MANAGE = "tokens.manage"  # API tokens
    AUDIT_READ = "audit.read"
    ALARMS_ACKNOWLEDGE = "alarms.acknowledge"  # alerts: see them, act on maintenance ones
    # Life-safety alerts (smoke, fire, panic, forced door, duress) are acknowledged by security staff
    # and managers only: a technician never silences one.
    LIFESAFETY_ACKNOWLEDGE = "alarms.lifesafety"
    ALERTS_MANAGE = "alerts.manage"  # on-call rotas, escalation policies, webhooks, silences
    EQUIPMENT_READ = "equipment.read"  # the equipment module
    EQUIPMENT_WRITE = "equipment.write"
    SERVICEDESK_READ = "servicedesk.read"  # the service-desk module
    SERVICEDESK_WRITE = "servicedesk.write"
    FINANCE_READ = "finance.read"  # the finance module
    FINANCE_WRITE = "finance.write"
    CONTRACTS_READ = "contracts.read"
    CONTRACTS_WRITE = "contracts.write"


class Role(StrEnum):
    COMPANY_ADMIN = "company_admin"
    PROPERTY_MANAGER = "property_manager"
    FINANCE = "finance"
    SERVICE_AGENT = "service_agent"
    TECHNICIAN = "technician"
    SECURITY_GUARD = "security_guard"


P = Permission
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.COMPANY_ADMIN: frozenset(Permission),
    Role.PROPERTY_MANAGER: frozenset(
        {
            P.SITES_READ,
            P.PROPERTY_WRITE,
            P.PEOPLE_READ,
            P.PEOPLE_WRITE,
            P.GATEWAYS_READ,
            P.GATEWAYS_COMMAND,
            P.EVENTS_READ,
            P.DOORS_CONTROL,
            P.ACCESS_READ,
            P.ACCESS_WRITE,
            P.USERS_READ,
            P.AUDIT_READ,
            P.ALARMS_ACKNOWLEDGE,
            P.LIFESAFETY_ACKNOWLEDGE,
            P.ALERTS_MANAGE,
            P.EQUIPMENT_READ,
            P.EQUIPMENT_WRITE,
            P.SERVICEDESK_READ,
            P.SERVICEDESK_WRITE,
            P.FINANCE_READ,
            P.CONTRACTS_READ,
            P.CONTRACTS_WRITE,
        }
    ),
    Role.FINANCE: frozenset(
        {P.SITES_READ, P.PEOPLE_READ, P.FINANCE_READ, P.FINANCE_WRITE, P.CONTRACTS_READ, P.AUDIT_READ}
    ),
    Role.SERVICE_AGENT: frozenset(
        {P.SITES_READ, P.PEOPLE_READ, P.SERVICEDESK_READ, P.SERVICEDESK_WRITE, P.EQUIPMENT_READ}
    ),
    Role.TECHNICIAN: frozenset(
        {
            P.SITES_READ,
            P.GATEWAYS_READ,
            P.EVENTS_READ,
            P.EQUIPMENT_READ,
            P.EQUIPMENT_WRITE,
            P.ALARMS_ACKNOWLEDGE,
            P.SERVICEDESK_READ,
        }
    ),
    Role.SECURITY_GUARD: frozenset(
        {
            P.SITES_READ,
            P.EVENTS_READ,
            P.GATEWAYS_READ,
            P.DOORS_CONTROL,
            P.ACCESS_READ,
            P.ALARMS_ACKNOWLEDGE,
            P.LIFESAFETY_ACKNOWLEDGE,
        }
    ),
}
del P

# Sites a permission holds for: None is every site of the company.
SiteScope = frozenset[int] | None
PrincipalKind = Literal["platform", "user", "token", "resident"]


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: int | None  # the user's, token's or resident's id; None for the platform
    name: str  # display name, recorded in the audit log and as a command's "by"
    company_id: int | None  # None only for the platform
    grants: Mapping[Permission, SiteScope] = field(default_factory=dict)
    language: str = "zh"
    # Cookie sessions only: the token a state-changing request must echo (form field or header).
    csrf_token: str | None = None
    session_hash: str | None = None
    # Resident principals: the person they are.
    person_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit log names the principal: ``user:12``, ``token:3``, ``platform``."""
        return "platform" if self.kind == "platform" else f"{self.kind}:{self.id}"

    @property
    def is_platform(self) -> bool:
        return self.kind == "platform"

    def can(self, permission: Permission, site_id: int | None = None) -> bool:
        """May the principal use ``permission`` (at ``site_id``, or at some site when None)?"""
        if self.is_platform:
            return True
        if permission not in self.grants:
            return False
        scope = self.grants[permission]
        return scope is None or site_id is None or site_id in scope

    def sites(self, permission: Permission) -> SiteScope:
        """The site ids the permission holds for; None: every site (of the company)."""
        if self.is_platform:
            return None
        return self.grants.get(permission, frozenset())

    def require(self, permission: Permission, site_id: int | None = None) -> None:
        if not self.can(permission, site_id):
            where = f" at site {site_id}" if site_id is not None else ""
            raise Forbidden(f"{self.name}: not allowed to {permission.value}{where}")

    def require_company(self, company_id: int | None) -> None:
        """NotFound unless the object of ``company_id`` belongs to the principal's company."""
        if not self.is_platform and company_id != self.company_id:
            raise NotFound("no such object")

    def company_clause(self, column: Any) -> ColumnElement[bool]:
        """``column == my company`` (always true for the platform): add it to every company query."""
        if self.is_platform:
            return true()
        return column == self.company_id  # type: ignore[no-any-return]

    def site_clause(self, permission: Permission, column: Any) -> ColumnElement[bool]:
        """Restrict ``column`` (a site id) to the sites the permission holds for."""
        scope = self.sites(permission)
        if scope is None:
            return true()
        return column.in_(sorted(scope))  # type: ignore[no-any-return]


def grants_for_roles(roles: Iterable[tuple[Role, int | None]]) -> dict[Permission, SiteScope]:
    """The union of what (role, site or None) pairs give: a permission given for every site by
    one role and for site 3 by another holds for every site."""
    grants: dict[Permission, SiteScope] = {}
    for role, site_id in roles:
        for permission in ROLE_PERMISSIONS[role]:
            if permission in grants and grants[permission] is None:
                continue
            if site_id is None:
                grants[permission] = None
            else:
                grants[permission] = (grants.get(permission) or frozenset()) | {site_id}
    return grants


def grants_for_scopes(scopes: Iterable[str], site_ids: Iterable[int] | None) -> dict[Permission, SiteScope]:
    sites = None if site_ids is None else frozenset(site_ids)
    return {Permission(s): sites for s in scopes}


PLATFORM = Principal(kind="platform", id=None, name="platform", company_id=None)

# Paths that need no principal: health and metrics for the operator, the sign-in pages, the
# OpenAPI description, static files.
PUBLIC_PATHS: frozenset[str] = frozenset(
    {
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/login",
        "/login/totp",
        "/logout",
        "/portal/login",
        "/api/v1/session",
        "/api/v1/session/totp",
        "/api/v1/resident/session",
        "/static",
        "/language",
    }
)


class Authorize:
    """``Depends(Authorize(Permission.X))``: the request's principal, if it may use X (at some
    site; the route checks the site it touches). 401 without a principal, 403 without X.
    ``Authorize(None)``: any signed-in staff principal (the dashboard, one's own account)."""

    def __init__(self, permission: Permission | None, *, residents: bool = False) -> None:
        self.permission = permission
        self.residents = residents

    async def __call__(self, request: Request) -> Principal:
        from cloud.accounts.authn import current_principal

        principal = await current_principal(request)
        if principal.kind == "resident" and not self.residents:
            raise Forbidden("residents use the resident portal")
        if principal.kind != "resident" and self.residents and self.permission is None:
            raise Forbidden("this is the residents' portal")
        if self.permission is not None:
            principal.require(self.permission)
        return principal

    def __repr__(self) -> str:
        return f"Authorize({self.permission})"


class AuthorizeAny(Authorize):
    """``Authorize`` for a route whose permission depends on the request: the principal must hold
    at least one of ``any_of`` (at some site); the route checks the one its request needs."""

    def __init__(self, *any_of: Permission) -> None:
        super().__init__(None)
        self.any_of = frozenset(any_of)

    async def __call__(self, request: Request) -> Principal:
        principal = await super().__call__(request)
        if not any(principal.can(p) for p in self.any_of):
            wanted = " or ".join(sorted(p.value for p in self.any_of))
            raise Forbidden(f"{principal.name}: not allowed to {wanted}")
        return principal

    def __repr__(self) -> str:
        return f"AuthorizeAny({', '.join(sorted(p.value for p in self.any_of))})"
