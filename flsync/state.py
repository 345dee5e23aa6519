"""What the last sync stored, per organisation, in ``{organisation}/.flsync-state.json``.

The state is a cache, never the truth: a missing or unreadable state file means a full sync,
and a record whose file is gone from the store, or has changed size or time since, is not
trusted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from io import BytesIO
from typing import TYPE_CHECKING, Any

from scrapy.pipelines.media import FileInfo

from flsync.tree import STATE_FILE

if TYPE_CHECKING:
    from collections.abc import Mapping

    from twisted.internet.defer import Deferred

    from flsync.storage import DataStore, FileStat

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class FileRecord(FileInfo, total=False):
    """What is known of one stored file: FilesPipeline's url, path, checksum and status, and
    what the server said of it and when the store last changed it."""

    etag: str | None
    last_modified: str | None
    size: int
    mtime: float | None  # of the stored file, as the store reports it
    fetched_at: str


@dataclass
class SyncState:
    # The organisation whose folder this is: its slug (who holds the folder) and its name.
    slug: str | None = None
    name: str | None = None
    # data-tree path -> what the server said of that file and what was stored
    # (url, etag, last_modified, size, checksum (SHA-256), mtime of the stored file, fetched_at).
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    # "course_slug/run" -> {"folder", "end_date" (YYYY-MM-DD), "files": [file names],
    # "datasets": {dataset name: file name}, "course", "run", "start_date"}.
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # course slug -> its folder's name: the folder stays the course's (see flsync.tree).
    courses: dict[str, str] = field(default_factory=dict)

    def is_frozen(self, run_key: str, today: date, after_days: int, store: DataStore) -> bool:
        """The run ended more than ``after_days`` ago and every file it had is still stored."""
        run = self.runs.get(run_key)
        if not run or after_days <= 0:
            return False
        if date.fromisoformat(run["end_date"]) + timedelta(days=after_days) >= today:
            return False
        return all(store.exists(f"{run['folder']}/{name}") for name in run["files"])

    def course_folders(self) -> dict[str, str]:
        """Course slug -> folder name, with those of states from before the courses were kept
        (read from the folders of their runs)."""
        known = {
            key.rsplit("/", 1)[0]: run["folder"].split("/")[1] for key, run in self.runs.items()
        }
        return {**known, **self.courses}

    def to_bytes(self) -> bytes:
        document = {
            "version": STATE_VERSION,
            "slug": self.slug,
            "name": self.name,
            "files": self.files,
            "runs": self.runs,
            "courses": self.courses,
        }
        return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False).encode()


def describes(record: Mapping[str, Any] | None, stored: FileStat | None) -> bool:
    """Whether ``record`` still describes the stored file: same size and modification time.

    Then its checksum can be trusted without reading the file, and a 304 means the stored
    file is what the server has.
    """
    return bool(
        record
        and stored
        and record.get("checksum")
        and record.get("size") == stored.size
        and record.get("mtime") == stored.mtime
    )


def state_path(organisation_dir: str) -> str:
    return f"{organisation_dir}/{STATE_FILE}"


def load_state(store: DataStore, organisation_dir: str) -> SyncState:
    """The organisation's saved state; an empty one if there is none or it cannot be read."""
    path = state_path(organisation_dir)
    raw = store.read_file(path)
    if raw is None:
        return SyncState()
    try:
        document = json.loads(raw)
        if document.get("version") != STATE_VERSION:
            raise ValueError(f"version {document.get('version')!r}, not {STATE_VERSION}")
        state = SyncState(
            slug=_optional_text(document.get("slug")),
            name=_optional_text(document.get("name")),
            files=dict(document["files"]),
            runs=dict(document["runs"]),
            courses=dict(document.get("courses", {})),
        )
        for run in state.runs.values():
            _check_run_record(run)
        if not all(isinstance(f, str) for f in state.courses.values()):
            raise TypeError("a course folder that is not a name")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning(
            "State file %(path)s is unreadable (%(error)s): syncing as if it were absent",
            {"path": path, "error": exc},
        )
        return SyncState()
    return state


def _check_run_record(run: dict[str, Any]) -> None:
    """Raise if a run record lacks what is_frozen() and course_folders() read."""
    date.fromisoformat(run["end_date"])
    if not isinstance(run["folder"], str) or not isinstance(run["files"], list):
        raise TypeError("run record without folder or files")
    if len(run["folder"].split("/")) != 3:
        raise ValueError(f"run folder {run['folder']!r} is not organisation/course/run")


def _optional_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{value!r} is not a name")


def save_state(store: DataStore, organisation_dir: str, state: SyncState) -> Deferred[Any] | None:
    """Write the state as it is now (the caller awaits the store's answer)."""
    return store.persist_file(state_path(organisation_dir), BytesIO(state.to_bytes()), None)
