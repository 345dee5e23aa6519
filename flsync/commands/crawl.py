"""``scrapy crawl``, with what a nightly sync needs around it.

Before any request: the config and the data folder are checked (by the spider, as the crawler
is built) and a bad one is one line, exit 2. After the crawl: a summary, and an exit status
cron can act on (0 only when everything was fetched). ``--full`` is ``-s FLSYNC_FULL=1``.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

from scrapy.commands.crawl import Command as ScrapyCrawlCommand

from flsync.config import ConfigError
from flsync.storage import StoreLocationError

if TYPE_CHECKING:
    import argparse

    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_USAGE = 2
# Close reasons that mean nothing was done (the reason was logged where it happened).
USAGE_REASONS = ("flsync_locked", "flsync_browser")
# What a failed sync's summary names, when above zero. Not what decides the exit status: a
# sync is complete when every organisation it started was (see flsync.ledger), nothing was
# logged at ERROR and no callback raised, whatever the kind of failure.
FAILURE_STATS = (
    "flsync/runs/failed",
    "flsync/datasets/failed",
    "flsync/pages/failed",
    "flsync/organisations/missing",
    "flsync/organisations/locked",
    "flsync/layout_changed",
    "flsync/store/failed",
    "flsync/database/failed",  # the load at the end (FLSYNC_DATABASE_URL)
    "flsync/organisations/incomplete",
)
SUMMARY_STATS = (
    ("downloaded", "flsync/datasets/downloaded"),
    ("unchanged", "flsync/datasets/unchanged"),
    ("not modified", "flsync/datasets/not-modified"),
)


class Command(ScrapyCrawlCommand):
    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--full",
            action="store_true",
            help="ask for every run, also those FLSYNC_FROZEN_AFTER_DAYS leaves alone",
        )

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        opts.spargs = _merge_organisations(opts.spargs)
        super().process_options(args, opts)
        if opts.full:
            assert self.settings is not None
            self.settings.set("FLSYNC_FULL", True, priority="cmdline")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        try:
            # What start-up made (modules, settings) lives until the process ends: frozen,
            # it is not walked again by every full collection during the crawl.
            gc.freeze()
            super().run(args, opts)
        except (ConfigError, StoreLocationError) as exc:
            logger.error("%(error)s", {"error": exc})
            self.exitcode = EXIT_USAGE
            return
        except Exception:
            # A fault of flsync's own while the crawl is set up. Left to Python, its traceback
            # would go to stderr only, never to LOG_FILE: a Scrapyd job's log would end with
            # nothing to say why (Scrapyd keeps the job's stderr in its own log).
            logger.exception("Sync FAILED: an unexpected error while starting the sync")
            self.exitcode = EXIT_FAILED
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


def _merge_organisations(spargs: list[str]) -> list[str]:
    """``-a organisation=`` given more than once means all of them (Scrapy keeps the last)."""
    chosen = [a.split("=", 1)[1] for a in spargs if a.startswith("organisation=")]
    others = [a for a in spargs if not a.startswith("organisation=")]
    return [*others, f"organisation={','.join(chosen)}"] if chosen else spargs


def report_outcome(stats: StatsCollector) -> int:
    """Log a one-line summary of the sync and return the exit status it deserves: 0 only
    when the crawl finished, every organisation it started is complete (each counted one way
    or the other), no callback raised and nothing was logged at ERROR."""
    reason = stats.get_value("finish_reason")
    if reason in USAGE_REASONS:
        return EXIT_USAGE
    counts = ", ".join(f"{stats.get_value(key, 0)} {label}" for label, key in SUMMARY_STATS)
    frozen = stats.get_value("flsync/runs/frozen", 0)
    if frozen:
        counts += (
            f"; {frozen} finished runs not asked but for enrolments (FLSYNC_FROZEN_AFTER_DAYS)"
        )
    failures = {key: stats.get_value(key) for key in FAILURE_STATS if stats.get_value(key)}
    values = stats.get_stats()
    failures.update(
        {key: n for key, n in values.items() if key.startswith("spider_exceptions/") and n}
    )
    started = values.get("flsync/organisations/synced", 0)
    complete = values.get("flsync/organisations/complete", 0)
    errors = values.get("log_count/ERROR", 0)
    if reason == "finished" and not failures and not errors and complete == started:
        logger.info("Sync complete: %(counts)s", {"counts": counts})
        return 0
    if errors and not failures:  # said by none of the counts above
        failures["errors logged"] = errors
    unreported = started - complete - values.get("flsync/organisations/incomplete", 0)
    if unreported:
        failures["organisations never reported"] = unreported
    problems = ", ".join(f"{key.removeprefix('flsync/')}: {n}" for key, n in failures.items())
    logger.error(
        "Sync FAILED (%(reason)s%(problems)s): %(counts)s",
        {"reason": reason, "problems": f"; {problems}" if problems else "", "counts": counts},
    )
    return EXIT_FAILED
