"""A dataset file of the tree, read for the database: streamed in blocks of rows, checked and
typed.

Every byte is read through a bound on the length of a CSV record (:class:`DataFiles`), in
chunks that end where records do: a longer record is refused at once, so that memory stays
flat whatever the file holds. Rows come in blocks (at most ``BLOCK_ROWS``, from few chunks)
so that the per-row work happens in C (the csv module, ``zip``, ``str.join``, one regular
expression over a whole column of a block): a 1 GB file is read with flat memory at close
to the csv module's own speed. Any fault is a :class:`MalformedFile` naming the file,
the line (as a text editor counts them, from 1) and the reason.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import re
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _csv import Reader
    from collections.abc import Generator, Iterator, Sequence
    from types import TracebackType

    from flsync.storage import DataStore

BLOCK_ROWS = 4096
# A block takes the rows of further chunks of the file only while those hold this much.
BLOCK_BYTES = 4 << 20
# The longest record by default (FLSYNC_DATABASE_RECORD_MB).
RECORD_LIMIT = 8 << 20
# No field can be longer than its record, which the record bound limits already.
csv.field_size_limit(2**31 - 1)
# What is read from the store at a time (never more than the record limit).
CHUNK = 1 << 20


class Kind(StrEnum):
    """What a column holds. A column only ever widens, towards TEXT, which holds anything."""

    EMPTY = "empty"  # no value seen yet: says nothing of the values to come
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
# empty; text as RFC 4180 has it, but for the character NUL (PostgreSQL's text has none).
_FIELD_PATTERNS = {
    Kind.EMPTY: b"",
    Kind.TEXT: rb'(?:[^,"\r\n\x00]*+|"(?:[^"\x00]++|"")*+")',
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


class MalformedFile(Exception):
    """A file that cannot be loaded; one line for the user."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}, line {line}" if line else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


# Where a CSV record ends, as the csv module reads it: a field is quoted only when it starts
# with a quote (and then may hold commas and line breaks); a quote later in a field is text.
# After a closing quote the csv module wants a comma or a line end: anything else is let
# through here, for the reader of the bytes to refuse. A quote never closed leaves the record
# open, which the bound then refuses once it is too long.
_FIELD = rb'(?:"(?:[^"]++|"")*+"[^,\r\n]*+|[^,"\r\n][^,\r\n]*+)?'
_RECORD = _FIELD + rb"(?:," + _FIELD + rb")*+(?:\r\n|\r|\n)"
_ONE_RECORD = re.compile(_RECORD)
_RECORDS = re.compile(rb"(?:" + _RECORD + rb")*+")


def _line_at(store: DataStore, path: str, offset: int) -> int:
    """The line the byte at ``offset`` of the file begins, as an editor counts lines (from
    1; "\\n", "\\r\\n" and "\\r" end one): read again, on the error path only."""
    lines = 0
    cr_ended = False  # the last chunk ended with "\\r", maybe half of a "\\r\\n"
    with store.open_read(path) as stream:
        while offset > 0 and (chunk := stream.read(min(CHUNK, offset))):
            lines += chunk.count(b"\n") + chunk.count(b"\r") - chunk.count(b"\r\n")
            lines -= cr_ended and chunk.startswith(b"\n")
            cr_ended = chunk.endswith(b"\r")
            offset -= len(chunk)
    return lines + 1


def _record_ends(window: bytes) -> tuple[int, int]:
    """Where the first and the last complete records of ``window`` end (0: none). A final
    "\\r" is not yet an end: it may be the first half of "\\r\\n"."""
    end = len(window) - window.endswith(b"\r")
    if window.find(b'"', 0, end) >= 0:
        found = _ONE_RECORD.match(window, 0, end)
        last = _RECORDS.match(window, 0, end)
        return (found.end() if found else 0), (last.end() if last else 0)
    ends = [i for i in (window.find(b"\n", 0, end), window.find(b"\r", 0, end)) if i >= 0]
    if not ends:
        return 0, 0
    first = min(ends) + 1
    first += window[first - 1 : first + 1] == b"\r\n"
    return first, max(window.rfind(b"\n", 0, end), window.rfind(b"\r", 0, end)) + 1


@dataclass(frozen=True)
class DataFiles:
    """The tree's files (read through ``store``), each record at most ``record_limit``
    bytes: a longer one is refused as it is read."""

    store: DataStore
    record_limit: int = RECORD_LIMIT

    def chunks(self, path: str) -> Generator[bytes]:
        """The file's bytes, a chunk at a time, each chunk ending where a record ends (the
        last where the file does); MalformedFile as soon as a record runs longer than the
        limit, so that no reader ever holds a longer one.

        Each chunk read (of at most the limit) is checked in C: without quotes, records are
        lines (``find``); with quotes, one regular expression finds where the last complete
        record ends. The record still open (at most the limit) waits for the next chunk."""
        limit = self.record_limit
        rest = b""  # the start of the record not yet ended…
        rest_at = 0  # … at this offset of the file
        with self.store.open_read(path) as stream:
            while data := stream.read(min(CHUNK, limit)):
                window = rest + data if rest else data
                first, last = _record_ends(window)
                # Records begun and ended within ``data`` are shorter than it, within limit.
                if (rest and first > limit) or len(window) - last > limit:
                    at = rest_at if rest and first > limit else rest_at + last
                    raise self._too_long(path, at)
                rest, rest_at = window[last:], rest_at + last
                if last:
                    yield window[:last]
        if rest:
            yield rest

    def _too_long(self, path: str, offset: int) -> MalformedFile:
        mb = self.record_limit / (1 << 20)
        return MalformedFile(
            path,
            _line_at(self.store, path, offset),
            f"a record longer than {mb:g} MB (FLSYNC_DATABASE_RECORD_MB): not loaded",
        )

    def line_end(self, path: str) -> bytes:
        """The header line's end (``\\n``, ``\\r\\n`` or ``\\r``): the one every record must
        end with where a database parses the file itself."""
        with contextlib.closing(self.chunks(path)) as chunks:
            for chunk in chunks:
                found = _LINE_END.search(chunk)
                if found:
                    return found[0]
        return b"\n"


# A "\\r" is a line end of its own but as the first half of "\\r\\n" (or as the file's end).
_LINE_END = re.compile(rb"\r\n|\r(?!\n)|\n")


class RowChecker:
    """Checks a CSV file's bytes as they stream past, without parsing them into rows, and
    passes on those of the records that fit: after the header, each record has the header's
    number of fields and ends as the header line does, and each value of a typed column is
    empty or written exactly as that kind's pattern says (unquoted).

    Used where the database parses the file itself (PostgreSQL's COPY, MariaDB's LOAD DATA),
    which gets only the bytes passed on: one regular expression per chunk, in C. It passes
    only what those parsers read as the csv module does; it may refuse rows that would load
    (a quoted number, a record longer than ``limit``): the caller then takes its slower,
    exact path. It never passes a value that its column's type would change.
    """

    def __init__(
        self, kinds: Sequence[Kind], line_end: bytes = b"\n", limit: int = RECORD_LIMIT
    ) -> None:
        end = re.escape(line_end)
        fields = [_FIELD_PATTERNS[kind] for kind in kinds]
        if len(fields) == 1:
            # A lone field: an empty line is no record (the csv module reads no field there),
            # and a line "\." would end PostgreSQL's COPY.
            fields[0] = rb"(?!" + end + rb"|\\\." + end + rb")" + fields[0]
        record = b",".join(fields) + end
        header = b",".join([_FIELD_PATTERNS[Kind.TEXT]] * len(kinds)) + end
        self._header = re.compile(rb"(?:\xef\xbb\xbf)?" + header)
        self._records = re.compile(rb"(?:" + record + rb")*+")
        self._line_end = line_end
        self._limit = limit
        self._rest = b""
        self._header_read = False
        self.fits = True

    def feed(self, chunk: bytes) -> bytes | None:
        """The next bytes: those of the records they complete, all fitting, to be passed on
        (the rest is held back); None once anything does not fit."""
        if not self.fits:
            return None
        data = self._rest + chunk
        start = 0
        if not self._header_read:
            found = self._header.match(data)
            if found is None:
                return self._hold(data, 0)
            self._header_read = True
            start = found.end()
        found = self._records.match(data, start)  # always matches: zero records at least
        return self._hold(data, found.end() if found else start)

    def _hold(self, data: bytes, end: int) -> bytes | None:
        """Pass on ``data[:end]``, hold the rest: a record not yet ended, or one that does
        not fit, and then (once it has ended, or is too long) nothing fits."""
        self._rest = data[end:]
        ended = _ONE_RECORD.match(self._rest)
        # A record followed by more bytes has ended (a final "\r" may begin "\r\n").
        misfit = ended is not None and ended.end() < len(self._rest)
        self.fits = not misfit and len(self._rest) <= self._limit
        return data[:end] if self.fits else None

    def close(self) -> bytes | None:
        """The end of the file: its last bytes to pass on (the last record may lack its line
        end), or None if anything did not fit."""
        last = b""
        if self.fits and self._rest and not self._rest.endswith(self._line_end):
            last = self.feed(self._line_end) or b""
        self.fits = self.fits and self._header_read and not self._rest
        return last if self.fits else None


class CsvFile:
    """A CSV file of the tree, open for reading: its header, then its rows in blocks.

    RFC 4180 as the csv module reads it, strictly (a stray quote is an error), with "\\n",
    "\\r\\n" or "\\r" line ends; UTF-8 (a leading byte-order mark is dropped); every row as
    many fields as the header. The file is read in chunks that end where records do
    (DataFiles.chunks), each parsed by a csv reader of its own: a block of rows holds the
    records of a few chunks at most, however long they are.
    """

    def __init__(self, files: DataFiles, path: str) -> None:
        self.files = files
        self.path = path
        self.header: list[str] = []
        self.rows = 0  # read so far
        self._chunks: Generator[bytes] | None = None
        self._reader = csv.reader((), strict=True)  # the current chunk's
        self._lines = 0  # in the chunks before it

    def __enter__(self) -> CsvFile:
        self._chunks = self.files.chunks(self.path)
        try:
            self.header = self._read_header()
        except BaseException:
            self._chunks.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._chunks is not None:
            self._chunks.close()

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
        """The rows after the header, at most BLOCK_ROWS at a time, each checked for its
        field count."""
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
        """The next rows, at most ``size``: of the current chunk, then of the next ones until
        those opened for this block reach BLOCK_BYTES (a block's memory stays bounded)."""
        assert self._chunks is not None
        block: list[list[str]] = []
        read = 0
        try:
            while len(block) < size:
                block += islice(self._reader, size - len(block))
                if len(block) == size or read >= BLOCK_BYTES:
                    break
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                read += len(chunk)
                self._lines += self._reader.line_num
                self._reader = _reader(chunk, first=self._lines == 0)
        except csv.Error as exc:
            line = self._lines + self._reader.line_num
            raise MalformedFile(self.path, line, f"bad CSV: {exc}") from None
        except UnicodeDecodeError:
            line, offset = self._bad_utf8()
            raise MalformedFile(
                self.path, line, f"not UTF-8 text (byte {offset} of the file)"
            ) from None
        return block

    def record_line(self, record: int) -> int:
        """The line the ``record``-th record (the header is record 0) starts on: read again
        from the start, on the error path only."""
        lines = 0
        with contextlib.closing(self.files.chunks(self.path)) as chunks:
            for chunk in chunks:
                reader = _reader(chunk, first=lines == 0)
                for _ in islice(reader, record):
                    record -= 1
                if record == 0:
                    return lines + reader.line_num + 1
                lines += reader.line_num
        return lines + 1

    def _bad_utf8(self) -> tuple[int, int]:
        """Line and byte offset of the first byte that is not UTF-8 (error path only)."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = line = 0
        with self.files.store.open_read(self.path) as stream:
            while True:
                chunk = stream.read(CHUNK)
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


def _reader(chunk: bytes, *, first: bool) -> Reader:
    """A csv reader of a chunk's text (which ends where a record does, so no character is
    cut in two); the file's first chunk loses its byte-order mark."""
    encoding = "utf-8-sig" if first else "utf-8"
    text = io.TextIOWrapper(io.BytesIO(chunk), encoding=encoding, newline="")
    return csv.reader(text, strict=True)


def scan(file: CsvFile) -> list[Kind]:
    """Read a whole open file: every row checked, each column's kind."""
    kinds = [Kind.EMPTY] * len(file.header)
    for block in file.blocks():
        columns = list(zip(*block, strict=True))
        for index, kind in enumerate(kinds):
            if kind is not Kind.TEXT:
                kinds[index] = column_kind(columns[index], kind)
    return kinds


def canonical(file: CsvFile) -> Iterator[bytes]:
    """An open file's header and rows as the csv module reads them, written again in the one
    form that PostgreSQL's and MariaDB's CSV readers read exactly so: every field quoted (so
    that no line is PostgreSQL's "\\." end of data, and no word NULL is MariaDB's NULL), "\\n"
    after each record; a block of rows at a time."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(file.header)
    for block in file.blocks():
        writer.writerows(block)
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue().encode()
