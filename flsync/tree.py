"""Where things go in the data tree, and the rule that makes a page's name safe as a file name.

    {data_dir}/{organisation}/{course}/{run}-{start}-{end}/{dataset}.csv + metadata.csv
    {data_dir}/{organisation}/update.txt
    {data_dir}/{organisation}/sync-report.json
    {data_dir}/{organisation}/.flsync-state.json

Paths here are relative to ``data_dir``, with ``/`` as separator (what Scrapy's file stores take).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import date

MAX_NAME_LENGTH = 120
METADATA_FILE = "metadata.csv"
UPDATE_FILE = "update.txt"
REPORT_FILE = "sync-report.json"
STATE_FILE = ".flsync-state.json"
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


def safe_name(name: str) -> str:
    """A readable file-system name: `/`, `\\` and control characters become `-`, white space
    is folded, leading/trailing spaces and dots go, at most 120 characters, never empty."""
    name = _SPACES.sub(" ", _UNSAFE.sub("-", name)).strip(" .")
    return name[:MAX_NAME_LENGTH].strip(" .") or "_"


def dataset_file_name(dataset: str) -> str:
    """`step_activity` is stored as `step-activity.csv`."""
    return safe_name(dataset.replace("_", "-")) + ".csv"


def organisation_dir(organisation: str) -> str:
    return safe_name(organisation)


def run_dir(organisation: str, course: str, run: int, start: date, end: date) -> str:
    return f"{safe_name(organisation)}/{safe_name(course)}/{run}-{start:%Y-%m-%d}-{end:%Y-%m-%d}"
