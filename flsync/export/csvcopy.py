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
_LONE_CR = "a carriage return (\\r) alone, not as a line end nor quoted"
# The csv module's words for some faults, which would mislead here.
_CSV_ERRORS = {
    "unexpected end of data": "a quoted field never closed",
    "new-line character seen in unquoted field - do you need to open the file in"
    " universal-newline mode?": _LONE_CR,
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
    records = _records(_Lines(source))
    first = next(records, None)
    if first is None:
        raise MalformedCsv(1, "no header line (the file is empty)")
    header_cells, header, end, _ = first
    columns = plan(rule, header, keep_free_text)
    out.write(",".join(header_cells[index] for index, _ in columns.columns) + end)
    rewrite = None if columns.copies_rows else _rewrite(columns, pseudonym)
    width, write, rows = columns.width, out.write, 0
    for cells, values, end, line in records:
        if len(values) != width:
            raise MalformedCsv(line, f"{len(values)} fields where the header has {width}")
        write((",".join(cells) if rewrite is None else rewrite(cells, values)) + end)
        rows += 1
    out.flush()
    out.detach()
    return Copied(columns, rows)


class _Lines:
    """The lines of a source, decoded and counted. Decoded line by line (a line end is never
    inside a UTF-8 character), so that a fault names its line; each bounded."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.number = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.source.readline(MAX_LINE_BYTES)
        if not line:
            raise StopIteration
        self.number += 1
        if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise MalformedCsv(self.number, f"a line longer than {MAX_LINE_BYTES} bytes")
        try:
            return line.decode()
        except UnicodeDecodeError as exc:
            raise MalformedCsv(self.number, f"not UTF-8 ({exc.reason})") from None


def _records(lines: _Lines) -> Iterator[tuple[list[str], list[str], str, int]]:
    """Each record: the text of each of its cells as written, its values, its line end, and
    its first line's number. A line without a quote is a record whose cells are its text
    between commas; a record with quotes (which may span lines) is parsed by the csv module,
    and its text split into cells must give back the same values."""
    for line in lines:
        number = lines.number
        if '"' not in line:
            body = line.rstrip("\r\n")
            if "\r" in body:
                raise MalformedCsv(number, _LONE_CR)
            cells = body.split(",")
            yield cells, cells, line[len(body) :], number
            continue
        read = [line]
        try:
            values = next(csv.reader(_continued(line, lines, read), strict=True))
        except csv.Error as exc:
            raise MalformedCsv(lines.number, _CSV_ERRORS.get(str(exc), str(exc))) from None
        raw = "".join(read)
        body = raw.rstrip("\r\n")
        cells = _quoted_cells(body)
        if [c[1:-1].replace('""', '"') if c[:1] == '"' else c for c in cells] != values:
            raise MalformedCsv(number, "a quote inside a field that is not quoted (RFC 4180, 2.5)")
        yield cells, values, raw[len(body) :], number


def _continued(first: str, lines: _Lines, read: list[str]) -> Iterator[str]:
    """``first``, then the next lines as the csv module asks for them (a quoted field that
    spans lines), each also put in ``read``."""
    yield first
    for line in lines:
        read.append(line)
        yield line


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


def _rewrite(
    columns: Plan, pseudonym: Callable[[str, str], str]
) -> Callable[[list[str], list[str]], str]:
    """How to write a record as ``columns`` say: each kept cell's own text, an identifier's
    pseudonym (an empty one stays as it was), kept free text masked (quoted anew only where
    masking changed it)."""
    indices = [index for index, _ in columns.columns]
    identifiers = [
        (position, index, str(treatment))
        for position, (index, treatment) in enumerate(columns.columns)
        if isinstance(treatment, Kind)
    ]
    free_text = [
        (position, index)
        for position, (index, treatment) in enumerate(columns.columns)
        if treatment is Treatment.FREE_TEXT
    ]

    def rewrite(cells: list[str], values: list[str]) -> str:
        out = [cells[index] for index in indices]
        for position, index, kind in identifiers:
            if value := values[index]:
                out[position] = pseudonym(kind, value)
        for position, index in free_text:
            value = values[index]
            if (masked := mask(value)) != value:
                out[position] = _quote(masked)
        return ",".join(out)

    return rewrite


def _quote(value: str) -> str:
    """``value`` as a CSV cell, quoted only when it must be (RFC 4180, 2.6-2.7)."""
    return f'"{value.replace(chr(34), chr(34) * 2)}"' if _NEEDS_QUOTES.search(value) else value
