"""The data tree into a SQL database: one table per dataset, ``runs`` from metadata.csv.

A load walks the chosen organisations' run folders through the store, and reloads only the
runs whose files changed since the last load: ``flsync_loads`` keeps, per run folder, a
fingerprint of its files (names, sizes, modification times) and the key and tables its rows
went to. Each changed run's files are read once, through the database's bulk path (its
dialect, flsync.sql.dialects): the tables are made to fit the kinds each file's first rows
show, and, in one transaction per run, the run's rows are deleted from every table and its
files loaded straight in, every value checked against its column on the way. When a value
does not fit (its column must widen), the run is rolled back (what was made or typed for it
undone) and loaded through temporary staging tables, which tell each column's kind over the
whole file, before the tables are made to fit and the rows moved in, in one transaction. A
failure anywhere in a run (a malformed file included) leaves its previous rows as they were,
and the other runs go on. Runs whose folders are gone from the tree are deleted.

Tables only grow: a new dataset makes a new table, a new column a new column, a column that
held no value yet takes the type of the values that come, and a column whose new values its
type cannot hold is widened to text (its values written back exactly as the files had them).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.sql import expression

from flsync import tree
from flsync.sql.bulk import LEADING, STAGING, LoadError, Misfit, Planned, Staged, guess
from flsync.sql.csvfiles import (
    RECORD_LIMIT,
    CsvFile,
    DataFiles,
    Kind,
    MalformedFile,
    value_kind,
    widen,
)
from flsync.sql.dialects import dialect_class
from flsync.state import SyncState, load_state
from flsync.storage import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy import Connection, Engine

    from flsync.storage import DataStore, FileStat

logger = logging.getLogger(__name__)

# Part of every fingerprint: a new version (another way of typing or storing) reloads all.
LOADER_VERSION = "2"
LOADS_TABLE = "flsync_loads"
RUNS_TABLE = "runs"
RESERVED_TABLES = (LOADS_TABLE, RUNS_TABLE)


class DatabaseError(Exception):
    """The database cannot be used (bad URL, unreachable, refused); one line for the user,
    the URL's password masked."""


def masked(url: str) -> str:
    """The URL with its password hidden (all of it, if it cannot be parsed)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an invalid URL)"


def open_database(url: str) -> Engine:
    """An engine for ``url``, connected once to check it; DatabaseError (one line) if not."""
    shown = masked(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not shown: which part of it is a password cannot be told.
        raise DatabaseError(
            "the database URL is not valid: use postgresql://USER:PASSWORD@HOST/DATABASE,"
            " mysql+pymysql://USER:PASSWORD@HOST/DATABASE or sqlite:///PATH"
        ) from None
    try:
        dialect = dialect_class(parsed)
        engine = create_engine(parsed, **dialect.engine_options())
    except (NoSuchModuleError, ImportError, LookupError) as exc:
        raise DatabaseError(
            f"database URL {shown}: unknown database or driver ({_reason(exc, parsed.password)}):"
            " use postgresql://…, mysql+pymysql://… or sqlite:///…"
        ) from None
    dialect.configure(engine)
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(
            f"cannot connect to the database {shown}: {_reason(exc, parsed.password)}"
        ) from None
    return engine


def failure(exc: BaseException, url: str) -> str:
    """What stopped a whole load (not one run), in one line, never with the password."""
    try:
        password = make_url(url).password
    except ArgumentError:
        password = None
    reason = _reason(exc, password)
    if isinstance(exc, SQLAlchemyError):
        return f"{masked(url)}: {reason}"
    if isinstance(exc, (StoreError, OSError)):
        return reason
    return f"an unexpected error ({type(exc).__name__}: {reason}); its traceback is logged at DEBUG"


def _reason(exc: BaseException, password: str | None) -> str:
    """The first line of what the driver said, never with the password."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    reason = lines[0].strip() if lines else type(cause).__name__
    return reason.replace(password, "***") if password else reason


@dataclass
class RunFolder:
    """A run's folder in the tree and what the store says of its files."""

    folder: str
    files: dict[str, FileStat]

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"flsync-load {LOADER_VERSION}\n".encode())
        for name, stat in sorted(self.files.items()):
            digest.update(f"{name}\0{stat.size}\0{stat.mtime!r}\n".encode())
        return digest.hexdigest()


def run_folders(store: DataStore, organisation: str) -> list[RunFolder]:
    """The run folders of an organisation, with the stat of each CSV file."""
    runs = []
    for course, run in tree.run_folders(store, organisation):
        folder = f"{organisation}/{course}/{run}"
        files = {}
        for name in store.list_dir(folder):
            stat = store.stat(f"{folder}/{name}")
            if name.endswith(".csv") and not name.startswith(".") and stat is not None:
                files[name] = stat
        runs.append(RunFolder(folder, files))
    return runs


@dataclass
class DatasetFile:
    """A run's dataset file, its header read."""

    path: str
    table: str
    header: list[str]
    stat: FileStat


@dataclass
class ScannedRun:
    """A changed run whose files' headers are readable: ready to load."""

    run: RunFolder
    key: tuple[str, str, int]  # uni_name, course_name, run (from metadata.csv)
    metadata_header: list[str]
    metadata_row: list[str]
    files: list[DatasetFile] = field(default_factory=list)


P = TypeVar("P", bound=Planned)
# A file of a run: its table, path, header and stat (None for metadata.csv, read already).
_File = tuple[str, str, list[str], "FileStat | None"]
# Made for a run, to be undone if it does not fit: a table (column None), a column (kind
# None), a column typed that was of that kind (EMPTY).
_Made = tuple[str, "str | None", "Kind | None"]


@dataclass
class LoadResult:
    """What a load did."""

    loaded: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[str] = field(default_factory=list)  # one line per failed run
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return (
            f"{self.loaded} runs loaded ({self.rows} rows, {self.bytes / 1e6:.1f} MB),"
            f" {self.unchanged} unchanged, {self.removed} removed, {len(self.failed)} failed,"
            f" in {self.seconds:.1f} s"
        )


class Loader:
    """Loads runs of a data tree (read through ``store``) into the database of ``engine``;
    a CSV record longer than ``record_limit`` bytes fails its run."""

    def __init__(self, engine: Engine, store: DataStore, record_limit: int = RECORD_LIMIT) -> None:
        self.engine = engine
        self.store = store
        self.files = DataFiles(store, record_limit)
        self.dialect = dialect_class(engine.url)(engine)
        # Each organisation folder's sync state, read once (what flsync knows of its runs).
        self._states: dict[str, SyncState] = {}
        # Each table's columns and their kinds (None: no such table), as reflected once.
        self._columns: dict[str, dict[str, Kind] | None] = {}

    def load(self, chosen: Sequence[str]) -> LoadResult:
        """Load the runs of the organisation folders ``chosen`` that changed since the last
        load; each failed run is logged (one line) and listed in the result."""
        started = time.monotonic()
        result = LoadResult()
        self._create_loads_table()
        recorded = self._recorded(chosen)
        present = {run.folder: run for org in chosen for run in run_folders(self.store, org)}
        for folder in sorted(recorded.keys() - present.keys()):
            self._remove(folder, recorded[folder])
            result.removed += 1
        changed = []
        for folder, run in sorted(present.items()):
            if recorded.get(folder, {}).get("fingerprint") == run.fingerprint:
                result.unchanged += 1
            else:
                changed.append(run)
        scanned = self._scan_all(changed, recorded, result)
        for ready in scanned:
            try:
                rows = self._load_run(ready, recorded.get(ready.run.folder))
            except (MalformedFile, LoadError, StoreError, OSError) as exc:
                self._columns.clear()
                self._failed(result, ready.run.folder, str(exc))
            except (DBAPIError, self.engine.dialect.loaded_dbapi.Error) as exc:
                # A bulk path's own error comes from the driver, not through SQLAlchemy.
                self._columns.clear()
                self._failed(
                    result, ready.run.folder, f"the database refused it: {_reason(exc, None)}"
                )
            else:
                result.loaded += 1
                result.rows += rows
                result.bytes += sum(stat.size for stat in ready.run.files.values())
        result.seconds = time.monotonic() - started
        return result

    def _scan_all(
        self, changed: Sequence[RunFolder], recorded: dict[str, dict[str, Any]], result: LoadResult
    ) -> list[ScannedRun]:
        """The changed runs whose files are all readable; the others fail, one line each."""
        scanned = []
        keys = {tuple(r["key"]): folder for folder, r in recorded.items()}
        for run in changed:
            try:
                ready = self._scan(run)
                other = keys.get(ready.key)
                if other is not None and other != run.folder:
                    raise MalformedFile(
                        f"{run.folder}/{tree.METADATA_FILE}",
                        None,
                        f"the same uni_name, course_name and run as {other}, which is loaded",
                    )
                keys[ready.key] = run.folder
                scanned.append(ready)
            except (MalformedFile, StoreError, OSError) as exc:
                self._failed(result, run.folder, str(exc))
        return scanned

    def _failed(self, result: LoadResult, folder: str, reason: str) -> None:
        line = (
            f"Run (not loaded): {folder}: {reason}; its rows in the database were left as they were"
        )
        logger.error("%(line)s", {"line": line})
        result.failed.append(line)

    # The bookkeeping table.

    def _loads_table(self, metadata: MetaData) -> Table:
        return Table(
            LOADS_TABLE,
            metadata,
            Column("folder", String(512), primary_key=True),
            Column("uni_name", self.dialect.text_type()),
            Column("course_name", self.dialect.text_type()),
            Column("run", BigInteger),
            Column("tables", self.dialect.text_type()),  # the tables its rows went to
            Column("fingerprint", String(64)),
            Column("loaded_at", String(32)),  # ISO 8601, UTC
            **self.dialect.table_options,
        )

    def _create_loads_table(self) -> None:
        with self.engine.begin() as connection:
            self._loads_table(MetaData()).create(connection, checkfirst=True)

    def _recorded(self, chosen: Sequence[str]) -> dict[str, dict[str, Any]]:
        loads = self._loads_table(MetaData())
        with self.engine.connect() as connection:
            rows = connection.execute(loads.select()).mappings().all()
        return {
            row["folder"]: {
                "key": (row["uni_name"], row["course_name"], row["run"]),
                "tables": row["tables"].split(),
                "fingerprint": row["fingerprint"],
            }
            for row in rows
            if row["folder"].split("/", 1)[0] in chosen
        }

    # Reading a run's headers.

    def _scan(self, run: RunFolder) -> ScannedRun:
        header, row = self._metadata(run)
        key = self._run_key(run, row)
        ready = ScannedRun(run, key, header, row)
        for name in sorted(run.files):
            if name == tree.METADATA_FILE:
                continue
            path = f"{run.folder}/{name}"
            table = name.removesuffix(".csv").replace("-", "_")
            reserved = table in RESERVED_TABLES
            problem = "flsync's own" if reserved else self.dialect.name_problem(table)
            if problem:
                raise MalformedFile(path, None, f"a table cannot be named {table!r}: {problem}")
            with CsvFile(self.files, path) as file:
                self._check_columns(path, file.header)
            ready.files.append(DatasetFile(path, table, file.header, run.files[name]))
        return ready

    def _check_columns(self, path: str, header: Sequence[str]) -> None:
        for column in header:
            leading = column.lower() in LEADING
            problem = "flsync's own" if leading else self.dialect.name_problem(column)
            if problem:
                raise MalformedFile(path, 1, f"a column cannot be named {column!r}: {problem}")

    def _run_key(self, run: RunFolder, row: list[str]) -> tuple[str, str, int]:
        """The run's (uni_name, course_name, run), by what flsync knows of the folder: the
        organisation's state, which the sync wrote from the site's listing. A folder the state
        does not know (a tree from before it kept them) takes metadata.csv's, but only if it
        names this very folder: a dataset shaped as metadata.csv, stored there by an older
        flsync, must not move the rows to another organisation's run."""
        organisation = run.folder.split("/", 1)[0]
        state = self._states.get(organisation)
        if state is None:
            state = self._states[organisation] = load_state(self.store, organisation)
        record = next((r for r in state.runs.values() if r.get("folder") == run.folder), None)
        if state.name and record and "course" in record and "run" in record:
            return state.name, str(record["course"]), int(record["run"])
        key = (row[0], row[1], int(row[2]))
        _, course, folder = run.folder.split("/")
        names_this_folder = (
            tree.safe_name(key[0]) == organisation
            and tree.safe_name(key[1]) == course
            and folder.startswith(f"{key[2]}-")
        )
        if not names_this_folder:
            raise MalformedFile(
                f"{run.folder}/{tree.METADATA_FILE}",
                2,
                f"names {key[0]!r}, {key[1]!r}, run {key[2]}, not the run of this folder",
            )
        return key

    def _metadata(self, run: RunFolder) -> tuple[list[str], list[str]]:
        path = f"{run.folder}/{tree.METADATA_FILE}"
        if tree.METADATA_FILE not in run.files:
            raise MalformedFile(path, None, "missing (the next sync writes it)")
        with CsvFile(self.files, path) as file:
            rows = [row for block in file.blocks() for row in block]
        if list(file.header[:3]) != list(LEADING) or len(rows) != 1:
            raise MalformedFile(
                path, None, f"expected a header starting {','.join(LEADING)} and one row"
            )
        if value_kind(rows[0][2]) is not Kind.INTEGER:
            raise MalformedFile(path, 2, f"run {rows[0][2]!r} is not a number")
        self._check_columns(path, file.header[3:])
        return file.header, rows[0]

    # The tables.

    def _prepare_tables(self, connection: Connection, planned: Sequence[Planned]) -> list[_Made]:
        """Create the tables and columns the files need, type the columns that held no value
        yet and now get some, and widen the columns whose new values their type cannot hold
        (before the run's transaction: MariaDB commits DDL at once; every change here keeps
        the rows as they are). What was made or typed, to be undone if the load does not fit."""
        made: list[_Made] = []
        wanted: dict[str, dict[str, Kind]] = {}
        for item in planned:
            columns = wanted.setdefault(item.target, {})
            for name, kind in zip(item.header, item.kinds, strict=True):
                columns[name] = widen(columns.get(name, Kind.EMPTY), kind)
        for name, columns in wanted.items():
            current = self._current(connection, name)
            changed = current is None
            with connection.begin():
                if current is None:
                    self.dialect.create_table(connection, name, columns)
                    logger.info("Table %(table)s created", {"table": name})
                    made.append((name, None, None))
                    current = {}
                else:
                    self.dialect.adopt(connection, name)
                for column, kind in columns.items():
                    have = current.get(column)
                    if column in LEADING or not current:
                        continue
                    if have is None:
                        self.dialect.add_column(connection, name, column, kind)
                        current[column] = kind  # SQLite's retype makes the table again
                        logger.info(
                            "Column %(table)s.%(column)s added", {"table": name, "column": column}
                        )
                        made.append((name, column, None))
                    elif widen(have, kind) == have:
                        continue
                    elif have is Kind.EMPTY:
                        self.dialect.retype(
                            connection, name, column, kind=have, new=kind, columns=current
                        )
                        made.append((name, column, have))
                    else:
                        self.dialect.retype(
                            connection, name, column, kind=have, new=Kind.TEXT, columns=current
                        )
                        logger.warning(
                            "Column %(table)s.%(column)s widened from %(kind)s to text: new"
                            " values are not all %(kind)s",
                            {"table": name, "column": column, "kind": have},
                        )
                    changed = True
            if changed:
                del self._columns[name]
        return made

    def _unmake(self, connection: Connection, made: Sequence[_Made]) -> None:
        """Undo what was made or typed for a direct load that did not fit: the types were
        guessed from the first rows, and the staged load finds them from every row."""
        q = self.dialect.quote
        with connection.begin():
            for table, column, kind in reversed(made):
                if column is None:
                    connection.exec_driver_sql(f"DROP TABLE {q(table)}")
                elif kind is None:
                    connection.exec_driver_sql(f"ALTER TABLE {q(table)} DROP COLUMN {q(column)}")
                else:
                    current = self._current(connection, table) or {}
                    self.dialect.retype(
                        connection, table, column, kind=current[column], new=kind, columns=current
                    )
                self._columns.pop(table, None)

    def _current(self, connection: Connection, table: str) -> dict[str, Kind] | None:
        """The table's columns and their kinds; None if there is no such table."""
        if table not in self._columns:
            inspector = inspect(connection)
            self._columns[table] = (
                {c["name"]: self.dialect.kind_of(c["type"]) for c in inspector.get_columns(table)}
                if inspector.has_table(table)
                else None
            )
        return self._columns[table]

    # Loading a run.

    def _load_run(self, ready: ScannedRun, recorded: dict[str, Any] | None) -> int:
        """Replace the run's rows in one transaction; the number of rows inserted.

        First directly: each file's kinds guessed from its first rows, the tables made to
        fit, and each file loaded straight into its table, its values checked on the way.
        When a value does not fit (a column that must widen), that is undone and the run is
        loaded through staging tables, which find each column's kind in the whole file."""
        run = ready.run
        files = [
            (RUNS_TABLE, f"{run.folder}/{tree.METADATA_FILE}", ready.metadata_header, None),
            *((file.table, file.path, file.header, file.stat) for file in ready.files),
        ]
        try:
            return self._load_run_directly(ready, recorded, files)
        except Misfit as exc:
            self._columns.clear()
            logger.info(
                "Run %(folder)s: %(path)s does not fit its table as it is: loading the run"
                " through staging tables",
                {"folder": run.folder, "path": exc},
            )
        return self._load_run_staged(ready, recorded, files)

    def _load_run_directly(
        self, ready: ScannedRun, recorded: dict[str, Any] | None, files: Sequence[_File]
    ) -> int:
        with self.engine.connect() as connection:
            planned = []
            with connection.begin():
                for table, path, header, _stat in files:
                    columns = self._current(connection, table) or {}
                    current = [columns.get(c, Kind.EMPTY) for c in header]
                    planned.append(Planned(table, path, header, guess(self.files, path, current)))
            made = self._prepare_tables(connection, planned)
            stats = {path: stat for _table, path, _header, stat in files}

            def insert(item: Planned, prefix: Sequence[str | int], kinds: Sequence[Kind]) -> int:
                inserted = self.dialect.load_direct(connection, self.files, item, prefix, kinds)
                self._unchanged(item.path, stats[item.path])
                return inserted

            try:
                with connection.begin():
                    rows = self._replace_rows(connection, ready, recorded, planned, insert)
            except Misfit:
                self._unmake(connection, made)
                raise
        self._loaded(ready, rows)
        return rows

    def _load_run_staged(
        self, ready: ScannedRun, recorded: dict[str, Any] | None, files: Sequence[_File]
    ) -> int:
        names = [f"{STAGING}{n}" for n in range(len(files))]
        with self.engine.connect() as connection:
            try:
                staged = []
                with connection.begin():
                    for name, (table, path, header, stat) in zip(names, files, strict=True):
                        columns = self._current(connection, table) or {}
                        kinds = [columns.get(c, Kind.EMPTY) for c in header]
                        staged.append(
                            self.dialect.stage(
                                connection,
                                self.files,
                                path,
                                header,
                                current=kinds,
                                table=name,
                                target=table,
                            )
                        )
                        self._unchanged(path, stat)
                self._prepare_tables(connection, staged)

                def insert(item: Staged, prefix: Sequence[str | int], kinds: Sequence[Kind]) -> int:
                    return self.dialect.move(connection, item, prefix, kinds)

                with connection.begin():
                    rows = self._replace_rows(connection, ready, recorded, staged, insert)
            finally:
                self._drop(connection, names)
        self._loaded(ready, rows)
        return rows

    def _replace_rows(
        self,
        connection: Connection,
        ready: ScannedRun,
        recorded: dict[str, Any] | None,
        items: Sequence[P],
        insert: Callable[[P, Sequence[str | int], Sequence[Kind]], int],
    ) -> int:
        """In the run's transaction: delete its rows, ``insert`` each file into its table
        (whose columns' kinds are known by now) after the leading columns' values, and
        record the load; the number of dataset rows."""
        self._delete_run(connection, ready, recorded)
        rows = 0
        for item in items:
            columns = self._current(connection, item.target) or {}
            missing = [c for c in item.header if c not in columns]
            if missing:
                # A name the database changed as it made the column (the checks of
                # _name_problem should leave none).
                raise LoadError(
                    f"{item.path}: the table {item.target} has no column named {missing[0]!r}"
                )
            kinds = [columns[c] for c in item.header]
            prefix = () if item.target == RUNS_TABLE else ready.key
            inserted = insert(item, prefix, kinds)
            rows += inserted if item.target != RUNS_TABLE else 0
        self._record(connection, ready)
        return rows

    def _unchanged(self, path: str, stat: FileStat | None) -> None:
        if stat is not None and self.store.stat(path) != stat:
            raise MalformedFile(path, None, "changed during the load: load again")

    def _delete_run(
        self, connection: Connection, ready: ScannedRun, recorded: dict[str, Any] | None
    ) -> None:
        """Delete the run's rows (under its key now, and the one it was loaded under) from
        the tables it was loaded into and those it is loaded into now."""
        old_tables = recorded["tables"] if recorded else []
        keys = {ready.key, *([tuple(recorded["key"])] if recorded else [])}
        tables = {file.table for file in ready.files}
        for table in sorted({*old_tables, *tables, RUNS_TABLE}):
            if self._current(connection, table) is not None:
                for key in keys:
                    self._delete(connection, table, key)

    def _loaded(self, ready: ScannedRun, rows: int) -> None:
        logger.debug(
            "Run loaded: %(folder)s (%(rows)d rows)", {"folder": ready.run.folder, "rows": rows}
        )

    def _record(self, connection: Connection, ready: ScannedRun) -> None:
        tables = sorted({file.table for file in ready.files})
        loads = self._loads_table(MetaData())
        run = ready.run
        connection.execute(loads.delete().where(loads.c.folder == run.folder))
        connection.execute(
            loads.insert().values(
                folder=run.folder,
                uni_name=ready.key[0],
                course_name=ready.key[1],
                run=ready.key[2],
                tables=" ".join(tables),
                fingerprint=run.fingerprint,
                loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        )

    def _drop(self, connection: Connection, names: Sequence[str]) -> None:
        """Drop the staging tables; a connection that cannot is closed (and they with it)."""
        try:
            if connection.in_transaction():
                connection.rollback()
            with connection.begin():
                self.dialect.drop_staging(connection, names)
        except (DBAPIError, self.engine.dialect.loaded_dbapi.Error):
            connection.invalidate()

    def _exists(self, connection: Connection, table: str) -> bool:
        return inspect(connection).has_table(table)

    def _delete(self, connection: Connection, name: str, key: tuple[str, str, int]) -> None:
        rows = expression.table(name, *map(expression.column, LEADING))
        matching = [rows.c[c] == value for c, value in zip(LEADING, key, strict=True)]
        connection.execute(rows.delete().where(*matching))

    def _remove(self, folder: str, recorded: dict[str, Any]) -> None:
        """Delete the rows of a run whose folder is gone from the tree."""
        with self.engine.begin() as connection:
            for table in {*recorded["tables"], RUNS_TABLE}:
                if self._exists(connection, table):
                    self._delete(connection, table, tuple(recorded["key"]))
            loads = self._loads_table(MetaData())
            connection.execute(loads.delete().where(loads.c.folder == folder))
        logger.info(
            "Run removed from the database (its folder is gone): %(folder)s", {"folder": folder}
        )
