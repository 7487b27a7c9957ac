"""The web console: server-rendered Jinja2 pages, Chinese first, htmx for the small live parts.

What is where
-------------
- ``pages.py``: the one router cloud/api.py includes at the root; every page router and the
  static files (``/static``) are gathered there.
- ``templating.py``: ``render(request, "x.html", {...}, principal=p)``, ``page_router()`` (HTML
  error pages instead of the API's JSON), ``render_fragment`` (a row for SSE or an htmx swap),
  ``add_template_dir``.
- ``templates/base.html`` (header, navigation, language switch, sign-out, flash messages) and
  ``templates/ui.html`` (macros: ``csrf_field``, ``field``, ``select``, ``table``, ``pager``,
  ``empty``, ``badge``, ``online_badge``), ``templates/charts.html`` (inline SVG charts).
- ``nav.py`` (``register_nav``), ``cards.py`` (``register_card`` / ``@card``), ``flash.py``
  (``flash``), ``i18n.py`` (catalogues, ``N_``, ``translate``, ``language_of``), ``zones.py``
  (times in a site's zone), ``visibility.py`` (the principal's sites and gateways; 404 for the
  rest), ``assets.py`` (``static_url``, cache headers).
- This issue's pages: ``sign_in.py`` (``/login``, ``/login/totp``, ``/logout``, ``/language``),
  ``dashboard.py`` (``/`` and its cards), ``site_view.py`` (``/sites/{id}`` and its SSE stream
  ``/sites/{id}/stream``; ``live.py`` polls), ``event_search.py`` (``/events``),
  ``trend_page.py`` (``/trend``).

How a module adds a page
------------------------
1. In ``cloud/<module>/pages.py``::

       from cloud.console.templating import add_template_dir, page_router, render
       from cloud.console.nav import register_nav
       from cloud.console.i18n import N_

       router = page_router()
       add_template_dir(Path(__file__).parent / "templates")   # or put them in console/templates/<module>/
       register_nav("units", N_("Units"), "/units", permission=Permission.SITES_READ, order=30)

       @router.get("/units")
       async def units_page(request: Request, session: SessionDep,
                            principal: Annotated[Principal, Depends(Authorize(Permission.SITES_READ))]):
           ...  # call the module's service with the principal; it filters by company and sites
           return render(request, "units.html", {"units": units, "next_cursor": page.next_cursor},
                         principal=principal)

   Templates under ``cloud/console/templates/<module>/`` ship by the existing package-data line;
   a module's own ``templates/`` folder needs one of its own in pyproject.toml.
   Every route declares ``Depends(Authorize(...))`` (the permission matrix test checks it). A
   service's NotFound / Forbidden / InvalidInput becomes an HTML error page by itself
   (``page_router``); a form re-rendered with its errors catches InvalidInput and passes the
   message to its template instead.
2. The template starts ``{% extends "base.html" %}`` and
   ``{% from "ui.html" import field, select, table, pager, csrf_field with context %}``
   (``with context``: the macros read ``csrf_token`` and ``path``). Text is English in
   ``{{ _("...") }}`` or ``{% trans %}``; add the Chinese to
   ``translations/zh/LC_MESSAGES/messages.po`` (see i18n.py for ``pybabel extract``).
   Times: ``{{ value|localtime(tz) }}`` with ``tz = zones.zone(site.timezone)``.
3. A form that changes something posts ``{{ csrf_field() }}``; after success, redirect (303)
   and ``flash(response, request, translate(lang, "Saved."))``. htmx requests carry the token by
   themselves (``hx-headers`` on ``<body>``).
4. Include the router in ``cloud/console/pages.py``: add the module to the tuple there.

How a module adds a dashboard card
----------------------------------
In the module (imported by its pages module, so that the card is registered at start)::

    from cloud.console.cards import card

    @card("open_alerts", 40, Permission.ALARMS_ACKNOWLEDGE, title=N_("Open alerts"))
    async def open_alerts(session: AsyncSession, principal: Principal) -> Mapping[str, Any] | None:
        return {"count": ..., "alerts": ...}      # None hides the card

with ``templates/cards/open_alerts.html`` (a fragment, no ``extends``; it gets its context plus
``tz``, ``lang``, ``principal``, ``csrf_token``). One or two indexed queries: the dashboard
renders every visible card on each visit.

Vendored: ``static/htmx.min.js`` is htmx 2.0.11 (npm ``htmx.org``, licence 0BSD).
"""
