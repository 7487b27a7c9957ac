"""The console's languages: gettext catalogues (``translations/<lang>/LC_MESSAGES/messages.po``),
compiled in memory when first used, and the choice of language for a request.

Source strings are English (the msgid); Chinese is what a user sees unless they chose English
(their account's ``language``) or switched with the ``lang`` cookie (``/language?to=en``). The
``.po`` files are compiled here with Babel rather than at build time, so an install needs no build
step and a corrected translation takes effect at the next start.

Re-extracting the strings after changing templates or code (from the repository root)::

    pybabel extract -F cloud/console/babel.cfg -k N_ -k translate:2 --no-location --sort-output \
        -o cloud/console/translations/messages.pot .
    pybabel update -i cloud/console/translations/messages.pot -d cloud/console/translations

then translate the new ``msgstr`` of ``zh`` (``en`` stays empty: the msgid is the English text).
``tests/cloud/test_console_i18n.py`` fails while a string in a template or page has no Chinese.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from fastapi import Request

from cloud.accounts.permissions import Principal

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"
LANG_COOKIE = "lang"
# What each language is called in its own words, for the switch in the page header.
LANGUAGE_NAMES = {"zh": "中文", "en": "English"}
# The locale Babel formats numbers with, per language.
LOCALES = {"zh": "zh_Hans_CN", "en": "en_GB"}


def N_(message: str) -> str:
    """Marks a string for extraction where it is defined (a navigation label, a card title)
    and translated later, where it is shown."""
    return message


@cache
def translations(lang: str) -> Translations:
    """The compiled catalogue of ``lang`` (one of LANGUAGES), compiled once per process."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: one of {', '.join(LANGUAGES)} expected")
    folder = TRANSLATIONS_DIR / lang / "LC_MESSAGES"
    with (folder / "messages.po").open("rb") as f:
        catalog = read_po(f, locale=lang)
    # A module may keep its own catalogue beside the shared one (``alerts.po``, ``oncall.po``):
    # merged in name order, so two modules never edit one file at the same time.
    for extra in sorted(folder.glob("*.po")):
        if extra.name == "messages.po":
            continue
        with extra.open("rb") as f:
            for message in read_po(f, locale=lang):
                if message.id and message.string:
                    catalog[message.id] = message
    buffer = io.BytesIO()
    # Fuzzy entries are guesses by `pybabel update`, not translations: leave them out.
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(fp=buffer, domain="messages")


def translate(lang: str, message: str) -> str:
    """``message`` in ``lang``: for text made in Python (errors, flash messages)."""
    return translations(lang).gettext(message)


def language_of(request: Request, principal: Principal | None) -> str:
    """The language to answer in: the ``lang`` cookie, else the user's own, else Chinese."""
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    if principal is not None and principal.language in LANGUAGES:
        return principal.language
    return DEFAULT_LANGUAGE
