"""The console's static files (``cloud/console/static/``), served at ``/static``.

Pages link them through ``static_url(name)``, which adds a hash of the file's content
(``/static/console.css?v=3f2a9c01``): such a URL is cached by the browser for a year without
asking again, and a changed file gets a new URL. A URL without the hash is revalidated each time
(ETag), so an old bookmark never serves a stale file.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@cache
def _version(name: str) -> str:
    path = STATIC_DIR / name
    if not path.is_file() or STATIC_DIR not in path.resolve().parents:
        raise ValueError(f"static file {name!r}: not in {STATIC_DIR}")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def static_url(name: str) -> str:
    """The cache-busting URL of a static file, e.g. ``/static/console.css?v=3f2a9c01d2``."""
    return f"{STATIC_PREFIX}/{name}?v={_version(name)}"


class ConsoleStatic(StaticFiles):
    """StaticFiles with cache headers: a year for a hashed URL, revalidation otherwise."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        query = scope.get("query_string", b"")
        response.headers["Cache-Control"] = IMMUTABLE if b"v=" in query else REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def static_app() -> ConsoleStatic:
    return ConsoleStatic(directory=STATIC_DIR)
