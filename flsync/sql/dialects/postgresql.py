"""PostgreSQL through psycopg 3: ``COPY … FROM STDIN``.

Directly: the file's bytes as they are, through ``COPY table (columns) FROM STDIN (FORMAT
csv, HEADER, FORCE_NULL)``: the server parses and types them; the leading columns take their
defaults, which read the run's values from the transaction's settings. Only the bytes the
check passed are sent (flsync.sql.bulk.checked), while the server works on the previous
chunk. Staged: the rows as the csv module read them (flsync.sql.csvfiles.canonical) into a
temporary table, whose columns' kinds casts tell (else regular expressions).

``COPY`` is sent without parameters, so its names are composed by psycopg.sql.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from psycopg import sql
from sqlalchemy import inspect
from sqlalchemy.exc import DataError

from flsync.sql.bulk import LEADING, Misfit, Planned, Staged, checked, guess, malformed
from flsync.sql.csvfiles import CsvFile, DataFiles, Kind, RowChecker, canonical
from flsync.sql.dialects.base import Dialect, driver_connection

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection, Engine

# The leading columns' values while a run is copied straight into its tables: the run's, set
# for the transaction (load_direct); outside a load there are none.
LEADING_DEFAULTS = {
    "uni_name": "current_setting('flsync.uni_name')",
    "course_name": "current_setting('flsync.course_name')",
    "run": "current_setting('flsync.run')::bigint",
}
# A value of each kind as a cast that prints back as the value: the same values as the
# regular expressions (the digits of an integer within 18; a timestamp's or date's text in
# ISO form whatever the session's DateStyle). "%%" is the driver's "%".
_CASTS = {
    Kind.INTEGER: "char_length({c}) - ({c} LIKE '-%%')::int <= 18 AND {c}::bigint::text = {c}",
    Kind.TIMESTAMP: "char_length({c}) = 23 AND {c} LIKE '%% UTC'"
    " AND to_char(left({c}, 19)::timestamp, 'YYYY-MM-DD HH24:MI:SS') = left({c}, 19)",
    Kind.DATE: "char_length({c}) = 10 AND to_char({c}::date, 'YYYY-MM-DD') = {c}",
}
# A column's values as text, as the files had them (to widen it to text).
_AS_TEXT = {
    Kind.INTEGER: "{c}::text",
    Kind.DATE: "to_char({c}, 'YYYY-MM-DD')",
    Kind.TIMESTAMP: "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'",
}
_TYPES = {Kind.INTEGER: "bigint", Kind.TIMESTAMP: "timestamptz", Kind.DATE: "date"}
# Names are cut at NAMEDATALEN - 1 bytes.
MAX_NAME_BYTES = 63


class PostgreSQL(Dialect):
    title = "PostgreSQL"
    drivers = ("psycopg",)
    staging_schema = "pg_temp."
    # A run's rows go in together, so they lie together: a block-range index finds them (to
    # delete them) at almost no cost to the load, where a B-tree over every row's
    # (uni_name, course_name, run) doubles it.
    index_options: ClassVar[dict[str, Any]] = {
        "postgresql_using": "brin",
        "postgresql_with": {"autosummarize": "on"},
    }
    every = "bool_and"
    some = "bool_or"
    matches = "~"
    text_end = "$"  # the end of the text, in PostgreSQL's regular expressions

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._adopted: set[str] = set()  # the tables whose leading defaults are set

    def name_problem(self, name: str) -> str | None:
        size = len(name.encode())
        if size > MAX_NAME_BYTES:
            return f"{self.title}'s names hold {MAX_NAME_BYTES} bytes at most, this one {size}"
        return super().name_problem(name)

    def leading_default(self, column: str) -> str | None:
        return LEADING_DEFAULTS[column]

    def adopt(self, connection: Connection, table: str) -> None:
        """The leading columns' defaults of a table made by an earlier version, if it lacks
        them: an ALTER TABLE would wait for every query reading the table."""
        if table in self._adopted:
            return
        self._adopted.add(table)
        reflected = {c["name"]: c["default"] for c in inspect(connection).get_columns(table)}
        if all(reflected.get(column) for column in LEADING):
            return
        for column in LEADING:
            connection.exec_driver_sql(
                f"ALTER TABLE {self.quote(table)} ALTER COLUMN {self.quote(column)}"
                f" SET DEFAULT {LEADING_DEFAULTS[column]}"
            )

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
        c = self.quote(column)
        sql_type = self.sql_type(new).compile(dialect=connection.dialect)
        using = _AS_TEXT.get(kind, "{c}").format(c=c)
        connection.exec_driver_sql(
            f"ALTER TABLE {self.quote(table)} ALTER COLUMN {c} TYPE {sql_type}"
            f" USING ({using})::{sql_type}"
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
        """COPY into the table itself: the leading columns take their defaults, which read
        the run's values from this transaction's settings."""
        names = sql.SQL(", ").join(map(sql.Identifier, planned.header))
        statement = sql.SQL(
            "COPY {table} ({names}) FROM STDIN (FORMAT csv, HEADER true, FORCE_NULL ({names}))"
        ).format(table=sql.Identifier(planned.target), names=names)
        checker = RowChecker(kinds, files.line_end(planned.path), files.record_limit)
        with driver_connection(connection).cursor() as cursor:
            for name, value in zip(LEADING, prefix, strict=False):
                cursor.execute("SELECT set_config(%s, %s, true)", (f"flsync.{name}", str(value)))
            try:
                with (
                    contextlib.closing(files.chunks(planned.path)) as chunks,
                    cursor.copy(statement) as copy,
                ):
                    # Only checked bytes are sent: the server never refuses them itself.
                    for chunk in checked(chunks, checker):
                        if chunk is None:
                            raise Misfit(planned.path)
                        copy.write(chunk)
            except psycopg.errors.DataError as exc:
                # A value the check passed but the type does not hold (30 February), or a
                # fault in the file: the staged path tells which.
                raise Misfit(planned.path) from exc
            return int(cursor.rowcount)

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
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {staged}")
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {self.quote(table)}"
            f" ({', '.join(f'{c} text' for c in columns)})"
        )
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, HEADER true)").format(
            sql.Identifier("pg_temp", table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        try:
            with (
                CsvFile(files, path) as file,
                driver_connection(connection).cursor() as cursor,
                cursor.copy(statement) as copy,
            ):
                for chunk in canonical(file):
                    copy.write(chunk)
        except psycopg.errors.DataError as exc:
            # "COPY s1, line 5, column c2: …": the header is its line 1; lines are records.
            found = re.search(r", line ([0-9]+)", exc.diag.context or "")
            record = int(found[1]) - 1 if found else None
            reason = (exc.diag.message_primary or str(exc)).strip()
            raise malformed(files, path, record, reason) from None
        kinds = self._kinds(connection, staged, columns, guess(files, path, current))
        return Staged(target=target, path=path, header=header, kinds=kinds, table=table)

    def _kinds(
        self, connection: Connection, table: str, columns: Sequence[str], guessed: Sequence[Kind]
    ) -> list[Kind]:
        """Each staged column's kind, given its kind in the file's first rows (and the
        table): one aggregate query tests each column's values for that kind only, by their
        casts to the column's type, which must print back as the values: much cheaper than a
        regular expression, but a value that does not cast is an error, and then (rarely)
        the regular expressions decide."""
        tests: list[str] = []
        for column, kind in zip(columns, guessed, strict=True):
            if kind is not Kind.TEXT:
                tests.append(f"bool_or({column} <> '')")
            if kind in _CASTS:
                cast = _CASTS[kind].format(c=column)
                tests.append(
                    f"bool_and({column} IS NULL OR {column} = '' OR COALESCE({cast}, FALSE))"
                )
        if not tests:
            return list(guessed)
        try:
            with connection.begin_nested():
                statement = f"SELECT {', '.join(tests)} FROM {table}"
                row = iter(connection.exec_driver_sql(statement).one())
        except DataError:  # a value that does not cast
            return self.matching(connection, table, columns, guessed)
        kinds: list[Kind] = []
        for column, kind in zip(columns, guessed, strict=True):
            if kind is Kind.TEXT or not next(row):
                kinds.append(kind)  # text, or no value (or no row): the column's kind so far
            elif kind is Kind.EMPTY:
                kinds += self.matching(connection, table, [column], [kind])
            else:
                kinds.append(kind if next(row) else Kind.TEXT)
        return kinds

    def staged_value(self, column: str, kind: Kind) -> str:
        value = f"NULLIF({column}, '')"
        return f"{value}::{_TYPES[kind]}" if kind in _TYPES else value
