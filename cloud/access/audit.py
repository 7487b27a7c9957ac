"""Who may touch a site's access data, and what the audit log is told of each change.

A site is named by its code (``Site.code``, the key the access tables use). A company principal
reaches only its own company's sites: another company's code answers 404, as an unknown one does.
The platform operator may also address a code with no site row: access data from before sites
existed, or set up for a site not yet created; its changes then go to the platform's chain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.access.service import AuditHook, Change, Touched
from cloud.accounts.permissions import Permission, Principal
from cloud.audit.chain import record
from cloud.commands.service import MAX_BY_LENGTH
from cloud.kit.errors import NotFound
from cloud.property.models import Site


class UnknownSite(NotFound):
    code = "unknown_site"


@dataclass(frozen=True, slots=True)
class AccessTarget:
    """A site code checked for a principal: its row (None only for the platform's row-less
    codes), who acts and from where."""

    code: str
    site: Site | None
    principal: Principal
    ip: str

    @property
    def by(self) -> str:
        """Who the pushes after the change name as having asked (a command's ``by``)."""
        return self.principal.name[:MAX_BY_LENGTH] or self.principal.actor


async def resolve_site(
    session: AsyncSession, principal: Principal, code: str, permission: Permission, request: Request
) -> AccessTarget:
    """The site of ``code`` if the principal may use ``permission`` there: UnknownSite (404) if it
    is not a site of the principal's company, Forbidden (403) without the permission there."""
    site = await session.scalar(
        select(Site).where(Site.code == code, principal.company_clause(Site.company_id))
    )
    if site is None and not principal.is_platform:
        raise UnknownSite(f"site: no site {code!r}")
    principal.require(permission, site.id if site is not None else None)
    if principal.is_platform:
        # The platform token acts under its configured owner's name (api.token_owner).
        principal = dataclasses.replace(principal, name=request.app.state.token_owner)
    return AccessTarget(code, site, principal, request.client.host if request.client else "")


def audit_hook(
    target: AccessTarget, action: str, target_type: str, target_id: str, *, mode: str | None = None
) -> AuditHook:
    """The hook that writes a change's audit entry, in the change's transaction: before, the
    site's version and the rows as they were; after, the counts, the keys added, changed and
    removed, and the rows as they are (rows only when few: ``DETAILED_ROWS``)."""

    async def write(session: AsyncSession, change: Change, touched: Touched) -> None:
        before: dict[str, Any] = {"version": touched.base}
        if touched.rows_before is not None:
            before["rows"] = touched.rows_before
        after: dict[str, Any] = {
            "site": target.code,
            "table": touched.table,
            "version": change.version,
            "added": change.added,
            "changed": change.changed,
            "unchanged": change.unchanged,
            "removed": change.removed,
            "added_keys": touched.added,
            "changed_keys": touched.changed,
            "removed_keys": touched.removed,
        }
        if mode is not None:
            after["mode"] = mode
        if touched.rows_after is not None:
            after["rows"] = touched.rows_after
        site = target.site
        await record(
            session,
            target.principal,
            action,
            target_type,
            target_id,
            company_id=site.company_id if site is not None else None,
            site_id=site.id if site is not None else None,
            before=before,
            after=after,
            ip=target.ip,
        )

    return write
