"""Each database's bulk path: rows of a CSV file into a table, inside the caller's transaction.

Every path takes the rows in blocks (see flsync.sql.csvfiles) and keeps the per-row work in C:
- PostgreSQL: ``COPY … FROM STDIN (FORMAT csv)`` through psycopg 3's ``cursor.copy``, fed with
  the blocks written back by the csv module (an unquoted empty field is NULL there); the
  server reads ``2016-05-09 10:23:11 UTC`` into a ``timestamptz`` itself.
- MariaDB/MySQL: ``LOAD DATA LOCAL INFILE`` of a named pipe that a thread fills with the rows
  in the server's own escaped, tab-separated format; empty fields become NULL, and timestamps
  lose their " UTC", in the statement's ``SET`` clause.
- SQLite: ``executemany`` of an INSERT whose placeholders do the same (``NULLIF``, ``substr``),
  so that a timestamp is stored as ``2016-05-09 10:23:11``, which SQLite's date functions read.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flsync.sql.csvfiles import Kind

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy import Connection

# PostgreSQL: what COPY is sent at a time.
COPY_CHUNK = 1 << 20
# MariaDB: what the pipe is written at a time.
PIPE_CHUNK = 1 << 20
# MariaDB's own escapes (LOAD DATA's defaults, ESCAPED BY '\\'). A block's rows are joined
# with _SEPARATOR between values and "\n" between rows, then escaped in one call; a block in
# which a value holds either character takes the slower way, value by value.
_SEPARATOR = "\x1f"
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
_BLOCK_ESCAPES = str.maketrans({**_ESCAPES, _SEPARATOR: "\t"})
_VALUE_ESCAPES = str.maketrans({**_ESCAPES, "\n": "\\n"})


class LoadError(Exception):
    """The database refused the rows; one line for the user."""


@dataclass(frozen=True)
class Target:
    """Where a file's rows go: the table, its columns (the leading ones first) and their
    kinds, and the values of the leading columns (uni_name, course_name, run)."""

    table: str
    columns: Sequence[str]
    kinds: Sequence[Kind]
    prefix: Sequence[str | int]


def insert_rows(connection: Connection, target: Target, blocks: Iterable[list[list[str]]]) -> None:
    """Insert ``blocks`` (rows of the file's values as read from the CSV file: empty for NULL,
    timestamps as the exports write them) into the target table, after the prefix values."""
    preparer = connection.dialect.identifier_preparer
    names = [preparer.quote(name) for name in target.columns]
    table = preparer.quote(target.table)
    dbapi = connection.connection.dbapi_connection
    name = connection.dialect.name
    if name == "postgresql":
        _copy_postgresql(dbapi, table, names, target, blocks)
    elif name in ("mysql", "mariadb"):
        _load_data_mysql(dbapi, table, names, target, blocks)
    elif name == "sqlite":
        _executemany_sqlite(dbapi, table, names, target, blocks)
    else:
        raise LoadError(f"no bulk path for {name}: use PostgreSQL, MariaDB/MySQL or SQLite")


def _copy_postgresql(
    dbapi: Any,
    table: str,
    names: Sequence[str],
    target: Target,
    blocks: Iterable[list[list[str]]],
) -> None:
    lead = [str(value) for value in target.prefix]
    buffer = io.StringIO()
    # "\r\n" ends rows so that the csv module quotes a value holding a lone "\r" too.
    writer = csv.writer(buffer, lineterminator="\r\n")
    with (
        dbapi.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT csv)") as copy,
    ):
        for block in blocks:
            writer.writerows(map(lead.__add__, block))
            if buffer.tell() >= COPY_CHUNK:
                copy.write(buffer.getvalue())
                buffer.seek(0)
                buffer.truncate()
        copy.write(buffer.getvalue())


def _executemany_sqlite(
    dbapi: Any,
    table: str,
    names: Sequence[str],
    target: Target,
    blocks: Iterable[list[list[str]]],
) -> None:
    lead = list(target.prefix)
    values = ["?"] * len(lead) + [
        "substr(NULLIF(?, ''), 1, 19)" if kind is Kind.TIMESTAMP else "NULLIF(?, '')"
        for kind in target.kinds[len(lead) :]
    ]
    sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(values)})"
    rows = itertools.chain.from_iterable(map(functools.partial(map, lead.__add__), blocks))
    cursor = dbapi.cursor()
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def _load_data_mysql(
    dbapi: Any,
    table: str,
    names: Sequence[str],
    target: Target,
    blocks: Iterable[list[list[str]]],
) -> None:
    lead = len(target.prefix)
    # pymysql fills in each %s (the pipe's name, the prefix values): a name's % is doubled.
    names = [name.replace("%", "%%") for name in names]
    variables = [f"@v{n}" for n in range(len(names) - lead)]
    assignments = [f"{name} = %s" for name in names[:lead]]
    for name, variable, kind in zip(names[lead:], variables, target.kinds[lead:], strict=True):
        value = f"LEFT({variable}, 19)" if kind is Kind.TIMESTAMP else variable
        assignments.append(f"{name} = NULLIF({value}, '')")
    sql = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {table.replace('%', '%%')} CHARACTER SET utf8mb4"
        " FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
        f" ({', '.join(variables)}) SET {', '.join(assignments)}"
    )
    with tempfile.TemporaryDirectory(prefix="flsync-load-") as folder:
        pipe = os.path.join(folder, "rows")
        os.mkfifo(pipe, 0o600)
        feeder = _PipeFeeder(pipe, blocks, len(names) - lead)
        feeder.start()
        try:
            with dbapi.cursor() as cursor:
                cursor.execute(sql, (pipe, *target.prefix))
                cursor.execute("SHOW WARNINGS LIMIT 1")
                warning = cursor.fetchone()
        finally:
            feeder.finish()
    if feeder.error is not None:
        raise feeder.error
    if warning:
        # LOAD DATA LOCAL turns refused values into warnings (the server cannot stop the
        # client's transfer): any warning fails the load.
        raise LoadError(f"the database refused a value: {warning[2]}")


class _PipeFeeder(threading.Thread):
    """Writes the rows into the named pipe the server reads through the client."""

    def __init__(self, pipe: str, blocks: Iterable[list[list[str]]], width: int) -> None:
        super().__init__(name="flsync-load-pipe", daemon=True)
        self.pipe = pipe
        self.blocks = blocks
        self.width = width
        self.error: BaseException | None = None
        self.stopped = False

    def run(self) -> None:
        try:
            with open(self.pipe, "w", encoding="utf-8", newline="") as out:
                pending: list[str] = []
                size = 0
                for text in map(self._escaped, self.blocks):
                    if self.stopped:
                        return
                    pending.append(text)
                    size += len(text)
                    if size >= PIPE_CHUNK:
                        out.write("".join(pending))
                        pending, size = [], 0
                out.write("".join(pending))
        except BrokenPipeError:
            pass  # the client stopped reading: its statement failed, and says why
        except BaseException as exc:  # a malformed row, a failed read: raised by the caller
            self.error = exc

    def _escaped(self, block: list[list[str]]) -> str:
        body = "\n".join(map(_SEPARATOR.join, block))
        if body.count("\n") == len(block) - 1 and body.count(_SEPARATOR) == len(block) * (
            self.width - 1
        ):
            return body.translate(_BLOCK_ESCAPES) + "\n"
        return "".join(_escaped_row(row) for row in block)

    def finish(self) -> None:
        """Wait for the thread. If the statement failed before it read the pipe to its end
        (or never opened it), stop the thread and read what it still writes."""
        if not self.is_alive():
            return
        self.stopped = True
        reader = os.open(self.pipe, os.O_RDONLY | os.O_NONBLOCK)
        try:
            while self.is_alive():
                try:
                    os.read(reader, PIPE_CHUNK)
                except BlockingIOError:
                    self.join(0.05)
        finally:
            os.close(reader)
        self.join()


def _escaped_row(row: Sequence[str]) -> str:
    return "\t".join(value.translate(_VALUE_ESCAPES) for value in row) + "\n"
