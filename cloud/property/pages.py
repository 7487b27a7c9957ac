"""The console's property pages, gathered into the one ``router`` the console includes: the
property tree (``tree_pages``: sites, buildings, units, occupancies), people (``people_pages``), a
site's parking spaces, common areas and meters (``space_pages``) and the import (``import_page``).
Their templates are in cloud/console/templates/property/."""

from cloud.accounts.permissions import Permission
from cloud.console.i18n import N_
from cloud.console.nav import register_nav
from cloud.console.templating import page_router
from cloud.property import import_page, people_pages, space_pages, tree_pages

router = page_router()
for module in (tree_pages, people_pages, space_pages, import_page):
    router.include_router(module.router)

register_nav("property", N_("Property"), "/property", permission=Permission.SITES_READ, order=20)
register_nav("people", N_("People"), "/people", permission=Permission.PEOPLE_READ, order=30)
