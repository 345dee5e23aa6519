"""Runs' measures, computed from their files by DuckDB.

Why DuckDB: a run's ``step-activity.csv`` can be a gigabyte (some ten million rows), and the
measures need, per learner and per step, who is who across three files. DuckDB reads CSV in
parallel, in C++, and joins and groups under a memory limit of its own, spilling to a
temporary folder past it: memory stays flat whatever a file's size, at a speed no Python loop
over rows comes near (the csv module alone reads about 70 MB/s here; see docs/measures.md and
``benchmarks/measures.py`` for the figures).

Each file is read as text, every column ``VARCHAR``, by its position in the header (the header's
names never enter the SQL); an empty field (quoted or not) is NULL, and "non-empty" is
``IS NOT NULL``. Runs are computed a batch at a time: each query reads one dataset kind of
every run of the batch whose file has the same header version, each row tagged with its run's
place in the batch (``run``), and everything is grouped by run too. In one DuckDB database per
engine:

- ``joiners``: per run, each learner_id whose every enrolment row has the role ``learner`` (all
  rows, in a file without ``role``), numbered 1..N within its run, with whether any of its rows
  left, fully participated or bought a statement;
- ``learners``: the joiners with a visited step, with whether they completed any step, and in
  more than one week (the smallest completed week differs from the largest);
- the steps: per run and step, the learners who visited it and who completed it, counted as a
  bitmap over the joiners' numbers (``bitstring_agg``), so counting distinct learners holds N
  bits per step instead of a set of ids;
- the social learners: learners among the comments' authors.

A query that fails for several runs' files is run again for each file alone, so that a fault
(a malformed file, whose line is then found; a lack of memory) stays with its own run.

Settings read (by the caller): ``FLSYNC_MEASURES_MEMORY_MB``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flsync.measures.runs import COMMENTS, DATASETS, ENROLMENTS, STEP_ACTIVITY
from flsync.sql.csvfiles import CsvFile, DataFiles, MalformedFile
from flsync.storage import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
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
# A query costs DuckDB some 5 ms however small its files (160 queries, four per run, took 1 s
# for benchmark scenario A's 40 runs of some 80 kB), so runs are computed together. Taken by
# size, so that a big run goes alone and the runs of a batch are alike: a step's bitmap is as
# wide as the most joiners of a run of its batch. The bounds keep a batch's tables, its open
# files (three per run) and, for a store that is no local folder, its local copies small.
BATCH_BYTES = 16 << 20  # the batch's dataset files, in bytes
BATCH_RUNS = 64
_TABLES = """
CREATE OR REPLACE TEMP TABLE joiners (run INTEGER, id INTEGER, learner_id VARCHAR,
    leavers BOOLEAN, fully_participating_learners BOOLEAN, statements_sold BOOLEAN);
CREATE OR REPLACE TEMP TABLE learners (run INTEGER, id INTEGER, learner_id VARCHAR,
    active BOOLEAN, returned BOOLEAN);
"""


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
    """A dataset file of a run of the batch, ready for DuckDB."""

    run: int  # the run's place in its batch
    path: str  # in the tree
    local: str  # the file DuckDB reads


@dataclass(frozen=True)
class _Files:
    """Files of one dataset kind and one header version, read by one query."""

    header: tuple[str, ...]
    sources: tuple[_Source, ...]

    @property
    def where(self) -> str:
        """The file, for a message."""
        return self.sources[0].path if len(self.sources) == 1 else f"{len(self.sources)} files"

    def runs(self) -> list[int]:
        return [source.run for source in self.sources]

    def column(self, name: str) -> str | None:
        """The SQL name of the column ``name`` (its first one), or None if it has none."""
        return f"c{self.header.index(name)}" if name in self.header else None

    def relation(self) -> str:
        """The rows of the files (``$files``), each with its run's place (``$runs``) as ``run``."""
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(self.header)))
        return (
            "(SELECT $runs[list_position($files, filename)] AS run, *"
            f" FROM read_csv($files, columns = {{{columns}}}, filename = true, {_CSV_OPTIONS}))"
        )

    def parameters(self) -> dict[str, list[Any]]:
        return {"files": [source.local for source in self.sources], "runs": self.runs()}

    def alone(self) -> list[_Files]:
        """Each file by itself."""
        return [_Files(self.header, (source,)) for source in self.sources]


@dataclass
class _Run:
    """A run of the batch, as its computation goes."""

    folder: RunFolder
    values: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(MEASURES))
    steps: list[StepCompletion] = field(default_factory=list)
    # Known before the end (a file missing, malformed or failing): computed no further.
    ended: RunMeasures | MeasuresError | None = None

    def end(self, exc: MalformedFile | MeasuresError) -> None:
        self.ended = RunMeasures.unknown(str(exc)) if isinstance(exc, MalformedFile) else exc

    def result(self) -> RunMeasures | MeasuresError:
        if self.ended is not None:
            return self.ended
        return RunMeasures(self.values, tuple(sorted(self.steps, key=_step_order)))


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
        """The run's measures (see compute_all); MeasuresError when they could not be
        computed this time."""
        [(_, result)] = self.compute_all([run])
        if isinstance(result, MeasuresError):
            raise result
        return result

    def compute_all(
        self, runs: Iterable[RunFolder]
    ) -> Iterator[tuple[RunFolder, RunMeasures | MeasuresError]]:
        """Each run's measures, or the MeasuresError that kept them from being computed this
        time. A file that cannot be read as CSV (or lacks a column the measures need) leaves
        its run's measures all empty, its reason in ``problem``."""
        for batch in batches(runs):
            states = [_Run(run) for run in batch]
            with contextlib.ExitStack() as stack:
                self._compute_batch(stack, states)
            for state in states:
                yield state.folder, state.result()

    def _compute_batch(self, stack: contextlib.ExitStack, runs: list[_Run]) -> None:
        for run in runs:
            if ENROLMENTS not in run.folder.files:
                run.ended = RunMeasures.unknown()
        self._db.execute(_TABLES)
        self._each(self._open(stack, runs, ENROLMENTS), self._joiners, runs)
        activity = self._open(stack, runs, STEP_ACTIVITY)
        self._each(activity, self._learners, runs)
        self._each(activity, self._steps, runs)
        # Only beside a step activity: the social learners are learners.
        self._each(self._open(stack, runs, COMMENTS, STEP_ACTIVITY), self._social, runs)

    def _each(
        self, groups: list[_Files], stage: Callable[[_Files, list[_Run]], None], runs: list[_Run]
    ) -> None:
        """``stage`` for each group of files of the runs still going, in a transaction: a
        group that fails leaves nothing behind and is done again one file at a time, so that
        a fault ends its own run alone."""
        for group in groups:
            going = tuple(source for source in group.sources if runs[source.run].ended is None)
            if not going:
                continue
            files = _Files(group.header, going)
            self._db.begin()
            try:
                stage(files, runs)
            except (MalformedFile, MeasuresError) as exc:
                self._db.rollback()
                if len(going) > 1:
                    self._each(files.alone(), stage, runs)
                else:
                    runs[going[0].run].end(exc)
                continue
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    # The files.

    def _open(
        self, stack: contextlib.ExitStack, runs: list[_Run], name: str, *beside: str
    ) -> list[_Files]:
        """The file ``name`` of each run still going that has it (and the files ``beside``),
        by header version. A run whose file cannot be used ends here."""
        groups: dict[tuple[str, ...], list[_Source]] = {}
        for place, run in enumerate(runs):
            if run.ended is not None or not {name, *beside} <= run.folder.files.keys():
                continue
            path = f"{run.folder.folder}/{name}"
            try:
                local = stack.enter_context(self._local_file(path))
                header = _read_header(local, path) or CURRENT_HEADERS[name]
                missing = [column for column in REQUIRED[name] if column not in header]
                if missing:
                    raise MalformedFile(path, 1, f"the header has no {missing[0]} column")
            except (MalformedFile, MeasuresError) as exc:
                run.end(exc)
                continue
            groups.setdefault(header, []).append(_Source(place, path, local))
        return [_Files(header, tuple(sources)) for header, sources in groups.items()]

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

    def _query(
        self, sql: str, files: _Files, parameters: dict[str, list[Any]]
    ) -> list[tuple[Any, ...]]:
        """Run ``sql``, about ``files``, with ``parameters``."""
        duckdb = self._duckdb
        try:
            return self._db.execute(sql, parameters).fetchall()
        except duckdb.Error as exc:
            if isinstance(exc, duckdb.InvalidInputException) and len(files.sources) == 1:
                raise self._explain(files.sources[0], exc) from None
            raise MeasuresError(f"{files.where}: {_first_line(exc)}") from None

    def _explain(self, source: _Source, exc: Exception) -> MalformedFile:
        """What DuckDB refused, said as the database load says it: the line (as an editor
        counts lines) and the reason, found by reading the file again (this path only)."""
        self.files_read += 1
        try:
            with CsvFile(DataFiles(self.store), source.path) as file:
                for _ in file.blocks():
                    pass
        except MalformedFile as found:
            return found
        return MalformedFile(source.path, None, _first_line(exc))

    # The measures, each stage for a group of files; a run with no row in a count has 0.

    def _joiners(self, enrolments: _Files, runs: list[_Run]) -> None:
        """Add the runs' joiners to the table ``joiners``; the measures it gives."""
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
            INSERT INTO joiners
            SELECT run, (row_number() OVER (PARTITION BY run))::INTEGER, learner_id,
                {", ".join(flags)}
            FROM (
                SELECT run, {learner} AS learner_id, {selected}
                FROM {enrolments.relation()}
                WHERE {learner} IS NOT NULL
                GROUP BY run, {learner}
                {staff}
            )
            """,
            enrolments,
            enrolments.parameters(),
        )
        counts = ", ".join(f"count(*) FILTER (WHERE {name})" for name in flags)
        rows = self._query(
            f"SELECT run, count(*), {counts} FROM joiners"
            " WHERE list_contains($runs, run) GROUP BY run",
            enrolments,
            {"runs": enrolments.runs()},
        )
        found = {run: rest for run, *rest in rows}
        for place in enrolments.runs():
            joiners, *flagged = found.get(place, [0] * (1 + len(flags)))
            values = runs[place].values
            values["joiners"] = joiners
            for (name, column), count in zip(flags.items(), flagged, strict=True):
                values[name] = count if column else None

    def _learners(self, activity: _Files, runs: list[_Run]) -> None:
        """Add the runs' learners (joiners with a visited step) to the table ``learners``;
        the measures it gives."""
        learner = activity.column("learner_id")
        visited = activity.column("first_visited_at")
        completed = activity.column("last_completed_at")
        week = _week(activity)
        self._query(
            f"""
            INSERT INTO learners
            SELECT j.run, j.id, j.learner_id,
                bool_or(s.{completed} IS NOT NULL),
                coalesce(
                    min({week}) FILTER (WHERE s.{completed} IS NOT NULL)
                    <> max({week}) FILTER (WHERE s.{completed} IS NOT NULL),
                    false
                )
            FROM {activity.relation()} AS s
                JOIN joiners AS j ON s.run = j.run AND s.{learner} = j.learner_id
            GROUP BY j.run, j.id, j.learner_id
            HAVING bool_or(s.{visited} IS NOT NULL)
            """,
            activity,
            activity.parameters(),
        )
        rows = self._query(
            "SELECT run, count(*), count(*) FILTER (WHERE active),"
            " count(*) FILTER (WHERE returned)"
            " FROM learners WHERE list_contains($runs, run) GROUP BY run",
            activity,
            {"runs": activity.runs()},
        )
        found = {run: rest for run, *rest in rows}
        for place in activity.runs():
            learners, active, returning = found.get(place, (0, 0, 0))
            runs[place].values.update(
                learners=learners, active_learners=active, returning_learners=returning
            )

    def _steps(self, activity: _Files, runs: list[_Run]) -> None:
        """Every step of each run's step activity, with the learners who visited and
        completed it."""
        learner = activity.column("learner_id")
        step = activity.column("step")
        week_column = activity.column("week_number")
        number_column = activity.column("step_number")
        week = f"coalesce(any_value(s.{week_column}), " if week_column else "coalesce("
        number = f"coalesce(any_value(s.{number_column}), " if number_column else "coalesce("
        # Learners are numbered as joiners, 1..joiners within their run: a bitmap of as many
        # bits as the most joiners of these runs, per step.
        width = max(runs[place].values["joiners"] or 0 for place in activity.runs())
        bits = f"l.id, 1, {max(width, 1)}"
        rows = self._query(
            f"""
            SELECT s.run, s.{step}, {week}split_part(s.{step}, '.', 1), ''),
                {number}split_part(s.{step}, '.', 2), ''),
                coalesce(bit_count(bitstring_agg({bits})
                    FILTER (WHERE l.id IS NOT NULL AND s.{activity.column("first_visited_at")}
                        IS NOT NULL)), 0),
                coalesce(bit_count(bitstring_agg({bits})
                    FILTER (WHERE l.id IS NOT NULL AND s.{activity.column("last_completed_at")}
                        IS NOT NULL)), 0)
            FROM {activity.relation()} AS s
                LEFT JOIN learners AS l ON s.run = l.run AND s.{learner} = l.learner_id
            WHERE s.{step} IS NOT NULL
            GROUP BY s.run, s.{step}
            """,
            activity,
            activity.parameters(),
        )
        found: dict[int, list[StepCompletion]] = {place: [] for place in activity.runs()}
        for run, *step_row in rows:
            found[run].append(StepCompletion(*step_row))
        for place, steps in found.items():
            runs[place].steps = steps

    def _social(self, comments: _Files, runs: list[_Run]) -> None:
        author = comments.column("author_id")
        rows = self._query(
            f"""
            SELECT c.run, count(DISTINCT l.id)
            FROM {comments.relation()} AS c
                JOIN learners AS l ON c.run = l.run AND c.{author} = l.learner_id
            GROUP BY c.run
            """,
            comments,
            comments.parameters(),
        )
        found = dict(rows)
        for place in comments.runs():
            runs[place].values["social_learners"] = int(found.get(place, 0))


def batches(runs: Iterable[RunFolder]) -> Iterator[list[RunFolder]]:
    """The runs from the smallest to the largest, in batches of at most BATCH_RUNS runs and
    BATCH_BYTES of files (a larger run alone)."""
    batch: list[RunFolder] = []
    size = 0
    for run in sorted(runs, key=_size):
        if batch and (size + _size(run) > BATCH_BYTES or len(batch) == BATCH_RUNS):
            yield batch
            batch, size = [], 0
        batch.append(run)
        size += _size(run)
    if batch:
        yield batch


def _size(run: RunFolder) -> int:
    return sum(stat.size for name, stat in run.files.items() if name in DATASETS)


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


def _week(activity: _Files) -> str:
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
