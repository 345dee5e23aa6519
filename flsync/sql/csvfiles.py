"""A dataset file of the tree, read for the database: streamed in blocks of rows, checked and
typed.

Rows come in blocks (``BLOCK_ROWS``) so that the per-row work happens in C (the csv module,
``zip``, ``str.join``, one regular expression over a whole column of a block): a 1 GB file is
read with flat memory at close to the csv module's own speed. Any fault is a
:class:`MalformedFile` naming the file, the line (as a text editor counts them, from 1) and
the reason.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from enum import StrEnum
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

    from flsync.storage import DataStore

BLOCK_ROWS = 4096
# A free-text field (a comment, a survey answer) may be long; the csv module's default limit
# (128 KiB) would call a long comment malformed. Still bounded: memory stays flat.
FIELD_SIZE_LIMIT = 64 << 20
csv.field_size_limit(FIELD_SIZE_LIMIT)


class Kind(StrEnum):
    """What a column holds. A column only ever widens, towards TEXT, which holds anything."""

    EMPTY = "empty"  # no value seen yet (becomes a text column if it stays so)
    INTEGER = "integer"
    TIMESTAMP = "timestamp"
    DATE = "date"
    TEXT = "text"


def widen(a: Kind, b: Kind) -> Kind:
    """The narrowest kind that holds the values of both."""
    if a == b or b is Kind.EMPTY:
        return a
    if a is Kind.EMPTY:
        return b
    return Kind.TEXT


# Values a typed column takes, each written exactly as the typed value prints back, so no
# text is lost: an integer without a sign "+", leading zeros or "-0", within 64 bits; the
# exports' timestamps ("2016-05-09 10:23:11 UTC") and dates. Step codes such as "1.10" are no
# integers (and no decimals are typed: 1.1 and 1.10 are different steps).
INTEGER_PATTERN = r"(?:0|-?[1-9][0-9]{0,17})"
# A day 01-28 of any month, the 29th and 30th of any but February, the 31st of the long
# months, 29 February of a leap year; years 0001-9999 (the databases have no year 0).
DATE_PATTERN = (
    r"(?:(?!0000)[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)-02-29)"
)
TIMESTAMP_PATTERN = DATE_PATTERN + r" (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9] UTC"
# The same in the staging tables' queries (flsync.sql.bulk): PostgreSQL's and PCRE's regular
# expressions read them as Python does.
_KIND_PATTERNS = (
    (Kind.INTEGER, INTEGER_PATTERN),
    (Kind.TIMESTAMP, TIMESTAMP_PATTERN),
    (Kind.DATE, DATE_PATTERN),
)
# A whole column of a block, joined by "\n": empty lines are empty values (NULL).
_COLUMN_PATTERNS = {
    kind: re.compile(rf"(?:(?:{value})?\n)*(?:{value})?") for kind, value in _KIND_PATTERNS
}
_SINGLE_PATTERNS = {kind: re.compile(value) for kind, value in _KIND_PATTERNS}
# One field of a CSV record's bytes, by the kind its column has: a typed value unquoted or
# empty; text as RFC 4180 has it.
_FIELD_PATTERNS = {
    Kind.EMPTY: b"",
    Kind.TEXT: rb'(?:[^,"\r\n]*+|"(?:[^"]++|"")*+")',
    **{kind: rb"(?:" + value.encode() + rb")?" for kind, value in _KIND_PATTERNS},
}


def value_kind(value: str) -> Kind:
    """The kind of one value."""
    if not value:
        return Kind.EMPTY
    for kind, pattern in _SINGLE_PATTERNS.items():
        if pattern.fullmatch(value):
            return kind
    return Kind.TEXT


def column_kind(values: Sequence[str], current: Kind = Kind.EMPTY) -> Kind:
    """The narrowest kind holding ``current`` and every one of ``values``."""
    if current is Kind.TEXT:
        return current
    joined = "\n".join(values)
    if joined.count("\n") != len(values) - 1:
        return Kind.TEXT  # a value holds a line break: text
    if not joined.strip("\n"):
        return current
    # The column's kind so far first: it almost always still fits.
    candidates: list[Kind] = [current] if current is not Kind.EMPTY else list(_COLUMN_PATTERNS)
    for kind in candidates:
        if _COLUMN_PATTERNS[kind].fullmatch(joined):
            return kind
    result: Kind = current
    for found in {value_kind(v) for v in values}:
        result = widen(result, found)
    return result


class RowChecker:
    """Checks a CSV file's bytes as they stream past, without parsing them into rows: after
    the header, each record has the header's number of fields, and each value of a typed
    column is empty or written exactly as that kind's pattern says (unquoted).

    Used where the database parses the file itself (PostgreSQL's COPY, MariaDB's LOAD DATA):
    one regular expression per chunk, in C. It may refuse rows that would load (a quoted
    number, a record longer than RECORD_LIMIT): the caller then takes its slower, exact path.
    It never passes a value that its column's type would change.
    """

    # A record still open after this many bytes counts as not fitting: memory stays flat.
    RECORD_LIMIT = 4 << 20

    def __init__(self, kinds: Sequence[Kind]) -> None:
        fields = [_FIELD_PATTERNS[kind] for kind in kinds]
        record = b",".join(fields) + rb"\r?\n"
        header = b",".join([_FIELD_PATTERNS[Kind.TEXT]] * len(kinds)) + rb"\r?\n"
        self._header = re.compile(rb"(?:\xef\xbb\xbf)?" + header)
        self._records = re.compile(rb"(?:" + record + rb")*+")
        self._rest = b""
        self._header_read = False
        self.fits = True

    def feed(self, chunk: bytes) -> bool:
        """Check the next bytes; False once anything does not fit."""
        if not self.fits:
            return False
        data = self._rest + chunk
        start = 0
        if not self._header_read:
            found = self._header.match(data)
            if found is None:
                self._rest = data
                self.fits = len(data) <= self.RECORD_LIMIT
                return self.fits
            self._header_read = True
            start = found.end()
        found = self._records.match(data, start)  # always matches: zero records at least
        end = found.end() if found else start
        self._rest = data[end:]
        self.fits = len(self._rest) <= self.RECORD_LIMIT
        return self.fits

    def close(self) -> bool:
        """The end of the file: True if every record fitted (the last may lack its line end)."""
        if self._rest and not self._rest.endswith(b"\n"):
            self.feed(b"\n")
        self.fits = self.fits and self._header_read and not self._rest
        return self.fits


class MalformedFile(Exception):
    """A file that cannot be loaded; one line for the user."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}, line {line}" if line else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class CsvFile:
    """A CSV file of the store, open for reading: its header, then its rows in blocks.

    RFC 4180 as the csv module reads it, strictly (a stray quote is an error); UTF-8 (a
    leading byte-order mark is dropped); every row as many fields as the header.
    """

    def __init__(self, store: DataStore, path: str) -> None:
        self.store = store
        self.path = path
        self.header: list[str] = []
        self.rows = 0  # read so far
        self._stream: io.TextIOWrapper | None = None

    def __enter__(self) -> CsvFile:
        self._stream = io.TextIOWrapper(
            self.store.open_read(self.path), encoding="utf-8-sig", newline=""
        )
        try:
            self._reader = csv.reader(self._stream, strict=True)
            self.header = self._read_header()
        except BaseException:
            self._stream.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            self._stream.close()

    def _read_header(self) -> list[str]:
        block = self._next_block(1)
        if not block:
            raise MalformedFile(self.path, None, "empty file (no header line)")
        header = block[0]
        if not all(header):
            raise MalformedFile(self.path, 1, "a column of the header line has no name")
        duplicate = next((name for name in header if header.count(name) > 1), None)
        if duplicate is not None:
            raise MalformedFile(self.path, 1, f"column {duplicate!r} appears twice in the header")
        return header

    def blocks(self) -> Iterator[list[list[str]]]:
        """The rows after the header, BLOCK_ROWS at a time, each checked for its field count."""
        width = len(self.header)
        while True:
            block = self._next_block(BLOCK_ROWS)
            if not block:
                return
            if any(n != width for n in set(map(len, block))):
                index = next(i for i, row in enumerate(block) if len(row) != width)
                fields = len(block[index])
                raise MalformedFile(
                    self.path,
                    self.record_line(self.rows + index + 1),
                    f"{fields} field{'s' * (fields != 1)} where the header has {width}",
                )
            self.rows += len(block)
            yield block

    def _next_block(self, size: int) -> list[list[str]]:
        try:
            return list(islice(self._reader, size))
        except csv.Error as exc:
            raise MalformedFile(self.path, self._reader.line_num, f"bad CSV: {exc}") from None
        except UnicodeDecodeError:
            line, offset = self._bad_utf8()
            raise MalformedFile(
                self.path, line, f"not UTF-8 text (byte {offset} of the file)"
            ) from None

    def record_line(self, record: int) -> int:
        """The line the ``record``-th record (the header is record 0) starts on: read again
        from the start, on the error path only."""
        with io.TextIOWrapper(
            self.store.open_read(self.path), encoding="utf-8-sig", newline=""
        ) as stream:
            reader = csv.reader(stream, strict=True)
            line = 0
            for _ in islice(reader, record):
                line = reader.line_num
            return line + 1

    def _bad_utf8(self) -> tuple[int, int]:
        """Line and byte offset of the first byte that is not UTF-8 (error path only)."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = line = 0
        with self.store.open_read(self.path) as stream:
            while True:
                chunk = stream.read(1 << 16)
                # Bytes of a sequence begun in the last chunk, which the decoder holds back.
                held = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as exc:
                    bad = exc.start - held
                    return line + chunk[: max(0, bad)].count(b"\n") + 1, offset + bad
                if not chunk:
                    return line + 1, offset
                line += chunk.count(b"\n")
                offset += len(chunk)


def scan(file: CsvFile) -> list[Kind]:
    """Read a whole open file: every row checked, each column's kind."""
    kinds = [Kind.EMPTY] * len(file.header)
    for block in file.blocks():
        columns = list(zip(*block, strict=True))
        for index, kind in enumerate(kinds):
            if kind is not Kind.TEXT:
                kinds[index] = column_kind(columns[index], kind)
    return kinds
