"""The one storage layer: every file flsync writes goes through a store made by open_store().

A store is a Scrapy ``FilesStore`` (``persist_file``/``stat_file``, what ``FilesPipeline``
uses) with what a mirror also needs: moving a finished download into place, reading a small
file back, listing a folder, and a lock against two syncs at once. ``LocalStore`` makes every
write atomic: a temporary file in the destination folder, then a rename, so a reader never
sees a partial file and a failed write never replaces a good one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from scrapy.pipelines.files import FSFilesStore
from twisted.internet import threads

if TYPE_CHECKING:
    from collections.abc import Iterator
    from io import BytesIO

    from twisted.internet.defer import Deferred

TEMP_PREFIX = ".flsync-"


class StoreLockedError(Exception):
    """Another sync holds the data folder."""


class DataStore(Protocol):
    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: Any,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any: ...

    def stat_file(self, path: str, info: Any) -> Any: ...

    def temp_dir(self, path: str) -> str:
        """A local folder for downloading the file that will become ``path``."""

    def persist_local_file(self, path: str, local_path: str) -> Any:
        """Put the finished local file ``local_path`` in place as ``path`` (and consume it)."""

    def exists(self, path: str) -> bool: ...

    def read_file(self, path: str) -> bytes | None: ...

    def list_dir(self, path: str) -> list[str]: ...

    def lock(self) -> contextlib.AbstractContextManager[None]: ...


class LocalStore(FSFilesStore):
    """A data tree on a local (or mounted) file system."""

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: Any = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self._temp_file(path) as (tmp, f):
            f.write(buf.getvalue())
        self.persist_local_file(path, tmp)

    def stat_file(self, path: str, info: Any = None) -> Deferred[dict[str, Any]]:
        """FSFilesStore's, with the SHA-256 that flsync's downloads compute as checksum; read
        in a worker thread, as a stored file can be gigabytes."""
        return threads.deferToThread(self._stat_file, path)

    def _stat_file(self, path: str) -> dict[str, Any]:
        absolute_path = self._get_filesystem_path(path)
        try:
            with absolute_path.open("rb") as f:
                checksum = hashlib.file_digest(f, "sha256").hexdigest()
                return {"last_modified": os.fstat(f.fileno()).st_mtime, "checksum": checksum}
        except FileNotFoundError:
            return {}

    def temp_dir(self, path: str) -> str:
        # Same folder as the destination, so the final rename is atomic.
        folder = self._get_filesystem_path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the data folder for this process; raise StoreLockedError if another one does.

        The lock is on the folder itself, so taking it writes nothing into the tree.
        """
        fd = os.open(self.basedir, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreLockedError(self.basedir) from None
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _temp_file(self, path: str) -> Iterator[tuple[str, IO[bytes]]]:
        fd, tmp = tempfile.mkstemp(dir=self.temp_dir(path), prefix=TEMP_PREFIX, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                yield tmp, f
        except BaseException:
            os.unlink(tmp)
            raise


STORE_SCHEMES: dict[str, type] = {"": LocalStore, "file": LocalStore}


def open_store(uri: str) -> LocalStore:
    """The store for a data_dir: a local path or a ``file://`` URI."""
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    try:
        return STORE_SCHEMES[scheme](uri)
    except KeyError:
        raise ValueError(
            f"data_dir {uri!r}: unsupported scheme {scheme!r} (use a local folder)"
        ) from None
