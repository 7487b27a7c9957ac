"""The console's catalogues: every string the console's templates and pages mark for translation
has its Chinese, both catalogues compile, and the language is chosen as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po
from starlette.requests import Request

from cloud.accounts.permissions import PLATFORM, Principal
from cloud.console import i18n

CONSOLE = Path(__file__).resolve().parents[2] / "cloud" / "console"


def extracted_messages() -> set[str]:
    """What ``pybabel extract`` (cloud/console/babel.cfg, ``-k N_ -k translate:2``) finds in the
    console's own code and templates."""
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options_map = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {**DEFAULT_KEYWORDS, "N_": None, "translate": (2,)}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        CONSOLE, method_map, options_map, keywords=keywords
    ):
        found.add(message[0] if isinstance(message, tuple) else message)
    return {m for m in found if m}


def catalogue(lang: str) -> dict[str, object]:
    """Every catalogue of ``lang`` merged, as cloud/console/i18n.py merges them (messages.po and
    the modules' own, e.g. alerts.po)."""
    out: dict[str, object] = {}
    for path in sorted((CONSOLE / "translations" / lang / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as f:
            catalog = read_po(f, locale=lang)
        for m in catalog:
            if m.id and (m.string or (m.id[0] if isinstance(m.id, tuple) else m.id) not in out):
                out[m.id[0] if isinstance(m.id, tuple) else m.id] = m.string
    return out


def test_every_console_string_has_its_chinese() -> None:
    messages = extracted_messages()
    zh = catalogue("zh")
    missing = sorted(m for m in messages if not zh.get(m) or zh[m] in ("", ("",)))
    assert not missing, f"add these to translations/zh/LC_MESSAGES/messages.po: {missing}"
    assert "Dashboard" in messages and "Today's events" in messages


def test_both_catalogues_compile_and_translate() -> None:
    zh = i18n.translations("zh")
    en = i18n.translations("en")
    assert zh.gettext("Dashboard") == "首页"
    assert en.gettext("Dashboard") == "Dashboard"
    assert zh.ngettext("site", "sites", 3) == "个项目"
    assert en.ngettext("site", "sites", 3) == "sites"
    with pytest.raises(ValueError, match="language"):
        i18n.translations("fr")


def _request(cookie: str = "") -> Request:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


def test_the_language_is_the_cookies_then_the_users_then_chinese() -> None:
    english_user = Principal(kind="user", id=1, name="x", company_id=1, language="en")
    assert i18n.language_of(_request(), None) == "zh"
    assert i18n.language_of(_request(), PLATFORM) == "zh"
    assert i18n.language_of(_request(), english_user) == "en"
    assert i18n.language_of(_request("lang=zh"), english_user) == "zh"
    assert i18n.language_of(_request("lang=en"), None) == "en"
    assert i18n.language_of(_request("lang=klingon"), english_user) == "en"
