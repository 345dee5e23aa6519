"""Progress while a sync works, for a person watching it in a terminal.

:class:`Progress` redraws one line on stderr every ``INTERVAL`` seconds: runs found, dataset
files done of those found so far, bytes received. It is there only when stderr is a terminal
(never under cron or Scrapyd, whose logs it would fill with carriage returns) and
``FLSYNC_PROGRESS`` is on (the default). A log line clears the progress line before it is
written, so the two never mix; the next tick draws it again below.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

from scrapy import signals
from scrapy.exceptions import NotConfigured
from twisted.internet.task import LoopingCall

from flsync.options import options_of
from flsync.report import FILE_OUTCOMES, human_bytes

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

CLEAR_LINE = "\r\x1b[K"


class Progress:
    INTERVAL = 0.5  # seconds between two redraws

    def __init__(self, crawler: Crawler, stream: TextIO) -> None:
        self.stats = crawler.stats
        self.stream = stream
        self._shown = False
        self._redraw = LoopingCall(self.draw)
        self._handlers: list[logging.Handler] = []
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not options_of(crawler.settings).progress or not sys.stderr.isatty():
            raise NotConfigured
        return cls(crawler, sys.stderr)

    def line(self) -> str:
        value = self.stats.get_value
        done = sum(value(f"flsync/datasets/{outcome}", 0) for outcome in FILE_OUTCOMES)
        return (
            f"Syncing: {value('flsync/runs/listed', 0)} runs found,"
            f" files {done} of {value('flsync/datasets/listed', 0)},"
            f" {human_bytes(value('flsync/stream/bytes', 0))} received"
        )

    def draw(self) -> None:
        self.stream.write(CLEAR_LINE + self.line())
        self.stream.flush()
        self._shown = True

    def clear(self, record: logging.LogRecord | None = None) -> bool:
        """Take the progress line away (also a logging filter: before each log line)."""
        if self._shown:
            self.stream.write(CLEAR_LINE)
            self._shown = False
        return True

    def _spider_opened(self) -> None:
        # Scrapy installs its log handler once the extensions are built: looked for now.
        self._handlers = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is self.stream
        ]
        for handler in self._handlers:
            handler.addFilter(self.clear)
        self._redraw.start(self.INTERVAL)

    def _spider_closed(self) -> None:
        if self._redraw.running:
            self._redraw.stop()
        for handler in self._handlers:
            handler.removeFilter(self.clear)
        self.clear()
