"""Passwords: argon2id hashes, checked off the event loop, and a humane policy for new ones.

Hashing takes tens of milliseconds of CPU and 64 MiB on purpose; run on the event loop it would
stall every other request (and ingest) for that long, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from cloud.kit.errors import InvalidInput

MIN_LENGTH = 10
# argon2 hashes the whole input: a megabyte "password" would be a cheap way to burn our CPU.
MAX_LENGTH = 256

# One-time set-up codes: no 0/O, 1/I/L to misread from paper; 10 of 31 symbols is ~50 bits,
# plenty behind argon2 and the lockout.
SETUP_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
SETUP_CODE_LENGTH = 10

# argon2id with the library's recommended parameters (about 0.1-0.3 s and 64 MiB a hash here). The
# test suite, which makes and checks hundreds of passwords, sets GATEHOUSE_TEST_CHEAP_HASHES=1 for
# argon2-cffi's CHEAPEST profile: the same code path and hash format, without the cost. Never set it
# on a real install (each hash records its parameters, so a later real run rehashes at sign-in).
CHEAP_HASHES_ENV = "GATEHOUSE_TEST_CHEAP_HASHES"
_hasher = (
    PasswordHasher.from_parameters(profiles.CHEAPEST)
    if os.environ.get(CHEAP_HASHES_ENV) == "1"
    else PasswordHasher()
)


@dataclass(frozen=True, slots=True)
class Checked:
    ok: bool
    # A new hash of the same password when the stored one used older parameters: store it.
    rehashed: str | None = None


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored: str, password: str) -> Checked:
    """Does ``password`` match ``stored``? With a fresh hash when the parameters have changed."""
    return await asyncio.to_thread(_verify, stored, password)


async def dummy_verify(password: str) -> None:
    """Spend what a real check spends, for a name that has no account: the time of the answer
    then does not tell which usernames exist."""
    await asyncio.to_thread(_verify, _dummy_hash(), password)


def _verify(stored: str, password: str) -> Checked:
    if len(password) > MAX_LENGTH:
        return Checked(False)
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return Checked(False)
    if _hasher.check_needs_rehash(stored):
        return Checked(True, _hasher.hash(password))
    return Checked(True)


@cache
def _dummy_hash() -> str:
    return _hasher.hash("no account has this password")


def check_policy(password: str, *, field: str = "password", username: str = "") -> None:
    """InvalidInput naming ``field`` unless ``password`` is acceptable as a new password: at least
    10 characters, not all of one kind (all digits, all letters...), not the username. Long
    passphrases of plain words pass: length matters more than symbols."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(
            f"{field}: at least {MIN_LENGTH} characters, please (this one has {len(password)})"
        )
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"{field}: at most {MAX_LENGTH} characters")
    if password.strip() != password:
        raise InvalidInput(f"{field}: no spaces at the start or end (they are easy to mistype)")
    if username and username.lower() in password.lower():
        raise InvalidInput(f"{field}: must not contain the username")
    if len(set(password)) < 4:
        raise InvalidInput(f"{field}: uses too few different characters")
    kinds = {_kind(c) for c in password}
    if len(kinds) < 2 and len(password) < 20:
        raise InvalidInput(
            f"{field}: mix at least two kinds of characters (lower case, upper case, digits, symbols), "
            "or use a passphrase of 20 characters or more"
        )


def _kind(c: str) -> str:
    if c.isdigit():
        return "digit"
    if c.isupper():
        return "upper"
    if c.islower():
        return "lower"
    if c.isalpha():
        return "letter"  # scripts without case, such as Chinese
    return "other"


def new_setup_code() -> str:
    """A one-time code to hand a resident, shown as two groups of five: ``K7P2Q-9XQ4M``."""
    raw = "".join(secrets.choice(SETUP_CODE_ALPHABET) for _ in range(SETUP_CODE_LENGTH))
    return f"{raw[:5]}-{raw[5:]}"


def normalised_setup_code(code: str) -> str:
    """The code as it is hashed: upper case, without the dash and spaces people type or not."""
    return re.sub(r"[\s-]", "", code).upper()
