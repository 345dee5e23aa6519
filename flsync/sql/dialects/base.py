"""``Dialect``: what the loader asks of a database, and what the three share."""

from __future__ import annotations

import hashlib
import unicodedata
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    VARCHAR,
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)

from flsync.sql.bulk import LEADING, Planned, Staged
from flsync.sql.csvfiles import DATE_PATTERN, INTEGER_PATTERN, TIMESTAMP_PATTERN, DataFiles, Kind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Connection, Engine
    from sqlalchemy.types import TypeEngine


def driver_connection(connection: Connection) -> Any:
    """The driver's own connection under ``connection``, for its bulk calls."""
    return connection.connection.dbapi_connection


# A value of each kind, as a regular expression (see flsync.sql.csvfiles).
PATTERNS = {
    Kind.INTEGER: INTEGER_PATTERN,
    Kind.TIMESTAMP: TIMESTAMP_PATTERN,
    Kind.DATE: DATE_PATTERN,
}


class Dialect(ABC):
    """A database's ways, behind the one interface the loader uses: how to connect, which
    names and types it takes, how its tables are made and changed, and its bulk path, direct
    (``load_direct``) and staged (``stage``, ``move``, ``drop_staging``).

    One instance per load (``Loader``), on the engine of its database. Every name in a
    statement is quoted by ``quote`` (SQLAlchemy's preparer, which doubles a ``%`` for the
    drivers that read ``%s``): every statement holding one is sent with parameters, so that
    the driver reads ``%%`` as ``%``.
    """

    title: ClassVar[str]  # the database, as messages name it
    drivers: ClassVar[tuple[str, ...]]  # the drivers it works with, as SQLAlchemy names them
    placeholder: ClassVar[str] = "%s"  # a parameter in the driver's statements
    staging_schema: ClassVar[str] = ""  # where its temporary tables are named
    table_options: ClassVar[dict[str, Any]] = {}  # of every table made (SQLAlchemy's kwargs)
    index_options: ClassVar[dict[str, Any]] = {}  # of every run index made
    # On the server, the kinds of staged columns by regular expressions (``matching``):
    # "every value matches", "some value is not empty", the operator, the end of a text.
    every: ClassVar[str] = "MIN"
    some: ClassVar[str] = "MAX"
    matches: ClassVar[str] = "REGEXP"
    text_end: ClassVar[str] = "\\z"

    def __init__(self, engine: Engine) -> None:
        self.quote = engine.dialect.identifier_preparer.quote

    @classmethod
    def engine_options(cls) -> dict[str, Any]:
        """create_engine's options for this database."""
        return {}

    @classmethod  # noqa: B027 - a hook: most need nothing
    def configure(cls, engine: Engine) -> None:
        """Set up a new engine (its events)."""

    # Names.

    def name_problem(self, name: str) -> str | None:
        """Why the database cannot take ``name`` as a table's or column's name exactly as it
        is (None if it can): it would cut it, change it or refuse it."""
        if any(unicodedata.category(c) == "Cc" for c in name):
            return "a name cannot hold control characters"
        return None

    def index_name(self, table: str) -> str:
        """The name of a table's run index: with a "-", as no table's name has (index and
        table names share one namespace in PostgreSQL and SQLite); for a long table name, a
        digest of it, within the database's limit."""
        name = f"{table}-run"
        if self.name_problem(name) is None:
            return name
        return f"flsync-run-{hashlib.sha256(table.encode()).hexdigest()[:16]}"

    def staging_table(self, name: str) -> str:
        """The staging table ``name`` as statements name it: quoted, in its schema."""
        return self.staging_schema + self.quote(name)

    # Types.

    def text_type(self) -> TypeEngine[str]:
        return Text()

    def empty_type(self) -> TypeEngine[str]:
        """The type of a column that has held no value yet (EMPTY): text to anyone reading
        it, and another type than text's, so that the table says its kind is not known."""
        return VARCHAR()

    def sql_type(self, kind: Kind) -> TypeEngine[Any]:
        """The type of a column of ``kind``."""
        if kind is Kind.INTEGER:
            return BigInteger()
        if kind is Kind.TIMESTAMP:
            # PostgreSQL: timestamptz; MariaDB/MySQL: DATETIME (UTC); SQLite: DATETIME, text.
            return DateTime(timezone=True)
        if kind is Kind.DATE:
            return Date()
        return self.empty_type() if kind is Kind.EMPTY else self.text_type()

    def kind_of(self, sql_type: TypeEngine[Any]) -> Kind:
        """The kind of a column of the (reflected) type ``sql_type``."""
        if isinstance(sql_type, Integer):
            return Kind.INTEGER
        if isinstance(sql_type, DateTime):
            return Kind.TIMESTAMP
        if isinstance(sql_type, Date):
            return Kind.DATE
        if isinstance(sql_type, type(self.empty_type())):
            return Kind.EMPTY
        return Kind.TEXT

    # Tables.

    def leading_default(self, column: str) -> str | None:
        """The server default of a leading column (None: none)."""
        return None

    def create_table(self, connection: Connection, name: str, columns: dict[str, Kind]) -> None:
        """Make the table ``name``: the leading columns, then ``columns``; and its run index."""
        leading: list[Column[Any]] = []
        for column in LEADING:
            default = self.leading_default(column)
            leading.append(
                Column(
                    column,
                    BigInteger() if column == "run" else self.text_type(),
                    nullable=False,
                    server_default=text(default) if default else None,
                )
            )
        own = [Column(c, self.sql_type(k)) for c, k in columns.items() if c not in LEADING]
        table = Table(name, MetaData(), *leading, *own, **self.table_options)
        # A run's rows are found, to be replaced, by (uni_name, course_name, run).
        Index(
            self.index_name(name),
            table.c.uni_name,
            table.c.course_name,
            table.c.run,
            **self.index_options,
        )
        table.create(connection)

    def adopt(self, connection: Connection, table: str) -> None:  # noqa: B027 - a hook
        """Make fit a table, once per load, that an earlier version may have made."""

    def add_column(self, connection: Connection, table: str, column: str, kind: Kind) -> None:
        sql_type = self.sql_type(kind).compile(dialect=connection.dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE {self.quote(table)} ADD COLUMN {self.quote(column)} {sql_type}"
        )

    @abstractmethod
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
        """Give ``column``, of ``kind``, the type of ``new``: a column that held no value
        (EMPTY) any type, or to it back; any column text, its values written as the files
        had them. ``columns`` (the table's, their kinds) is updated."""

    # The bulk path.

    @abstractmethod
    def load_direct(
        self,
        connection: Connection,
        files: DataFiles,
        planned: Planned,
        prefix: Sequence[str | int],
        kinds: Sequence[Kind],
    ) -> int:
        """Load the file straight into its table, whose columns' kinds (the file's columns
        in order) are ``kinds``, after the leading columns' values ``prefix``, checking each
        value on the way; the number of rows. Misfit, with the statement undone, when a value
        does not fit (or a row is not what the direct path can check): the caller rolls the
        run back and stages it."""

    @abstractmethod
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
        """Stage the file at ``path`` (its ``header`` read already) into the temporary table
        ``table``, for the dataset's table ``target``; ``current`` is each column's kind there
        (EMPTY when new): a column that is text already is not tested."""

    def staged_value(self, column: str, kind: Kind) -> str:
        """The expression of a staged column's value, as its table's column takes it."""
        value = f"NULLIF({column}, '')"
        # MariaDB's DATETIME holds UTC; SQLite stores a form its date functions read.
        return f"substr({value}, 1, 19)" if kind is Kind.TIMESTAMP else value

    def move(
        self,
        connection: Connection,
        staged: Staged,
        prefix: Sequence[str | int],
        kinds: Sequence[Kind],
    ) -> int:
        """Insert the staged rows into their dataset's table (whose columns' kinds, the
        file's columns in order, are ``kinds``), after the leading columns' values ``prefix``;
        the number of rows."""
        names = [self.quote(c) for c in (*LEADING[: len(prefix)], *staged.header)]
        values = [self.placeholder] * len(prefix)
        values += [self.staged_value(f"c{n}", kind) for n, kind in enumerate(kinds, 1)]
        sql = (
            f"INSERT INTO {self.quote(staged.target)} ({', '.join(names)})"
            f" SELECT {', '.join(values)} FROM {self.staging_table(staged.table)}"
        )
        inserted = int(connection.exec_driver_sql(sql, tuple(prefix)).rowcount)
        self.moved(connection, staged)
        return inserted

    def moved(self, connection: Connection, staged: Staged) -> None:  # noqa: B027 - a hook
        """Check the rows just moved."""

    def drop_staging(self, connection: Connection, tables: Sequence[str]) -> None:
        """Drop the staging tables, if they are."""
        for table in tables:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {self.staging_table(table)}")

    def matching(
        self, connection: Connection, table: str, columns: Sequence[str], guessed: Sequence[Kind]
    ) -> list[Kind]:
        """The kinds of the staged columns ``columns`` of ``table``, by the regular
        expressions of the kinds each may still have (given its kind so far)."""
        tests: list[str] = []
        params: list[str] = []
        for column, kind in zip(columns, guessed, strict=True):
            if kind is Kind.TEXT:
                continue
            tests.append(f"{self.some}({column} <> '')")
            for check, pattern in PATTERNS.items():
                if kind in (check, Kind.EMPTY):
                    tests.append(f"{self.every}(COALESCE({column}, '') {self.matches} %s)")
                    params.append(f"^(?:{pattern}|){self.text_end}")
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
            held = [check for check in PATTERNS if kind in (check, Kind.EMPTY) and next(row)]
            kinds.append((held[0] if held else Kind.TEXT) if some_value else kind)
        return kinds
