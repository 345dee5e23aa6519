"""``scrapy crawl``, with what a nightly sync needs around it.

Before any request: the config is checked and the data folder locked (a second sync started
on the same folder stops at once). After the crawl: a summary, and an exit status cron can
act on (0 only when everything was fetched). ``--full`` is ``-s FLSYNC_FULL=1``.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

from scrapy.commands.crawl import Command as ScrapyCrawlCommand

from flsync.config import ConfigError, FlsyncConfig
from flsync.storage import StoreLockedError, open_store

if TYPE_CHECKING:
    import argparse

    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_USAGE = 2
# Any of these above zero means the mirror is incomplete.
FAILURE_STATS = (
    "flsync/datasets/failed",
    "flsync/pages/failed",
    "flsync/runs/failed",
    "flsync/organisations/missing",
    "flsync/layout_changed",
)
SUMMARY_STATS = (
    ("downloaded", "flsync/datasets/downloaded"),
    ("unchanged", "flsync/datasets/unchanged"),
    ("not modified", "flsync/datasets/not-modified"),
    ("frozen runs skipped", "flsync/runs/frozen"),
)


class Command(ScrapyCrawlCommand):
    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--full",
            action="store_true",
            help="fetch every run, also finished ones left alone otherwise (FLSYNC_FULL=1)",
        )

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        if opts.full:
            self.settings.set("FLSYNC_FULL", True, priority="cmdline")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        try:
            config = FlsyncConfig.from_settings(self.settings)
            store = open_store(self.settings.get("FILES_STORE") or config.data_dir)
            with store.lock():
                # What start-up made (modules, settings) lives until the process ends:
                # frozen, it is not walked again by every full collection during the crawl.
                gc.freeze()
                super().run(args, opts)
        except (ConfigError, ValueError) as exc:
            logger.error("%(error)s", {"error": exc})
            self.exitcode = EXIT_USAGE
            return
        except StoreLockedError as exc:
            logger.error(
                "Another sync is using the data folder %(folder)s; this one stops"
                " (wait for the other to finish)",
                {"folder": exc},
            )
            self.exitcode = EXIT_USAGE
            return
        if self.exitcode == 0:
            self.exitcode = report_outcome(self._crawler.stats)
        # The process ends next, and the OS frees its memory: sparing the interpreter's last
        # full collection saves about 0.3 s per sync.
        gc.freeze()

    def _create_crawler(self, spidercls: type[Spider] | str) -> Crawler:
        # Kept to read its stats once the crawl is over (the process forgets it by then).
        self._crawler = super()._create_crawler(spidercls)
        return self._crawler


def report_outcome(stats: StatsCollector) -> int:
    """Log a one-line summary of the sync and return the exit status it deserves."""
    counts = ", ".join(f"{stats.get_value(key, 0)} {label}" for label, key in SUMMARY_STATS)
    reason = stats.get_value("finish_reason")
    failures = {key: stats.get_value(key) for key in FAILURE_STATS if stats.get_value(key)}
    if reason == "finished" and not failures:
        logger.info("Sync complete: %(counts)s", {"counts": counts})
        return 0
    problems = ", ".join(f"{key.removeprefix('flsync/')}: {n}" for key, n in failures.items())
    logger.error(
        "Sync FAILED (%(reason)s%(problems)s): %(counts)s",
        {"reason": reason, "problems": f"; {problems}" if problems else "", "counts": counts},
    )
    return EXIT_FAILED
