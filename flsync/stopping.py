"""A prompt end to a sync: stopped from outside (the first SIGTERM or SIGINT), or by flsync
itself when going on cannot help (a sign-in refused, the site's bot wall, a certificate that
does not verify: see :meth:`PromptStop.stop`).

Scrapy's graceful stop waits for every request already in the downloader: queued ones are
still sent, a retry still sleeps out its back-off, a 1 GB transfer runs to its end. For a
nightly job told to stop (a reboot, an operator's Ctrl-C) that can be many minutes.
:class:`PromptStop` notices the stop (Scrapy sends no signal before the engine has drained,
so it looks at ``crawler.crawling`` every ``CHECK_INTERVAL`` seconds), then sends
``flsync.signals.sync_stopping`` once and refuses every request that would still leave. The
waits flsync itself makes (back-off, the spacing of sign-ins) go through :meth:`sleep`, which
ends at once with ``SyncStopped``. What was fetched stays; the sync ends "shutdown" (exit 1).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import IgnoreRequest, NotConfigured
from twisted.internet.task import LoopingCall

from flsync import signals as flsync_signals

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler


logger = logging.getLogger(__name__)


class SyncStopped(IgnoreRequest):
    """The request was not sent (or not sent again): the sync is stopping."""


class PromptStop:
    CHECK_INTERVAL = 0.25  # seconds between two looks at whether the crawl is being stopped

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.stopping = False
        self._stopped = asyncio.Event()
        self._closing: asyncio.Future[None] | None = None
        self._watch = LoopingCall(self._check)
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self._request_leaving, signal=flsync_signals.request_leaving)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; raise SyncStopped at once if the sync is stopping."""
        if seconds > 0 and not self.stopping:
            try:
                await asyncio.wait_for(self._stopped.wait(), seconds)
            except TimeoutError:
                return
        if self.stopping:
            raise SyncStopped("the sync is stopping")

    def stop(self, reason: str, message: str) -> None:
        """End the sync now, once: ``message`` as its one error line, ``flsync_<reason>`` as
        its close reason; transfers in flight are cancelled, nothing more is sent."""
        if self._closing is not None:
            return
        logger.error("%(message)s", {"message": message})
        assert self.crawler.engine is not None
        self._closing = asyncio.ensure_future(
            self.crawler.engine.close_spider_async(reason=f"flsync_{reason}")
        )
        self._set_stopping()

    def _spider_opened(self) -> None:
        self._watch.start(self.CHECK_INTERVAL, now=False)

    def _spider_closed(self) -> None:
        if self._watch.running:
            self._watch.stop()

    def _check(self) -> None:
        if not self.crawler.crawling:
            self._set_stopping()

    def _set_stopping(self) -> None:
        if self._watch.running:
            self._watch.stop()
        if not self.stopping:
            self.stopping = True
            self._stopped.set()
            self.crawler.signals.send_catch_log(signal=flsync_signals.sync_stopping)

    def _request_leaving(self, request: Request, **kwargs: Any) -> None:
        if self.stopping:
            raise SyncStopped("the sync is stopping")


def stopper(crawler: Crawler) -> PromptStop:
    """The crawl's PromptStop extension (its waits end when the sync is stopped)."""
    stop = crawler.get_extension(PromptStop)
    if stop is None:
        raise NotConfigured("flsync.stopping.PromptStop must be in EXTENSIONS")
    return stop
