"""``scrapy measures [-a organisation=NAME]``: every run's measures, computed anew from the tree.

Reads the config's data_dir (a local folder or ``s3://``) through the same store as the sync,
and needs nothing else: no credentials, no state file (a tree copied from another machine
works). For each organisation folder (or those named: a folder's name or its slug, ``-a``
repeated for several), every run is computed again and ``measures.csv``,
``step-completion.csv`` and ``dashboard.html`` are written (see flsync.measures).

Exit status: 0 when every run's measures were computed; 1 when a run's were not (a malformed
file, each said in one WARNING line naming the file and line; a store that failed); 2 when
nothing was done (bad config or data_dir, an unknown organisation).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.utils.log import configure_logging

from flsync import tree
from flsync.commands.crawl import EXIT_FAILED, EXIT_USAGE
from flsync.config import ConfigError, load_data_dir
from flsync.options import options_of
from flsync.storage import StoreError, StoreLocationError, StoreLockedError, existing_tree

if TYPE_CHECKING:
    import argparse

    from flsync.storage import DataStore

logger = logging.getLogger(__name__)


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False

    def syntax(self) -> str:
        return "[-a organisation=NAME]"

    def short_desc(self) -> str:
        return "Compute every run's measures and each organisation's dashboard from the data tree"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "-a",
            dest="spargs",
            action="append",
            default=[],
            metavar="organisation=NAME",
            help="only this organisation: its folder's name or its slug (repeatable)",
        )

    def process_options(self, args: list[str], opts: argparse.Namespace) -> None:
        super().process_options(args, opts)
        opts.organisations = []
        for argument in opts.spargs:
            name, equals, value = argument.partition("=")
            if name != "organisation" or not equals or not value:
                raise UsageError(f"-a {argument}: only -a organisation=NAME is understood")
            opts.organisations.append(value)

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        configure_logging(self.settings)
        # Imported here, not with the module: Scrapy imports every command at the start of
        # every `scrapy` run (a sync's included).
        try:
            store = self._store()
            chosen = tree.choose_organisations(store, opts.organisations)
        except (ConfigError, StoreLocationError, StoreError, tree.ChooseError) as exc:
            logger.error("Measures FAILED: %(error)s", {"error": exc})
            self.exitcode = EXIT_USAGE
            return
        memory_mb = options_of(self.settings).measures_memory_mb
        if not all([self._update(store, name, memory_mb) for name in chosen]):
            self.exitcode = EXIT_FAILED

    def _store(self) -> DataStore:
        assert self.settings is not None
        data_dir = load_data_dir(options_of(self.settings).config_path)
        return existing_tree(data_dir, self.settings, "compute")

    def _update(self, store: DataStore, organisation: str, memory_mb: int) -> bool:
        """Compute one organisation anew; whether every run of it was computed."""
        from flsync.measures.update import update_organisation  # noqa: PLC0415

        try:
            result = update_organisation(store, organisation, memory_mb=memory_mb, everything=True)
        except StoreLockedError:
            logger.error(
                "Measures FAILED: %(organisation)s: being computed by another job (a sync's):"
                " run this again once it is done",
                {"organisation": organisation},
            )
            return False
        except (StoreError, OSError) as exc:
            logger.error(
                "Measures FAILED: %(organisation)s: %(error)s",
                {"organisation": organisation, "error": exc},
            )
            return False
        figures = {"organisation": organisation, "summary": result.summary()}
        if result.ok:
            logger.info("Measures complete for %(organisation)s: %(summary)s", figures)
        else:
            logger.error("Measures INCOMPLETE for %(organisation)s: %(summary)s", figures)
        return result.ok
