"""What the spider yields: one RunItem per started run it read, one DatasetItem per dataset
file to fetch, one OrganisationItem per organisation whose runs listing was read to the end,
and a FetchFailure for every page that could not be read.

Names are kept exactly as the site shows them; folders and paths are places in the data tree
(already made safe, see flsync.tree), relative to data_dir.
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
    # Files this run has on the site this time (file names, e.g. "comments.csv").
    files: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return run_key(self.course_slug, self.run)


@dataclass
class DatasetItem:
    organisation: str
    dataset: str  # its name on the site (comments, step_activity, country-subdivisions)
    run_key: str
    url: str
    path: str
    # Filled by DatasetFilesPipeline: the stored file's record (see flsync.state.SyncState).
    files: list[dict[str, Any]] = field(default_factory=list)
    # Filled by DatasetFilesPipeline when the file's header is none of the dataset's known
    # versions: {"added": [columns], "gone": [columns]} against the current one.
    header_drift: dict[str, list[str]] | None = None


@dataclass
class OrganisationItem:
    """Yielded once an organisation's runs listing has been read to its last page."""

    organisation: str
    run_count: int
    # Finished runs not asked for (FLSYNC_FROZEN_AFTER_DAYS) but for their enrolments.
    frozen: int = 0


@dataclass
class FetchFailure:
    """A page of an organisation could not be fetched or read: its sync is incomplete."""

    organisation: str
    url: str
    reason: str
