"""Bring an organisation's measures up to date: compute the runs whose files changed, then
write ``measures.csv``, ``step-completion.csv``, the record and ``dashboard.html``.

Only the runs whose files (enrolments, step activity, comments, metadata.csv) differ in name,
size or time from what their record says are read: a computation with nothing changed reads
no dataset file, and then rewrites neither CSV file (only the page, which shows the latest
sync). Each organisation's computation holds a lock of its own (``measures-…``, beside the
sync's locks), so that a sync's and ``scrapy measures`` never write over each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flsync import tree
from flsync.measures.compute import MeasuresEngine, MeasuresError, RunMeasures
from flsync.measures.dashboard import DASHBOARD_FILE, render_dashboard
from flsync.measures.record import (
    MEASURES_FILE,
    STEPS_FILE,
    RunRecord,
    load_record,
    measures_csv,
    record_bytes,
    record_path,
    steps_csv,
)
from flsync.measures.runs import course_title, run_folders

if TYPE_CHECKING:
    from flsync.measures.runs import RunFolder
    from flsync.storage import DataStore

logger = logging.getLogger(__name__)


@dataclass
class OrganisationMeasures:
    """What one computation did for one organisation."""

    organisation: str
    runs: int = 0
    computed: int = 0
    unchanged: int = 0
    removed: int = 0
    empty: list[str] = field(default_factory=list)  # runs left empty by a malformed file
    failed: list[str] = field(default_factory=list)  # runs not computed this time
    files_read: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.empty and not self.failed

    def summary(self) -> str:
        """The figures, for the log line that names the organisation."""
        return (
            f"{self.runs} runs, {self.computed} computed"
            f" ({self.files_read} files read), {self.unchanged} unchanged, {self.removed} gone,"
            f" {len(self.empty)} left empty, {len(self.failed)} failed, in {self.seconds:.1f} s"
        )


def lock_name(organisation: str) -> str:
    """The lock of an organisation folder's measures (by a digest: any name is a safe one)."""
    return "measures-" + hashlib.sha256(organisation.encode()).hexdigest()[:16]


def update_organisation(
    store: DataStore, organisation: str, *, memory_mb: int, everything: bool = False
) -> OrganisationMeasures:
    """Compute the organisation folder's runs that changed (all of them with ``everything``)
    and write its measures and page. StoreLockedError if another computation holds them;
    StoreError if the tree cannot be read or written."""
    started = time.monotonic()
    result = OrganisationMeasures(organisation)
    with store.lock(lock_name(organisation)):
        previous = {} if everything else load_record(store, organisation)
        folders = run_folders(store, organisation)
        records: dict[str, RunRecord] = {}
        changed = []
        for run in folders:
            old = previous.get(run.key)
            if old is not None and old.fingerprint == run.fingerprint:
                records[run.key] = old
            else:
                changed.append(run)
        if changed:
            with MeasuresEngine(store, memory_mb) as engine:
                computed = {run.key: found for run, found in engine.compute_all(changed)}
                result.files_read = engine.files_read
            for run in changed:
                records[run.key] = _record(store, run, computed[run.key], result)
        result.runs = len(folders)
        result.computed = len(changed) - len(result.failed)
        result.unchanged = len(folders) - len(changed)
        result.removed = len(previous.keys() - records.keys())
        outputs = (MEASURES_FILE, STEPS_FILE)
        if (
            changed
            or result.removed
            or any(store.stat(f"{organisation}/{name}") is None for name in outputs)
        ):
            runs = records.values()
            _write(store, f"{organisation}/{MEASURES_FILE}", measures_csv(runs))
            _write(store, f"{organisation}/{STEPS_FILE}", steps_csv(runs))
            _write(store, record_path(organisation), record_bytes(runs))
        page = render_dashboard(
            organisation,
            records.values(),
            _report(store, organisation),
            datetime.now(UTC),
        )
        _write(store, f"{organisation}/{DASHBOARD_FILE}", page)
    result.seconds = time.monotonic() - started
    return result


def _record(
    store: DataStore,
    run: RunFolder,
    computed: RunMeasures | MeasuresError,
    result: OrganisationMeasures,
) -> RunRecord:
    """The run's record, its problem said in the log."""
    number, start, end = run.numbers()
    fingerprint = run.fingerprint
    if isinstance(computed, MeasuresError):
        line = f"{run.folder}: {computed}"
        result.failed.append(line)
        logger.warning(
            "Measures (failed): %(line)s; tried again at the next computation", {"line": line}
        )
        measures, fingerprint = RunMeasures.unknown(str(computed)), ""
    else:
        measures = computed
    if measures.problem and fingerprint:
        result.empty.append(run.folder)
        logger.warning(
            "Measures (left empty): %(folder)s: %(problem)s",
            {"folder": run.folder, "problem": measures.problem},
        )
    return RunRecord(run.key, fingerprint, course_title(store, run), number, start, end, measures)


def _report(store: DataStore, organisation: str) -> dict[str, Any] | None:
    """The organisation's sync-report.json, if there is one that can be read."""
    raw = store.read_file(f"{organisation}/{tree.REPORT_FILE}")
    if raw is None:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _write(store: DataStore, path: str, content: bytes) -> None:
    store.write_file(path, content)
