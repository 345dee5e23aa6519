"""A data tree on a local (or mounted) file system: every write atomic (a temporary file in the
destination folder, then a rename), a lock per organisation held with flock. Files and folders
get the modes the user's umask gives them."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import secrets
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from twisted.internet import threads

if TYPE_CHECKING:
    from collections.abc import Iterator
    from io import BytesIO

    from scrapy.pipelines.files import StatInfo
    from scrapy.pipelines.media import MediaPipeline
    from scrapy.settings import BaseSettings
    from twisted.internet.defer import Deferred

from flsync.storage.base import (
    LOCK_PREFIX,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    FileStat,
    StoreLocationError,
    StoreLockedError,
    StoreWriteError,
)

# Less free room than this on data_dir's disk, and a sync could not even write its state.
MIN_FREE_BYTES = 1 << 20


class LocalStore:
    """A data tree on a local (or mounted) file system."""

    @classmethod
    def local_folder(cls, uri: str) -> str | None:
        return _local_path(uri)

    @classmethod
    def check_location(cls, uri: str, settings: BaseSettings) -> None:
        """Raise StoreLocationError unless the data folder exists or can be made, writable.

        The folder itself is made if missing, but never its parent: a missing parent is
        usually a disk that is not mounted, and filling the disk beneath it is worse than
        stopping.
        """
        folder = Path(_local_path(uri)).absolute()
        if folder.is_symlink() and not folder.exists():
            raise StoreLocationError(
                f"data_dir {folder} is a symbolic link to {os.readlink(folder)}, which does not"
                " exist (mount or create it, or point data_dir elsewhere)"
            )
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
        disk = os.statvfs(target)
        free = disk.f_bavail * disk.f_frsize
        if free < MIN_FREE_BYTES:
            raise StoreLocationError(
                f"data_dir {folder}: its disk is full ({free} bytes free): free some space,"
                " or point data_dir elsewhere"
            )

    def __init__(self, basedir: str, settings: BaseSettings | None = None):
        # A local tree needs no settings.
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
        with _write_errors(path), self._temp_file(path) as (tmp, f):
            f.write(buf.getvalue())
        self.persist_local_file(path, tmp)

    def write_file(self, path: str, content: bytes) -> None:
        self.persist_file(path, io.BytesIO(content))

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

    def persist_local_file(self, path: str, local_path: str, checksum: str | None = None) -> None:
        target = self._get_filesystem_path(path)
        with _write_errors(path):
            target.parent.mkdir(parents=True, exist_ok=True)
            # Its mode is the one it was made with, 0666 less the user's umask, as any tool's
            # files: the tree holds personal data, and a umask of 077 keeps it the owner's.
            os.replace(local_path, target)

    def place_file(self, path: str, local_path: str) -> None:
        self.persist_local_file(path, local_path)

    def exists(self, path: str) -> bool:
        return self._get_filesystem_path(path).is_file()

    def read_file(self, path: str) -> bytes | None:
        try:
            return self._get_filesystem_path(path).read_bytes()
        except FileNotFoundError:
            return None

    def open_read(self, path: str) -> IO[bytes]:
        return self._get_filesystem_path(path).open("rb")

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
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def _write_errors(path: str) -> Iterator[None]:
    """A write the file system refuses (a full disk, a folder where a file goes...) as one
    line naming the file; nothing is left in its place."""
    try:
        yield
    except OSError as exc:
        raise StoreWriteError(f"cannot write {path}: {exc.strerror or exc}") from None


def _local_path(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else uri
