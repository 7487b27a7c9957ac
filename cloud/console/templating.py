"""Rendering the console's pages: Jinja2 (autoescaped, gettext through the i18n extension), one
environment per language so that ``{% trans %}`` and ``_()`` need no per-request state.

``render(request, "page.html", {...}, principal=principal)`` is what a page route returns. Every
template gets, besides its own context:

- ``principal``, ``lang``, ``languages``, ``csrf_token`` (the session's, for forms and htmx);
- ``nav`` (the entries the principal may use) and ``path`` (to highlight the current one);
- ``messages``: the flash messages to show (then cleared);
- globals ``static_url(name)``; filters ``localtime(tz)``, ``localtime_zone(tz)``,
  ``zonelabel``, ``number``, ``urlencode_query``.

``page_router()`` is the APIRouter every console module uses for its pages: a domain error
(404, 403, 422...) on a page answers an HTML error page in the user's language instead of the
API's JSON; a missing principal still goes to the sign-in page (create_app's handler).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from babel.numbers import format_decimal
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse, Response

from cloud.accounts.permissions import Principal
from cloud.console import zones
from cloud.console.assets import static_url
from cloud.console.flash import Flash, clear_flashes, pending_flashes
from cloud.console.i18n import LANGUAGE_NAMES, LANGUAGES, LOCALES, N_, language_of, translate, translations
from cloud.console.nav import visible_nav
from cloud.kit.errors import CloudError, Unauthorized

TEMPLATES_DIR = Path(__file__).parent / "templates"

# One loader for every language's environment: a module with templates of its own adds its folder
# (``add_template_dir``) at import, before the first page is rendered.
_loader = FileSystemLoader([str(TEMPLATES_DIR)])

# Pages hold personal and operational data: not kept by the browser or a proxy, not framed
# (click-jacking), and no script but our own files (htmx, console.js). Inline styles are allowed
# for the SVG charts' attributes and htmx's indicator style.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
}


def add_template_dir(path: Path | str) -> None:
    """Let templates of ``path`` be found (after the console's own: a module cannot replace
    ``base.html``). Call at import of the module's pages."""
    entry = str(path)
    if entry not in _loader.searchpath:
        _loader.searchpath.append(entry)


@cache
def environment(lang: str) -> Environment:
    """The Jinja2 environment of ``lang``, made once."""
    env = Environment(
        loader=_loader,
        autoescape=select_autoescape(["html", "svg"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # The templates ship with the package: no stat() per render to look for changes.
        auto_reload=False,
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    locale = LOCALES[lang]
    env.globals.update(static_url=static_url, language_names=LANGUAGE_NAMES, languages=LANGUAGES)
    env.filters.update(
        localtime=_localtime,
        localtime_zone=zones.local_time_with_zone,
        shorttime=lambda value, tz: zones.local_time(value, tz, zones.SHORT_FORMAT),
        zonelabel=zones.zone_label,
        number=lambda value, digits=None: _number(value, locale, digits),
        urlencode_query=_urlencode_query,
    )
    return env


def _localtime(value: datetime | None, tz: ZoneInfo) -> str:
    return zones.local_time(value, tz)


def _number(value: int | float | Decimal | None, locale: str, digits: int | None) -> str:
    if value is None:
        return ""
    if digits is not None:
        pattern = f"#,##0.{'0' * digits}" if digits else "#,##0"
        return format_decimal(value, format=pattern, locale=locale)
    return format_decimal(value, locale=locale)


def _urlencode_query(params: Mapping[str, Any]) -> str:
    """A query string of the non-empty ``params`` (filters carried into a paging link)."""
    return urlencode([(k, v) for k, v in params.items() if v not in (None, "")])


def page_context(request: Request, principal: Principal | None) -> dict[str, Any]:
    """What every template gets besides its own context."""
    return {
        "request": request,
        "path": request.url.path,
        "principal": principal,
        "lang": language_of(request, principal),
        "csrf_token": principal.csrf_token if principal is not None and principal.csrf_token else "",
        "nav": visible_nav(principal),
    }


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    principal: Principal | None,
    status_code: int = 200,
    messages: list[Flash] | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The page ``template`` in the user's language. ``messages`` are shown besides the flash
    messages waiting in the cookie (which are cleared)."""
    base = page_context(request, principal)
    waiting = pending_flashes(request)
    full = {**base, "messages": [*waiting, *(messages or [])], **(context or {})}
    html = environment(base["lang"]).get_template(template).render(full)
    response = HTMLResponse(html, status_code, headers={**SECURITY_HEADERS, **(headers or {})})
    if waiting:
        clear_flashes(response)
    return response


def render_fragment(lang: str, template: str, context: Mapping[str, Any]) -> str:
    """A template rendered to a string (an SSE message's row, an htmx swap's body) without the
    page around it: it gets only ``context`` and ``lang``."""
    return environment(lang).get_template(template).render({"lang": lang, **context})


_ERROR_TITLES = {
    400: N_("The request is not valid"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    409: N_("Conflict"),
    422: N_("Check what you entered"),
    503: N_("Temporarily unavailable"),
}
_OTHER_ERROR = N_("Something went wrong")


def error_page(request: Request, status_code: int, detail: str) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    lang = language_of(request, principal)
    title = translate(lang, _ERROR_TITLES.get(status_code, _OTHER_ERROR))
    return render(
        request,
        "error.html",
        {"status": status_code, "title": title, "detail": detail},
        principal=principal,
        status_code=status_code,
    )


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class PageRoute(APIRoute):
    """A console page: domain errors become HTML error pages (Unauthorized still goes to the
    app's handler, which redirects to the sign-in page)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized:
                raise
            except CloudError as e:
                return error_page(request, e.status_code, str(e))
            except RequestValidationError as e:
                return error_page(request, 422, _validation_detail(e))

        return page_handler


def page_router(**kwargs: Any) -> APIRouter:
    """An APIRouter for console pages (HTML error pages, out of the OpenAPI description)."""
    return APIRouter(route_class=PageRoute, include_in_schema=False, **kwargs)
