"""Item pipelines: dataset files, each run's metadata.csv, and the closing state and report
per organisation.

All writes go through the one store (the files pipeline's, see flsync.mirror), so each lands
whole or not at all.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import hashlib
import io
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scrapy import Request, signals
from scrapy.exceptions import DropItem
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.files import FilesPipeline
from scrapy.utils.defer import ensure_awaitable

from flsync import site, storage, tree
from flsync.bodies import StreamedResponse, discard_body
from flsync.handlers import STREAM_TO_META
from flsync.items import (
    DatasetItem,
    ListingItem,
    OrganisationItem,
    RunFailure,
    RunItem,
    RunSkipped,
)
from flsync.ledger import DONE_OUTCOMES, OrganisationLedger
from flsync.middlewares import EXPECT_CSV_META, tries_note
from flsync.mirror import mirror_of
from flsync.options import options_of
from flsync.report import STORED_OUTCOMES, OrganisationReport
from flsync.state import FileRecord, describes
from flsync.stopping import SyncStopped

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.pipelines.media import MediaPipeline
    from twisted.python.failure import Failure

    from flsync.storage import DataStore, FileStat

logger = logging.getLogger(__name__)


class DatasetDownloadError(Exception):
    """The server's answer is not a dataset file (an error status, HTML, an empty body)."""


class DatasetFailed(DropItem):
    """A dataset file could not be fetched; the stored copy, if any, is left as it was."""


class MetadataFailed(DropItem):
    """A run's metadata.csv could not be written; the run stays out of the state, so the next
    sync asks for it again."""


class DatasetFilesPipeline(FilesPipeline):
    """Stores each dataset byte for byte at its place in the data tree.

    The server is asked every time whether the file changed (If-None-Match,
    If-Modified-Since) as long as the sync state still describes the stored file; a body
    identical to the stored file is not written again, so its mtime stays. The stored file is
    read (hashed) only when the state cannot vouch for it.
    """

    store: DataStore

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        # Not FilesPipeline's, which hands settings to its store classes as class attributes,
        # shared by every crawler of the process: the store reads its own (see __init__).
        return cls(crawler.settings["FILES_STORE"], crawler=crawler)

    def __init__(self, store_uri: str, *, crawler: Crawler) -> None:
        # FilesPipeline opens its store as STORE_SCHEMES[scheme](uri): this pipeline's table
        # opens flsync's stores, each set up by this crawler's settings.
        openers = {
            scheme: functools.partial(store, settings=crawler.settings)
            for scheme, store in storage.STORE_SCHEMES.items()
        }
        self.STORE_SCHEMES = openers  # type: ignore[assignment,misc]
        super().__init__(store_uri, crawler=crawler)
        # Why a download failed, by URL, until its item completes.
        self._failures: dict[str, str] = {}
        # Datasets whose changed header was warned about in this sync (once per name).
        self._drift_said: set[str] = set()

    def media_to_download(
        self, request: Request, info: MediaPipeline.SpiderInfo, *, item: Any = None
    ) -> None:
        # FilesPipeline's version hashes the stored file to decide by its age (FILES_EXPIRES),
        # which a dataset regenerated daily cannot use: the server decides, by a conditional
        # request, and the state (see media_downloaded) says what is stored.
        return None

    def get_media_requests(self, item: Any, info: MediaPipeline.SpiderInfo) -> list[Request]:
        if not isinstance(item, DatasetItem):
            return []
        headers = {}
        previous = self._previous(item)
        if describes(previous, self.store.stat(item.path)):
            assert previous is not None
            if previous.get("etag"):
                headers["If-None-Match"] = previous["etag"]
            if previous.get("last_modified"):
                headers["If-Modified-Since"] = previous["last_modified"]
        meta = {EXPECT_CSV_META: True, STREAM_TO_META: self.store.temp_path(item.path)}
        return [Request(item.url, headers=headers, meta=meta, callback=NO_CALLBACK)]

    def file_path(
        self,
        request: Request,
        response: Response | None = None,
        info: MediaPipeline.SpiderInfo | None = None,
        *,
        item: Any = None,
    ) -> str:
        return str(item.path)

    async def media_downloaded(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: Any = None,
    ) -> FileRecord:
        previous = self._previous(item)
        if response.status == 304 and previous is not None:
            known = {k: previous.get(k) for k in ("etag", "last_modified", "size", "checksum")}
            return self._record(item, "not-modified", known, self.store.stat(item.path))
        if not isinstance(response, StreamedResponse) or response.status != 200:
            discard_body(response)
            raise DatasetDownloadError(f"HTTP {response.status}{tries_note(response.request)}")
        if site.is_html(response):
            discard_body(response)
            raise DatasetDownloadError("an HTML page instead of a CSV")
        if response.body_size == 0:
            discard_body(response)
            raise DatasetDownloadError("empty body")
        self._check_header(item, response.body_path)
        stored = self.store.stat(item.path)
        if await self._stored_checksum(item.path, previous, stored, response.body_size) == (
            response.body_sha256
        ):
            discard_body(response)
            status = "unchanged"
        else:
            status = "new" if stored is None else "changed"
            await ensure_awaitable(
                self.store.persist_local_file(item.path, response.body_path, response.body_sha256)
            )
            stored = self.store.stat(item.path)
        known = {
            "etag": _header(response, b"ETag"),
            "last_modified": _header(response, b"Last-Modified"),
            "size": response.body_size,
            "checksum": response.body_sha256,
        }
        return self._record(item, status, known, stored)

    async def _stored_checksum(
        self, path: str, previous: dict[str, Any] | None, stored: FileStat | None, size: int
    ) -> str | None:
        """The stored file's SHA-256, from the state when it still describes the file; None
        when there is no file or it cannot equal a body of ``size`` bytes."""
        if stored is None or stored.size != size:
            return None
        if describes(previous, stored):
            assert previous is not None
            return str(previous["checksum"])
        self.crawler.stats.inc_value("flsync/datasets/hashed")
        result = await ensure_awaitable(self.store.stat_file(path))
        return result.get("checksum")

    def _check_header(self, item: DatasetItem, body_path: str) -> None:
        """Compare the body's header with the dataset's known versions (flsync/site.py); a
        new one is noted on the item for the report, and said once per dataset per sync.
        The file is stored as served all the same."""
        with open(body_path, "rb") as body:  # its first bytes only: a file can be huge
            header = site.read_header(body.read(site.HEADER_BYTES))
        drift = site.header_drift(item.dataset, header)
        if drift is None:
            return
        self.crawler.stats.inc_value("flsync/datasets/header_changed")
        item.header_drift = {"added": list(drift.added), "gone": list(drift.gone)}
        if item.dataset not in self._drift_said:
            self._drift_said.add(item.dataset)
            logger.warning(
                "Dataset (header changed): %(dataset)s in %(path)s has a header that is none"
                " of its known versions: %(drift)s (stored as served; docs/site-model.md and"
                " flsync/site.py list the known headers)",
                {"dataset": item.dataset, "path": item.path, "drift": drift.describe()},
            )

    def media_failed(  # type: ignore[override]
        self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo
    ) -> None:
        # Kept, not raised (so the download's result is None): MediaPipeline would log a
        # raised failure with its traceback; item_completed() logs it as one line.
        reason = "" if failure.check(SyncStopped) else failure.getErrorMessage()
        self._failures[request.url] = reason and reason + tries_note(request)

    def item_completed(self, results: list[Any], item: Any, info: MediaPipeline.SpiderInfo) -> Any:
        if not isinstance(item, DatasetItem):
            return item
        [(ok, result)] = results
        if ok and result is not None:
            item.files = [result]
            return item
        reason = self._failures.pop(item.url, "") if ok else result.getErrorMessage()
        if not reason:  # not sent, as the sync is stopping: not a failure of its own
            raise DatasetFailed(f"{item.path}: not fetched, the sync is stopping")
        self.crawler.stats.inc_value("flsync/datasets/failed")
        logger.error(
            "Dataset (failed): %(path)s from %(url)s: %(reason)s",
            {"path": item.path, "url": item.url, "reason": reason},
        )
        raise DatasetFailed(f"{item.path}: {reason}")

    def _previous(self, item: DatasetItem) -> dict[str, Any] | None:
        previous: dict[str, Any] | None = (
            mirror_of(self.crawler).state(item.organisation).files.get(item.path)
        )
        return previous

    def _record(
        self, item: DatasetItem, status: str, known: dict[str, Any], stored: FileStat | None
    ) -> FileRecord:
        self.crawler.stats.inc_value(f"flsync/datasets/{status}")
        if status in STORED_OUTCOMES:
            self.crawler.stats.inc_value("flsync/datasets/downloaded")
            self.crawler.stats.inc_value("flsync/datasets/bytes", known["size"])
        logger.debug("Dataset (%(status)s): %(path)s", {"status": status, "path": item.path})
        return FileRecord(
            url=item.url,
            path=item.path,
            checksum=known["checksum"],
            status=status,
            etag=known["etag"],
            last_modified=known["last_modified"],
            size=known["size"],
            mtime=stored.mtime if stored else None,
            fetched_at=_now().isoformat(timespec="seconds"),
        )


class RunMetadataPipeline:
    """Writes each run's metadata.csv, with the names exactly as the site shows them."""

    HEADER = ("uni_name", "course_name", "run", "start_date", "end_date", "duration_weeks")

    def __init__(self, crawler: Crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if isinstance(item, RunItem):
            store = mirror_of(self.crawler).store
            path = f"{item.folder}/{tree.METADATA_FILE}"
            content = _metadata_csv(item, self.HEADER)
            # Unchanged content is not rewritten, so the file's mtime says when it last changed.
            try:
                stored = await ensure_awaitable(store.stat_file(path, None))
                if stored.get("checksum") != hashlib.sha256(content).hexdigest():
                    await ensure_awaitable(store.persist_file(path, io.BytesIO(content), None))
            except storage.StoreError as exc:
                self.crawler.stats.inc_value("flsync/store/failed")
                logger.error("Run (failed): %(url)s: %(error)s", {"url": item.url, "error": exc})
                raise MetadataFailed(str(exc)) from None
            item.files.append(tree.METADATA_FILE)
        return item


@dataclass
class _OrganisationSync:
    """What one sync learnt of one organisation, to be saved and reported at its end."""

    figures: OrganisationReport
    listing_url: str = ""  # its runs listing's first page
    closed: bool = False  # its state, report (and update.txt) written with all it learnt
    ledger: OrganisationLedger = field(default_factory=OrganisationLedger)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    closing: asyncio.Lock = field(default_factory=asyncio.Lock)


class SyncStatePipeline:
    """Accounts for every organisation's sync (flsync.ledger) and, at the end of the crawl,
    per organisation: saves what was stored (the state, for the next sync), names every run
    that did not close, writes update.txt if every run did, fails the sync if a listing that
    used to hold runs came back empty (a sign the page layout has changed), and reports what
    the sync did (a log line and sync-report.json, see flsync.report).

    Settings: ``FLSYNC_FROZEN_AFTER_DAYS`` (named in update.txt when runs were left alone).
    """

    def __init__(self, crawler: Crawler):
        self.crawler = crawler
        self.frozen_after_days = options_of(crawler.settings).frozen_after_days
        self.started = _now()
        self.syncs: dict[str, _OrganisationSync] = {}  # by organisation slug
        crawler.signals.connect(self.item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(self.item_error, signal=signals.item_error)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        sync = self._sync(item.organisation)
        ledger = sync.ledger
        if isinstance(item, OrganisationItem):
            sync.figures.organisation = item.name
            sync.figures.folder = item.folder
            sync.listing_url = item.url
        elif isinstance(item, ListingItem):
            ledger.listed(item)
            sync.figures.runs_listed = item.listed
            sync.figures.runs_frozen = len(item.frozen)
        elif isinstance(item, RunItem):
            ledger.run_read(item.key, item.url, list(item.datasets.values()))
            sync.runs[item.key] = {
                "folder": item.folder,
                "course": item.course,
                "run": item.run,
                "start_date": item.start_date.isoformat(),
                "end_date": item.end_date.isoformat(),
                "files": sorted(item.files),
                "datasets": item.datasets,
            }
            sync.figures.runs += 1
        elif isinstance(item, DatasetItem):
            if item.header_drift:
                sync.figures.header_drift[item.dataset] = item.header_drift
            for record in item.files:
                sync.files[record["path"]] = record
                sync.figures.count_file(record["status"], record["size"])
                if record["status"] in DONE_OUTCOMES:
                    ledger.file_done(item.run_key, item.file_name)
        elif isinstance(item, RunSkipped):
            ledger.run_skipped(item.run_key)
        elif isinstance(item, RunFailure):
            ledger.failed(item.run_key, item.url, item.reason)
            sync.figures.pages_failed += 1
        await self._close_if_complete(item.organisation, sync)
        return item

    async def _close_if_complete(self, slug: str, sync: _OrganisationSync) -> None:
        """An organisation all of whose runs closed is closed now, not when the whole crawl
        ends: its update.txt, state and report are written while the disk still takes them
        and whatever later befalls the other organisations."""
        sync.closed = False  # news of it: closed again at the end if not now
        if sync.ledger.complete:
            await self._close_safely(slug, sync, None)

    def item_dropped(self, item: Any, response: Any, exception: Exception) -> None:
        """A dataset that could not be fetched, or a metadata.csv that could not be written:
        said in one line where it happened."""
        self._item_failed(item, str(exception))
        if isinstance(item, DatasetItem):
            self._sync(item.organisation).figures.count_file("failed")

    def item_error(self, item: Any, response: Any, spider: Any, failure: Failure) -> None:
        """An exception in a pipeline (Scrapy logs it with its traceback): its run is failed."""
        name = failure.type.__name__ if failure.type else "Error"
        self._item_failed(item, f"{name}: {failure.getErrorMessage()}")

    def _item_failed(self, item: Any, reason: str) -> None:
        key = item.key if isinstance(item, RunItem) else getattr(item, "run_key", None)
        url = getattr(item, "url", "")
        sync = self._sync(item.organisation)
        sync.ledger.failed(key, url, reason)
        sync.closed = False

    async def spider_closed(self, reason: str) -> None:
        for slug, sync in list(self.syncs.items()):
            if not sync.closed:
                await self._close_safely(slug, sync, reason)
        for outcome in (True, False):
            count = sum(s.figures.complete is outcome for s in self.syncs.values())
            key = "complete" if outcome else "incomplete"
            self.crawler.stats.set_value(f"flsync/organisations/{key}", count)

    async def _close_safely(self, slug: str, sync: _OrganisationSync, reason: str | None) -> None:
        # One close of an organisation at a time. News of it that comes while its files are
        # being written sets `closed` back: it is closed again after, its writes never mixed
        # in with these.
        async with sync.closing:
            sync.closed = True
            try:
                await self._close(slug, sync, reason)
            except (storage.StoreError, OSError) as exc:
                # The state, update.txt or the report could not be written (or the tree
                # read): one line and a failed sync, not a traceback Scrapy only logs; the
                # other organisations are closed all the same.
                sync.figures.complete = False
                self.crawler.stats.inc_value("flsync/store/failed")
                logger.error(
                    "Organisation (failed): %(organisation)s: %(error)s",
                    {"organisation": sync.figures.organisation, "error": exc},
                )

    async def _close(self, slug: str, sync: _OrganisationSync, reason: str | None) -> None:
        """Save the organisation's state, write update.txt if it is complete, and report
        (``reason``: why the crawl ended; None while it goes on)."""
        mirror = mirror_of(self.crawler)
        ledger, figures = sync.ledger, sync.figures
        state = mirror.state(slug)
        listed_none = ledger.listing is not None and ledger.listing.listed == 0
        layout_changed = listed_none and (bool(state.runs) or self._has_run_folders(figures.folder))
        if layout_changed:
            self.crawler.stats.inc_value("flsync/layout_changed")
            logger.error(
                "No runs found for %(organisation)s, but %(folder)s holds some:"
                " FutureLearn's page layout has probably changed (flsync/site.py reads it)",
                {"organisation": figures.organisation, "folder": figures.folder},
            )
        if ledger.listing is None and reason == "finished" and not ledger.failures:
            why = "its runs listing was not read to its last page"
            ledger.failed(None, sync.listing_url, why)
            logger.error(
                "Organisation (failed): %(organisation)s: %(why)s (%(url)s)",
                {"organisation": figures.organisation, "why": why, "url": sync.listing_url},
            )
        for url, why in ledger.unclosed():
            self._say_unclosed(url, why)
        state.slug, state.name = slug, figures.organisation
        if not layout_changed:
            state.files.update(sync.files)
            state.runs.update(sync.runs)
            for key, account in ledger.runs.items():
                if not account.closed:  # never frozen: the next sync asks for it again
                    state.runs.pop(key, None)
        await ensure_awaitable(mirror.save_state(slug))
        self._figures(figures, ledger)
        spider_exceptions = any(
            key.startswith("spider_exceptions/") for key in self.crawler.stats.get_stats()
        )
        figures.complete = (
            reason in ("finished", None)
            and ledger.complete
            and not layout_changed
            and not spider_exceptions
        )
        store = mirror.store
        if figures.complete:
            update = io.BytesIO(self._update_text(sync))
            await ensure_awaitable(
                store.persist_file(f"{figures.folder}/{tree.UPDATE_FILE}", update)
            )
        await ensure_awaitable(store.persist_file(figures.path, io.BytesIO(figures.to_json())))
        if figures.complete:
            logger.info("%(report)s", {"report": figures.log_line()})
        else:
            logger.warning("%(report)s; update.txt left as it was", {"report": figures.log_line()})

    def _say_unclosed(self, url: str, why: str) -> None:
        self.crawler.stats.inc_value("flsync/runs/failed")
        logger.error("Run (failed): %(url)s: %(why)s", {"url": url, "why": why})

    @staticmethod
    def _figures(figures: OrganisationReport, ledger: OrganisationLedger) -> None:
        figures.runs_expected = len(ledger.expected_runs())
        figures.runs_closed = ledger.runs_closed
        figures.files_expected = ledger.files_expected
        figures.files_accounted = ledger.files_accounted
        figures.failures = [{"url": url, "reason": why} for url, why in ledger.failed_runs()]

    def _sync(self, slug: str) -> _OrganisationSync:
        sync = self.syncs.get(slug)
        if sync is None:
            folder = mirror_of(self.crawler).folder(slug)
            sync = self.syncs[slug] = _OrganisationSync(
                OrganisationReport(slug, folder, started=self.started)
            )
        sync.figures.finished = _now()
        return sync

    def _update_text(self, sync: _OrganisationSync) -> bytes:
        text = _now().strftime("%Y-%m-%d %H:%M") + "\n"
        frozen = sync.figures.runs_frozen
        if frozen:
            # A second line only when the user chose to leave finished runs alone: the time
            # above is then not the time of every file.
            text += (
                f"{frozen} runs that ended more than {self.frozen_after_days} days ago"
                " were not asked for, except their enrolments (FLSYNC_FROZEN_AFTER_DAYS)\n"
            )
        return text.encode()

    def _has_run_folders(self, folder: str) -> bool:
        store = mirror_of(self.crawler).store
        return any(
            store.list_dir(f"{folder}/{course}")
            for course in store.list_dir(folder)
            if not course.startswith(".")
        )


def _metadata_csv(item: RunItem, header: tuple[str, ...]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerow(
        [
            item.organisation_name,
            item.course,
            item.run,
            item.start_date.isoformat(),
            item.end_date.isoformat(),
            "" if item.duration_weeks is None else item.duration_weeks,
        ]
    )
    return out.getvalue().encode()


def _header(response: Response, name: bytes) -> str | None:
    value = response.headers.get(name)
    return value.decode("latin-1") if value else None


def _now() -> datetime:
    return datetime.now(UTC)
