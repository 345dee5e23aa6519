"""Each database's bulk path: a CSV file into a staging table, then into its table.

A file is first staged: its rows go, as text, into a temporary table of columns ``c1 … cn``
(the header's columns in order), and each column's kind is found (see
flsync.sql.csvfiles.Kind). Then, once the tables fit those kinds, one ``INSERT … SELECT``
moves the rows into the dataset's table inside the run's transaction, empty text as NULL and
each value cast to its column's type. The file is parsed once:
- PostgreSQL: the file's bytes as they are, through ``COPY … FROM STDIN (FORMAT csv, HEADER)``:
  the server parses them; one aggregate query over the staging table finds the kinds.
- MariaDB/MySQL: ``LOAD DATA LOCAL INFILE`` of a named pipe that a thread fills with the
  file's bytes (``OPTIONALLY ENCLOSED BY '"' ESCAPED BY ''``: RFC 4180); any warning fails
  the file; the kinds as on PostgreSQL.
- SQLite: the csv module (flsync.sql.csvfiles), typing each block as it goes, and
  ``executemany`` into the staging table.

When the server refuses a file's text, the file is read again by the csv module (the error
path only), so that the error names the line as a text editor counts it (from 1, line breaks
inside quoted fields included) and says why, as the csv module's reading would.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flsync.sql.csvfiles import (
    DATE_PATTERN,
    INTEGER_PATTERN,
    TIMESTAMP_PATTERN,
    CsvFile,
    Kind,
    MalformedFile,
    column_kind,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection

    from flsync.storage import DataStore

# What is read from the store (and sent to the server) at a time.
CHUNK = 1 << 20
# The kinds a staged column is tested for, with a cheap test first (its length).
_CHECKS = (
    (Kind.INTEGER, INTEGER_PATTERN, "<= 19"),
    (Kind.TIMESTAMP, TIMESTAMP_PATTERN, "= 23"),
    (Kind.DATE, DATE_PATTERN, "= 10"),
)


class LoadError(Exception):
    """The database refused the rows; one line for the user."""


@dataclass(frozen=True)
class Staged:
    """A file staged: its temporary table, its header and each column's kind."""

    table: str
    path: str
    header: Sequence[str]
    kinds: Sequence[Kind]


def stage(
    connection: Connection,
    store: DataStore,
    path: str,
    header: Sequence[str],
    current: Sequence[Kind],
    table: str,
) -> Staged:
    """Stage the file at ``path`` (its ``header`` read already) into the temporary table
    ``table``; ``current`` is each column's kind in the dataset's table (EMPTY when new): a
    column that is text already is not tested."""
    name = connection.dialect.name
    columns = [f"c{n}" for n in range(1, len(header) + 1)]
    dbapi = connection.connection.dbapi_connection
    if name == "postgresql":
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {table} ({', '.join(f'{c} text' for c in columns)})"
        )
        _copy_postgresql(dbapi, store, path, table, columns)
    elif name in ("mysql", "mariadb"):
        connection.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {table}")
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {table} ({', '.join(f'{c} LONGTEXT' for c in columns)})"
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )
        _load_data_mysql(dbapi, store, path, table, columns)
    elif name == "sqlite":
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table}")
        connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {table} ({', '.join(columns)})")
        kinds = _insert_sqlite(dbapi, store, path, table, columns, current)
        return Staged(table, path, header, kinds)
    else:
        raise LoadError(f"no bulk path for {name}: use PostgreSQL, MariaDB/MySQL or SQLite")
    return Staged(table, path, header, _kinds(connection, table, columns, current))


def move(
    connection: Connection,
    staged: Staged,
    target: str,
    prefix: Sequence[str | int],
    kinds: Sequence[Kind],
) -> None:
    """Insert the staged rows into the table ``target`` (whose columns' kinds, the file's
    columns in order, are ``kinds``), after the leading columns' values ``prefix``."""
    from flsync.sql.loader import LEADING  # noqa: PLC0415 - the loader imports this module

    name = connection.dialect.name
    q = connection.dialect.identifier_preparer.quote
    names = [q(c) for c in (*LEADING[: len(prefix)], *staged.header)]
    values = ["%s" if name != "sqlite" else "?"] * len(prefix)
    for n, kind in enumerate(kinds, 1):
        value = f"NULLIF(c{n}, '')"
        if name == "postgresql":
            cast = {Kind.INTEGER: "bigint", Kind.TIMESTAMP: "timestamptz", Kind.DATE: "date"}
            value += f"::{cast[kind]}" if kind in cast else ""
        elif kind is Kind.TIMESTAMP:
            # MariaDB's DATETIME holds UTC; SQLite stores a form its date functions read.
            value = f"substr({value}, 1, 19)"
        values.append(value)
    sql = (
        f"INSERT INTO {q(target)} ({', '.join(names)})"
        f" SELECT {', '.join(values)} FROM {staged.table}"
    )
    if name != "sqlite":
        sql = sql.replace("%", "%%").replace("%%s", "%s")
    connection.exec_driver_sql(sql, tuple(prefix))
    if name in ("mysql", "mariadb"):
        _refuse_warnings(connection.connection.dbapi_connection, staged.path)


def drop(connection: Connection, staged: Sequence[Staged]) -> None:
    """Drop the staging tables (outside any transaction on MariaDB: it would commit)."""
    temporary = " TEMPORARY" if connection.dialect.name in ("mysql", "mariadb") else ""
    for item in staged:
        connection.exec_driver_sql(f"DROP{temporary} TABLE IF EXISTS {item.table}")


# Kinds, on the server.


def _kinds(
    connection: Connection, table: str, columns: Sequence[str], current: Sequence[Kind]
) -> list[Kind]:
    """Each staged column's kind: one aggregate query tests every column not text yet."""
    postgres = connection.dialect.name == "postgresql"
    every, some = ("bool_and", "bool_or") if postgres else ("MIN", "MAX")
    tests: list[str] = []
    params: list[str] = []
    for column, kind in zip(columns, current, strict=True):
        if kind is Kind.TEXT:
            continue
        tests.append(f"{some}({column} <> '')")
        for check, pattern, length in _CHECKS:
            if kind in (Kind.EMPTY, check):
                match = "~" if postgres else "REGEXP"
                tests.append(
                    f"{every}({column} IS NULL OR {column} = ''"
                    f" OR (char_length({column}) {length} AND {column} {match} %s))"
                )
                # Whole values: "$" of PostgreSQL's regular expressions ends the text, PCRE's
                # "\z" (its "$" would match before a final line break).
                params.append(f"^(?:{pattern}){'$' if postgres else '\\z'}")
    if not tests:
        return list(current)
    row = list(
        connection.exec_driver_sql(f"SELECT {', '.join(tests)} FROM {table}", tuple(params)).one()
    )
    kinds = []
    for kind in current:
        if kind is Kind.TEXT:
            kinds.append(kind)
            continue
        if not row.pop(0):
            kinds.append(kind)  # no value (or no row): the column's kind so far
            continue
        found = Kind.TEXT
        for check, _pattern, _length in _CHECKS:
            if kind in (Kind.EMPTY, check) and row.pop(0) and found is Kind.TEXT:
                found = check
        kinds.append(found)
    return kinds


# PostgreSQL.


def _copy_postgresql(
    dbapi: Any, store: DataStore, path: str, table: str, columns: Sequence[str]
) -> None:
    import psycopg  # noqa: PLC0415

    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv, HEADER true)"
    try:
        with store.open_read(path) as stream, dbapi.cursor() as cursor, cursor.copy(sql) as copy:
            while chunk := stream.read(CHUNK):
                copy.write(chunk)
    except psycopg.errors.DataError as exc:
        # "COPY s1, line 5, column c2: …": the header is its line 1; lines are records.
        found = re.search(r", line ([0-9]+)", exc.diag.context or "")
        record = int(found[1]) - 1 if found else None
        reason = (exc.diag.message_primary or str(exc)).strip()
        raise _malformed(store, path, record, reason) from None


def _malformed(store: DataStore, path: str, record: int | None, reason: str) -> MalformedFile:
    """Why the server refused the file, as the csv module tells it (its line and reason),
    else as the server did."""
    with CsvFile(store, path) as file:
        try:
            for _block in file.blocks():
                pass
        except MalformedFile as exc:
            return exc
        line = file.record_line(record) if record else None
    return MalformedFile(path, line, reason)


# MariaDB/MySQL.


def _load_data_mysql(
    dbapi: Any, store: DataStore, path: str, table: str, columns: Sequence[str]
) -> None:
    with store.open_read(path) as stream:
        first = stream.readline()
    ending = "\\r\\n" if first.endswith(b"\r\n") else "\\n"
    sql = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4"
        " FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY ''"
        f" LINES TERMINATED BY '{ending}' IGNORE 1 LINES ({', '.join(columns)})"
    )
    with tempfile.TemporaryDirectory(prefix="flsync-load-") as folder:
        pipe = os.path.join(folder, "rows")
        os.mkfifo(pipe, 0o600)
        feeder = _PipeFeeder(pipe, store, path)
        feeder.start()
        try:
            with dbapi.cursor() as cursor:
                cursor.execute(sql, (pipe,))
        finally:
            feeder.finish()
    if feeder.error is not None:
        raise feeder.error
    _refuse_warnings(dbapi, path, store)


def _refuse_warnings(dbapi: Any, path: str, store: DataStore | None = None) -> None:
    """LOAD DATA LOCAL turns refused rows and values into warnings (the server cannot stop
    the client's transfer): any warning fails the file."""
    with dbapi.cursor() as cursor:
        cursor.execute("SHOW WARNINGS LIMIT 1")
        warning = cursor.fetchone()
    if not warning:
        return
    if store is None:
        raise LoadError(f"{path}: the database refused a value: {warning[2]}")
    # "Row 3 doesn't contain data for all columns": rows counted after the header.
    found = re.search(r"\brow ([0-9]+)", warning[2], re.IGNORECASE)
    raise _malformed(store, path, int(found[1]) if found else None, warning[2])


class _PipeFeeder(threading.Thread):
    """Copies the file's bytes into the named pipe the server reads through the client."""

    def __init__(self, pipe: str, store: DataStore, path: str) -> None:
        super().__init__(name="flsync-load-pipe", daemon=True)
        self.pipe = pipe
        self.store = store
        self.path = path
        self.error: BaseException | None = None
        self.stopped = False

    def run(self) -> None:
        try:
            with self.store.open_read(self.path) as stream, open(self.pipe, "wb") as out:
                while not self.stopped and (chunk := stream.read(CHUNK)):
                    out.write(chunk)
        except BrokenPipeError:
            pass  # the client stopped reading: its statement failed, and says why
        except BaseException as exc:  # a failed read: raised by the caller
            self.error = exc

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
                    os.read(reader, CHUNK)
                except BlockingIOError:
                    self.join(0.05)
        finally:
            os.close(reader)
        self.join()


# SQLite.


def _insert_sqlite(
    dbapi: Any,
    store: DataStore,
    path: str,
    table: str,
    columns: Sequence[str],
    current: Sequence[Kind],
) -> list[Kind]:
    kinds = list(current)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    def typed(block: list[list[str]]) -> list[list[str]]:
        for index, values in enumerate(zip(*block, strict=True)):
            if kinds[index] is not Kind.TEXT:
                kinds[index] = column_kind(values, kinds[index])
        return block

    with CsvFile(store, path) as file, contextlib.closing(dbapi.cursor()) as cursor:
        cursor.executemany(sql, itertools.chain.from_iterable(map(typed, file.blocks())))
    return kinds
