"""The database load at the end of a crawl: on when ``FLSYNC_DATABASE_URL`` is set in the
environment (never a setting: Scrapy logs settings, and the URL may hold a password).

Once the engine has stopped (every spider_closed handler, the state's and the report's
writes included, has run), the runs of the organisations this crawl synced that changed
since the last load are loaded, in a worker thread. A load that fails counts
``flsync/database/failed``, which makes the crawl's exit status 1 (flsync.commands.crawl).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from twisted.internet import threads

from flsync.items import OrganisationItem
from flsync.mirror import mirror_of
from flsync.storage import StoreError

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from twisted.internet.defer import Deferred

logger = logging.getLogger(__name__)

DATABASE_ENV = "FLSYNC_DATABASE_URL"
FAILED_STAT = "flsync/database/failed"


class LoadAfterSync:
    def __init__(self, crawler: Crawler, url: str) -> None:
        self.crawler = crawler
        self.url = url
        self.organisations: set[str] = set()
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        url = os.environ.get(DATABASE_ENV)
        if not url:
            raise NotConfigured  # off, as asked: no warning in every sync's log
        return cls(crawler, url)

    def item_scraped(self, item: Any) -> None:
        if isinstance(item, OrganisationItem):
            self.organisations.add(item.folder)

    def engine_stopped(self) -> Deferred[None] | None:
        if not self.organisations:
            return None
        return threads.deferToThread(self._load)

    def _load(self) -> None:
        # Imported only when a load runs: every crawl builds this extension, and SQLAlchemy
        # would add about 0.3 s to the start of each.
        from flsync.sql.loader import DatabaseError, Loader, masked, open_database  # noqa: PLC0415

        try:
            engine = open_database(self.url)
        except DatabaseError as exc:
            self._fail(f"Database load FAILED: {exc}")
            return
        try:
            result = Loader(engine, mirror_of(self.crawler).store).load(sorted(self.organisations))
        except (StoreError, OSError) as exc:
            self._fail(f"Database load FAILED: {masked(self.url)}: {exc}")
            return
        finally:
            engine.dispose()
        if result.ok:
            logger.info("Database load complete: %(summary)s", {"summary": result.summary()})
        else:
            self._fail(f"Database load FAILED: {result.summary()}")

    def _fail(self, line: str) -> None:
        self.crawler.stats.inc_value(FAILED_STAT)
        logger.error("%(line)s", {"line": line})
