"""Spreadsheets in and out: reading a CSV or .xlsx file into rows of named cells, and writing rows
back as CSV or .xlsx, for the property imports and exports.

Reading:

- the file's kind is told by its content (an .xlsx is a zip; an old binary .xls is refused with a
  hint), not only by its name;
- CSV text is UTF-8 (with or without the byte-order mark Excel writes), or GB18030 (what Chinese
  Excel writes when saving "CSV"; a superset of GBK and GB2312), or UTF-16 with its BOM (Excel's
  "Unicode text", tab-separated); comma or tab separated;
- the header is the first row that names at least two known columns (a title row above it is
  fine); headers match in Chinese or English, whatever the case, spaces or a unit in brackets
  (``建筑面积(㎡)``);
- rows are numbered as the sheet shows them (the header of a plain file is row 1) and cells come as
  stripped text: a number Excel stored as ``1203.0`` reads ``1203``, a date cell ``2024-03-01``.

Writing quotes a text cell that a spreadsheet would run as a formula (``=…``, ``@…``) with a leading
apostrophe in CSV (Excel's own way, dropped again on import), and stores it as text in .xlsx.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import re
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal

from cloud.kit.errors import CloudError, InvalidInput

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ROWS = 50_000
MAX_COLUMNS = 64
MAX_CELL = 2000
HEADER_SEARCH_ROWS = 10

FileFormat = Literal["csv", "xlsx"]
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPE = "text/csv; charset=utf-8"


class FileTooLarge(CloudError):
    status_code = 413
    code = "too_large"


class WrongFileType(InvalidInput):
    code = "wrong_file_type"


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # the English name, as the API and an English export call it
    zh: str  # the Chinese header of an export
    aliases: tuple[str, ...] = ()  # more headers accepted on import
    required: bool = False

    def label(self) -> str:
        return f"{self.zh}/{self.key}"


@dataclass(frozen=True, slots=True)
class Problem:
    row: int | None  # as the sheet numbers it; None: the file as a whole
    column: str | None  # as the file names it
    value: str | None
    message: str


@dataclass(frozen=True, slots=True)
class SheetRow:
    number: int
    cells: dict[str, str]  # column key -> stripped text ("" when empty or absent)


@dataclass(frozen=True, slots=True)
class Sheet:
    rows: list[SheetRow]
    headers: dict[str, str]  # column key -> the header as the file writes it

    def header(self, key: str) -> str:
        return self.headers.get(key, key)


class SheetProblems(InvalidInput):
    """A file that cannot be read as a sheet of these columns (missing columns, not a table)."""

    code = "invalid_file"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in self.problems[:3]))


def _normal(header: str) -> str:
    text = re.sub(r"[\s_\-]+", "", header.strip().lower())
    # A unit in brackets at the end: 建筑面积(㎡), 建筑面积（平方米）, area (m2).
    return re.sub(r"[（(\[【].*?[)）\]】]$", "", text)


def _match_headers(cells: Sequence[str], columns: Sequence[Column]) -> dict[str, int]:
    """Column key -> index in the row, for the cells that name a known column."""
    by_name: dict[str, str] = {}
    for column in columns:
        for name in (column.key, column.zh, *column.aliases):
            by_name.setdefault(_normal(name), column.key)
    found: dict[str, int] = {}
    for i, cell in enumerate(cells):
        key = by_name.get(_normal(cell))
        if key is not None and key not in found:
            found[key] = i
    return found


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        # Excel keeps every number as a double: 1203 comes back as 1203.0, 89.1 as 89.1.
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    text = str(value).strip()
    # The apostrophe our export puts before what a spreadsheet would take for a formula.
    if text.startswith("'") and text[1:2] in ("=", "@", "+", "-"):
        text = text[1:]
    return text


def _decode(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="strict")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as e:
        raise WrongFileType(
            f"file: not text in UTF-8 or GB18030 (byte {e.start}); save the sheet as CSV (UTF-8) or .xlsx"
        ) from None


def _csv_rows(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    text = _decode(data)
    if "\x00" in text:
        raise WrongFileType("file: not a CSV or .xlsx file (it holds binary data)")
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        yield from enumerate(reader, start=1)
    except csv.Error as e:
        raise SheetProblems([Problem(reader.line_num, None, None, f"not readable as CSV: {e}")]) from None


def _xlsx_rows(data: bytes) -> Iterator[tuple[int, list[Any]]]:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises a zoo of errors for a damaged file
        raise WrongFileType(f"file: not a readable .xlsx workbook ({type(e).__name__})") from None
    try:
        sheet = workbook.worksheets[0]
        for number, values in enumerate(sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS), start=1):
            yield number, list(values)
    finally:
        workbook.close()


def file_format(data: bytes, filename: str) -> FileFormat:
    """What the file is, by its first bytes (and its name where they cannot tell)."""
    name = filename.lower()
    if data.startswith(b"PK\x03\x04"):
        return "xlsx"
    if data.startswith(b"\xd0\xcf\x11\xe0") or name.endswith(".xls"):
        raise WrongFileType("file: an old Excel .xls workbook; save it as .xlsx or CSV and import that")
    if name.endswith((".xlsx", ".xlsm")):
        raise WrongFileType("file: named .xlsx but not a workbook (it may be damaged)")
    suffix = name.rsplit(".", 1)[1] if "." in name else ""
    if suffix not in ("", "csv", "txt", "tsv"):
        raise WrongFileType(f"file: a .{suffix} file; import a CSV or .xlsx file")
    return "csv"


def read_sheet(data: bytes, filename: str, columns: Sequence[Column]) -> Sheet:
    """The file's rows under its header. SheetProblems for a file without the required columns;
    WrongFileType, FileTooLarge for a file that is not a sheet or too big."""
    if len(data) > MAX_FILE_BYTES:
        raise FileTooLarge(f"file: over {MAX_FILE_BYTES // (1024 * 1024)} MB; split it")
    if not data.strip():
        raise SheetProblems([Problem(None, None, None, "the file is empty")])
    rows = _xlsx_rows(data) if file_format(data, filename) == "xlsx" else _csv_rows(data)
    header_number, header, found = 0, [], {}
    for number, cells in rows:
        texts = [_cell_text(c) for c in cells]
        matched = _match_headers(texts, columns)
        if len(matched) >= 2:
            header_number, header, found = number, texts, matched
            break
        if number >= HEADER_SEARCH_ROWS:
            break
    missing = [c for c in columns if c.required and c.key not in found]
    if missing:
        where = header_number or 1
        raise SheetProblems(
            [
                Problem(where, c.label(), None, f"missing column {c.label()} (the header names the columns)")
                for c in missing
            ]
        )
    headers = {key: header[i] for key, i in found.items()}
    sheet_rows: list[SheetRow] = []
    problems: list[Problem] = []
    for number, cells in rows:
        texts = [_cell_text(c) for c in cells]
        if not any(texts):
            continue
        if len(sheet_rows) >= MAX_ROWS:
            raise SheetProblems([Problem(number, None, None, f"over {MAX_ROWS} rows; split the file")])
        values = {key: (texts[i] if i < len(texts) else "") for key, i in found.items()}
        for key, text in values.items():
            if len(text) > MAX_CELL:
                problems.append(Problem(number, headers[key], text[:40] + "…", f"over {MAX_CELL} characters"))
                values[key] = ""
        sheet_rows.append(SheetRow(number, values))
    if problems:
        raise SheetProblems(problems)
    return Sheet(sheet_rows, headers)


# -- writing


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _formula_like(text: str) -> bool:
    return text[:1] in ("=", "@") or (text[:1] in ("+", "-") and not re.fullmatch(r"[+-][\d.]+", text))


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, date):
        return value.isoformat()
    text = _CONTROL.sub("", str(value))
    return "'" + text if _formula_like(text) else text


async def csv_chunks(header: Sequence[str], rows: AsyncIterator[Sequence[Any]]) -> AsyncIterator[bytes]:
    """The CSV file, a batch of rows at a time: UTF-8 with a BOM, so that Excel shows Chinese."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    yield codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    count = 0
    async for row in rows:
        writer.writerow([csv_cell(v) for v in row])
        count += 1
        if count % 500 == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode("utf-8")


async def xlsx_chunks(
    header: Sequence[str],
    rows: AsyncIterator[Sequence[Any]],
    *,
    title: str,
    widths: Iterable[int] = (),
    chunk_bytes: int = 64 * 1024,
) -> AsyncIterator[bytes]:
    """The .xlsx file: rows written as they come to a write-only workbook in a temporary file (an
    .xlsx is a zip, finished only at the end), then sent in chunks."""
    import openpyxl
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.utils import get_column_letter

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31])
    for i, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(i)].width = width
    sheet.append(list(header))

    def cell(value: Any) -> Any:
        if isinstance(value, str):
            text = _CONTROL.sub("", value)
            c = WriteOnlyCell(sheet, value=text)
            c.data_type = "s"  # never a formula, whatever it starts with
            return c
        c = WriteOnlyCell(sheet, value=value)
        if isinstance(value, Decimal):
            c.number_format = "0.00"
        elif isinstance(value, date):
            c.number_format = "yyyy-mm-dd"
        return c

    async for row in rows:
        sheet.append([cell(v) for v in row])
    with tempfile.TemporaryFile() as out:
        # Zipping the sheet is the slow part: off the event loop.
        await asyncio.to_thread(workbook.save, out)
        out.seek(0)
        while chunk := out.read(chunk_bytes):
            yield chunk
