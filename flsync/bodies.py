"""Response bodies as they arrive: into memory, or (a dataset's 200) into a file, hashed.

The transport calls ``write`` from the worker thread that runs the transfer, and waits for it
before it reads on: a slow disk slows the transfer down instead of filling memory, and the
writing and hashing never run on the reactor thread. A body kept on disk reaches the rest of
flsync as a :class:`StreamedResponse`; whoever gets one moves its file into place or deletes it
(:func:`discard_body`).

Every body is bounded, whatever the site sends: one kept in memory by ``maxsize`` (a page, a
few megabytes), one written to a file by :class:`FileLimits` (its decoded size, and how many
times larger than what was received it decodes to). A body past its bound is refused with
:class:`BodyTooLarge`, whose message names the bound and the setting that sets it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from io import BytesIO
from typing import IO, Any

from scrapy.http import Response


class StreamedResponse(Response):
    """A 200 response whose body is in the file ``body_path``, not in ``body``."""

    attributes: tuple[str, ...] = (*Response.attributes, "body_path", "body_size", "body_sha256")
    __slots__ = ("body_path", "body_sha256", "body_size")

    def __init__(
        self, *args: Any, body_path: str, body_size: int, body_sha256: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.body_path = body_path
        self.body_size = body_size
        self.body_sha256 = body_sha256


def discard_body(response: Response) -> None:
    """Delete the body file of a StreamedResponse that will not be kept (no-op otherwise)."""
    if isinstance(response, StreamedResponse):
        with suppress(FileNotFoundError):
            os.unlink(response.body_path)


class BodyWriteError(Exception):
    """A body could not be written to the disk: it is full, or past a quota or a size limit,
    or read-only. Not worth asking for again; one line."""


# What a write error means for the disk as a whole, not for this one try.
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


@contextmanager
def _disk_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        raise BodyWriteError(f"cannot write it to the disk: {exc.strerror}") from None


class BodyTooLarge(Exception):
    """A body past one of its bounds: not kept, and not worth asking for again (the same
    answer would come). The message is one line naming the bound and its setting."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class MemoryBody:
    """A body kept in memory (pages; answers other than 200), at most ``maxsize`` bytes."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize  # 0: no limit
        self.size = 0
        self._buffer = BytesIO()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.maxsize and self.size > self.maxsize:
            raise BodyTooLarge(
                f"the answer is larger than DOWNLOAD_MAXSIZE ({self.maxsize} bytes): not read"
                " further (raise DOWNLOAD_MAXSIZE if such a page is genuine)",
                "DOWNLOAD_MAXSIZE",
            )
        self._buffer.write(chunk)

    def getvalue(self) -> bytes:
        return self._buffer.getvalue()


@dataclass(frozen=True)
class FileLimits:
    """How large a body written to a file may grow, once decoded (curl undoes gzip, br and
    zstd as the body arrives, and a few megabytes of gzip can decode to gigabytes)."""

    maxsize: int = 0  # decoded bytes at most (FLSYNC_DATASET_MAXSIZE); 0: no limit
    # Decoded bytes per byte received at most (FLSYNC_DATASET_MAX_RATIO); 0: no limit.
    max_ratio: float = 0.0

    def check(self, size: int, received: int | None) -> None:
        """Raise BodyTooLarge if a body of ``size`` decoded bytes is past a limit.

        ``received``: at least as many bytes as were received for those ``size`` (None: the
        body is not encoded, and they are the same).
        """
        if self.maxsize and size > self.maxsize:
            raise BodyTooLarge(
                f"larger than FLSYNC_DATASET_MAXSIZE ({self.maxsize} bytes): not stored"
                " (raise FLSYNC_DATASET_MAXSIZE if such a file is genuine)",
                "FLSYNC_DATASET_MAXSIZE",
            )
        if self.max_ratio and received is not None and size > self.max_ratio * received:
            raise BodyTooLarge(
                f"decodes to more than FLSYNC_DATASET_MAX_RATIO ({self.max_ratio:g}) times the"
                f" bytes received (a compression bomb?): not stored, refused after {size}"
                " bytes (raise FLSYNC_DATASET_MAX_RATIO if such a file is genuine)",
                "FLSYNC_DATASET_MAX_RATIO",
            )


class FileBody:
    """A body written to the new file ``path`` (made on the first write) and hashed.

    curl hands a body over 16 KiB at a time: chunks are gathered into blocks of ``BLOCK``
    bytes, each written and hashed at once (a system call and a hash update per 16 KiB cost
    more than the copy). The first ``INLINE_HASH`` bytes are hashed in the transfer's thread;
    past that, a thread of the body's own hashes the rest alongside (hashlib lets go of the
    GIL), as hashing in turn with receiving and writing would slow a big download by a third.
    """

    BLOCK = 1 << 20
    INLINE_HASH = 4 << 20
    QUEUED_BLOCKS = 4  # blocks waiting to be hashed at most; then the transfer waits

    def __init__(self, path: str) -> None:
        self.path = path
        self.size = 0
        self.sha256 = ""  # hex digest, once finished
        self._hash = hashlib.sha256()
        self._file: IO[bytes] | None = None
        self._hashing: queue.Queue[bytes | None] | None = None
        self._hasher: threading.Thread | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0

    def write(self, chunk: bytes) -> None:
        with _disk_errors():
            if self._file is None:
                self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115 (finish/discard)
            self.size += len(chunk)
            self._pending.append(chunk)
            self._pending_size += len(chunk)
            if self._pending_size >= self.BLOCK:
                self._flush()

    def _flush(self) -> None:
        assert self._file is not None
        block = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        rest = memoryview(block)
        while rest:  # a raw write may take part of it (a disk filling up): the rest again
            written = self._file.write(rest)
            if not written:
                raise BodyWriteError("the disk took none of its next bytes")
            rest = rest[written:]
        if self._hashing is None and self.size <= self.INLINE_HASH:
            self._hash.update(block)
            return
        if self._hashing is None:
            self._hashing = queue.Queue(self.QUEUED_BLOCKS)
            self._hasher = threading.Thread(target=self._hash_queued, daemon=True)
            self._hasher.start()
        self._hashing.put(block)

    def finish(self) -> None:
        """Close the file (made even for an empty body) and keep the body's SHA-256."""
        with _disk_errors():
            if self._file is None:
                self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115
            if self._pending:
                self._flush()
            written = os.fstat(self._file.fileno()).st_size
            self._file.close()
        if written != self.size:  # never store a file that is not the whole body
            raise BodyWriteError(f"{written} of its {self.size} bytes reached the disk")
        self._stop_hashing()
        self.sha256 = self._hash.hexdigest()

    def discard(self) -> None:
        """Close and delete the file, if it was made."""
        self._stop_hashing()
        if self._file is not None:
            self._file.close()
            with suppress(FileNotFoundError):
                os.unlink(self.path)

    def _hash_queued(self) -> None:
        assert self._hashing is not None
        while (chunk := self._hashing.get()) is not None:
            self._hash.update(chunk)

    def _stop_hashing(self) -> None:
        if self._hashing is not None and self._hasher is not None:
            self._hashing.put(None)
            self._hasher.join()
            self._hashing = None
