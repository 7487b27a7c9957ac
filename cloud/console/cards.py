"""The dashboard's cards: each module registers the cards it adds to ``/``; a principal sees
those whose permission it holds.

A card is a ``render(session, principal)`` coroutine returning the context of its template (or
None to stay hidden, e.g. nothing to report), and a template, by default
``cards/<key>.html``, which extends nothing: it is included in the dashboard's grid inside a
``<section class="card">``. Every card template also gets ``tz`` (the company's zone) and
``lang``. Keep a card to one or two indexed queries: the dashboard renders every card on each
visit (the benchmark asks p95 ≤ 150 ms for the whole page).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.permissions import Permission, Principal

CardRender = Callable[[AsyncSession, Principal], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class Card:
    key: str
    order: int
    permission: Permission | None  # None: every staff principal
    render: CardRender
    template: str
    title: str  # an English msgid (marked with N_()), translated when shown
    wide: bool = False  # spans the grid's full width (a chart)


_CARDS: dict[str, Card] = {}


def register_card(
    key: str,
    order: int,
    permission: Permission | None,
    render: CardRender,
    *,
    title: str,
    template: str | None = None,
    wide: bool = False,
) -> Card:
    """Add a card to the dashboard. ``order``: lower first (this issue's cards use 10-30;
    alerts, work orders, requests and arrears may take 40 and up). Registering a key again
    replaces the card (a module reloaded in a test)."""
    card = Card(key, order, permission, render, template or f"cards/{key}.html", title, wide)
    _CARDS[key] = card
    return card


def card(
    key: str,
    order: int,
    permission: Permission | None,
    *,
    title: str,
    template: str | None = None,
    wide: bool = False,
) -> Callable[[CardRender], CardRender]:
    """``register_card`` as a decorator of the render function."""

    def decorate(render: CardRender) -> CardRender:
        register_card(key, order, permission, render, title=title, template=template, wide=wide)
        return render

    return decorate


def visible_cards(principal: Principal) -> list[Card]:
    cards = [c for c in _CARDS.values() if c.permission is None or principal.can(c.permission)]
    return sorted(cards, key=lambda c: (c.order, c.key))
