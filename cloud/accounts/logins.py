"""How sign-in names are written down, so that one person cannot end up with two spellings:
staff usernames in lower case, residents' phone numbers as digits (and a leading +), their email
addresses in lower case."""

from __future__ import annotations

import re

from cloud.kit.errors import InvalidInput

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{1,63}$"
_USERNAME = re.compile(USERNAME_PATTERN)
# Deliberately loose (the mail server is the judge), but no spaces or control characters.
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
_PHONE = re.compile(r"^\+?\d{5,20}$")
# What people type between a phone number's digits.
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")


def username(value: str, *, field: str = "username") -> str:
    name = value.strip().lower()
    if not _USERNAME.match(name):
        raise InvalidInput(
            f"{field}: {value!r} is not a username: 2 to 64 letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit"
        )
    return name


def username_or_none(value: str) -> str | None:
    """As ``username``, None for what cannot be one (sign-in answers it as a wrong one, without
    asking the database)."""
    try:
        return username(value)
    except InvalidInput:
        return None


def email(value: str, *, field: str = "email") -> str:
    """An email address in lower case; '' stays '' (no address)."""
    address = value.strip().lower()
    if address and not _EMAIL.match(address):
        raise InvalidInput(f"{field}: {value!r} is not an email address")
    return address


def phone(value: str, *, field: str = "phone") -> str:
    """A phone number as digits with an optional leading +; '' stays ''."""
    number = _PHONE_PUNCTUATION.sub("", value.strip())
    if number and not _PHONE.match(number):
        raise InvalidInput(f"{field}: {value!r} is not a phone number (5 to 20 digits, optionally +)")
    return number


def resident_login(value: str, *, field: str = "login") -> str:
    """A resident's login: their email (lower case) or phone number (digits, +)."""
    if "@" in value:
        return email(value, field=field)
    number = phone(value, field=field)
    if not number:
        raise InvalidInput(f"{field}: give the resident's phone number or email address")
    return number


def resident_login_or_none(value: str) -> str | None:
    """As ``resident_login``, None for what cannot be a login (sign-in answers it as a wrong one)."""
    try:
        return resident_login(value)
    except InvalidInput:
        return None
