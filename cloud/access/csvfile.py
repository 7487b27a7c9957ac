"""Access data from CSV files: every row checked with the protocol's own models, every problem
reported with its row and column, so that a file is taken whole or not at all.

The file is UTF-8 (a byte-order mark, as spreadsheets write it, is fine) with a header row naming
the columns in any order; names are matched without regard to case or surrounding spaces. Rows are
numbered as a spreadsheet shows them: the header is row 1, the first credential row 2. Cells are
stripped of surrounding spaces; an empty row is skipped.

Times (``valid_from``, ``valid_until``) are ISO 8601: a date (``2025-01-31``) or a date and time
(``2025-01-31T08:00`` or ``2025-01-31 08:00:00``), in UTC unless the value carries an offset
(``+08:00``, ``Z``). A date alone is the start of that day for ``valid_from`` and the end of it
(23:59:59.999) for ``valid_until``: "valid until the 31st" includes the 31st.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from cloud.kit.errors import InvalidInput
from protocols.access import AccessLevel, Credential

MAX_LISTED_ERRORS = 1000
# A 100,000-credential file is ~15 MB.
MAX_FILE_BYTES = 64 * 1024 * 1024
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_ID_MAX = 64

CREDENTIAL_COLUMNS = (
    "id",
    "card",
    "facility",
    "holder",
    "levels",
    "valid_from",
    "valid_until",
    "pin",
    "suspended",
    "offline_ok",
    "clock_free",
    "first_person_in",
    "antipassback_exempt",
)
CREDENTIAL_REQUIRED = ("id", "card")
_FLAGS = ("suspended", "offline_ok", "clock_free", "first_person_in", "antipassback_exempt")
LEVEL_COLUMNS = ("id", "name", "doors", "schedule")
LEVEL_REQUIRED = ("id", "doors")

# Where a Credential field comes from in the file.
_CREDENTIAL_COLUMN_OF = {"valid_from_ms": "valid_from", "valid_until_ms": "valid_until", "pin_hash": "pin"}


@dataclass(frozen=True, slots=True)
class RowError:
    row: int | None  # as a spreadsheet numbers it (header = 1); None: the file as a whole
    column: str | None
    message: str


class InvalidRows(InvalidInput):
    """A file (or request) with problems: every problem found, none of it stored."""

    code = "invalid_rows"

    def __init__(self, errors: Iterable[RowError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.row or 0, e.column or ""))
        n = len(self.errors)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} found; nothing was imported")

    def payload(self) -> dict[str, Any]:
        return {
            **super().payload(),
            "error_count": len(self.errors),
            "errors": [asdict(e) for e in self.errors[:MAX_LISTED_ERRORS]],
        }


@dataclass(frozen=True, slots=True)
class Row:
    number: int
    cells: dict[str, str]


def read_rows(data: bytes, columns: tuple[str, ...], required: tuple[str, ...]) -> list[Row]:
    """The file's data rows, cells by column name. Raises InvalidRows for a file that cannot be read
    as such (not UTF-8, no header, unknown or missing columns, a row with more cells than columns)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidRows([RowError(None, None, f"the file is not UTF-8 text (byte {e.start})")]) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    errors: list[RowError] = []
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise InvalidRows([RowError(None, None, "the file is empty: the first row names the columns")])
        names = [h.strip().lower() for h in header]
        for i, name in enumerate(names):
            if name not in columns:
                errors.append(
                    RowError(1, name or f"#{i + 1}", f"unknown column (known: {', '.join(columns)})")
                )
            elif names.index(name) != i:
                errors.append(RowError(1, name, "the column appears twice"))
        errors += [RowError(1, c, "missing column") for c in required if c not in names]
        if errors:
            raise InvalidRows(errors)
        rows = []
        for number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(names) and any(c.strip() for c in cells[len(names) :]):
                errors.append(
                    RowError(number, None, f"{len(cells)} cells, but the header names {len(names)}")
                )
                continue
            values = {name: (cells[i].strip() if i < len(cells) else "") for i, name in enumerate(names)}
            rows.append(Row(number, values))
    except csv.Error as e:
        errors.append(RowError(reader.line_num, None, f"not readable as CSV: {e}"))
    if errors:
        raise InvalidRows(errors)
    return rows


def parse_bool(text: str) -> bool:
    value = text.lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not true/false, 1/0 or yes/no")


def parse_time_ms(text: str, *, end_of_day: bool = False) -> int | None:
    """Milliseconds since the epoch (UTC) of an ISO date or date and time; None for an empty cell."""
    if not text:
        return None
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            moment = datetime(d.year, d.month, d.day, tzinfo=UTC)
            if end_of_day:
                moment += timedelta(days=1) - _MS
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO date (2025-01-31) or date and time (2025-01-31T08:00, "
            "UTC unless it has an offset such as +08:00)"
        ) from None
    return (moment - _EPOCH) // _MS


def split_list(text: str) -> list[str]:
    """``a; b;;c`` -> ``["a", "b", "c"]``, each once, in order."""
    return list(dict.fromkeys(p.strip() for p in text.split(";") if p.strip()))


def _model_errors(
    number: int, err: ValidationError, column_of: dict[str, str], whole: str
) -> Iterator[RowError]:
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        column = column_of.get(field, field) if field else whole
        message = str(e["msg"]).removeprefix("Value error, ")
        yield RowError(number, column, message)


@dataclass(frozen=True, slots=True)
class ParsedCredentials:
    credentials: list[Credential]  # pin_hash not yet made: see ``pins``
    rows: dict[str, int]  # credential id -> its row
    pins: dict[str, str]  # credential id -> the PIN in the file (to be hashed, never stored)


def parse_credentials(data: bytes) -> ParsedCredentials:
    """Every row as a Credential; InvalidRows with every problem found otherwise."""
    credentials: list[Credential] = []
    rows: dict[str, int] = {}
    pins: dict[str, str] = {}
    errors: list[RowError] = []
    for row in read_rows(data, CREDENTIAL_COLUMNS, CREDENTIAL_REQUIRED):
        c = row.cells
        problems: list[RowError] = []
        fields: dict[str, Any] = {"id": c["id"], "card": c["card"], "holder": c.get("holder", "")}
        cid = c["id"]
        if not cid:
            problems.append(RowError(row.number, "id", "empty: every credential needs an id"))
        elif len(cid) > _ID_MAX:
            problems.append(RowError(row.number, "id", f"longer than {_ID_MAX} characters"))
        elif cid in rows:
            problems.append(RowError(row.number, "id", f"{cid!r} is also on row {rows[cid]}"))
        if not (c["card"].isascii() and c["card"].isdigit() and len(c["card"]) <= 20):
            problems.append(
                RowError(row.number, "card", f"{c['card']!r} is not a card number (1 to 20 digits)")
            )
        facility = c.get("facility", "")
        if facility:
            if facility.isascii() and facility.isdigit():
                fields["facility"] = int(facility)
            else:
                problems.append(RowError(row.number, "facility", f"{facility!r} is not a whole number"))
        fields["levels"] = split_list(c.get("levels", ""))
        for column, key, end in (
            ("valid_from", "valid_from_ms", False),
            ("valid_until", "valid_until_ms", True),
        ):
            try:
                fields[key] = parse_time_ms(c.get(column, ""), end_of_day=end)
            except ValueError as e:
                problems.append(RowError(row.number, column, str(e)))
        for flag in _FLAGS:
            try:
                fields[flag] = parse_bool(c.get(flag, ""))
            except ValueError as e:
                problems.append(RowError(row.number, flag, str(e)))
        pin = c.get("pin", "")
        if pin and not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
            problems.append(RowError(row.number, "pin", "a PIN is 4 to 12 digits"))
        if not problems:
            try:
                credential = Credential(**fields)
            except ValidationError as e:
                problems.extend(_model_errors(row.number, e, _CREDENTIAL_COLUMN_OF, "valid_until"))
            else:
                credentials.append(credential)
                if pin:
                    pins[cid] = pin
        if cid and cid not in rows:
            rows[cid] = row.number
        errors += problems
    if errors:
        raise InvalidRows(errors)
    return ParsedCredentials(credentials, rows, pins)


@dataclass(frozen=True, slots=True)
class ParsedLevels:
    levels: list[AccessLevel]
    rows: dict[str, int]  # level id -> its row


def parse_levels(data: bytes) -> ParsedLevels:
    levels: list[AccessLevel] = []
    rows: dict[str, int] = {}
    errors: list[RowError] = []
    for row in read_rows(data, LEVEL_COLUMNS, LEVEL_REQUIRED):
        c = row.cells
        lid = c["id"]
        problems: list[RowError] = []
        if not lid:
            problems.append(RowError(row.number, "id", "empty: every level needs an id"))
        elif lid in rows:
            problems.append(RowError(row.number, "id", f"{lid!r} is also on row {rows[lid]}"))
        if not problems:
            try:
                level = AccessLevel(
                    id=lid,
                    name=c.get("name", ""),
                    doors=split_list(c["doors"]),
                    schedule=c.get("schedule", ""),
                )
            except ValidationError as e:
                problems.extend(_model_errors(row.number, e, {}, "id"))
            else:
                levels.append(level)
        if lid and lid not in rows:
            rows[lid] = row.number
        errors += problems
    if errors:
        raise InvalidRows(errors)
    return ParsedLevels(levels, rows)
