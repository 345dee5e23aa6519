"""The data tree as one crawl sees it: its store, the locks on it, each organisation's state.

:class:`Mirror` is an extension that the spider and the pipelines reach with
``crawler.get_extension(Mirror)`` (see :func:`mirror_of`). The store is the files pipeline's
own (Scrapy builds it from ``FILES_STORE`` through ``DatasetFilesPipeline.STORE_SCHEMES``), so
the tree is opened once and every write goes through the one object. Before an organisation
is synced, the spider claims its lock (:meth:`Mirror.claim`): two syncs may share a data_dir
as long as they sync different organisations; then the temporary files a killed sync left in
its folder are deleted. Each organisation's sync state is loaded once, on first use; the state
pipeline saves it at the end.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.pipelines.files import FilesPipeline

from flsync import tree
from flsync.state import SyncState, load_state, save_state
from flsync.storage import StoreError, StoreLockedError

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

    from flsync.storage import DataStore

logger = logging.getLogger(__name__)


class Mirror:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._store: DataStore | None = None
        self._states: dict[str, SyncState] = {}
        self._held = contextlib.ExitStack()
        self._claimed: set[str] = set()
        # Refused once, refused for this whole sync: said in one line, not once per asking.
        self._refused: set[str] = set()
        # Released last: spider_closed handlers still write (state, update.txt).
        crawler.signals.connect(self._held.close, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    @property
    def store(self) -> DataStore:
        if self._store is None:
            pipeline = self.crawler.get_item_pipeline(FilesPipeline)
            if pipeline is None:
                raise NotConfigured("Mirror needs DatasetFilesPipeline in ITEM_PIPELINES")
            self._store = pipeline.store  # type: ignore[assignment]
        return self._store  # type: ignore[return-value]

    def state(self, organisation: str) -> SyncState:
        """The organisation's sync state, as the last sync left it (loaded on first use)."""
        if organisation not in self._states:
            self._states[organisation] = load_state(self.store, tree.organisation_dir(organisation))
        return self._states[organisation]

    def save_state(self, organisation: str) -> None:
        save_state(self.store, tree.organisation_dir(organisation), self.state(organisation))

    def claim(self, slug: str) -> bool:
        """Take the organisation's lock for this sync (held until the engine stops); False,
        said in one error line, if another sync holds it."""
        if slug in self._claimed:
            return True
        if slug in self._refused:
            return False
        try:
            self._held.enter_context(self.store.lock(slug))
        except StoreLockedError:
            self._refused.add(slug)
            self.crawler.stats.inc_value("flsync/organisations/locked")
            logger.error(
                "Organisation %(slug)s is being synced by another job; this one leaves it"
                " alone (wait for the other to finish)",
                {"slug": slug},
            )
            return False
        except StoreError as exc:  # the lock could not even be asked for (S3 unreachable...)
            self._refused.add(slug)
            self.crawler.stats.inc_value("flsync/store/failed")
            logger.error(
                "Organisation %(slug)s is left alone: its lock cannot be taken: %(error)s",
                {"slug": slug, "error": exc},
            )
            return False
        self._claimed.add(slug)
        return True

    def sweep(self, organisation: str) -> None:
        """Delete the temporary files a killed sync left in the organisation's folder (call
        with its lock held)."""
        swept = self.store.sweep_temp_files(tree.organisation_dir(organisation))
        if swept:
            self.crawler.stats.inc_value("flsync/store/swept", len(swept))
            logger.warning(
                "Deleted %(count)d temporary file(s) left by an interrupted sync, e.g. %(path)s",
                {"count": len(swept), "path": swept[0]},
            )


def mirror_of(crawler: Crawler) -> Mirror:
    """The crawl's Mirror extension."""
    mirror = crawler.get_extension(Mirror)
    if mirror is None:
        raise NotConfigured("flsync.mirror.Mirror must be in EXTENSIONS")
    return mirror
