"""What the measures of an organisation are, and what each run's were computed from.

``{organisation}/.flsync-measures.json`` keeps, per run folder, the fingerprint of the files
its measures were computed from (see RunFolder.fingerprint) and the measures themselves, so
that a run whose files did not change is not read again; ``measures.csv`` and
``step-completion.csv`` are written from it. Like the sync's state, it is a cache: delete it
and the next computation reads every run again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flsync import tree
from flsync.measures.compute import MEASURES, RunMeasures, StepCompletion

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from flsync.storage import DataStore

logger = logging.getLogger(__name__)

RECORD_FILE = ".flsync-measures.json"
MEASURES_FILE = tree.MEASURES_FILE
STEPS_FILE = tree.STEPS_FILE
RECORD_VERSION = 1
MEASURES_HEADER = ("course", "run", "start_date", "end_date", *MEASURES)
STEPS_HEADER = ("course", "run", "step", "week_number", "step_number", "visited", "completed")


@dataclass(frozen=True)
class RunRecord:
    """A run's measures, with what they were computed from."""

    key: str  # {course folder}/{run folder}, within the organisation's folder
    fingerprint: str  # "" when they could not be computed: computed again next time
    course: str  # the title, as metadata.csv has it
    run: int
    start_date: str
    end_date: str
    measures: RunMeasures

    @property
    def course_folder(self) -> str:
        return self.key.split("/", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "course": self.course,
            "run": self.run,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "measures": self.measures.values,
            "steps": [
                [s.step, s.week_number, s.step_number, s.visited, s.completed]
                for s in self.measures.steps
            ],
            "problem": self.measures.problem,
        }

    @classmethod
    def from_json(cls, key: str, document: Mapping[str, Any]) -> RunRecord:
        values = document["measures"]
        if set(values) != set(MEASURES) or not all(
            v is None or isinstance(v, int) for v in values.values()
        ):
            raise ValueError(f"run {key}: not the measures of this version")
        steps = tuple(
            StepCompletion(str(s[0]), str(s[1]), str(s[2]), int(s[3]), int(s[4]))
            for s in document["steps"]
        )
        return cls(
            key=key,
            fingerprint=str(document["fingerprint"]),
            course=str(document["course"]),
            run=int(document["run"]),
            start_date=str(document["start_date"]),
            end_date=str(document["end_date"]),
            measures=RunMeasures(dict(values), steps, document["problem"]),
        )


def record_path(organisation: str) -> str:
    return f"{organisation}/{RECORD_FILE}"


def load_record(store: DataStore, organisation: str) -> dict[str, RunRecord]:
    """The runs' records as the last computation left them; none if there is no record or it
    cannot be read (then every run is computed again)."""
    path = record_path(organisation)
    raw = store.read_file(path)
    if raw is None:
        return {}
    try:
        document = json.loads(raw)
        if document.get("version") != RECORD_VERSION:
            raise ValueError(f"version {document.get('version')!r}, not {RECORD_VERSION}")
        return {key: RunRecord.from_json(key, run) for key, run in document["runs"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        logger.warning(
            "Measures record %(path)s is unreadable (%(error)s): every run is computed again",
            {"path": path, "error": exc},
        )
        return {}


def record_bytes(runs: Iterable[RunRecord]) -> bytes:
    document = {
        "version": RECORD_VERSION,
        "runs": {run.key: run.to_json() for run in sorted(runs, key=lambda r: r.key)},
    }
    return json.dumps(document, indent=1, ensure_ascii=False).encode()


def ordered(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """By course (title, then folder), then start date and run number."""
    return sorted(runs, key=lambda r: (r.course.casefold(), r.course_folder, r.start_date, r.run))


def measures_csv(runs: Iterable[RunRecord]) -> bytes:
    """``measures.csv``: one row per run; an unknown measure is an empty field."""
    rows = [
        [
            r.course,
            r.run,
            r.start_date,
            r.end_date,
            *(_field(r.measures.values[m]) for m in MEASURES),
        ]
        for r in ordered(runs)
    ]
    return _csv([MEASURES_HEADER, *rows])


def steps_csv(runs: Iterable[RunRecord]) -> bytes:
    """``step-completion.csv``: one row per step of each run, in the course's order."""
    rows = [
        [r.course, r.run, s.step, s.week_number, s.step_number, s.visited, s.completed]
        for r in ordered(runs)
        for s in r.measures.steps
    ]
    return _csv([STEPS_HEADER, *rows])


def _field(value: int | None) -> str:
    return "" if value is None else str(value)


def _csv(rows: Iterable[Iterable[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()
