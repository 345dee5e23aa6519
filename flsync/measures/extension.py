"""The measures at the end of a sync: on unless ``FLSYNC_MEASURES`` is false.

Once the engine has stopped (the sync's own writes, sync-report.json included, are done), the
organisations this sync stored runs of are brought up to date (flsync.measures.update), in a
worker thread: only their runs whose files changed are read. Whatever happens here is said in
WARNING lines, never ERROR: the sync's exit status is about the mirror, not the measures.

Settings: ``FLSYNC_MEASURES``, ``FLSYNC_MEASURES_MEMORY_MB``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import threads

from flsync.items import DatasetItem, RunItem
from flsync.mirror import mirror_of
from flsync.options import options_of
from flsync.storage import StoreError, StoreLockedError

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class MeasuresAfterSync:
    def __init__(self, crawler: Crawler, memory_mb: int) -> None:
        self.crawler = crawler
        self.memory_mb = memory_mb
        self.organisations: set[str] = set()  # folders
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        options = options_of(crawler.settings)
        if not options.measures:
            raise NotConfigured("FLSYNC_MEASURES is off")
        return cls(crawler, options.measures_memory_mb)

    def item_scraped(self, item: Any) -> None:
        # The organisations with a run read in this sync (not those whose sync never got as
        # far: their measures stay as they were).
        if isinstance(item, (RunItem, DatasetItem)):
            self.organisations.add(mirror_of(self.crawler).folder(item.organisation))

    async def engine_stopped(self) -> None:
        if self.organisations:
            await maybe_deferred_to_future(threads.deferToThread(self._update))

    def _update(self) -> None:
        # Imported here: DuckDB and the page are loaded only by a sync that stored runs.
        from flsync.measures.update import update_organisation  # noqa: PLC0415

        store = mirror_of(self.crawler).store
        stats = self.crawler.stats
        for organisation in sorted(self.organisations):
            try:
                result = update_organisation(store, organisation, memory_mb=self.memory_mb)
            except StoreLockedError:
                logger.warning(
                    "Measures of %(organisation)s are being computed by another job: left to it",
                    {"organisation": organisation},
                )
                continue
            except (StoreError, OSError) as exc:
                stats.inc_value("flsync/measures/failed")
                logger.warning(
                    "Measures FAILED: %(organisation)s: %(error)s (the mirror is not affected)",
                    {"organisation": organisation, "error": exc},
                )
                continue
            except Exception:
                # A fault of the measures' own: said with its traceback, and the sync's exit
                # status still tells of the mirror alone.
                stats.inc_value("flsync/measures/failed")
                logger.warning(
                    "Measures FAILED: %(organisation)s: an unexpected error (the mirror is not"
                    " affected)",
                    {"organisation": organisation},
                    exc_info=True,
                )
                continue
            stats.inc_value("flsync/measures/computed", result.computed)
            stats.inc_value("flsync/measures/files_read", result.files_read)
            stats.inc_value("flsync/measures/failed", len(result.failed) + len(result.empty))
            logger.info(
                "Measures of %(organisation)s: %(summary)s",
                {"organisation": organisation, "summary": result.summary()},
            )
