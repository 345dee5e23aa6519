"""Each database's bulk path: a CSV file into its dataset's table.

Directly (``load_direct``), as a run is almost always loaded: the file goes straight into its
table, whose columns were made to fit the kinds its first rows show (``guess``), and each value
is checked on the way; a value that does not fit its column raises Misfit, and the caller
rolls the run back and stages it. The file is parsed once:
- PostgreSQL: the file's bytes as they are, through ``COPY table (columns) FROM STDIN (FORMAT
  csv, HEADER, FORCE_NULL)``: the server parses and types them; the leading columns take
  their defaults, which read the run's values from the transaction's settings. The bytes
  are checked as they pass (flsync.sql.csvfiles.RowChecker, one regular expression per chunk)
  while the server works on the previous chunk.
- MariaDB/MySQL: ``LOAD DATA LOCAL INFILE`` of a named pipe that a thread fills with the file's
  bytes, checked as they pass; each field through a variable (``SET`` gives the leading
  columns, NULL for empty fields); any warning counts as not fitting. The server is sent only
  that pipe, whatever file it asks for (GuardedConnection).
- SQLite: the csv module (flsync.sql.csvfiles), each block's columns checked, and multi-row
  ``INSERT`` statements of up to 999 parameters by ``executemany``.
The check passes only bytes that the server reads exactly as the csv module does (every
record ending as the header line does, no line PostgreSQL takes for its end of data): any
other file is staged.

Staged (``stage`` then ``move``), when the direct path met a value that did not fit: the
file's rows go, as text, into a temporary table of columns ``c1 … cn``, and each column's
kind is found over the whole file (PostgreSQL: casts that must print back as the value,
else regular expressions; MariaDB: regular expressions; SQLite: the csv module's blocks).
PostgreSQL and MariaDB are sent the rows as the csv module read them, written again in one
plain form (flsync.sql.csvfiles.canonical), so that their parse is the csv module's whatever
the file's line ends or quoting. Then, once the tables fit those kinds, one ``INSERT …
SELECT`` moves the rows into the dataset's table inside the run's transaction, empty text as
NULL and each value cast to its column's type. Staging tables are temporary and named
``flsync-stage-N``: no dataset's table can be so named (a file's ``-`` becomes ``_``).

When the server refuses a file's text, the file is read again by the csv module (the error
path only), so that the error names the line as a text editor counts it (from 1, line breaks
inside quoted fields included) and says why, as the csv module's reading would.

Names: every identifier is quoted by SQLAlchemy's preparer, which doubles a ``%`` for the
drivers that read ``%s`` (psycopg, PyMySQL); so every statement holding one is sent with
parameters (the driver then reads ``%%`` as ``%``), and psycopg's ``COPY``, sent without,
is composed by psycopg.sql.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import pymysql
from pymysql.constants import CR
from pymysql.protocol import MysqlPacket
from sqlalchemy.exc import DataError

from flsync.sql.csvfiles import (
    CHUNK,
    DATE_PATTERN,
    INTEGER_PATTERN,
    TIMESTAMP_PATTERN,
    CsvFile,
    DataFiles,
    Kind,
    MalformedFile,
    RowChecker,
    canonical,
    column_kind,
    widen,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from sqlalchemy import Connection

# The columns every dataset row starts with (the run's, from its metadata.csv).
LEADING = ("uni_name", "course_name", "run")
# Parameters in one SQLite statement: SQLite's smallest limit (999 before 3.32).
SQLITE_PARAMETERS = 999
# Staging tables' names: with a "-", which no dataset table's name has.
STAGING = "flsync-stage-"
# A value of each kind, as a regular expression (see flsync.sql.csvfiles)…
_PATTERNS = {
    Kind.INTEGER: INTEGER_PATTERN,
    Kind.TIMESTAMP: TIMESTAMP_PATTERN,
    Kind.DATE: DATE_PATTERN,
}
# … and, on PostgreSQL, as a cast that prints back as the value: the same values (the digits
# of an integer within 18, as the expression has them; a timestamp's or date's text in ISO
# form whatever the session's DateStyle). "%%" is the driver's "%".
_CASTS = {
    Kind.INTEGER: "char_length({c}) - ({c} LIKE '-%%')::int <= 18 AND {c}::bigint::text = {c}",
    Kind.TIMESTAMP: "char_length({c}) = 23 AND {c} LIKE '%% UTC'"
    " AND to_char(left({c}, 19)::timestamp, 'YYYY-MM-DD HH24:MI:SS') = left({c}, 19)",
    Kind.DATE: "char_length({c}) = 10 AND to_char({c}::date, 'YYYY-MM-DD') = {c}",
}


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


def load_direct(
    connection: Connection,
    files: DataFiles,
    planned: Planned,
    prefix: Sequence[str | int],
    kinds: Sequence[Kind],
) -> int:
    """Load the file straight into its table, whose columns' kinds (the file's columns in
    order) are ``kinds``, after the leading columns' values ``prefix``, checking each value
    on the way; the number of rows. Misfit, with the statement undone, when a value does not
    fit (or a row is not what the direct path can check): the caller rolls the run back and
    stages it."""
    name = connection.dialect.name
    if name == "postgresql":
        return _copy_direct_postgresql(connection, files, planned, prefix, kinds)
    if name in ("mysql", "mariadb"):
        return _load_direct_mysql(connection, files, planned, prefix, kinds)
    if name == "sqlite":
        return _insert_direct_sqlite(connection, files, planned, prefix, kinds)
    raise LoadError(f"no bulk path for {name}: use PostgreSQL, MariaDB/MySQL or SQLite")


def staging_table(connection: Connection, name: str) -> str:
    """The staging table ``name`` as statements name it: quoted, in the temporary schema."""
    quoted = connection.dialect.identifier_preparer.quote(name)
    schema = {"postgresql": "pg_temp.", "sqlite": "temp."}.get(connection.dialect.name, "")
    return schema + quoted


def stage(
    connection: Connection,
    files: DataFiles,
    path: str,
    header: Sequence[str],
    *,
    current: Sequence[Kind],
    table: str,
    target: str,
) -> Staged:
    """Stage the file at ``path`` (its ``header`` read already) into the temporary table
    ``table``, for the dataset's table ``target``; ``current`` is each column's kind there
    (EMPTY when new): a column that is text already is not tested."""
    name = connection.dialect.name
    columns = [f"c{n}" for n in range(1, len(header) + 1)]
    created = connection.dialect.identifier_preparer.quote(table)
    staged = staging_table(connection, table)
    dbapi = _dbapi(connection)
    if name == "postgresql":
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {staged}")
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {created} ({', '.join(f'{c} text' for c in columns)})"
        )
        _copy_postgresql(dbapi, files, path, table, columns)
    elif name in ("mysql", "mariadb"):
        connection.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {staged}")
        # MariaDB's Aria loads a temporary table twice as fast as InnoDB (no undo log).
        aria = " ENGINE=Aria" if getattr(connection.dialect, "is_mariadb", False) else ""
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {created} ({', '.join(f'{c} LONGTEXT' for c in columns)})"
            f" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin{aria}"
        )
        _load_data_mysql(dbapi, files, path, staged, columns)
    elif name == "sqlite":
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {staged}")
        connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {created} ({', '.join(columns)})")
        kinds = _insert_sqlite(dbapi, files, path, staged, columns=columns, current=current)
        return Staged(target=target, path=path, header=header, kinds=kinds, table=table)
    else:
        raise LoadError(f"no bulk path for {name}: use PostgreSQL, MariaDB/MySQL or SQLite")
    kinds = _kinds(connection, staged, columns, guess(files, path, current))
    return Staged(target=target, path=path, header=header, kinds=kinds, table=table)


def move(
    connection: Connection, staged: Staged, prefix: Sequence[str | int], kinds: Sequence[Kind]
) -> int:
    """Insert the staged rows into their dataset's table (whose columns' kinds, the file's
    columns in order, are ``kinds``), after the leading columns' values ``prefix``; the
    number of rows."""
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
        f"INSERT INTO {q(staged.target)} ({', '.join(names)}) SELECT {', '.join(values)}"
        f" FROM {staging_table(connection, staged.table)}"
    )
    inserted = connection.exec_driver_sql(sql, tuple(prefix)).rowcount
    if name in ("mysql", "mariadb"):
        _refuse_warnings(connection.connection.dbapi_connection, staged.path)
    return int(inserted)


def _dbapi(connection: Connection) -> Any:
    """The driver's own connection, for its bulk calls."""
    return connection.connection.dbapi_connection


def drop(connection: Connection, tables: Sequence[str]) -> None:
    """Drop the staging tables, if they are."""
    temporary = " TEMPORARY" if connection.dialect.name in ("mysql", "mariadb") else ""
    for table in tables:
        connection.exec_driver_sql(
            f"DROP{temporary} TABLE IF EXISTS {staging_table(connection, table)}"
        )


# Kinds, on the server.


def _kinds(
    connection: Connection, table: str, columns: Sequence[str], guessed: Sequence[Kind]
) -> list[Kind]:
    """Each staged column's kind, given its kind in the file's first rows (and the table):
    one aggregate query tests each column's values for that kind only.

    On PostgreSQL a value is tested by its cast to the column's type, which must print back
    as the value: much cheaper there than a regular expression, but a value that does not
    cast is an error, and then (rarely) the regular expressions decide."""
    if connection.dialect.name != "postgresql":
        return _matching(connection, table, columns, guessed)
    tests: list[str] = []
    for column, kind in zip(columns, guessed, strict=True):
        if kind is not Kind.TEXT:
            tests.append(f"bool_or({column} <> '')")
        if kind in _CASTS:
            cast = _CASTS[kind].format(c=column)
            tests.append(f"bool_and({column} IS NULL OR {column} = '' OR COALESCE({cast}, FALSE))")
    if not tests:
        return list(guessed)
    try:
        with connection.begin_nested():
            row = iter(connection.exec_driver_sql(f"SELECT {', '.join(tests)} FROM {table}").one())
    except DataError:  # a value that does not cast
        return _matching(connection, table, columns, guessed)
    kinds: list[Kind] = []
    for column, kind in zip(columns, guessed, strict=True):
        if kind is Kind.TEXT or not next(row):
            kinds.append(kind)  # text, or no value (or no row): the column's kind so far
        elif kind is Kind.EMPTY:
            kinds += _matching(connection, table, [column], [kind])
        else:
            kinds.append(kind if next(row) else Kind.TEXT)
    return kinds


def _matching(
    connection: Connection, table: str, columns: Sequence[str], guessed: Sequence[Kind]
) -> list[Kind]:
    """The columns' kinds by the regular expressions of the kinds each may still have."""
    postgres = connection.dialect.name == "postgresql"
    every, some, match = ("bool_and", "bool_or", "~") if postgres else ("MIN", "MAX", "REGEXP")
    # Whole values: "$" of PostgreSQL's regular expressions ends the text; PCRE's "\\z" does
    # (its "$" would match before a final line break too).
    end = "$" if postgres else "\\z"
    tests: list[str] = []
    params: list[str] = []
    for column, kind in zip(columns, guessed, strict=True):
        if kind is Kind.TEXT:
            continue
        tests.append(f"{some}({column} <> '')")
        for check, pattern in _PATTERNS.items():
            if kind in (check, Kind.EMPTY):
                tests.append(f"{every}(COALESCE({column}, '') {match} %s)")
                params.append(f"^(?:{pattern}|){end}")
    if not tests:
        return list(guessed)
    sql = f"SELECT {', '.join(tests)} FROM {table}"
    row = iter(connection.exec_driver_sql(sql, tuple(params)).one())
    kinds: list[Kind] = []
    for kind in guessed:
        if kind is Kind.TEXT:
            kinds.append(kind)
            continue
        some_value = next(row)
        held = [check for check in _PATTERNS if kind in (check, Kind.EMPTY) and next(row)]
        kinds.append((held[0] if held else Kind.TEXT) if some_value else kind)
    return kinds


# PostgreSQL.


def _copy_postgresql(
    dbapi: Any, files: DataFiles, path: str, table: str, columns: Sequence[str]
) -> None:
    """COPY the rows, as the csv module reads them, into the staging table ``table``."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
        sql.Identifier("pg_temp", table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    try:
        with (
            CsvFile(files, path) as file,
            dbapi.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            for chunk in canonical(file):
                copy.write(chunk)
    except psycopg.errors.DataError as exc:
        # "COPY s1, line 5, column c2: …": the header is its line 1; lines are records.
        found = re.search(r", line ([0-9]+)", exc.diag.context or "")
        record = int(found[1]) - 1 if found else None
        reason = (exc.diag.message_primary or str(exc)).strip()
        raise _malformed(files, path, record, reason) from None


def _copy_direct_postgresql(
    connection: Connection,
    files: DataFiles,
    planned: Planned,
    prefix: Sequence[str | int],
    kinds: Sequence[Kind],
) -> int:
    """COPY into the table itself: the leading columns take their defaults, which read the
    run's values from this transaction's settings (see flsync.sql.loader)."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    columns = sql.SQL(", ").join(map(sql.Identifier, planned.header))
    statement = sql.SQL(
        "COPY {table} ({columns}) FROM STDIN (FORMAT csv, HEADER true, FORCE_NULL ({columns}))"
    ).format(table=sql.Identifier(planned.target), columns=columns)
    checker = RowChecker(kinds, files.line_end(planned.path), files.record_limit)
    dbapi = _dbapi(connection)
    with dbapi.cursor() as cursor:
        for name, value in zip(LEADING, prefix, strict=False):
            cursor.execute("SELECT set_config(%s, %s, true)", (f"flsync.{name}", str(value)))
        try:
            with files.open(planned.path) as stream, cursor.copy(statement) as copy:
                # Only checked bytes are sent: the server never refuses them itself.
                for checked in _checked(stream, checker):
                    if checked is None:
                        raise Misfit(planned.path)
                    copy.write(checked)
        except psycopg.errors.DataError as exc:
            # A value the check passed but the type does not hold (30 February), or a fault
            # in the file: the staged path tells which.
            raise Misfit(planned.path) from exc
        return int(cursor.rowcount)


def _checked(stream: IO[bytes], checker: RowChecker) -> Iterator[bytes | None]:
    """The stream's bytes that ``checker`` passes, a chunk at a time; None once it refuses."""
    while chunk := stream.read(CHUNK):
        yield checker.feed(chunk)
    yield checker.close()


def _malformed(files: DataFiles, path: str, record: int | None, reason: str) -> MalformedFile:
    """Why the server refused the file, as the csv module tells it (its line and reason),
    else as the server did."""
    with CsvFile(files, path) as file:
        try:
            for _block in file.blocks():
                pass
        except MalformedFile as exc:
            return exc
        line = file.record_line(record) if record else None
    return MalformedFile(path, line, reason)


# MariaDB/MySQL.


class GuardedConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL's connection, but the server is sent a local file (``LOAD DATA LOCAL``) only
    when it asks for the one that flsync's own statement names (``sending``) while that
    statement runs: any other request is answered with no bytes, and fails its statement.

    PyMySQL itself sends whatever file the server names, in reply to any statement: a
    hostile or compromised server could read every file flsync can. PyMySQL has no hook for
    this, so the first packet of each reply is looked at here, before PyMySQL acts on it.
    """

    sending: bytes | None = None  # the path that flsync's LOAD DATA statement names
    _reply_starts = False  # the next packet read is the first of a reply

    def _execute_command(self, command: int, sql: bytes | str) -> None:
        super()._execute_command(command, sql)
        self._reply_starts = True

    def next_result(self, unbuffered: bool = False) -> int:
        self._reply_starts = True
        return int(super().next_result(unbuffered))

    def _read_packet(self, packet_type: Any = MysqlPacket) -> Any:
        packet = super()._read_packet(packet_type)
        if self._reply_starts:
            self._reply_starts = False
            asked = packet.get_all_data()[1:]
            if packet.is_load_local_packet() and asked != self.sending:
                # The protocol's answer to a refused request: an empty file, then the
                # server's reply (an error, most likely), before saying why.
                self.write_packet(b"")
                with contextlib.suppress(pymysql.err.MySQLError):
                    super()._read_packet(packet_type)
                name = asked.decode(errors="replace")
                raise pymysql.err.OperationalError(
                    CR.CR_LOAD_DATA_LOCAL_INFILE_REJECTED,
                    f"the server asked for the local file {name!r}, which flsync does not"
                    " send: refused (a server that is not what it should be?)",
                )
        return packet


def _load_data_mysql(
    dbapi: Any, files: DataFiles, path: str, table: str, columns: Sequence[str]
) -> None:
    """LOAD DATA the rows, as the csv module reads them, into the staging table ``table``."""
    fields = [f"@{c}" for c in columns]
    assignments = [
        f"{c} = {_NULL_WORD.format(field=f)}" for c, f in zip(columns, fields, strict=True)
    ]
    with CsvFile(files, path) as file:
        _load_data_local(
            dbapi, canonical(file), table=table, fields=fields, assignments=assignments
        )
    _refuse_warnings(dbapi, path, files)


def _load_direct_mysql(
    connection: Connection,
    files: DataFiles,
    planned: Planned,
    prefix: Sequence[str | int],
    kinds: Sequence[Kind],
) -> int:
    """LOAD DATA into the table itself, each field through a variable: the leading columns
    set to the run's values, empty fields to NULL, timestamps without their " UTC"."""
    q = connection.dialect.identifier_preparer.quote
    fields = [f"@c{n}" for n in range(1, len(planned.header) + 1)]
    assignments = [f"{q(name)} = %s" for name in LEADING[: len(prefix)]]
    for name, field, kind in zip(planned.header, fields, kinds, strict=True):
        value = _NULL_WORD.format(field=field)
        value = f"LEFT({value}, 19)" if kind is Kind.TIMESTAMP else value
        assignments.append(f"{q(name)} = NULLIF({value}, '')")
    dbapi = _dbapi(connection)
    line_end = files.line_end(planned.path)
    checker = RowChecker(kinds, line_end, files.record_limit)
    with files.open(planned.path) as stream:
        rows = _load_data_local(
            dbapi,
            _checked(stream, checker),
            table=q(planned.target),
            fields=fields,
            assignments=assignments,
            params=[str(value) for value in prefix],
            line_end=line_end,
        )
    if not checker.fits or _first_warning(dbapi):
        # A value refused or changed by the server: the staged path says which.
        raise Misfit(planned.path)
    return rows


def _load_data_local(
    dbapi: Any,
    chunks: Iterator[bytes | None],
    *,
    table: str,
    fields: Sequence[str],
    assignments: Sequence[str],
    params: Sequence[str] = (),
    line_end: bytes = b"\n",
) -> int:
    """LOAD DATA LOCAL INFILE of ``chunks`` (a CSV file's bytes, whose records end with
    ``line_end``; None ends them early) into ``table``, each record's fields into
    ``fields`` (variables), then ``assignments`` (whose %s are ``params``), through a named
    pipe that a thread fills; the number of rows."""
    ending = line_end.decode().replace("\r", "\\r").replace("\n", "\\n")
    sql = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE {table} CHARACTER SET utf8mb4"
        " FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY ''"
        f" LINES TERMINATED BY '{ending}' IGNORE 1 LINES ({', '.join(fields)})"
        f" SET {', '.join(assignments)}"
    )
    with tempfile.TemporaryDirectory(prefix="flsync-load-") as folder:
        pipe = os.path.join(folder, "rows")
        os.mkfifo(pipe, 0o600)
        feeder = _PipeFeeder(pipe, chunks)
        feeder.start()
        dbapi.sending = pipe.encode()
        try:
            with dbapi.cursor() as cursor:
                cursor.execute(sql, (pipe, *params))
                rows = int(cursor.rowcount)
        finally:
            dbapi.sending = None
            feeder.finish()
    if feeder.error is not None:
        raise feeder.error
    return rows


# LOAD DATA reads an unquoted NULL as NULL whatever FIELDS ESCAPED BY says (and an empty
# field as empty text): the files' text "NULL" back.
_NULL_WORD = "COALESCE({field}, 'NULL')"


def _refuse_warnings(dbapi: Any, path: str, files: DataFiles | None = None) -> None:
    """LOAD DATA LOCAL turns refused rows and values into warnings (the server cannot stop
    the client's transfer): any warning fails the file."""
    warning = _first_warning(dbapi)
    if warning is None:
        return
    if files is None:
        raise LoadError(f"{path}: the database refused a value: {warning}")
    # "Row 3 doesn't contain data for all columns": rows counted after the header.
    found = re.search(r"\brow ([0-9]+)", warning, re.IGNORECASE)
    raise _malformed(files, path, int(found[1]) if found else None, warning)


def _first_warning(dbapi: Any) -> str | None:
    """The message of the last statement's first warning (MariaDB/MySQL), if any."""
    with dbapi.cursor() as cursor:
        cursor.execute("SHOW WARNINGS LIMIT 1")
        warning = cursor.fetchone()
    return str(warning[2]) if warning else None


class _PipeFeeder(threading.Thread):
    """Copies a file's bytes into the named pipe the server reads through the client."""

    def __init__(self, pipe: str, chunks: Iterator[bytes | None]) -> None:
        super().__init__(name="flsync-load-pipe", daemon=True)
        self.pipe = pipe
        self.chunks = chunks
        self.error: BaseException | None = None
        self.stopped = False

    def run(self) -> None:
        try:
            with open(self.pipe, "wb") as out:
                for chunk in self.chunks:
                    if self.stopped or chunk is None:
                        return  # the rows so far are loaded, and then undone by the caller
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
    files: DataFiles,
    path: str,
    table: str,
    *,
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

    with CsvFile(files, path) as file, contextlib.closing(dbapi.cursor()) as cursor:
        cursor.executemany(sql, itertools.chain.from_iterable(map(typed, file.blocks())))
    return kinds


def _insert_direct_sqlite(
    connection: Connection,
    files: DataFiles,
    planned: Planned,
    prefix: Sequence[str | int],
    kinds: Sequence[Kind],
) -> int:
    """Rows read by the csv module, each block's columns checked (flsync.sql.csvfiles) and
    given as parameters of multi-row INSERTs: empty fields as NULL, timestamps without
    their " UTC"."""
    q = connection.dialect.identifier_preparer.quote
    width = len(planned.header)
    names = [q(c) for c in (*LEADING[: len(prefix)], *planned.header)]
    leading = [str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'" for v in prefix]
    row = f"({', '.join([*leading, *('?' * width)])})"
    per = max(1, SQLITE_PARAMETERS // width)

    def sql(rows: int) -> str:
        return f"INSERT INTO {q(planned.target)} ({', '.join(names)}) VALUES " + ", ".join(
            [row] * rows
        )

    full = sql(per)
    step = per * width
    inserted = 0
    dbapi = _dbapi(connection)
    with CsvFile(files, planned.path) as file, contextlib.closing(dbapi.cursor()) as cursor:
        for values in _sqlite_values(file, kinds):
            whole = len(values) - len(values) % step
            cursor.executemany(full, [values[i : i + step] for i in range(0, whole, step)])
            if whole < len(values):
                cursor.execute(sql((len(values) - whole) // width), values[whole:])
            inserted += len(values) // width
    return inserted


def _sqlite_values(file: CsvFile, kinds: Sequence[Kind]) -> Iterable[list[str | None]]:
    """Each block's values, row after row, each column checked for its kind: empty fields
    as None, timestamps without their " UTC"."""
    width = len(kinds)
    for block in file.blocks():
        values: list[str | None] = [None] * (len(block) * width)
        for index, (kind, column) in enumerate(zip(kinds, zip(*block, strict=True), strict=True)):
            if kind is not Kind.TEXT and column_kind(column, kind) is not kind:
                raise Misfit(file.path)
            if kind is Kind.TIMESTAMP:
                values[index::width] = [value[:19] or None for value in column]
            elif "" in column:
                values[index::width] = [value or None for value in column]
            else:
                values[index::width] = column
        yield values
