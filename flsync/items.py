"""What the spider yields: one RunItem per started run, one DatasetItem per dataset file.

Names are kept exactly as the site shows them; ``folder`` is the run's place in the data tree
(already made safe, see flsync.tree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any


def run_key(course_slug: str, run: int) -> str:
    """How a run is known in the state file: by its place on the site, not in the tree."""
    return f"{course_slug}/{run}"


@dataclass
class RunItem:
    organisation: str
    course: str
    course_slug: str
    run: int
    start_date: date
    end_date: date
    duration_weeks: int | None
    folder: str
    # Dataset files this run has on the site this time (file names, e.g. "comments.csv").
    files: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return run_key(self.course_slug, self.run)


@dataclass
class DatasetItem:
    organisation: str
    course: str
    course_slug: str
    run: int
    dataset: str
    url: str
    folder: str
    file_name: str
    # What the last sync stored for this file (ETag, Last-Modified, checksum…): lets the
    # pipeline ask the server whether it changed. Empty on a first sync.
    previous: dict[str, Any] = field(default_factory=dict)
    # Filled by DatasetFilesPipeline: the stored file's record (see flsync.state.FileRecord).
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.file_name}"

    @property
    def run_key(self) -> str:
        return run_key(self.course_slug, self.run)


@dataclass
class OrganisationItem:
    """Yielded once an organisation's runs listing has been read to its last page."""

    organisation: str
    slug: str
    run_count: int


@dataclass
class FetchFailure:
    """A page of an organisation could not be fetched or read: its sync is incomplete."""

    organisation: str
    url: str
    reason: str
