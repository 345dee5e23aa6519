"""What every database's bulk path shares (flsync.sql.dialects holds each database's own).

Directly, as a run is almost always loaded: the file goes straight into its table, whose
columns were made to fit the kinds its first rows show (``guess``), and each value is checked
on the way; a value that does not fit its column raises Misfit, and the caller rolls the run
back and stages it. Where the database parses the file itself (PostgreSQL's COPY, MariaDB's
LOAD DATA), it is given only the bytes that flsync.sql.csvfiles.RowChecker passed
(``checked``): bytes it reads exactly as the csv module does.

Staged, when the direct path met a value that did not fit: the file's rows go, as text, into
a temporary table of columns ``c1 … cn`` (named ``flsync-stage-N``: no dataset's table can be
so named, as a file's ``-`` becomes ``_``), and each column's kind is found over the whole
file. Then, once the tables fit those kinds, one ``INSERT … SELECT`` moves the rows into the
dataset's table inside the run's transaction, empty text as NULL and each value cast to its
column's type.

When the server refuses a file's text, the file is read again by the csv module (the error
path only, ``malformed``), so that the error names the line as a text editor counts it (from
1, line breaks inside quoted fields included) and says why, as the csv module's reading would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flsync.sql.csvfiles import (
    CsvFile,
    DataFiles,
    Kind,
    MalformedFile,
    RowChecker,
    column_kind,
    widen,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

# The columns every dataset row starts with (the run's, from its metadata.csv).
LEADING = ("uni_name", "course_name", "run")
# Staging tables' names: with a "-", which no dataset table's name has.
STAGING = "flsync-stage-"


class LoadError(Exception):
    """The database refused the rows; one line for the user."""


class Misfit(Exception):
    """A file's rows do not all fit its table's columns as they are (or cannot be told to
    by the direct path): the run is loaded again through staging tables."""


@dataclass(frozen=True)
class Planned:
    """A file to load: the dataset's table, the file's path and header, each column's kind."""

    target: str
    path: str
    header: Sequence[str]
    kinds: Sequence[Kind]


@dataclass(frozen=True)
class Staged(Planned):
    """A file staged into its temporary table ``table``; the kinds are those of the whole
    file."""

    table: str


def guess(files: DataFiles, path: str, current: Sequence[Kind]) -> list[Kind]:
    """Each column's kind in the file's first rows (read by the csv module), widened with its
    kind in the table (``current``): the kind the direct path loads it as."""
    with CsvFile(files, path) as file:
        block = next(file.blocks(), [])
    if not block:
        return list(current)
    columns = zip(*block, strict=True)
    return [widen(kind, column_kind(values)) for kind, values in zip(current, columns, strict=True)]


def checked(chunks: Iterable[bytes], checker: RowChecker) -> Iterator[bytes | None]:
    """The bytes of ``chunks`` that ``checker`` passes, a chunk at a time; None once it
    refuses."""
    for chunk in chunks:
        yield checker.feed(chunk)
    yield checker.close()


def malformed(files: DataFiles, path: str, record: int | None, reason: str) -> MalformedFile:
    """Why the server refused the file, as the csv module tells it (its line and reason),
    else as the server did (``record``: the record it named, the header being 0)."""
    with CsvFile(files, path) as file:
        try:
            for _block in file.blocks():
                pass
        except MalformedFile as exc:
            return exc
        line = file.record_line(record) if record else None
    return MalformedFile(path, line, reason)
