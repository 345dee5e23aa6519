"""The data tree as one crawl sees it: its store, the locks on it, where each organisation and
course goes, and each organisation's state.

:class:`Mirror` is an extension that the spider and the pipelines reach with
``crawler.get_extension(Mirror)`` (see :func:`mirror_of`). The store is the files pipeline's
own (Scrapy builds it from ``FILES_STORE`` through ``DatasetFilesPipeline.STORE_SCHEMES``), so
the tree is opened once and every write goes through the one object. Before an organisation
is synced, the spider claims its lock (:meth:`Mirror.claim`): two syncs may share a data_dir
as long as they sync different organisations; then the temporary files a killed sync left in
its folder are deleted. Each organisation's sync state is loaded once, on first use; the state
pipeline saves it at the end.

Folders (see flsync.tree): an organisation's folder is held by the slug its state names, a
course's by the slug its organisation's state names; a newcomer whose name would equal a
folder held by another gets its slug appended. Organisations are placed in the order the site
lists them, and every job of one account sees the same list, so two jobs syncing different
organisations of one data_dir place them alike.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from scrapy.pipelines.files import FilesPipeline

from flsync import tree
from flsync.state import SyncState, load_state, save_state
from flsync.storage import StoreError, StoreLockedError

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from typing import Self

    from scrapy.crawler import Crawler
    from twisted.internet.defer import Deferred

    from flsync.site import Organisation
    from flsync.storage import DataStore

logger = logging.getLogger(__name__)


class Mirror:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._store: DataStore | None = None
        self._folders: dict[str, str] = {}  # organisation slug -> its folder
        self._states: dict[str, SyncState] = {}  # by organisation slug
        self._course_keys: dict[str, set[str]] = {}  # by organisation slug: names held there
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

    def open(self, listed: Sequence[Organisation], chosen: Sequence[Organisation]) -> Opened:
        """Claim the chosen organisations, place every listed one, and ready the folders of
        those claimed: temporary files swept, state read, the store's listing of the folder
        made. It waits on the store: call it in a thread, not on the reactor."""
        claimed = [o for o in chosen if self.claim(o.slug)]
        self.place(listed, {o.slug for o in claimed})
        opened = Opened(claimed=bool(claimed))
        for organisation in claimed:
            folder = self.folder(organisation.slug)
            try:
                self.sweep(organisation.slug)
                self.state(organisation.slug)
                self.store.stat(f"{folder}/{tree.STATE_FILE}")
            except StoreError as exc:
                opened.unreadable.append((organisation, exc))
            else:
                opened.ready.append(organisation)
        return opened

    def place(self, listed: Sequence[Organisation], claimed: Collection[str]) -> None:
        """Give every listed organisation its folder (see the module's docstring); those of
        ``claimed`` (slugs) are checked against the states in their folders."""
        existing = {
            tree.name_key(name): name
            for name in self.store.list_dir("")
            if not name.startswith(".")
        }
        contested = _contested(listed)
        owners = {key: self._owner(existing[key]) for key in sorted(contested) if key in existing}
        # Each pass settles one more folder held by a slug its name did not point to.
        for _ in range(len(claimed) * 3 + 1):
            self._folders = _assign(listed, owners, existing)
            moved = {
                tree.name_key(self._folders[slug]): owner
                for slug in claimed
                if (owner := self._owner(self._folders[slug])) not in (None, slug)
            }
            if not moved:
                for organisation in listed:
                    if organisation.slug in claimed:
                        folder = self._folders[organisation.slug]
                        _warn_if_moved("Organisation", organisation.name, organisation.slug, folder)
                return
            owners.update(moved)
        raise tree.NameTakenError("organisation folders keep moving: see their states' slugs")

    def folder(self, slug: str) -> str:
        """The organisation's folder (after :meth:`place`)."""
        return self._folders[slug]

    def state(self, slug: str) -> SyncState:
        """The organisation's sync state, as the last sync left it (loaded on first use)."""
        if slug not in self._states:
            self._states[slug] = load_state(self.store, self.folder(slug))
        return self._states[slug]

    def save_state(self, slug: str) -> Deferred[Any] | None:
        """Write the organisation's state (await the answer: see flsync.storage.DataStore)."""
        return save_state(self.store, self.folder(slug), self.state(slug))

    def course_folder(self, slug: str, course_slug: str, title: str) -> str:
        """The folder of a course of the organisation ``slug``, relative to data_dir: the one
        it holds, or a new one no other course holds (recorded in the state)."""
        state = self.state(slug)
        folders = state.course_folders()
        name = folders.get(course_slug)
        if name is None:
            held = self._course_keys.setdefault(
                slug, {tree.name_key(folder) for folder in folders.values()}
            )
            name = tree.unique_name(title, course_slug, held, tree.ORGANISATION_FILES)
            held.add(tree.name_key(name))
            _warn_if_moved("Course", title, course_slug, name)
        state.courses[course_slug] = name
        return f"{self.folder(slug)}/{name}"

    def claim(self, slug: str) -> bool:
        """Take the organisation's lock for this sync (held until the engine stops); False,
        said in one error line, if another sync holds it."""
        if slug in self._claimed:
            return True
        if slug in self._refused:
            return False
        try:
            self._held.enter_context(self.store.lock(tree.lock_name(slug)))
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

    def sweep(self, slug: str) -> None:
        """Delete the temporary files a killed sync left in the organisation's folder (call
        with its lock held)."""
        swept = self.store.sweep_temp_files(self.folder(slug))
        if swept:
            self.crawler.stats.inc_value("flsync/store/swept", len(swept))
            logger.warning(
                "Deleted %(count)d temporary file(s) left by an interrupted sync, e.g. %(path)s",
                {"count": len(swept), "path": swept[0]},
            )

    def _owner(self, folder: str) -> str | None:
        """The slug the state in ``folder`` names (None: no state, or one from before slugs
        were kept: the folder goes to whoever the site's list names it for first; or one
        that cannot be read, which its organisation's sync then says, see the spider)."""
        try:
            return load_state(self.store, folder).slug
        except StoreError:
            return None


@dataclass
class Opened:
    """What :meth:`Mirror.open` made of the chosen organisations."""

    claimed: bool  # any of them (none: every one is another job's)
    ready: list[Organisation] = field(default_factory=list)
    unreadable: list[tuple[Organisation, StoreError]] = field(default_factory=list)


def _warn_if_moved(kind: str, name: str, slug: str, folder: str) -> None:
    """One WARNING when a name does not get its own folder (it is another's, or reserved)."""
    if tree.name_key(folder) != tree.name_key(tree.safe_name(name)):
        logger.warning(
            "%(kind)s %(name)r (%(slug)s) is stored in the folder %(folder)r: its name made"
            " safe is another's, or reserved",
            {"kind": kind, "name": name, "slug": slug, "folder": folder},
        )


def _contested(listed: Sequence[Organisation]) -> set[str]:
    """The folder names (keys) that two or more listed organisations might take."""
    seen: set[str] = set()
    contested: set[str] = set()
    for organisation in listed:
        for name in tree.name_candidates(organisation.name, organisation.slug):
            key = tree.name_key(name)
            (contested if key in seen else seen).add(key)
    return contested


def _assign(
    listed: Sequence[Organisation], owners: dict[str, str | None], existing: dict[str, str]
) -> dict[str, str]:
    """Slug -> folder for every listed organisation, in the order listed: the first name of
    its candidates given to no organisation before it and held by no other slug; a folder
    already there is taken under its own spelling."""
    folders: dict[str, str] = {}
    given: set[str] = set()
    for organisation in listed:
        if organisation.slug in folders:
            continue
        taken = given | {
            key for key, owner in owners.items() if owner not in (None, organisation.slug)
        }
        name = tree.unique_name(organisation.name, organisation.slug, taken, tree.DATA_DIR_FILES)
        key = tree.name_key(name)
        folders[organisation.slug] = existing.get(key, name)
        given.add(key)
    return folders


def mirror_of(crawler: Crawler) -> Mirror:
    """The crawl's Mirror extension."""
    mirror = crawler.get_extension(Mirror)
    if mirror is None:
        raise NotConfigured("flsync.mirror.Mirror must be in EXTENSIONS")
    return mirror
