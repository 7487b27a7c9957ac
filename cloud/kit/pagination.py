"""Opaque cursors for keyset paging: the caller hands back what it was given and never builds one."""

import base64
import binascii

from cloud.kit.errors import InvalidInput

_PREFIX = b"id:"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(_PREFIX + str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor stands for; InvalidCursor (422) for anything this API did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    digits = raw[len(_PREFIX) :]
    if not raw.startswith(_PREFIX) or not digits.isdigit() or len(digits) > 19:
        raise InvalidCursor("cursor: not a cursor this API issued (pass next_cursor back unchanged)")
    return int(digits)
