"""A data tree in an S3 bucket (``s3://bucket/prefix``), or on any server that speaks S3.

Settings (read by the store from the settings it is opened with): Scrapy's
``AWS_ENDPOINT_URL``, ``AWS_REGION_NAME``, ``AWS_USE_SSL``, ``AWS_VERIFY``,
``AWS_MAX_POOL_CONNECTIONS``, and ``FLSYNC_LOCK_STALE_AFTER``. The keys come from the
environment or ~/.aws, never from settings (Scrapy logs those).

Every request is blocking (boto3): what the crawl asks of the store while it runs (writes,
checksums) goes to a worker thread and comes back as a Deferred, so that the reactor goes on
downloading meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import socket
import tempfile
import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, TYPE_CHECKING, Any

from scrapy.settings import SETTINGS_PRIORITIES
from twisted.internet import threads

if TYPE_CHECKING:
    from collections.abc import Iterator
    from io import BytesIO

    from scrapy.pipelines.files import StatInfo
    from scrapy.pipelines.media import MediaPipeline
    from scrapy.settings import BaseSettings
    from twisted.internet.defer import Deferred

from flsync.options import options_of
from flsync.storage.base import (
    LOCK_PREFIX,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    FileStat,
    StoreError,
    StoreLocationError,
    StoreLockedError,
    StoreWriteError,
)

logger = logging.getLogger(__name__)

# Uploads go in parts of 8 MiB, 4 at a time; parts are read from the file as they are sent, so
# an upload holds little memory whatever the file's size.
S3_PART_SIZE = 8 << 20
S3_UPLOAD_THREADS = 4
# An object is read (open_read) 1 MiB per request to the stream.
S3_READ_SIZE = 1 << 20
# Connections to S3 kept open: Scrapy's worker threads (REACTOR_THREADPOOL_MAXSIZE, 10) may
# each upload with S3_UPLOAD_THREADS at once. botocore's 10 would make urllib3 warn, "pool is
# full", at every part. AWS_MAX_POOL_CONNECTIONS, when set, overrides it.
S3_POOL_CONNECTIONS = 50
# Error codes of a conditional request whose condition failed: 412, or (AWS) 409 when another
# conditional write of the same key was under way.
_CONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict")
_MISSING = ("404", "NoSuchKey")


class S3Store:
    """A data tree in an S3 bucket, or on any server that speaks S3 (``AWS_ENDPOINT_URL``).

    ``s3://bucket/prefix`` (a trailing ``/`` or not), or ``s3://bucket``. A Scrapy files
    store (``persist_file``/``stat_file`` in a worker thread, as Scrapy's S3 store does them)
    with what a mirror needs besides. A download goes to a local temporary file (in a folder
    of the store's own), then is uploaded, in parts if large (a failed upload is aborted, so
    no object is left), with its SHA-256 as the object's ``sha256`` metadata, as is every
    small file. ``stat`` answers from one listing per organisation folder, kept up to date by
    the store's own writes. Any failed request is a StoreError (a StoreWriteError for a
    write), one line for the user.
    """

    @classmethod
    def local_folder(cls, uri: str) -> str | None:
        return None

    @classmethod
    def check_location(cls, uri: str, settings: BaseSettings) -> None:
        """Raise StoreLocationError if a key is a Scrapy setting, or if the bucket cannot be
        reached (a HEAD of it) with the keys of the environment or ~/.aws."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError  # noqa: PLC0415

        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            if (settings.getpriority(name) or 0) > SETTINGS_PRIORITIES["default"]:
                raise StoreLocationError(
                    f"{name} is a Scrapy setting here, and Scrapy logs settings: put the AWS"
                    " keys in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,"
                    " AWS_SESSION_TOKEN) or in ~/.aws instead"
                )
        bucket, _ = _bucket_and_prefix(uri)
        endpoint = settings["AWS_ENDPOINT_URL"]
        where = f"bucket {bucket!r}" + (f" at {endpoint}" if endpoint else "")
        client = _s3_client(settings)
        try:
            client.head_bucket(Bucket=bucket)
        except NoCredentialsError:
            raise StoreLocationError(
                f"data_dir {uri}: no AWS keys found: set AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY in the environment, or configure ~/.aws"
            ) from None
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket"):
                problem = "does not exist (create it, or correct data_dir)"
            elif code in ("403", "AccessDenied"):
                problem = (
                    "refuses these keys (check them, and that they may list, read and write"
                    " the bucket: see docs/s3.md)"
                )
            else:
                problem = f"answered {_reason(exc)}"
            raise StoreLocationError(f"data_dir {uri}: {where} {problem}") from None
        except BotoCoreError as exc:
            raise StoreLocationError(
                f"data_dir {uri}: cannot reach {where} ({exc}): check AWS_ENDPOINT_URL and the"
                " network"
            ) from None

    def __init__(self, uri: str, settings: BaseSettings):
        self.bucket, self.prefix = _bucket_and_prefix(uri)
        # A boto3 client: its transfer manager uploads a file in parts. Thread-safe, so one
        # serves every worker thread.
        self.s3_client = _s3_client(settings)
        # Seconds after its last refresh that a lock is a killed sync's.
        self.lock_stale_after = options_of(settings).lock_stale_after
        self.listings: dict[str, dict[str, FileStat]] = {}  # organisation folder -> its files
        self._downloads = tempfile.TemporaryDirectory(prefix="flsync-")

    def url(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{path}"

    def persist_file(
        self,
        path: str,
        buf: BytesIO,
        info: MediaPipeline.SpiderInfo | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Deferred[None]:
        """Write a small file (metadata.csv, the state, update.txt, the report) in a worker
        thread; the Deferred fires once it is stored, or fails with a StoreWriteError."""
        written = threads.deferToThread(self._put, path, buf.getvalue())
        return written.addCallback(lambda stat: self._remember(path, stat))

    def write_file(self, path: str, content: bytes) -> None:
        self._remember(path, self._put(path, content))

    def _put(self, path: str, body: bytes) -> FileStat:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            self.s3_client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + path,
                Body=body,
                Metadata={"sha256": hashlib.sha256(body).hexdigest()},
            )
        except (BotoCoreError, ClientError) as exc:
            raise StoreWriteError(f"cannot write {self.url(path)}: {_reason(exc)}") from None
        return self._written(path)

    def stat_file(
        self, path: str, info: MediaPipeline.SpiderInfo | None = None
    ) -> Deferred[StatInfo]:
        """The object's time and SHA-256, from its ``sha256`` metadata (a HEAD); one written
        by something else is read through and hashed."""
        return threads.deferToThread(self._stat_file, path)

    def _stat_file(self, path: str) -> StatInfo:
        head = self._head(path)
        if head is None:
            return {}
        checksum = head["Metadata"].get("sha256")
        if checksum is None:
            digest = hashlib.sha256()
            with self._reading(path):
                body = self.s3_client.get_object(Bucket=self.bucket, Key=self.prefix + path)
                for chunk in body["Body"].iter_chunks(1 << 20):
                    digest.update(chunk)
            checksum = digest.hexdigest()
        return {"last_modified": _mtime(head["LastModified"]), "checksum": checksum}

    def stat(self, path: str) -> FileStat | None:
        """From the listing of the organisation folder ``path`` is in (flsync's files all are),
        listed on first use."""
        folder = path.split("/", 1)[0]
        if folder not in self.listings:
            prefix = f"{self.prefix}{folder}/"
            with self._reading(folder):
                self.listings[folder] = {
                    item["Key"].removeprefix(self.prefix): FileStat(
                        item["Size"], _mtime(item["LastModified"])
                    )
                    for page in self._pages("list_objects_v2", Prefix=prefix)
                    for item in page.get("Contents", [])
                }
        return self.listings[folder].get(path)

    def temp_path(self, path: str) -> str:
        return os.path.join(
            self._downloads.name, f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
        )

    def persist_local_file(
        self, path: str, local_path: str, checksum: str | None = None
    ) -> Deferred[None]:
        """Upload the finished download (in a worker thread), then delete it."""
        uploaded = threads.deferToThread(self._upload, path, local_path, checksum)
        return uploaded.addCallback(lambda stat: self._remember(path, stat))

    def place_file(self, path: str, local_path: str) -> None:
        self._remember(path, self._upload(path, local_path, None))

    def _upload(self, path: str, local_path: str, checksum: str | None) -> FileStat:
        from boto3.exceptions import S3UploadFailedError  # noqa: PLC0415
        from boto3.s3.transfer import TransferConfig  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        config = TransferConfig(multipart_chunksize=S3_PART_SIZE, max_concurrency=S3_UPLOAD_THREADS)
        try:
            self.s3_client.upload_file(
                local_path,
                self.bucket,
                self.prefix + path,
                ExtraArgs={"Metadata": {"sha256": checksum}} if checksum else None,
                Config=config,
            )
        except (S3UploadFailedError, BotoCoreError, ClientError) as exc:
            raise StoreWriteError(f"cannot write {self.url(path)}: {_reason(exc)}") from None
        finally:
            os.unlink(local_path)
        return self._written(path)

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def read_file(self, path: str) -> bytes | None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            with self._reading(path):
                response = self.s3_client.get_object(Bucket=self.bucket, Key=self.prefix + path)
                body: bytes = response["Body"].read()
        except StoreError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in _MISSING:
                return None
            raise
        return body

    def open_read(self, path: str) -> IO[bytes]:
        """The object's body, streamed as it is read (buffered, 1 MiB at a time)."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            with self._reading(path):
                response = self.s3_client.get_object(Bucket=self.bucket, Key=self.prefix + path)
        except StoreError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in _MISSING:
                raise FileNotFoundError(self.url(path)) from None
            raise
        return io.BufferedReader(_S3Body(self, path, response["Body"]), S3_READ_SIZE)

    def list_dir(self, path: str) -> list[str]:
        prefix = f"{self.prefix}{path}/" if path else self.prefix
        names: set[str] = set()
        with self._reading(path):
            for page in self._pages("list_objects_v2", Prefix=prefix, Delimiter="/"):
                names.update(p["Prefix"][len(prefix) : -1] for p in page.get("CommonPrefixes", []))
                names.update(o["Key"][len(prefix) :] for o in page.get("Contents", []))
        return sorted(names)

    def sweep_temp_files(self, folder: str) -> list[str]:
        """Abort the multipart uploads a killed sync left under ``folder`` (S3 keeps their
        parts, and bills them, until then); their paths. There is no partial object to
        delete: an upload's object exists only once the upload is complete."""
        swept = []
        with self._reading(folder):
            for page in self._pages("list_multipart_uploads", Prefix=f"{self.prefix}{folder}/"):
                for upload in page.get("Uploads", []):
                    self.s3_client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    swept.append(upload["Key"].removeprefix(self.prefix))
        return sorted(swept)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the lock ``name``: the object ``{prefix}.flsync-lock-{name}``, created only if
        absent (If-None-Match: *) and refreshed every FLSYNC_LOCK_STALE_AFTER/3 seconds while
        held. One not refreshed for FLSYNC_LOCK_STALE_AFTER seconds is a killed sync's, taken over
        on condition of its ETag, so that of two takers only one wins."""
        lock = _S3Lock(self, LOCK_PREFIX + name)
        if not lock.acquire():
            raise StoreLockedError(name)
        try:
            yield
        finally:
            lock.release()

    def _head(self, path: str) -> dict[str, Any] | None:
        """The object's HEAD, or None if there is no object."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            with self._reading(path):
                head: dict[str, Any] = self.s3_client.head_object(
                    Bucket=self.bucket, Key=self.prefix + path
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in _MISSING:
                return None
            raise
        return head

    def _written(self, path: str) -> FileStat:
        """What the store now says of the object just written: S3's time, not this host's."""
        try:
            head = self._head(path)
        except StoreError as exc:
            raise StoreWriteError(str(exc)) from None
        if head is None:
            raise StoreWriteError(f"cannot write {self.url(path)}: gone once written")
        return FileStat(head["ContentLength"], _mtime(head["LastModified"]))

    def _remember(self, path: str, stat: FileStat) -> None:
        """Keep the listing true after a write. Called in the thread that reads the listings
        (the reactor's, for a crawl), so that no listing under way can miss the write."""
        listing = self.listings.get(path.split("/", 1)[0])
        if listing is not None:
            listing[path] = stat

    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        pages: Iterator[dict[str, Any]] = self.s3_client.get_paginator(operation).paginate(
            Bucket=self.bucket, **kwargs
        )
        return pages

    @contextlib.contextmanager
    def _reading(self, path: str) -> Iterator[None]:
        """Turn a failed request into a StoreError that names the object."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"cannot read {self.url(path)}: {_reason(exc)}") from exc


class _S3Body(io.RawIOBase):
    """An object's streamed body (botocore's StreamingBody) as a raw stream; a failed read is
    a StoreError naming the object."""

    def __init__(self, store: S3Store, path: str, body: Any) -> None:
        self.store = store
        self.path = path
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self.store._reading(self.path):
            data: bytes = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()


class _S3Lock:
    """One lock object of an S3Store, refreshed by a thread of its own while held."""

    def __init__(self, store: S3Store, path: str) -> None:
        self.store = store
        self.path = path
        self.started = _now()
        self.etag = ""
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, name=path, daemon=True)

    def acquire(self) -> bool:
        """Take the lock, a stale one included; False if another sync holds it."""
        etag = self._put(IfNoneMatch="*")
        if etag is None:
            stale = self._stale_etag()
            etag = self._put(IfMatch=stale) if stale else None
            if etag is None:
                return False
            logger.warning(
                "Took over the lock %(url)s, not refreshed for FLSYNC_LOCK_STALE_AFTER"
                " (%(stale)g s): the sync that held it was stopped",
                {"url": self.store.url(self.path), "stale": self.store.lock_stale_after},
            )
        self.etag = etag
        self._refresher.start()
        return True

    def release(self) -> None:
        """Stop refreshing and delete the lock object, if it is still this sync's."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        self._stop.set()
        self._refresher.join()
        try:
            self.store.s3_client.delete_object(
                Bucket=self.store.bucket, Key=self.store.prefix + self.path, IfMatch=self.etag
            )
        except ClientError as exc:
            if _code(exc) not in (*_CONDITION_FAILED, *_MISSING):  # not this sync's any more
                self._warn_left(exc)
        except BotoCoreError as exc:
            self._warn_left(exc)

    def _warn_left(self, exc: Exception) -> None:
        logger.warning(
            "Could not delete the lock %(url)s (%(reason)s): the next sync of it must wait"
            " until it is stale (FLSYNC_LOCK_STALE_AFTER, %(stale)g s)",
            {
                "url": self.store.url(self.path),
                "reason": _reason(exc),
                "stale": self.store.lock_stale_after,
            },
        )

    def _put(self, **condition: str) -> str | None:
        """Write the lock object if ``condition`` holds: its ETag, or None if it did not."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        document = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started,
            "refreshed": _now(),
        }
        try:
            response = self.store.s3_client.put_object(
                Bucket=self.store.bucket,
                Key=self.store.prefix + self.path,
                Body=json.dumps(document).encode(),
                ContentType="application/json",
                **condition,
            )
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and _code(exc) in _CONDITION_FAILED:
                return None
            url = self.store.url(self.path)
            raise StoreWriteError(f"cannot write {url}: {_reason(exc)}") from None
        etag: str = response["ETag"]
        return etag

    def _stale_etag(self) -> str | None:
        """The lock object's ETag if it is stale, else None. Its age is by S3's clock (the
        answer's Date against the object's LastModified), whatever this host's says."""
        head = self.store._head(self.path)
        if head is None:  # released just now: another sync's turn was first
            return None
        answered = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (answered - head["LastModified"]).total_seconds()
        return str(head["ETag"]) if age > self.store.lock_stale_after else None

    def _refresh(self) -> None:
        while not self._stop.wait(self.store.lock_stale_after / 3):
            try:
                etag = self._put(IfMatch=self.etag)
            except StoreWriteError as exc:
                logger.warning("Lock not refreshed, tried again later: %(error)s", {"error": exc})
                continue
            if etag is None:
                logger.error(
                    "Lost the lock %(url)s to another sync: it was not refreshed for"
                    " FLSYNC_LOCK_STALE_AFTER (%(stale)g s)",
                    {"url": self.store.url(self.path), "stale": self.store.lock_stale_after},
                )
                return
            self.etag = etag


def _s3_client(settings: BaseSettings) -> Any:
    """A boto3 S3 client as Scrapy's AWS_* settings describe it; the keys are found by boto3
    (the environment, ~/.aws, an instance role). boto3 is imported only for an S3 data_dir."""
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    pool = settings.getint("AWS_MAX_POOL_CONNECTIONS") or S3_POOL_CONNECTIONS
    options = {
        "endpoint_url": settings["AWS_ENDPOINT_URL"],
        "region_name": settings["AWS_REGION_NAME"],
        "use_ssl": settings["AWS_USE_SSL"],
        "verify": settings["AWS_VERIFY"],
        "config": Config(max_pool_connections=pool),
    }
    return boto3.session.Session().client(
        "s3", **{name: value for name, value in options.items() if value is not None}
    )


def _bucket_and_prefix(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b/"); ``s3://bucket`` -> ("bucket", "")."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _mtime(last_modified: datetime) -> float:
    # Whole seconds: a listing gives LastModified in milliseconds, a HEAD in seconds, and an
    # unchanged object must give the same time either way (see state.describes).
    return float(int(last_modified.timestamp()))


def _code(exc: Any) -> str:
    """The error code of a botocore ClientError ("NoSuchKey", "403", ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _reason(exc: BaseException) -> str:
    """What a failed request said, in a few words ("AccessDenied: Access Denied")."""
    from botocore.exceptions import ClientError  # noqa: PLC0415

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ClientError):
        cause = cause.__context__  # boto3's upload errors wrap the request's
    if cause is None:
        return str(exc)
    error = cause.response.get("Error", {})
    return f"{error.get('Code')}: {error.get('Message') or 'no message'}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
