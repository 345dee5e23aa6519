"""The one storage layer: every file flsync writes goes through a store of ``STORE_SCHEMES``.

A store is a Scrapy files store (``persist_file``/``stat_file``, what ``FilesPipeline``
uses; ``DatasetFilesPipeline`` registers these classes in its ``STORE_SCHEMES``) with what a
mirror also needs: temporary files for downloads and their move into place, a cheap ``stat``,
reading a small file back, listing a folder, sweeping what a killed sync left behind, and a
lock per organisation against two syncs of it at once. ``LocalStore`` makes every write
atomic: a temporary file in the destination folder, then a rename, so a reader never sees a
partial file and a failed write never replaces a good one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from scrapy.pipelines.files import FilesStoreProtocol
from twisted.internet import threads

if TYPE_CHECKING:
    from collections.abc import Iterator
    from io import BytesIO

    from scrapy.pipelines.files import StatInfo
    from scrapy.pipelines.media import MediaPipeline
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


@dataclass(frozen=True)
class FileStat:
    """What a store knows of a file without reading it."""

    size: int
    mtime: float


class DataStore(FilesStoreProtocol, Protocol):
    """A FilesPipeline store, with what a mirror needs besides."""

    @classmethod
    def check_location(cls, uri: str) -> None:
        """Raise StoreLocationError (one line for the user) if the tree cannot go there."""

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[Any] | None: ...

    def stat_file(
        self, path: str, info: MediaPipeline.SpiderInfo | None = None
    ) -> Deferred[StatInfo]:
        """The file's time and checksum (SHA-256); reads the whole file."""

    def stat(self, path: str) -> FileStat | None:
        """Size and modification time of a stored file, or None if there is none."""

    def temp_path(self, path: str) -> str:
        """A new local file name to download the file that will become ``path`` into."""

    def persist_local_file(self, path: str, local_path: str) -> Deferred[None] | None:
        """Put the finished local file ``local_path`` in place as ``path`` (and consume it)."""

    def exists(self, path: str) -> bool: ...

    def read_file(self, path: str) -> bytes | None: ...

    def list_dir(self, path: str) -> list[str]: ...

    def sweep_temp_files(self, folder: str) -> list[str]:
        """Delete the temporary files a killed sync left under ``folder``; their paths."""

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold the lock ``name`` (an organisation's slug) while the context lasts; raise
        StoreLockedError at once if another sync holds it."""


class LocalStore:
    """A data tree on a local (or mounted) file system."""

    @classmethod
    def check_location(cls, uri: str) -> None:
        """Raise StoreLocationError unless the data folder exists or can be made, writable.

        The folder itself is made if missing, but never its parent: a missing parent is
        usually a disk that is not mounted, and filling the disk beneath it is worse than
        stopping.
        """
        folder = Path(_local_path(uri)).absolute()
        if folder.exists():
            if not folder.is_dir():
                raise StoreLocationError(f"data_dir {folder} is a file, not a folder")
        elif not folder.parent.is_dir():
            problem = "is not a folder" if folder.parent.exists() else "does not exist"
            raise StoreLocationError(
                f"data_dir {folder}: its parent folder {folder.parent} {problem}"
                " (create it, or point data_dir elsewhere)"
            )
        target = folder if folder.exists() else folder.parent
        if not os.access(target, os.W_OK | os.X_OK):
            raise StoreLocationError(f"data_dir {folder}: {target} is not writable by this user")

    def __init__(self, basedir: str):
        self.basedir = _local_path(basedir)
        Path(self.basedir).mkdir(parents=True, exist_ok=True)

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self._temp_file(path) as (tmp, f):
            f.write(buf.getvalue())
        self.persist_local_file(path, tmp)

    def stat_file(
        self, path: str, info: MediaPipeline.SpiderInfo | None = None
    ) -> Deferred[StatInfo]:
        """The file's time and SHA-256 (the checksum flsync's downloads compute); read in a
        worker thread, as a stored file can be gigabytes."""
        return threads.deferToThread(self._stat_file, path)

    def _stat_file(self, path: str) -> StatInfo:
        absolute_path = self._get_filesystem_path(path)
        try:
            with absolute_path.open("rb") as f:
                checksum = hashlib.file_digest(f, "sha256").hexdigest()
                return {"last_modified": os.fstat(f.fileno()).st_mtime, "checksum": checksum}
        except FileNotFoundError:
            return {}

    def _get_filesystem_path(self, path: str) -> Path:
        return Path(self.basedir, path)

    def stat(self, path: str) -> FileStat | None:
        try:
            result = self._get_filesystem_path(path).stat()
        except FileNotFoundError:
            return None
        return FileStat(size=result.st_size, mtime=result.st_mtime)

    def temp_path(self, path: str) -> str:
        # Same folder as the destination, so the final rename is atomic.
        folder = self._get_filesystem_path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")

    def persist_local_file(self, path: str, local_path: str) -> None:
        target = self._get_filesystem_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(local_path, 0o644)
        os.replace(local_path, target)

    def exists(self, path: str) -> bool:
        return self._get_filesystem_path(path).is_file()

    def read_file(self, path: str) -> bytes | None:
        try:
            return self._get_filesystem_path(path).read_bytes()
        except FileNotFoundError:
            return None

    def list_dir(self, path: str) -> list[str]:
        folder = self._get_filesystem_path(path)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def sweep_temp_files(self, folder: str) -> list[str]:
        swept = []
        for file in self._get_filesystem_path(folder).rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()
                swept.append(file.relative_to(self.basedir).as_posix())
        return sorted(swept)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the lock ``name`` (an organisation's slug) for this process; raise
        StoreLockedError if another one holds it. The kernel lets go of it when the process
        ends, however it ends: a killed sync leaves no stale lock."""
        path = Path(self.basedir, LOCK_PREFIX + name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreLockedError(name) from None
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _temp_file(self, path: str) -> Iterator[tuple[str, IO[bytes]]]:
        tmp = self.temp_path(path)
        try:
            with open(tmp, "xb") as f:
                yield tmp, f
        except BaseException:
            os.unlink(tmp)
            raise


STORE_SCHEMES: dict[str, type[DataStore]] = {
    "": LocalStore,
    "file": LocalStore,
}


def store_class(uri: str) -> type[DataStore]:
    """The store class for a data_dir: a local path or a ``file://`` URI."""
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    try:
        return STORE_SCHEMES[scheme]
    except KeyError:
        raise StoreLocationError(
            f"data_dir {uri!r}: unsupported scheme {scheme!r} (use a local folder)"
        ) from None


def _local_path(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else uri
