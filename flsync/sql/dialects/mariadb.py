"""MariaDB/MySQL through PyMySQL: ``LOAD DATA LOCAL INFILE``.

Directly: the file's bytes, as the check passed them (flsync.sql.bulk.checked), through a
named pipe that a thread fills, each field through a variable (``SET`` gives the leading
columns, NULL for empty fields); any warning counts as not fitting. Staged: the rows as the
csv module read them (flsync.sql.csvfiles.canonical) into a temporary table, whose columns'
kinds regular expressions tell. The server is sent no local file but that pipe, whatever
file it asks for (``GuardedConnection``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import pymysql
from pymysql.constants import CR
from pymysql.protocol import MysqlPacket
from sqlalchemy import event
from sqlalchemy.dialects import mysql

from flsync.sql.bulk import LEADING, LoadError, Misfit, Planned, Staged, checked, guess, malformed
from flsync.sql.csvfiles import CHUNK, CsvFile, DataFiles, Kind, RowChecker, canonical
from flsync.sql.dialects.base import Dialect, driver_connection

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy import Connection, Engine
    from sqlalchemy.types import TypeEngine

# Names hold 64 characters, of the Basic Multilingual Plane, and cannot end with a space.
MAX_NAME_CHARACTERS = 64
# MariaDB/MySQL index at most 3072 bytes of a key: the names' first 191 characters.
KEY_PREFIX = 191
# LOAD DATA reads an unquoted NULL as NULL whatever FIELDS ESCAPED BY says (and an empty
# field as empty text): the files' text "NULL" back.
_NULL_WORD = "COALESCE({field}, 'NULL')"


class MariaDB(Dialect):
    title = "MariaDB/MySQL"
    drivers = ("pymysql",)
    # InnoDB (transactions), every character (emoji), exact comparisons.
    table_options: ClassVar[dict[str, Any]] = {
        "mysql_engine": "InnoDB",
        "mysql_charset": "utf8mb4",
        "mysql_collate": "utf8mb4_bin",
    }
    index_options: ClassVar[dict[str, Any]] = {
        "mysql_length": {"uni_name": KEY_PREFIX, "course_name": KEY_PREFIX}
    }

    @classmethod
    def engine_options(cls) -> dict[str, Any]:
        # LOAD DATA LOCAL INFILE is off in the client unless asked for; utf8mb4 for emoji.
        return {"connect_args": {"local_infile": True, "charset": "utf8mb4"}}

    @classmethod
    def configure(cls, engine: Engine) -> None:
        """Connections that send the server no local file but the one flsync's own LOAD
        DATA statement names (GuardedConnection)."""

        @event.listens_for(engine, "do_connect")
        def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> GuardedConnection:
            return GuardedConnection(*cargs, **cparams)

    def name_problem(self, name: str) -> str | None:
        if len(name) > MAX_NAME_CHARACTERS:
            return (
                f"{self.title}'s names hold {MAX_NAME_CHARACTERS} characters at most,"
                f" this one {len(name)}"
            )
        if max(map(ord, name)) > 0xFFFF:
            return f"{self.title}'s names cannot hold characters beyond U+FFFF (emoji)"
        if name.endswith(" "):
            return f"{self.title}'s names cannot end with a space"
        return super().name_problem(name)

    def text_type(self) -> TypeEngine[str]:
        return mysql.LONGTEXT()  # TEXT holds 64 KiB; a comment may be longer

    def empty_type(self) -> TypeEngine[str]:
        return mysql.TINYTEXT()

    def retype(
        self,
        connection: Connection,
        table: str,
        column: str,
        *,
        kind: Kind,
        new: Kind,
        columns: dict[str, Kind],
    ) -> None:
        t, c = self.quote(table), self.quote(column)
        sql_type = self.sql_type(new).compile(dialect=connection.dialect)
        connection.exec_driver_sql(f"ALTER TABLE {t} MODIFY {c} {sql_type}")
        if kind is Kind.TIMESTAMP and new is Kind.TEXT:
            connection.exec_driver_sql(
                f"UPDATE {t} SET {c} = CONCAT(LEFT({c}, 19), ' UTC') WHERE {c} IS NOT NULL"
            )
        columns[column] = new

    def load_direct(
        self,
        connection: Connection,
        files: DataFiles,
        planned: Planned,
        prefix: Sequence[str | int],
        kinds: Sequence[Kind],
    ) -> int:
        """LOAD DATA into the table itself, each field through a variable: the leading
        columns set to the run's values, empty fields to NULL, timestamps without their
        " UTC"."""
        fields = [f"@c{n}" for n in range(1, len(planned.header) + 1)]
        assignments = [f"{self.quote(name)} = %s" for name in LEADING[: len(prefix)]]
        for name, field, kind in zip(planned.header, fields, kinds, strict=True):
            value = _NULL_WORD.format(field=field)
            value = f"LEFT({value}, 19)" if kind is Kind.TIMESTAMP else value
            assignments.append(f"{self.quote(name)} = NULLIF({value}, '')")
        dbapi = driver_connection(connection)
        line_end = files.line_end(planned.path)
        checker = RowChecker(kinds, line_end, files.record_limit)
        with contextlib.closing(files.chunks(planned.path)) as chunks:
            rows = _load_data_local(
                dbapi,
                checked(chunks, checker),
                table=self.quote(planned.target),
                fields=fields,
                assignments=assignments,
                params=[str(value) for value in prefix],
                line_end=line_end,
            )
        if not checker.fits or _first_warning(dbapi):
            # A value refused or changed by the server: the staged path says which.
            raise Misfit(planned.path)
        return rows

    def stage(
        self,
        connection: Connection,
        files: DataFiles,
        path: str,
        header: Sequence[str],
        *,
        current: Sequence[Kind],
        table: str,
        target: str,
    ) -> Staged:
        columns = [f"c{n}" for n in range(1, len(header) + 1)]
        staged = self.staging_table(table)
        connection.exec_driver_sql(f"DROP TEMPORARY TABLE IF EXISTS {staged}")
        # MariaDB's Aria loads a temporary table twice as fast as InnoDB (no undo log).
        aria = " ENGINE=Aria" if getattr(connection.dialect, "is_mariadb", False) else ""
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {staged} ({', '.join(f'{c} LONGTEXT' for c in columns)})"
            f" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin{aria}"
        )
        fields = [f"@{c}" for c in columns]
        assignments = [
            f"{c} = {_NULL_WORD.format(field=f)}" for c, f in zip(columns, fields, strict=True)
        ]
        dbapi = driver_connection(connection)
        with CsvFile(files, path) as file:
            _load_data_local(
                dbapi, canonical(file), table=staged, fields=fields, assignments=assignments
            )
        warning = _first_warning(dbapi)
        if warning is not None:
            # "Row 3 doesn't contain data for all columns": rows counted after the header.
            found = re.search(r"\brow ([0-9]+)", warning, re.IGNORECASE)
            raise malformed(files, path, int(found[1]) if found else None, warning)
        kinds = self.matching(connection, staged, columns, guess(files, path, current))
        return Staged(target=target, path=path, header=header, kinds=kinds, table=table)

    def moved(self, connection: Connection, staged: Staged) -> None:
        """The server turns values it refuses into warnings: any warning fails the file."""
        warning = _first_warning(driver_connection(connection))
        if warning is not None:
            raise LoadError(f"{staged.path}: the database refused a value: {warning}")

    def drop_staging(self, connection: Connection, tables: Sequence[str]) -> None:
        for table in tables:
            connection.exec_driver_sql(
                f"DROP TEMPORARY TABLE IF EXISTS {self.staging_table(table)}"
            )


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


def _first_warning(dbapi: Any) -> str | None:
    """The message of the last statement's first warning, if any: LOAD DATA LOCAL turns
    refused rows and values into warnings (the server cannot stop the client's transfer)."""
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
