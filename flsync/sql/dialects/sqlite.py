"""SQLite through Python's sqlite3: the csv module's rows by ``executemany``.

Directly: each block's columns checked (flsync.sql.csvfiles) and given as the parameters of
multi-row ``INSERT`` statements of up to 999 parameters. Staged: the rows into a temporary
table, each block's columns typed on the way. SQLite cannot change a column's type: its
table is made again, in one transaction.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect

from flsync.sql.bulk import LEADING, Misfit, Planned, Staged
from flsync.sql.csvfiles import CsvFile, DataFiles, Kind, column_kind
from flsync.sql.dialects.base import Dialect, driver_connection

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy import Connection, Engine

# Parameters in one statement: SQLite's smallest limit (999 before 3.32).
PARAMETERS = 999


class SQLite(Dialect):
    title = "SQLite"
    drivers = ("pysqlite",)
    placeholder = "?"
    staging_schema = "temp."

    @classmethod
    def engine_options(cls) -> dict[str, Any]:
        # Another writer (a second load) is waited for, not failed at once.
        return {"connect_args": {"timeout": 300}}

    @classmethod
    def configure(cls, engine: Engine) -> None:
        """The driver would commit before DDL and begin late: SQLAlchemy's own recipe hands
        transactions to SQLAlchemy, so that a table made again (a column retyped) is made
        whole or not at all."""

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            # A bigger page cache for index upkeep during large inserts (64 MiB).
            dbapi_connection.execute("PRAGMA cache_size = -65536")

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN")

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
        """The table made again with ``column`` of ``new``, in one transaction (its values,
        of ``kind``, as text if it becomes text)."""
        q = self.quote
        scratch = f"{table}-flsync-retype"
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {q(scratch)}")
        connection.exec_driver_sql(f"ALTER TABLE {q(table)} RENAME TO {q(scratch)}")
        # Its index moved with it, under its name: made again for the new table.
        for index in inspect(connection).get_indexes(scratch):
            connection.exec_driver_sql(f"DROP INDEX {q(str(index['name']))}")
        columns[column] = new
        self.create_table(connection, table, columns)
        names = ", ".join(q(name) for name in columns)
        to_text = kind is Kind.TIMESTAMP and new is Kind.TEXT
        values = ", ".join(
            f"{q(name)} || ' UTC'" if name == column and to_text else q(name) for name in columns
        )
        connection.exec_driver_sql(
            f"INSERT INTO {q(table)} ({names}) SELECT {values} FROM {q(scratch)}"
        )
        connection.exec_driver_sql(f"DROP TABLE {q(scratch)}")

    def load_direct(
        self,
        connection: Connection,
        files: DataFiles,
        planned: Planned,
        prefix: Sequence[str | int],
        kinds: Sequence[Kind],
    ) -> int:
        """Rows read by the csv module, each block's columns checked and given as parameters
        of multi-row INSERTs: empty fields as NULL, timestamps without their " UTC"."""
        q = self.quote
        width = len(planned.header)
        names = [q(c) for c in (*LEADING[: len(prefix)], *planned.header)]
        leading = [
            str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'" for v in prefix
        ]
        row = f"({', '.join([*leading, *('?' * width)])})"
        per = max(1, PARAMETERS // width)

        def sql(rows: int) -> str:
            return f"INSERT INTO {q(planned.target)} ({', '.join(names)}) VALUES " + ", ".join(
                [row] * rows
            )

        full = sql(per)
        step = per * width
        inserted = 0
        dbapi = driver_connection(connection)
        with CsvFile(files, planned.path) as file, contextlib.closing(dbapi.cursor()) as cursor:
            for values in _values(file, kinds):
                whole = len(values) - len(values) % step
                cursor.executemany(full, [values[i : i + step] for i in range(0, whole, step)])
                if whole < len(values):
                    cursor.execute(sql((len(values) - whole) // width), values[whole:])
                inserted += len(values) // width
        return inserted

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
            f"CREATE TEMPORARY TABLE {self.quote(table)} ({', '.join(columns)})"
        )
        kinds = list(current)
        sql = (
            f"INSERT INTO {staged} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )

        def typed(block: list[list[str]]) -> list[list[str]]:
            for index, values in enumerate(zip(*block, strict=True)):
                if kinds[index] is not Kind.TEXT:
                    kinds[index] = column_kind(values, kinds[index])
            return block

        dbapi = driver_connection(connection)
        with CsvFile(files, path) as file, contextlib.closing(dbapi.cursor()) as cursor:
            cursor.executemany(sql, itertools.chain.from_iterable(map(typed, file.blocks())))
        return Staged(target=target, path=path, header=header, kinds=kinds, table=table)


def _values(file: CsvFile, kinds: Sequence[Kind]) -> Iterable[list[str | None]]:
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
