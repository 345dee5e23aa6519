"""The database load at the end of a crawl: on when ``FLSYNC_DATABASE_URL`` is set in the
environment (never a setting: Scrapy logs settings, and the URL may hold a password).

Once the engine has stopped (every spider_closed handler, the state's and the report's
writes included, has run), the runs of the organisations this crawl synced that changed
since the last load are loaded, in a worker thread. A load that fails says why in ERROR
lines: one per run not loaded (flsync.sql.loader), or one for a load that could not run at
all; and counts ``flsync/database/failed``, which makes the crawl's exit status 1
(flsync.commands.crawl). Settings read: FLSYNC_DATABASE_RECORD_MB.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import threads

from flsync.config import ConfigError
from flsync.items import OrganisationItem
from flsync.mirror import mirror_of

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

DATABASE_ENV = "FLSYNC_DATABASE_URL"
FAILED_STAT = "flsync/database/failed"


def record_limit(settings: BaseSettings) -> int:
    """FLSYNC_DATABASE_RECORD_MB, in bytes; ConfigError (one line) if it is not a whole
    number of at least 1."""
    try:
        megabytes = settings.getint("FLSYNC_DATABASE_RECORD_MB")
    except ValueError:
        megabytes = 0
    if megabytes < 1:
        raise ConfigError(
            "FLSYNC_DATABASE_RECORD_MB must be a whole number of MiB, at least 1 (default 8)"
        )
    return megabytes << 20


class LoadAfterSync:
    def __init__(self, crawler: Crawler, url: str, limit: int) -> None:
        self.crawler = crawler
        self.url = url
        self.record_limit = limit
        self.organisations: set[str] = set()
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        url = os.environ.get(DATABASE_ENV)
        if not url:
            raise NotConfigured  # off, as asked: no warning in every sync's log
        try:
            limit = record_limit(crawler.settings)
        except ConfigError as exc:
            # The sync goes on (the tree needs no database), and fails in the end.
            crawler.stats.inc_value(FAILED_STAT)
            logger.error("Database load FAILED: %(error)s", {"error": exc})
            raise NotConfigured(str(exc)) from None
        return cls(crawler, url, limit)

    def item_scraped(self, item: Any) -> None:
        if isinstance(item, OrganisationItem):
            self.organisations.add(item.folder)

    async def engine_stopped(self) -> None:
        if self.organisations:
            await maybe_deferred_to_future(threads.deferToThread(self._load))

    def _load(self) -> None:
        # Imported only when a load runs: every crawl builds this extension, and SQLAlchemy
        # would add about 0.3 s to the start of each.
        from flsync.sql.loader import DatabaseError, Loader, failure, open_database  # noqa: PLC0415

        try:
            engine = open_database(self.url)
        except DatabaseError as exc:
            self._fail(f"Database load FAILED: {exc}")
            return
        store = mirror_of(self.crawler).store
        try:
            loader = Loader(engine, store, self.record_limit)
            result = loader.load(sorted(self.organisations))
        except Exception as exc:  # whatever stops the load is one line
            logger.debug("Database load: the error in full", exc_info=True)
            self._fail(f"Database load FAILED: {failure(exc, self.url)}")
            return
        finally:
            engine.dispose()
        if result.ok:
            logger.info("Database load complete: %(summary)s", {"summary": result.summary()})
        else:
            # Each run not loaded was said in its own ERROR line.
            self.crawler.stats.inc_value(FAILED_STAT)
            logger.info("Database load done: %(summary)s", {"summary": result.summary()})

    def _fail(self, line: str) -> None:
        self.crawler.stats.inc_value(FAILED_STAT)
        logger.error("%(line)s", {"line": line})
