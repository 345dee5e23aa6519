"""A page whose reading raised is a failed run, never an absence.

Left to Scrapy, an exception raised while a page is read is logged ("Spider error processing")
and the run the page belonged to simply never arrives. :class:`PageFailureMiddleware` turns it
into a RunFailure of the page's organisation and run (request meta ``RUN_META``), said in one
ERROR line: a page flsync cannot read (site.PageError) or a name that cannot be placed says
what broke, with no traceback; any other exception (a fault of flsync's own) says its type,
with the traceback at DEBUG.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import CloseSpider

from flsync import site, tree
from flsync.items import RunFailure
from flsync.storage import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

# Request meta: the key of the run a page belongs to (flsync.items.run_key).
RUN_META = "flsync_run"
# What a site (or the store) can cause: one line says it all.
SAID_IN_ONE_LINE = (site.PageError, tree.NameTakenError, StoreError)


class PageFailureMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_spider_exception(
        self, response: Response, exception: Exception
    ) -> Iterable[Any] | None:
        request = response.request
        organisation = request.cb_kwargs.get("organisation") if request else None
        if request is None or organisation is None or isinstance(exception, CloseSpider):
            return None  # not a page of one organisation's: Scrapy's own handling
        key = request.meta.get(RUN_META)
        if isinstance(exception, site.PageError):
            url, reason = exception.url, exception.reason
        elif isinstance(exception, SAID_IN_ONE_LINE):
            url, reason = response.url, str(exception)
        else:
            url, reason = response.url, f"{type(exception).__name__}: {exception}"
            logger.debug("The fault behind the next line", exc_info=exception)
        self.crawler.stats.inc_value("flsync/pages/failed")
        logger.error(
            "%(kind)s (failed): %(url)s: %(reason)s",
            {"kind": "Page" if key is None else "Run", "url": url, "reason": reason},
        )
        return [RunFailure(organisation=organisation, url=url, reason=reason, run_key=key)]
