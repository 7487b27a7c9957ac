"""The console's pages, gathered into the one ``router`` that cloud/api.py includes at the root,
and its static files at ``/static``.

A module adds its pages by including its own router here (see cloud/console/__init__.py).
"""

from fastapi import APIRouter

from cloud.accounts import pages as accounts_pages
from cloud.alerts import pages as alerts_pages
from cloud.console import dashboard, event_search, sign_in, site_view, trend_page
from cloud.console.assets import STATIC_PREFIX, static_app
from cloud.gateways import pages as gateways_pages
from cloud.oncall import pages as oncall_pages
from cloud.property import pages as property_pages
from cloud.tech import pages as tech_pages

router = APIRouter(include_in_schema=False)
router.mount(STATIC_PREFIX, static_app(), name="static")

for module in (
    sign_in,
    dashboard,
    site_view,
    event_search,
    trend_page,
    property_pages,
    accounts_pages,
    gateways_pages,
    alerts_pages,
    tech_pages,
    oncall_pages,
):
    router.include_router(module.router)
