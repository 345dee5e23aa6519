"""The run folders of an organisation, as the measures see them: read from the tree alone.

A run is known by its folder, ``{course}/{run}-{start}-{end}`` (which gives its number and
dates) and its ``metadata.csv`` (which gives the course's title exactly as the site shows it).
Only the files the measures read count: a change to any other file of the run computes
nothing again. Everything here goes through the store, so a local and an ``s3://`` data_dir
are read alike; listing an organisation reads no dataset file.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flsync import tree

if TYPE_CHECKING:
    from flsync.storage import DataStore, FileStat

ENROLMENTS = "enrolments.csv"
STEP_ACTIVITY = "step-activity.csv"
COMMENTS = "comments.csv"
DATASETS = (ENROLMENTS, STEP_ACTIVITY, COMMENTS)
# Part of every fingerprint: a new version (a measure defined anew) computes every run again.
MEASURES_VERSION = "1"


@dataclass(frozen=True)
class RunFolder:
    """A run's folder and what the store says of the files the measures read."""

    organisation: str
    course_folder: str
    name: str  # {run}-{start}-{end}
    files: dict[str, FileStat]  # of DATASETS and metadata.csv, those present

    @property
    def folder(self) -> str:
        """Its path in the tree."""
        return f"{self.organisation}/{self.course_folder}/{self.name}"

    @property
    def key(self) -> str:
        """How the record knows it: its path within the organisation's folder."""
        return f"{self.course_folder}/{self.name}"

    @property
    def fingerprint(self) -> str:
        """What its measures were computed from: names, sizes and times of its files."""
        digest = hashlib.sha256(f"flsync-measures {MEASURES_VERSION}\n".encode())
        for name, stat in sorted(self.files.items()):
            digest.update(f"{name}\0{stat.size}\0{stat.mtime!r}\n".encode())
        return digest.hexdigest()

    def numbers(self) -> tuple[int, str, str]:
        """Run number, start and end date (YYYY-MM-DD), from the folder's name."""
        found = tree.RUN_FOLDER.fullmatch(self.name)
        assert found is not None  # run_folders() takes only folders named so
        return int(found[1]), found[2], found[3]


def run_folders(store: DataStore, organisation: str) -> list[RunFolder]:
    """The run folders of the organisation folder ``organisation``, with the stat of each
    file the measures read (from the store's listing: no file is read)."""
    runs = []
    for course, name in tree.run_folders(store, organisation):
        folder = f"{organisation}/{course}/{name}"
        files = {}
        for file in (*DATASETS, tree.METADATA_FILE):
            stat = store.stat(f"{folder}/{file}")
            if stat is not None:
                files[file] = stat
        runs.append(RunFolder(organisation, course, name, files))
    return runs


def course_title(store: DataStore, run: RunFolder) -> str:
    """The course's title as its ``metadata.csv`` has it; the course folder's name when that
    file is missing or holds no ``course_name``."""
    raw = store.read_file(f"{run.folder}/{tree.METADATA_FILE}")
    if raw is not None:
        try:
            rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
        except (UnicodeDecodeError, csv.Error):
            rows = []
        if len(rows) >= 2 and "course_name" in rows[0]:
            index = rows[0].index("course_name")
            if index < len(rows[1]) and rows[1][index]:
                return rows[1][index]
    return run.course_folder
