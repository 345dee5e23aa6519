"""What one sync did for one organisation: counted as its items complete, then told twice at
the end, as a log line for people and as ``{organisation}/sync-report.json`` for machines
(monitoring, the dashboards' "data as of" note). The same figures in both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from flsync import tree

# Outcomes of a dataset file, as the files pipeline records them (FileRecord.status), and
# "failed" for one that could not be fetched.
FILE_OUTCOMES = ("new", "changed", "unchanged", "not-modified", "failed")
# The outcomes that wrote the file (its bytes count as stored, and as downloaded).
STORED_OUTCOMES = ("new", "changed")


@dataclass
class OrganisationReport:
    """One organisation's figures for one sync."""

    organisation: str  # its name
    folder: str  # its folder in the tree
    started: datetime
    finished: datetime | None = None
    runs_listed: int = 0  # rows of its runs listing, started or not
    runs_expected: int = 0  # started runs: each must close for the sync to be complete
    runs_closed: int = 0  # of those, the runs read and all their files accounted for
    runs: int = 0  # runs whose details and dashboard were read
    runs_frozen: int = 0  # finished runs left alone (FLSYNC_FROZEN_AFTER_DAYS)
    files_expected: int = 0  # files the closed and unclosed runs list
    files_accounted: int = 0  # of those, files that ended new, changed, unchanged or not modified
    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILE_OUTCOMES, 0))
    bytes_stored: int = 0  # new and changed files
    pages_failed: int = 0
    # Every run or page that failed, as {"url", "reason"}.
    failures: list[dict[str, str]] = field(default_factory=list)
    # Datasets whose header is none of their known versions: name -> {"added", "gone"}.
    header_drift: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    complete: bool = False

    def count_file(self, outcome: str, size: int = 0) -> None:
        self.files[outcome] += 1
        if outcome in STORED_OUTCOMES:
            self.bytes_stored += size

    @property
    def seconds(self) -> float:
        return round(((self.finished or self.started) - self.started).total_seconds(), 1)

    def log_line(self) -> str:
        files = ", ".join(f"{n} {outcome.replace('-', ' ')}" for outcome, n in self.files.items())
        outcome = "complete" if self.complete else "INCOMPLETE"
        stored = human_bytes(self.bytes_stored)
        line = (
            f"Organisation {outcome}: {self.organisation}: {self.runs_closed} of"
            f" {self.runs_expected} runs closed ({self.runs_listed} listed),"
            f" {self.files_accounted} of {self.files_expected} files accounted for: {files};"
            f" {stored} stored in {self.seconds} s"
        )
        if self.failures:
            line += f"; {len(self.failures)} failed"
        if self.runs_frozen:
            line += f"; {self.runs_frozen} finished runs left alone"
        if self.header_drift:
            line += f"; new header in {', '.join(sorted(self.header_drift))}"
        return line

    def to_json(self) -> bytes:
        document = {
            "organisation": self.organisation,
            "complete": self.complete,
            "started": _iso(self.started),
            "finished": _iso(self.finished or self.started),
            "seconds": self.seconds,
            "runs_listed": self.runs_listed,
            "runs_expected": self.runs_expected,
            "runs_closed": self.runs_closed,
            "runs": self.runs,
            "runs_frozen": self.runs_frozen,
            "files_expected": self.files_expected,
            "files_accounted": self.files_accounted,
            "files": {outcome.replace("-", "_"): n for outcome, n in self.files.items()},
            "bytes": self.bytes_stored,
            "pages_failed": self.pages_failed,
            "failures": self.failures,
            "header_drift": self.header_drift,
        }
        return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()

    @property
    def path(self) -> str:
        return f"{self.folder}/{tree.REPORT_FILE}"


def human_bytes(size: int) -> str:
    """``size`` in B, kB, MB or GB (powers of 1000, as file managers show them)."""
    value = float(size)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")
