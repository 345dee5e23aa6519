"""Response bodies as they arrive: into memory, or (a dataset's 200) into a file, hashed.

The transport calls ``write`` from the worker thread that runs the transfer, and waits for it
before it reads on: a slow disk slows the transfer down instead of filling memory, and the
writing and hashing never run on the reactor thread. A body kept on disk reaches the rest of
flsync as a :class:`StreamedResponse`; whoever gets one moves its file into place or deletes it
(:func:`discard_body`).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from contextlib import suppress
from io import BytesIO
from typing import IO, Any

from scrapy.exceptions import DownloadCancelledError
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


class MemoryBody:
    """A body kept in memory (pages; answers other than 200), at most ``maxsize`` bytes."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize  # 0: no limit
        self.size = 0
        self._buffer = BytesIO()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.maxsize and self.size > self.maxsize:
            raise DownloadCancelledError(
                f"Body larger than DOWNLOAD_MAXSIZE ({self.maxsize} bytes)"
            )
        self._buffer.write(chunk)

    def getvalue(self) -> bytes:
        return self._buffer.getvalue()


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
        self._file.write(block)
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
        if self._file is None:
            self._file = open(self.path, "xb", buffering=0)  # noqa: SIM115
        if self._pending:
            self._flush()
        self._file.close()
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
