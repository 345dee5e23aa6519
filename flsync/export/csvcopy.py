"""One dataset file copied row by row: each cell kept byte for byte, replaced, or dropped.

The csv module parses the file (strictly, as RFC 4180 says, and UTF-8); alongside, the text of
each record as the file has it is split into its cells' own text, so that a kept cell is
copied exactly as it was written (its quotes included) rather than written again by a CSV
writer, which would quote otherwise. A record whose cells' text does not give back the csv
module's values, or with a quote inside an unquoted field, is no RFC 4180 record, and the
file is malformed. Memory stays flat: one record at a time, each line bounded.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from flsync.export.masking import mask
from flsync.export.rules import Kind, Treatment

if TYPE_CHECKING:
    from _csv import Reader
    from collections.abc import Callable, Iterator

    from flsync.export.rules import Column, Rule

# A free-text field may be long; the csv module's default limit (128 KiB) would call a long
# comment malformed. Still bounded: memory stays flat. (The limit is the process's; never
# lowered here, as flsync.sql sets it too.)
FIELD_SIZE_LIMIT = 64 << 20
MAX_LINE_BYTES = FIELD_SIZE_LIMIT
csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))

# A cell's text: quoted (quotes inside doubled), or plain (no quote, comma or line break).
_CELL = re.compile(r'"[^"]*(?:""[^"]*)*"|[^,"\r\n]*')
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
_BOM = "\ufeff"
# The csv module's words for some faults, which would mislead here.
_CSV_ERRORS = {
    "unexpected end of data": "a quoted field never closed",
    "new-line character seen in unquoted field - do you need to open the file in"
    " universal-newline mode?": "a carriage return (\\r) alone, not as a line end nor quoted",
}


class MalformedCsv(Exception):
    """The file is not RFC 4180 CSV in UTF-8 with one header line."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Plan:
    """What becomes of each column of one file: the columns written, in order, each with its
    treatment (kept, a pseudonym of its kind, free text masked); the others are dropped."""

    columns: tuple[tuple[int, Column], ...]
    dropped: tuple[str, ...]
    unknown: tuple[str, ...]  # dropped because the rule does not know them
    width: int

    @property
    def copies_rows(self) -> bool:
        """Every cell of every row is kept as it is."""
        return len(self.columns) == self.width and all(
            treatment is Treatment.KEEP for _, treatment in self.columns
        )


def plan(rule: Rule, header: list[str], keep_free_text: bool) -> Plan:
    """The plan for a file of ``rule``'s dataset whose header is ``header``."""
    columns: list[tuple[int, Column]] = []
    dropped, unknown = [], []
    for index, name in enumerate(header):
        treatment = rule.column(name.removeprefix(_BOM) if index == 0 else name)
        if treatment is None:
            unknown.append(name)
            dropped.append(name)
        elif treatment is Treatment.NAME or (
            treatment is Treatment.FREE_TEXT and not keep_free_text
        ):
            dropped.append(name)
        else:
            columns.append((index, treatment))
    return Plan(tuple(columns), tuple(dropped), tuple(unknown), len(header))


@dataclass(frozen=True)
class Copied:
    """What a copy did: its plan, and the rows copied (the header not counted)."""

    plan: Plan
    rows: int


def copy_csv(
    source: IO[bytes],
    target: IO[bytes],
    rule: Rule,
    keep_free_text: bool,
    pseudonym: Callable[[str, str], str],
) -> Copied:
    """Copy the CSV file ``source`` into ``target`` as ``rule`` says, with ``pseudonym(kind,
    value)`` for identifiers; MalformedCsv (and nothing more read) if it is not valid CSV."""
    out = io.TextIOWrapper(target, encoding="utf-8", newline="")
    read: list[str] = []
    reader = csv.reader(_lines(source, read), strict=True)
    header = _next(reader)
    if header is None:
        raise MalformedCsv(1, "no header line (the file is empty)")
    columns = plan(rule, header, keep_free_text)
    raw, cells = _record(read, header, 1)
    out.write(",".join(cells[index] for index, _ in columns.columns) + _line_end(raw))
    rows = 0
    while True:
        line = reader.line_num + 1
        row = _next(reader)
        if row is None:
            break
        if len(row) != columns.width:
            raise MalformedCsv(line, f"{len(row)} fields where the header has {columns.width}")
        raw, cells = _record(read, row, line)
        out.write(raw if columns.copies_rows else _row(raw, cells, row, columns.columns, pseudonym))
        rows += 1
    out.flush()
    out.detach()
    return Copied(columns, rows)


def _next(reader: Reader) -> list[str] | None:
    """The next record, None at the end; MalformedCsv for bad CSV."""
    try:
        return next(reader, None)
    except csv.Error as exc:
        reason = _CSV_ERRORS.get(str(exc), str(exc))
        raise MalformedCsv(reader.line_num, reason) from None


def _lines(source: IO[bytes], read: list[str]) -> Iterator[str]:
    """The lines of ``source``, decoded, each also put in ``read`` (the record's own text).
    Decoded line by line (a line end is never inside a UTF-8 character), so that a fault
    names its line."""
    number = 0
    while line := source.readline(MAX_LINE_BYTES):
        number += 1
        if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise MalformedCsv(number, f"a line longer than {MAX_LINE_BYTES} bytes")
        try:
            text = line.decode()
        except UnicodeDecodeError as exc:
            raise MalformedCsv(number, f"not UTF-8 ({exc.reason})") from None
        read.append(text)
        yield text


def _record(read: list[str], values: list[str], line: int) -> tuple[str, list[str]]:
    """The text of the record just parsed (its line end included) and of each of its cells,
    checked: the cells must give back the csv module's ``values``."""
    raw = "".join(read)
    read.clear()
    body = raw.rstrip("\r\n")
    if '"' not in body:
        cells = body.split(",")
        if cells == values:
            return raw, cells
    else:
        cells = _quoted_cells(body)
        if [c[1:-1].replace('""', '"') if c[:1] == '"' else c for c in cells] == values:
            return raw, cells
    raise MalformedCsv(line, "a quote inside a field that is not quoted (RFC 4180, 2.5)")


def _quoted_cells(body: str) -> list[str]:
    """The text of each cell of a record that has quotes (without its line end); [] if it
    is not a run of cells separated by commas."""
    cells: list[str] = []
    position = 0
    while True:
        match = _CELL.match(body, position)
        assert match is not None  # the pattern matches the empty string
        cells.append(match.group())
        position = match.end()
        if position == len(body) or body[position] != ",":
            break
        position += 1
    return cells if position == len(body) else []


def _row(
    raw: str,
    cells: list[str],
    values: list[str],
    columns: tuple[tuple[int, Column], ...],
    pseudonym: Callable[[str, str], str],
) -> str:
    """The record as written: each kept cell's own text, the others replaced; its line end
    as the source's."""
    parts = []
    for index, treatment in columns:
        value = values[index]
        if isinstance(treatment, Kind) and value:
            parts.append(pseudonym(treatment, value))
        elif treatment is Treatment.FREE_TEXT and (masked := mask(value)) != value:
            parts.append(_quote(masked))
        else:
            parts.append(cells[index])
    return ",".join(parts) + _line_end(raw)


def _line_end(raw: str) -> str:
    return raw[len(raw.rstrip("\r\n")) :]


def _quote(value: str) -> str:
    """``value`` as a CSV cell, quoted only when it must be (RFC 4180, 2.6-2.7)."""
    return f'"{value.replace(chr(34), chr(34) * 2)}"' if _NEEDS_QUOTES.search(value) else value
