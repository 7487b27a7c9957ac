"""What the console calls the property model's stored values (a unit's use, an occupant's role, a
parking space's, common area's or meter's kind) and an import's counts: English msgids, marked for
extraction here and translated when a page is rendered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from starlette.responses import Response

from cloud.accounts.permissions import Principal
from cloud.console.formkit import NO_MISTAKE, Mistake, render_form
from cloud.console.i18n import N_, language_of, translate

LABELS: Mapping[str, Mapping[str, str]] = {
    "use": {
        "residential": N_("Residential"),
        "commercial": N_("Commercial"),
        "office": N_("Office"),
        "storage": N_("Storage"),
        "parking": N_("Parking"),
        "other": N_("Other"),
    },
    "role": {"owner": N_("Owner"), "tenant": N_("Tenant"), "resident": N_("Resident")},
    "parking": {
        "owned": N_("Owned"),
        "rented": N_("Rented"),
        "visitor": N_("Visitor"),
        "reserved": N_("Reserved"),
    },
    "area": {
        "lobby": N_("Lobby"),
        "corridor": N_("Corridor"),
        "garden": N_("Garden"),
        "plant_room": N_("Plant room"),
        "clubhouse": N_("Clubhouse"),
        "roof": N_("Roof"),
        "other": N_("Other"),
    },
    "meter": {
        "water": N_("Water"),
        "electricity": N_("Electricity"),
        "gas": N_("Gas"),
        "heat": N_("Heat"),
    },
    "count": {
        "buildings_created": N_("Buildings created"),
        "floors_created": N_("Floors created"),
        "occupancies_created": N_("Occupancies created"),
        "occupancies_updated": N_("Occupancies updated"),
        "occupancies_unchanged": N_("Occupancies unchanged"),
    },
}


def labels(lang: str) -> dict[str, dict[str, str]]:
    """LABELS in ``lang``, for a template (``labels.use[unit.use]``)."""
    return {name: {k: translate(lang, v) for k, v in table.items()} for name, table in LABELS.items()}


def render_page(
    request: Request,
    principal: Principal,
    template: str,
    context: Mapping[str, Any],
    mistake: Mistake = NO_MISTAKE,
) -> Response:
    """A property page (``formkit.render_form``) with ``labels`` in the user's language."""
    lang = language_of(request, principal)
    return render_form(request, principal, template, {"labels": labels(lang), **context}, mistake)
