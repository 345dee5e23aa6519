"""``scrapy loaddb [--database URL] [--organisation NAME]``: the data tree into a SQL database.

The database: ``--database``, else ``FLSYNC_DATABASE_URL`` from the environment (where a
password is safer than on a command line, which ``ps`` shows), else SQLite at
``{data_dir}/flsync.sqlite3`` (a local data_dir only). The tree is the config's data_dir,
read through the same store as the sync's (see flsync.sql.loader for what a load does).

Exit status: 0 when every changed run was loaded; 1 when a run could not be (each said in one
line, its previous rows left as they were); 2 when nothing was done (bad config, database URL
or organisation, a database that cannot be reached).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from scrapy.commands import ScrapyCommand
from scrapy.utils.log import configure_logging

from flsync import tree
from flsync.commands.crawl import EXIT_FAILED, EXIT_USAGE
from flsync.config import ConfigError, load_data_dir
from flsync.options import options_of
from flsync.sql.extension import DATABASE_ENV, record_limit
from flsync.storage import StoreError, StoreLocationError, existing_tree, store_class
from flsync.tree import ChooseError

if TYPE_CHECKING:
    import argparse

    from flsync.sql.loader import LoadResult

logger = logging.getLogger(__name__)

SQLITE_FILE = tree.DATABASE_FILE


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False

    def syntax(self) -> str:
        return "[--database URL] [--organisation NAME]"

    def short_desc(self) -> str:
        return "Load the data tree into a SQL database (the runs that changed since the last load)"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--database",
            metavar="URL",
            help=f"SQLAlchemy URL of the database (default: ${DATABASE_ENV}, else SQLite at"
            f" data_dir/{SQLITE_FILE})",
        )
        parser.add_argument(
            "--organisation",
            metavar="NAME",
            action="append",
            default=[],
            help="only this organisation: its folder's name or its slug (repeatable)",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        configure_logging(self.settings)
        # Imported here, not with the module: Scrapy imports every command at the start of
        # every `scrapy` run, and SQLAlchemy would add about 0.3 s to each sync's start.
        from flsync.sql.loader import DatabaseError, failure  # noqa: PLC0415

        try:
            result = self._load(opts)
        except (ConfigError, StoreLocationError, StoreError, DatabaseError, ChooseError) as exc:
            logger.error("Database load FAILED: %(error)s", {"error": exc})
            self.exitcode = EXIT_USAGE
            return
        except Exception as exc:  # whatever stops the load is one line
            logger.debug("Database load: the error in full", exc_info=True)
            url = opts.database or os.environ.get(DATABASE_ENV) or ""
            logger.error("Database load FAILED: %(error)s", {"error": failure(exc, url)})
            self.exitcode = EXIT_FAILED
            return
        if result.ok:
            logger.info("Database load complete: %(summary)s", {"summary": result.summary()})
        else:
            logger.error("Database load FAILED: %(summary)s", {"summary": result.summary()})
            self.exitcode = EXIT_FAILED

    def _load(self, opts: argparse.Namespace) -> LoadResult:
        from flsync.sql.loader import Loader, open_database  # noqa: PLC0415

        assert self.settings is not None
        data_dir = load_data_dir(options_of(self.settings).config_path)
        store = existing_tree(data_dir, self.settings, "load")
        url = opts.database or os.environ.get(DATABASE_ENV) or self._default_url(data_dir)
        chosen = tree.choose_organisations(store, opts.organisation)
        limit = record_limit(self.settings)
        engine = open_database(url)
        try:
            return Loader(engine, store, limit).load(chosen)
        finally:
            engine.dispose()

    def _default_url(self, data_dir: str) -> str:
        folder = store_class(data_dir).local_folder(data_dir)
        if folder is None:
            raise ConfigError(
                f"data_dir is {data_dir}: give the database with --database URL (or"
                f" {DATABASE_ENV}); the default SQLite file needs a local data_dir"
            )
        return f"sqlite:///{os.path.abspath(os.path.join(folder, SQLITE_FILE))}"
