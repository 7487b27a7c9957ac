"""Password hashes in Mosquitto's password-file formats.

``$7$<iterations>$<base64 salt>$<base64 hash>`` is what ``mosquitto_passwd`` writes since 2.0:
PBKDF2-HMAC-SHA512 over the UTF-8 password, a 12-byte random salt, a 64-byte derived key, standard
base64 with padding. ``$6$<base64 salt>$<base64 hash>`` is the older format: one SHA-512 over the
password followed by the salt. Both were checked against the installed ``mosquitto_passwd`` 2.0.11
(its default is only 101 iterations; we use more) and against a running Mosquitto.

The cloud stores the ``$7$`` hash of each gateway's password in its registry; the same string goes
into Mosquitto's password file and is what the embedded broker verifies against.
"""

import base64
import binascii
import hashlib
import hmac
import secrets

SALT_BYTES = 12
HASH_BYTES = 64
DEFAULT_ITERATIONS = 20000
# A hash from a file or a database is checked before it is trusted with CPU time.
MAX_ITERATIONS = 10_000_000


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """A ``$7$`` (PBKDF2-SHA512) hash of ``password`` that Mosquitto 2.0 accepts in its password file."""
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be between 1 and {MAX_ITERATIONS}, not {iterations}")
    salt = secrets.token_bytes(SALT_BYTES)
    derived = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, HASH_BYTES)
    return f"$7${iterations}${_b64(salt)}${_b64(derived)}"


def verify_password(password: str, hashed: str) -> bool:
    """True if ``password`` matches a ``$7$`` or ``$6$`` hash; False for a mismatch or a malformed hash."""
    parts = hashed.split("$")
    # "$7$it$salt$hash" splits to ["", "7", it, salt, hash]; "$6$salt$hash" to ["", "6", salt, hash].
    if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
        if not parts[2].isdigit():
            return False
        iterations = int(parts[2])
        salt, expected = _unb64(parts[3]), _unb64(parts[4])
        if not 1 <= iterations <= MAX_ITERATIONS or not salt or not expected:
            return False
        derived = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, len(expected))
        return hmac.compare_digest(derived, expected)
    if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
        salt, expected = _unb64(parts[2]), _unb64(parts[3])
        if not salt or not expected:
            return False
        return hmac.compare_digest(hashlib.sha512(password.encode("utf-8") + salt).digest(), expected)
    return False


def is_supported_hash(hashed: str) -> bool:
    """True if ``hashed`` is well-formed ``$7$`` or ``$6$`` text (it says nothing of any password)."""
    parts = hashed.split("$")
    if len(parts) == 5 and parts[:2] == ["", "7"]:
        return parts[2].isdigit() and 1 <= int(parts[2]) <= MAX_ITERATIONS and all(map(_unb64, parts[3:]))
    if len(parts) == 4 and parts[:2] == ["", "6"]:
        return all(map(_unb64, parts[2:]))
    return False


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return b""
