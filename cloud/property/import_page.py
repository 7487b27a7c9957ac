"""The console's import page (``/property/sites/{id}/import``): upload a site's units or people
as CSV or Excel (.xlsx), optionally only checking it (a dry run), and see the report.

The import itself is ``cloud.property.importing``: all or nothing. With any problem the page lists
each one (row, column, value, message, as the sheet numbers and names them) and says that nothing
was imported; otherwise it says what was created and updated (or would be, for a check).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, Form, Path, Query, Request, UploadFile
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from cloud.accounts.permissions import AuthorizeAny, Permission, Principal
from cloud.console.formkit import Mistake, client_ip
from cloud.console.i18n import language_of, translate
from cloud.console.templating import page_router
from cloud.kit.web import SessionDep
from cloud.property.importing import PEOPLE_COLUMNS, UNIT_COLUMNS, ImportResult, import_people, import_units
from cloud.property.labels import render_page
from cloud.property.models import Site
from cloud.property.scope import site_for
from cloud.property.sheets import MAX_FILE_BYTES, MAX_ROWS

P = Permission
router = page_router()

# Units need property.write at the site, people people.write: either lets a principal in, and the
# page offers what it may import there.
Importer = Annotated[Principal, Depends(AuthorizeAny(P.PROPERTY_WRITE, P.PEOPLE_WRITE))]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
KINDS = {"units": P.PROPERTY_WRITE, "people": P.PEOPLE_WRITE}
COLUMNS = {"units": UNIT_COLUMNS, "people": PEOPLE_COLUMNS}
MAX_MB = MAX_FILE_BYTES // (1024 * 1024)


async def _site(session: AsyncSession, principal: Principal, site_id: int) -> tuple[Site, list[str]]:
    """The site and what the principal may import there; NotFound for another company's site,
    Forbidden for one of its own where it may import neither."""
    kinds = [kind for kind, permission in KINDS.items() if principal.can(permission, site_id)]
    site = await site_for(session, principal, site_id, KINDS[kinds[0]] if kinds else P.PROPERTY_WRITE)
    return site, kinds


def _page(
    request: Request,
    principal: Principal,
    site: Site,
    kinds: list[str],
    kind: str,
    *,
    dry_run: bool = False,
    result: ImportResult | None = None,
    filename: str = "",
    mistake: Mistake | None = None,
) -> Response:
    context = {
        "site": site,
        "kinds": kinds,
        "kind": kind if kind in kinds else kinds[0],
        "dry_run": dry_run,
        "result": result,
        "filename": filename,
        "columns": COLUMNS,
        "max_mb": MAX_MB,
        "max_rows": MAX_ROWS,
    }
    status = 200 if result is None or result.ok else 422
    return render_page(
        request, principal, "property/import.html", context, mistake or Mistake(status_code=status)
    )


@router.get("/property/sites/{site_id}/import")
async def import_page(
    request: Request,
    session: SessionDep,
    principal: Importer,
    site_id: Id,
    kind: Annotated[str, Query(max_length=10)] = "units",
) -> Response:
    site, kinds = await _site(session, principal, site_id)
    return _page(request, principal, site, kinds, kind)


@router.post("/property/sites/{site_id}/import")
async def import_file(
    request: Request,
    session: SessionDep,
    principal: Importer,
    site_id: Id,
    kind: Annotated[str, Form(max_length=10)] = "",
    dry_run: Annotated[str, Form(max_length=10)] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Check the file and, unless ``dry_run``, import it. The answer is the page with the report:
    422 when the file has problems (nothing was imported)."""
    site, kinds = await _site(session, principal, site_id)
    dry = bool(dry_run)
    lang = language_of(request, principal)

    def refused(message: str, status_code: int) -> Response:
        mistake = Mistake(message, {"kind": kind}, status_code=status_code)
        return _page(request, principal, site, kinds, kind, dry_run=dry, mistake=mistake)

    if kind not in KINDS:
        return refused(translate(lang, "Choose what the file holds: units or people."), 422)
    if file is None or not file.filename:
        return refused(translate(lang, "Choose a file to import (CSV or Excel .xlsx)."), 422)
    data = await file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return refused(translate(lang, "The file is larger than %(mb)s MB: split it.") % {"mb": MAX_MB}, 413)
    run = import_units if kind == "units" else import_people
    # The service checks the kind's own permission at the site (Forbidden: the error page).
    result = await run(session, principal, site.id, data, file.filename, dry_run=dry, ip=client_ip(request))
    if result.ok and not dry:
        await session.commit()
    else:
        # Nothing is kept of a check or a refused file (the rollback expires the site: read again).
        await session.rollback()
        site, kinds = await _site(session, principal, site_id)
    return _page(request, principal, site, kinds, kind, dry_run=dry, result=result, filename=file.filename)
