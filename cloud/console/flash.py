"""Flash messages: one line of news shown on the next page, after a form's redirect ("Unit 1203
saved"). Carried in a short-lived cookie, read and cleared by the next ``render``.

The cookie is not signed: it holds only text the page shows, escaped like any other text, and a
site that could set our cookies could show the user nothing worse than a misleading line.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

FLASH_COOKIE = "gh_flash"
Level = Literal["info", "success", "warning", "error"]
LEVELS: tuple[Level, ...] = ("info", "success", "warning", "error")
MAX_MESSAGES = 5
MAX_LENGTH = 500


@dataclass(frozen=True, slots=True)
class Flash:
    level: Level
    text: str


def flash(response: Response, request: Request, text: str, level: Level = "success") -> None:
    """Show ``text`` (already in the user's language) on the next page this browser renders.
    Messages set earlier and not yet shown (two redirects in a row) are kept."""
    pending = [(f.level, f.text) for f in pending_flashes(request)]
    pending.append((level, text[:MAX_LENGTH]))
    payload = json.dumps(pending[-MAX_MESSAGES:], ensure_ascii=False).encode()
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(payload).decode().rstrip("="),
        max_age=120,
        path="/",
        httponly=True,
        samesite="lax",
    )


def pending_flashes(request: Request) -> list[Flash]:
    """The messages waiting in the request's cookie (malformed ones are dropped)."""
    raw = request.cookies.get(FLASH_COOKIE, "")
    if not raw:
        return []
    try:
        items = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        return []
    if not isinstance(items, list):
        return []
    return [
        Flash(level, text[:MAX_LENGTH])
        for item in items[:MAX_MESSAGES]
        if isinstance(item, list) and len(item) == 2
        for level, text in [item]
        if level in LEVELS and isinstance(text, str)
    ]


def clear_flashes(response: Response) -> None:
    response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="lax")
