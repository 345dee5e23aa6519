"""A run's measures, computed from its files by DuckDB.

Why DuckDB: a run's ``step-activity.csv`` can be a gigabyte (some ten million rows), and the
measures need, per learner and per step, who is who across three files. DuckDB reads CSV in
parallel, in C++, and joins and groups under a memory limit of its own, spilling to a
temporary folder past it: memory stays flat whatever a file's size, at a speed no Python loop
over rows comes near (the csv module alone reads about 70 MB/s here; see docs/measures.md and
``benchmarks/measures.py`` for the figures).

Each file is read as text, every column ``VARCHAR``, by its position in the header (the header's
names never enter the SQL); an empty field (quoted or not) is NULL, and "non-empty" is
``IS NOT NULL``. Per run, in one DuckDB database per organisation:

- ``joiners``: each learner_id whose every enrolment row has the role ``learner`` (all rows,
  in a file without ``role``), numbered 1..N, with whether any of its rows left, fully
  participated or bought a statement;
- ``learners``: the joiners with a visited step, with whether they completed any step, and in
  more than one week (the smallest completed week differs from the largest);
- the steps: per step, the learners who visited it and who completed it, counted as a bitmap
  over the joiners' numbers (``bitstring_agg``), so counting distinct learners holds N bits per
  step instead of a set of ids;
- the social learners: learners among the comments' authors.

Settings read (by the caller): ``FLSYNC_MEASURES_MEMORY_MB``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flsync.measures.runs import COMMENTS, ENROLMENTS, STEP_ACTIVITY
from flsync.sql.csvfiles import CsvFile, MalformedFile
from flsync.storage import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    import duckdb

    from flsync.measures.runs import RunFolder
    from flsync.storage import DataStore

MEASURES = (
    "joiners",
    "leavers",
    "learners",
    "active_learners",
    "returning_learners",
    "social_learners",
    "fully_participating_learners",
    "statements_sold",
)
# A file of no bytes at all is taken as the current header version with no rows.
CURRENT_HEADERS = {
    ENROLMENTS: (
        "learner_id", "enrolled_at", "unenrolled_at", "role", "fully_participated_at",
        "purchased_statement_at", "gender", "country", "age_range", "highest_education_level",
        "employment_status", "employment_area", "detected_country", "unlimited",
        "statement_tier",
    ),
    STEP_ACTIVITY: (
        "learner_id", "step", "week_number", "step_number", "first_visited_at",
        "last_completed_at",
    ),
    COMMENTS: (
        "id", "author_id", "parent_id", "step", "week_number", "step_number", "text",
        "timestamp", "moderated", "likes",
    ),
}  # fmt: skip
# Columns a file must have to be used at all (the others are read when present).
REQUIRED = {
    ENROLMENTS: ("learner_id",),
    STEP_ACTIVITY: ("learner_id", "step", "first_visited_at", "last_completed_at"),
    COMMENTS: ("author_id",),
}
# RFC 4180 as the exports are written, strictly: a record with another number of fields than
# the header, a stray quote or bytes that are not UTF-8 fail the file.
_CSV_OPTIONS = (
    "header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"',"
    " strict_mode = true, null_padding = false, allow_quoted_nulls = true, encoding = 'utf-8'"
)
_COPY_BLOCK = 1 << 20
# A header line longer than this is no export's (one of the current versions is 300 bytes).
_HEADER_LIMIT = 1 << 20


@dataclass(frozen=True)
class StepCompletion:
    """One step of a run: the learners who visited it and who completed it."""

    step: str
    week_number: str
    step_number: str
    visited: int
    completed: int


@dataclass(frozen=True)
class RunMeasures:
    """A run's measures (None: not known, as a file they need is missing) and its steps."""

    values: dict[str, int | None]
    steps: tuple[StepCompletion, ...] = ()
    problem: str | None = None  # why every measure is empty: a file that cannot be read

    @classmethod
    def unknown(cls, problem: str | None = None) -> RunMeasures:
        return cls(dict.fromkeys(MEASURES), (), problem)


class MeasuresError(Exception):
    """The run's measures could not be computed this time (the store, DuckDB itself); one
    line for the user. Unlike a malformed file, it is tried again by the next computation."""


@dataclass(frozen=True)
class _Source:
    """A dataset file of the run, ready for DuckDB."""

    path: str  # in the tree
    local: str  # the file DuckDB reads
    header: tuple[str, ...]

    def column(self, name: str) -> str | None:
        """The SQL name of the column ``name`` (its first one), or None if it has none."""
        return f"c{self.header.index(name)}" if name in self.header else None

    def relation(self) -> str:
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(self.header)))
        return f"read_csv($file, columns = {{{columns}}}, {_CSV_OPTIONS})"


class MeasuresEngine:
    """Computes runs' measures: one DuckDB database in memory, its spill files (and, for a
    store that is no local folder, the copies DuckDB reads) in a temporary folder of its own.
    Use it as a context manager, from one thread."""

    def __init__(self, store: DataStore, memory_mb: int) -> None:
        # Imported here: a sync with no run to compute never loads DuckDB.
        import duckdb  # noqa: PLC0415

        self.store = store
        self.files_read = 0  # dataset files opened, for the log and the tests
        self._duckdb = duckdb
        self._folder = tempfile.TemporaryDirectory(prefix="flsync-measures-")
        self._db: duckdb.DuckDBPyConnection = duckdb.connect(
            config={
                "memory_limit": f"{memory_mb}MB",
                "temp_directory": self._folder.name,
                "preserve_insertion_order": False,
                # Nothing is ever fetched: no extension is installed or loaded on the way.
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            }
        )

    def __enter__(self) -> MeasuresEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._db.close()
        self._folder.cleanup()

    def compute(self, run: RunFolder) -> RunMeasures:
        """The run's measures. A file that cannot be read as CSV (or lacks a column the
        measures need) leaves them all empty, its reason in ``problem``; MeasuresError when
        they could not be computed this time."""
        if ENROLMENTS not in run.files:
            return RunMeasures.unknown()
        values: dict[str, int | None] = dict.fromkeys(MEASURES)
        steps: list[StepCompletion] = []
        try:
            with contextlib.ExitStack() as stack:
                enrolments = self._open(stack, run, ENROLMENTS)
                values.update(self._joiners(enrolments))
                if STEP_ACTIVITY in run.files:
                    activity = self._open(stack, run, STEP_ACTIVITY)
                    values.update(self._learners(activity))
                    steps = self._steps(activity, joiners=values["joiners"] or 0)
                    if COMMENTS in run.files:
                        values["social_learners"] = self._social(self._open(stack, run, COMMENTS))
        except MalformedFile as exc:
            return RunMeasures.unknown(str(exc))
        return RunMeasures(values, tuple(steps))

    # The files.

    def _open(self, stack: contextlib.ExitStack, run: RunFolder, name: str) -> _Source:
        path = f"{run.folder}/{name}"
        local = stack.enter_context(self._local_file(path))
        header = _read_header(local, path) or CURRENT_HEADERS[name]
        missing = [column for column in REQUIRED[name] if column not in header]
        if missing:
            raise MalformedFile(path, 1, f"the header has no {missing[0]} column")
        return _Source(path, local, header)

    @contextlib.contextmanager
    def _local_file(self, path: str) -> Iterator[str]:
        """A local file name for DuckDB to read the stored file by: the very file the store
        opened, when it is one (``/dev/fd/N``, so a file replaced meanwhile is not mixed in),
        else a copy streamed into the temporary folder."""
        self.files_read += 1
        try:
            stream = self.store.open_read(path)
        except FileNotFoundError:
            raise MeasuresError(f"{path}: gone while the measures were computed") from None
        except (StoreError, OSError) as exc:
            raise MeasuresError(f"{path}: cannot be read: {exc}") from None
        with stream:
            try:
                descriptor = f"/dev/fd/{stream.fileno()}"
            except (OSError, io.UnsupportedOperation):
                descriptor = None
            if descriptor is not None and os.path.exists(descriptor):
                yield descriptor
                return
            with tempfile.NamedTemporaryFile(dir=self._folder.name, suffix=".csv") as copy:
                shutil.copyfileobj(stream, copy, _COPY_BLOCK)
                copy.flush()
                yield copy.name

    def _query(self, sql: str, source: _Source) -> list[tuple[Any, ...]]:
        """Run ``sql``, which reads ``source`` (as ``$file``)."""
        duckdb = self._duckdb
        try:
            return self._db.execute(sql, {"file": source.local}).fetchall()
        except duckdb.InvalidInputException as exc:
            raise self._explain(source, exc) from None
        except duckdb.Error as exc:
            raise MeasuresError(f"{source.path}: {_first_line(exc)}") from None

    def _explain(self, source: _Source, exc: Exception) -> MalformedFile:
        """What DuckDB refused, said as the database load says it: the line (as an editor
        counts lines) and the reason, found by reading the file again (this path only)."""
        self.files_read += 1
        try:
            with CsvFile(self.store, source.path) as file:
                for _ in file.blocks():
                    pass
        except MalformedFile as found:
            return found
        return MalformedFile(source.path, None, _first_line(exc))

    # The measures.

    def _joiners(self, enrolments: _Source) -> dict[str, int | None]:
        """Fill the table ``joiners``; the measures it gives."""
        learner = enrolments.column("learner_id")
        role = enrolments.column("role")
        flags = {
            "leavers": enrolments.column("unenrolled_at"),
            "fully_participating_learners": enrolments.column("fully_participated_at"),
            "statements_sold": enrolments.column("purchased_statement_at"),
        }
        selected = ", ".join(
            f"bool_or({column} IS NOT NULL) AS {name}" if column else f"NULL AS {name}"
            for name, column in flags.items()
        )
        # An id with any other role (organisation_admin, educator...) is staff, wherever else
        # it appears.
        staff = f"HAVING bool_and(coalesce({role}, '') = 'learner')" if role else ""
        self._query(
            f"""
            CREATE OR REPLACE TEMP TABLE joiners AS
            SELECT (row_number() OVER ())::INTEGER AS id, *
            FROM (
                SELECT {learner} AS learner_id, {selected}
                FROM {enrolments.relation()}
                WHERE {learner} IS NOT NULL
                GROUP BY {learner}
                {staff}
            )
            """,
            enrolments,
        )
        counts = ", ".join(f"count(*) FILTER (WHERE {name})" for name in flags)
        joiners, *rest = self._db.execute(f"SELECT count(*), {counts} FROM joiners").fetchall()[0]
        values: dict[str, int | None] = {"joiners": joiners}
        for (name, column), count in zip(flags.items(), rest, strict=True):
            values[name] = count if column else None
        return values

    def _learners(self, activity: _Source) -> dict[str, int | None]:
        """Fill the table ``learners`` (joiners with a visited step); the measures it gives."""
        learner = activity.column("learner_id")
        visited = activity.column("first_visited_at")
        completed = activity.column("last_completed_at")
        week = _week(activity)
        self._query(
            f"""
            CREATE OR REPLACE TEMP TABLE learners AS
            SELECT j.id, j.learner_id,
                bool_or(s.{completed} IS NOT NULL) AS active,
                coalesce(
                    min({week}) FILTER (WHERE s.{completed} IS NOT NULL)
                    <> max({week}) FILTER (WHERE s.{completed} IS NOT NULL),
                    false
                ) AS returned
            FROM {activity.relation()} AS s JOIN joiners AS j ON s.{learner} = j.learner_id
            GROUP BY j.id, j.learner_id
            HAVING bool_or(s.{visited} IS NOT NULL)
            """,
            activity,
        )
        learners, active, returning = self._db.execute(
            "SELECT count(*), count(*) FILTER (WHERE active), count(*) FILTER (WHERE returned)"
            " FROM learners"
        ).fetchall()[0]
        return {
            "learners": learners,
            "active_learners": active,
            "returning_learners": returning,
        }

    def _steps(self, activity: _Source, joiners: int) -> list[StepCompletion]:
        """Every step of the step activity, with the learners who visited and completed it."""
        learner = activity.column("learner_id")
        step = activity.column("step")
        week_column = activity.column("week_number")
        number_column = activity.column("step_number")
        week = f"coalesce(any_value(s.{week_column}), " if week_column else "coalesce("
        number = f"coalesce(any_value(s.{number_column}), " if number_column else "coalesce("
        # Learners are numbered as joiners, 1..joiners: a bitmap of that many bits per step.
        bits = f"l.id, 1, {max(joiners, 1)}"
        rows = self._query(
            f"""
            SELECT s.{step}, {week}split_part(s.{step}, '.', 1), ''),
                {number}split_part(s.{step}, '.', 2), ''),
                coalesce(bit_count(bitstring_agg({bits})
                    FILTER (WHERE l.id IS NOT NULL AND s.{activity.column("first_visited_at")}
                        IS NOT NULL)), 0),
                coalesce(bit_count(bitstring_agg({bits})
                    FILTER (WHERE l.id IS NOT NULL AND s.{activity.column("last_completed_at")}
                        IS NOT NULL)), 0)
            FROM {activity.relation()} AS s LEFT JOIN learners AS l ON s.{learner} = l.learner_id
            WHERE s.{step} IS NOT NULL
            GROUP BY s.{step}
            """,
            activity,
        )
        return sorted((StepCompletion(*row) for row in rows), key=_step_order)

    def _social(self, comments: _Source) -> int:
        author = comments.column("author_id")
        [(count,)] = self._query(
            f"""
            SELECT count(DISTINCT l.id)
            FROM {comments.relation()} AS c JOIN learners AS l ON c.{author} = l.learner_id
            """,
            comments,
        )
        return int(count)


def _read_header(local: str, path: str) -> tuple[str, ...]:
    """The file's header line (a UTF-8 byte-order mark dropped); empty for a file of no
    bytes. Only that line is read: a fault further on is DuckDB's to find."""
    with open(local, "rb") as raw:
        line = raw.readline(_HEADER_LIMIT)
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedFile(path, 1, f"not UTF-8 text (byte {exc.start} of the file)") from None
    try:
        header = next(csv.reader([text], strict=True), None)
    except csv.Error as exc:
        raise MalformedFile(path, 1, f"the header line cannot be read: {exc}") from None
    return tuple(header or ())


def _week(activity: _Source) -> str:
    """A step activity row's week: its week_number, else (older files, or an empty one) the
    part of its step before the dot."""
    derived = f"split_part(s.{activity.column('step')}, '.', 1)"
    week = activity.column("week_number")
    return f"coalesce(s.{week}, {derived})" if week else derived


def _step_order(step: StepCompletion) -> tuple[int, str, int, str, str]:
    """By week, then step number (as numbers where they are), then as written."""

    def number(text: str) -> int:
        return int(text) if text.isdigit() else 1 << 30

    return (
        number(step.week_number),
        step.week_number,
        number(step.step_number),
        step.step_number,
        step.step,
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
