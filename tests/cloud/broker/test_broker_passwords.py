import base64
import re

import pytest

from cloud.broker.passwords import SALT_BYTES, hash_password, is_supported_hash, verify_password

# Written by the real `mosquitto_passwd` 2.0.11 (`-b` for $7$, `-H sha512 -b` for $6$).
MOSQUITTO_PASSWD_7 = (
    "$7$101$TXM304dsHMFO7ztR$P0YLmlSyHSFNsrN4fznX1mFLEwvbULQ0NiTPWOWoi8+1VG1Amk7Nhlo6MieKvJyLPESJNoRQ"
    "VjzV9se6yaOl1g=="
)  # password "s3cret"
MOSQUITTO_PASSWD_6 = (
    "$6$nE/v9bdmxQEJABHg$zUE7j8mK8FmmnKdWe5mA5wX10q1D9rqzEYoX1UmNLyGdyiD03GoLiv/ECX1KFR9QXDR3zDhyWWgdY9Q+"
    "JyxpgA=="
)  # password "hunter2"


def test_hash_has_mosquitto_2_layout() -> None:
    hashed = hash_password("correct horse", iterations=1000)
    m = re.fullmatch(r"\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)", hashed)
    assert m is not None, hashed
    assert int(m.group(1)) == 1000
    assert len(base64.b64decode(m.group(2))) == SALT_BYTES == 12
    assert len(base64.b64decode(m.group(3))) == 64


def test_default_iterations_and_fresh_salt() -> None:
    a, b = hash_password("pw"), hash_password("pw")
    assert a.startswith("$7$20000$")
    assert a != b  # a new salt each time
    assert verify_password("pw", a) and verify_password("pw", b)


def test_verify_round_trip() -> None:
    hashed = hash_password("pässwörd ✓", iterations=500)
    assert verify_password("pässwörd ✓", hashed)
    assert not verify_password("passwörd ✓", hashed)
    assert not verify_password("", hashed)


def test_verifies_hashes_written_by_mosquitto_passwd() -> None:
    assert verify_password("s3cret", MOSQUITTO_PASSWD_7)
    assert not verify_password("s3cret!", MOSQUITTO_PASSWD_7)
    assert verify_password("hunter2", MOSQUITTO_PASSWD_6)
    assert not verify_password("hunter3", MOSQUITTO_PASSWD_6)


@pytest.mark.parametrize(
    "hashed",
    [
        "",
        "plain",
        "$7$",
        "$7$abc$c2FsdA==$aGFzaA==",
        "$7$0$c2FsdA==$aGFzaA==",
        "$7$99999999999$c2FsdA==$aGFzaA==",
        "$7$10$!!!$aGFzaA==",
        "$7$10$c2FsdA==$",
        "$7$10$c2FsdA==$aGFzaA==$extra",
        "$6$c2FsdA==",
        "$6$$aGFzaA==",
        "$5$rounds=5000$salt$hash",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        "7$10$c2FsdA==$aGFzaA==",
    ],
)
def test_malformed_hashes_verify_nothing(hashed: str) -> None:
    assert not verify_password("anything", hashed)
    assert not is_supported_hash(hashed)


def test_supported_hashes() -> None:
    assert is_supported_hash(hash_password("x", iterations=1))
    assert is_supported_hash(MOSQUITTO_PASSWD_7)
    assert is_supported_hash(MOSQUITTO_PASSWD_6)


@pytest.mark.parametrize("iterations", [0, -1, 10_000_001])
def test_iterations_are_bounded(iterations: int) -> None:
    with pytest.raises(ValueError):
        hash_password("pw", iterations=iterations)
