"""``scrapy doctor``: does flsync still understand FutureLearn today, and if not, what changed?

Runs the ``doctor`` spider (flsync.spiders.doctor) with the sync's config and settings, then
prints one line per part of the page model on stdout (``--json``: the same as a JSON list of
``{part, status, detail, url}``). Exit status: 0 when no part FAILED (a part that does not
apply is NOT CHECKED and says why), 1 otherwise (a failure also stops the doctor where later
parts need it: those are NOT CHECKED), 2 for a bad config (the same one line as
``scrapy crawl``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING

from scrapy.commands import ScrapyCommand

from flsync.commands.crawl import EXIT_FAILED, EXIT_USAGE
from flsync.config import ConfigError
from flsync.spiders.doctor import FAILED, DoctorSpider

if TYPE_CHECKING:
    import argparse

logger = logging.getLogger(__name__)


class Command(ScrapyCommand):
    requires_project = True

    def syntax(self) -> str:
        return "[options]"

    def short_desc(self) -> str:
        return "Check each part of FutureLearn's pages that flsync reads, once, and say what broke"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--json", action="store_true", help="print the checks as a JSON list (monitoring)"
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.crawler_process is not None
        try:
            crawler = self.crawler_process.create_crawler(DoctorSpider)
        except ConfigError as exc:
            logger.error("%(error)s", {"error": exc})
            self.exitcode = EXIT_USAGE
            return
        self.crawler_process.crawl(crawler)
        self.crawler_process.start()
        spider = crawler.spider
        if not isinstance(spider, DoctorSpider):  # the crawl never started
            self.exitcode = EXIT_FAILED
            return
        checks = spider.report()
        finished = crawler.stats.get_value("finish_reason") == "finished"
        if opts.json:
            text = json.dumps([c.as_dict() for c in checks], indent=2, ensure_ascii=False)
        else:
            text = "\n".join(c.line() for c in checks)
        sys.stdout.write(text + "\n")
        # A part that does not apply (a second runs page of an organisation with one) is NOT
        # CHECKED, and says so: only a failure, or a doctor stopped midway, is not well.
        healthy = finished and all(c.status != FAILED for c in checks)
        self.exitcode = 0 if healthy else EXIT_FAILED
