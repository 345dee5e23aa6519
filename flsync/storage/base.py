"""What every store is: the DataStore protocol, its errors, and the names of flsync's own
files in the tree (temporary files, locks)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

from scrapy.pipelines.files import FilesStoreProtocol

if TYPE_CHECKING:
    from io import BytesIO

    from scrapy.pipelines.files import StatInfo
    from scrapy.pipelines.media import MediaPipeline
    from scrapy.settings import BaseSettings
    from twisted.internet.defer import Deferred

# Temporary files: `.flsync-tmp-<random>.part` beside their destination. Named apart from the
# state file (`.flsync-state.json`), so that sweeping them can never touch it.
TEMP_PREFIX = ".flsync-tmp-"
TEMP_SUFFIX = ".part"
# The locks, one per organisation (by slug), are hidden files at the top of the data_dir: two
# syncs may share it as long as they sync different organisations. Files, not a folder, so that
# a dashboard listing the institution folders finds nothing else there.
LOCK_PREFIX = ".flsync-lock-"


class StoreLockedError(Exception):
    """Another sync holds the lock (its name is the message)."""


class StoreLocationError(Exception):
    """The data folder cannot be used; the message is one line for the user."""


class StoreError(Exception):
    """Reading the store failed; the message is one line for the user."""


class StoreWriteError(StoreError):
    """A write to the store failed, and left nothing in its place; one line for the user."""


@dataclass(frozen=True)
class FileStat:
    """What a store knows of a file without reading it."""

    size: int
    mtime: float


class DataStore(FilesStoreProtocol, Protocol):
    """A FilesPipeline store, with what a mirror needs besides.

    What a crawl asks of the store while it runs (``persist_file``, ``stat_file``,
    ``persist_local_file``) may return a Deferred, as Scrapy's own stores do: a store that
    goes over the network does it in a worker thread, so that the reactor goes on meanwhile.
    A caller awaits the answer either way (``scrapy.utils.defer.ensure_awaitable``), and never
    asks which store it has. The other methods answer before they return. They serve the
    callers outside the reactor's thread (a command, a worker thread: writes go through
    ``write_file``) and, in it, the start of each organisation's sync (its lock, sweep and
    state) and ``stat``/``exists``, which answer from one listing per organisation.
    """

    def __init__(self, uri: str, settings: BaseSettings) -> None:
        """Open the tree at ``uri``, set up by ``settings`` (each store reads its own)."""

    @classmethod
    def local_folder(cls, uri: str) -> str | None:
        """The folder on this machine the tree at ``uri`` is in; None for a remote store."""

    @classmethod
    def check_location(cls, uri: str, settings: BaseSettings) -> None:
        """Raise StoreLocationError (one line for the user) if the tree cannot go there."""

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[Any] | None:
        """Write the small file ``path`` whole, from ``buf`` (from the reactor's thread)."""

    def write_file(self, path: str, content: bytes) -> None:
        """Write the small file ``path`` whole, before returning (outside the reactor's
        thread: a command, a worker thread)."""

    def stat_file(
        self, path: str, info: MediaPipeline.SpiderInfo | None = None
    ) -> Deferred[StatInfo]:
        """The file's time and checksum (SHA-256); reads the whole file."""

    def stat(self, path: str) -> FileStat | None:
        """Size and modification time of a stored file, or None if there is none."""

    def temp_path(self, path: str) -> str:
        """A new local file name to download the file that will become ``path`` into."""

    def persist_local_file(
        self, path: str, local_path: str, checksum: str | None = None
    ) -> Deferred[None] | None:
        """Put the finished local file ``local_path`` in place as ``path`` (and consume it);
        ``checksum``: its SHA-256, if known, kept with it where the store can."""

    def place_file(self, path: str, local_path: str) -> None:
        """As ``persist_local_file``, before returning (outside the reactor's thread)."""

    def exists(self, path: str) -> bool: ...

    def read_file(self, path: str) -> bytes | None: ...

    def open_read(self, path: str) -> IO[bytes]:
        """The stored file as a stream, read as it is consumed (a file of any size; the
        database load reads through it). FileNotFoundError if there is none."""

    def list_dir(self, path: str) -> list[str]: ...

    def sweep_temp_files(self, folder: str) -> list[str]:
        """Delete the temporary files a killed sync left under ``folder``; their paths."""

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold the lock ``name`` (an organisation's slug) while the context lasts; raise
        StoreLockedError at once if another sync holds it."""
