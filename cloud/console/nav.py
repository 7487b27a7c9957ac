"""The console's navigation: each module registers its entries; a principal sees those whose
permission it holds (somewhere: a page then narrows to the sites it may see)."""

from __future__ import annotations

from dataclasses import dataclass

from cloud.accounts.permissions import Permission, Principal


@dataclass(frozen=True, slots=True)
class NavItem:
    key: str
    label: str  # an English msgid, marked with N_() where registered and translated when shown
    href: str
    permission: Permission | None  # None: every staff principal
    order: int

    def active(self, path: str) -> bool:
        """Highlighted on its own page and the pages under it (``/events`` for ``/events?...``)."""
        if self.href == "/":
            return path == "/"
        return path == self.href or path.startswith(self.href.rstrip("/") + "/")


_ITEMS: dict[str, NavItem] = {}


def register_nav(
    key: str, label: str, href: str, *, permission: Permission | None = None, order: int = 100
) -> NavItem:
    """Add an entry to the navigation (at import of the module's pages). ``order``: lower first;
    this issue's entries use 10 (dashboard) and 80 (events). Registering a key again replaces it."""
    item = NavItem(key, label, href, permission, order)
    _ITEMS[key] = item
    return item


def visible_nav(principal: Principal | None) -> list[NavItem]:
    if principal is None:
        return []
    items = [i for i in _ITEMS.values() if i.permission is None or principal.can(i.permission)]
    return sorted(items, key=lambda i: (i.order, i.key))
