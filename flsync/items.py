"""What the spider yields, so that every organisation's sync can be accounted for: what was
listed (an OrganisationItem when its sync starts, a ListingItem once its runs listing is read to
the end), what was read (a RunItem per started run whose details and dashboard were read, a
DatasetItem per dataset file to fetch), and what went wrong (a RunFailure, naming the page and
why; a RunSkipped for a listed run that turned out not to have started).

Every item carries its organisation's slug (``organisation``), the key its sync is counted
under. Names are kept exactly as the site shows them; folders and paths are places in the data
tree (made safe and unique, see flsync.tree), relative to data_dir.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any


def run_key(course_slug: str, run: int) -> str:
    """How a run is known in the state file: by its place on the site, not in the tree."""
    return f"{course_slug}/{run}"


@dataclass
class OrganisationItem:
    """An organisation whose sync starts (its lock held, its folder known)."""

    organisation: str  # slug
    name: str
    folder: str
    url: str  # its runs listing


@dataclass
class ListingItem:
    """An organisation's runs listing, read to its last page."""

    organisation: str
    listed: int  # rows, started or not
    pages: int = 0  # pages read
    # The started runs to read: run key -> details page URL.
    runs: dict[str, str] = field(default_factory=dict)
    # Finished runs left alone (FLSYNC_FROZEN_AFTER_DAYS): run key -> the files still asked.
    frozen: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class RunItem:
    """A started run whose details page and dashboard were read."""

    organisation: str
    organisation_name: str
    course: str
    course_slug: str
    run: int
    start_date: date
    end_date: date
    duration_weeks: int | None
    folder: str
    url: str  # its details page
    # Dataset name -> file name, for every dataset asked (country-subdivisions included).
    datasets: dict[str, str] = field(default_factory=dict)
    # Files of this run on the site this time (file names, metadata.csv included once written).
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

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class RunSkipped:
    """A listed run that has not started after all (its details page says so)."""

    organisation: str
    run_key: str


@dataclass
class RunFailure:
    """A page of an organisation could not be fetched or read: the run it belongs to (None:
    a page of the whole organisation, such as its listing) is failed, its organisation
    incomplete. The ERROR line naming it was logged where it happened."""

    organisation: str
    url: str
    reason: str
    run_key: str | None = None
