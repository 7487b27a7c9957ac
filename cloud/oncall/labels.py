"""What the console calls the on-call module's stored values (skills, tracks, target types,
channels): English msgids marked for extraction here, translated when a page is rendered."""

from __future__ import annotations

from collections.abc import Mapping

from cloud.console.i18n import N_, translate

LABELS: Mapping[str, Mapping[str, str]] = {
    "skill": {
        "electrical": N_("Electrical"),
        "hvac": N_("HVAC"),
        "plumbing": N_("Plumbing"),
        "lifts": N_("Lifts"),
        "security": N_("Security"),
        "general": N_("General"),
    },
    "track": {"life_safety": N_("Life safety"), "maintenance": N_("Maintenance")},
    "target": {
        "oncall": N_("Whoever is on call"),
        "lead": N_("The rota's team lead"),
        "role": N_("Everyone with a role"),
        "user": N_("A person"),
    },
    "channel": {"email": N_("Email"), "sms": N_("Text message (SMS)")},
}


def labels(lang: str) -> dict[str, dict[str, str]]:
    """LABELS in ``lang``, for a template (``labels.skill[rota.skill]``)."""
    return {name: {k: translate(lang, v) for k, v in table.items()} for name, table in LABELS.items()}
