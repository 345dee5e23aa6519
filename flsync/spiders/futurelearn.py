"""The ``futurelearn`` spider: find the organisations and their started runs, and yield one
RunItem per run and one DatasetItem per dataset file.

Signing in is not its business: SessionMiddleware signs in before the first request leaves
and whenever the session expires. Spider argument: ``organisation`` (``-a organisation=a,b``:
a job for those organisations only). Settings: ``FLSYNC_CONFIG`` (read once, here, in
``update_settings``: credentials, base_url, data_dir, organisations, datasets),
``FLSYNC_FROZEN_AFTER_DAYS`` and ``FLSYNC_FULL`` (which finished runs are left alone).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, cast

import scrapy
from scrapy import signals
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import CloseSpider
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import threads

from flsync import site, tree
from flsync.config import config_from_settings
from flsync.failures import RUN_META
from flsync.items import (
    DatasetItem,
    ListingItem,
    OrganisationItem,
    RunFailure,
    RunItem,
    RunSkipped,
    run_key,
)
from flsync.middlewares import tries_note
from flsync.mirror import mirror_of
from flsync.options import options_of
from flsync.spiders.common import (
    not_admin_error,
    prepare_settings,
    rendered_meta,
    wanted_dataset,
)
from flsync.stopping import SyncStopped, stopper
from flsync.storage import store_class

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response, TextResponse
    from scrapy.settings import BaseSettings
    from twisted.python.failure import Failure

    from flsync.config import FlsyncConfig
    from flsync.mirror import Mirror


class FuturelearnSpider(scrapy.Spider):
    name = "futurelearn"
    config: FlsyncConfig
    frozen_after_days: int  # 0: every run is asked for
    today: date
    browser: bool  # FLSYNC_BROWSER: pages built by script are read in a browser
    max_listing_pages: int  # FLSYNC_LISTING_MAX_PAGES
    organisations: tuple[str, ...]  # the slugs to sync; () = all the account administers
    mirror: Mirror
    said: set[str]  # the page changes warned about in this sync (each is said once)

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        # Read here, while `scrapy crawl` builds the crawler: a bad file or data folder is
        # one clear error before anything starts (see flsync.commands.crawl).
        config = prepare_settings(settings)
        store_class(config.data_dir).check_location(config.data_dir, settings)
        # The files pipeline stores into data_dir (unless -s FILES_STORE=… says otherwise).
        settings.set("FILES_STORE", config.data_dir, "spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        spider.config = config_from_settings(settings)
        # -a organisation=a,b (a job for some organisations) limits the config's list.
        chosen = kwargs.get("organisation") or ""
        spider.organisations = tuple(s.strip() for s in chosen.split(",") if s.strip()) or (
            spider.config.organisations
        )
        crawler.signals.connect(spider.claim_chosen, signal=signals.spider_opened)
        options = options_of(settings)
        spider.frozen_after_days = options.frozen_after_days
        spider.today = datetime.now(UTC).date()
        spider.browser = options.browser
        spider.max_listing_pages = options.listing_max_pages
        spider.said = set()
        return spider

    def claim_chosen(self) -> None:
        """Claim the chosen organisations before any request: a job for organisations that
        other jobs are syncing ends at once (close reason ``flsync_locked``)."""
        self.mirror = mirror_of(self.crawler)
        claimed = [slug for slug in self.organisations if self.mirror.claim(slug)]
        if self.organisations and not claimed:
            raise CloseSpider("flsync_locked")

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(
            site.organisations_url(self.config.base_url),
            callback=self.parse_organisations,
            errback=self.organisations_failed,
            meta={"handle_httpstatus_list": [403]},
        )

    async def parse_organisations(self, response: Response) -> AsyncIterator[Any]:
        if response.status == 403:
            self.crawler.stats.inc_value("flsync/signin/not_admin")
            self.logger.error("%(error)s", {"error": not_admin_error(self.config.username)})
            raise CloseSpider("flsync_not_admin")
        page = cast("TextResponse", response)
        found = []
        for link in site.organisation_links(page):
            try:
                found.append(site.parse_organisation(page, link))
            except site.PageError as exc:
                self.crawler.stats.inc_value("flsync/pages/failed")
                self.logger.error("Page (failed): %(error)s", {"error": exc})
        wanted = set(self.organisations) or {o.slug for o in found}
        self._say_missing(wanted - {o.slug for o in found}, found)
        if not found:
            self.crawler.stats.inc_value("flsync/layout_changed")
            self.logger.error(
                "No organisations found on %(url)s: FutureLearn's page layout has probably"
                " changed (flsync/site.py reads it)",
                {"url": response.url},
            )
        chosen = list({o.slug: o for o in found if o.slug in wanted}.values())
        # The store is asked for locks, states and listings: in a thread, off the reactor.
        opened = await maybe_deferred_to_future(
            threads.deferToThread(self.mirror.open, found, chosen)
        )
        if chosen and not opened.claimed:
            raise CloseSpider("flsync_locked")  # every one is another job's: nothing done
        for organisation, error in opened.unreadable:
            self.crawler.stats.inc_value("flsync/store/failed")
            self.logger.error(
                "Organisation (failed): %(organisation)s: its folder cannot be read: %(error)s",
                {"organisation": organisation.name, "error": error},
            )
        for organisation in opened.ready:
            self.crawler.stats.inc_value("flsync/organisations/synced")
            folder = self.mirror.folder(organisation.slug)
            yield OrganisationItem(
                organisation.slug, organisation.name, folder, organisation.runs_url
            )
            yield self._page(
                site.RUNS_PAGE,
                organisation.runs_url,
                self.parse_runs,
                organisation.slug,
                name=organisation.name,
                listing=ListingItem(organisation.slug, listed=0),
            )

    def _say_missing(self, missing: set[str], found: list[site.Organisation]) -> None:
        for slug in sorted(missing):
            self.crawler.stats.inc_value("flsync/organisations/missing")
            self.logger.error(
                "Organisation %(slug)s is not administered by %(user)s, which administers:"
                " %(administered)s (check 'organisations' in the config, or -a organisation=)",
                {
                    "slug": slug,
                    "user": self.config.username,
                    "administered": ", ".join(sorted(o.slug for o in found)) or "none",
                },
            )

    def parse_runs(
        self, response: TextResponse, organisation: str, name: str, listing: ListingItem
    ) -> Iterator[Any]:
        instead = self._unreadable(response, organisation)
        if instead:
            yield instead  # a failure, or the page again
            return
        page = site.read_runs_page(response)
        self.crawler.stats.inc_value("flsync/runs/listed", page.rows)
        listing.listed += page.rows
        listing.pages += 1
        for error in page.unreadable:
            yield self._failed(organisation, error.url, error.reason, None, "Run")
        unread = page.dates_unread
        if unread:
            # The run's details page states its start date too, and parse_run_details
            # takes it from there.
            self._fallback(
                "start_dates",
                "Runs listing (changed): %(url)s: %(selector)s gave no start date in %(count)d"
                " rows; each run's start date is taken from its details page instead",
                response.url,
                site.START_DATE_SELECTOR,
                unread,
            )
        for run in page.runs:
            key = run_key(run.course_slug, run.run)
            if not run.started:
                self.crawler.stats.inc_value("flsync/runs/not_started")
            elif key in listing.runs or key in listing.frozen:
                continue  # listed twice: read once
            elif self._is_frozen(organisation, key):
                self.crawler.stats.inc_value("flsync/runs/frozen")
                asked = list(self._always_asked(organisation, key))
                listing.frozen[key] = [item.file_name for item in asked]
                yield from asked
            else:
                listing.runs[key] = run.details_url
                # Placed here, in the listing's order, not as details pages happen to come
                # back: of two courses whose names collide, the same one keeps its name.
                course = self.mirror.course_folder(organisation, run.course_slug, run.course_title)
                yield self._page(
                    site.DETAILS_PAGE,
                    run.details_url,
                    self.parse_run_details,
                    organisation,
                    of_run=key,
                    name=name,
                    course=course,
                    listing=run,
                )
        next_url = page.next_url
        if next_url and listing.pages >= self.max_listing_pages:
            why = (
                f"{site.NEXT_PAGE_SELECTOR}: more than FLSYNC_LISTING_MAX_PAGES"
                f" ({self.max_listing_pages}) pages of runs"
            )
            yield self._failed(organisation, response.url, why, None)
        elif next_url:
            yield self._page(
                site.RUNS_PAGE, next_url, self.parse_runs, organisation, name=name, listing=listing
            )
        else:
            yield listing

    def parse_run_details(
        self,
        response: TextResponse,
        organisation: str,
        name: str,
        course: str,
        listing: site.RunListing,
    ) -> Iterator[Any]:
        details = site.parse_run_details(response)
        start = details.start_date or listing.start_date
        end = details.effective_end_date
        key = run_key(listing.course_slug, listing.run)
        if start is None:
            self.crawler.stats.inc_value("flsync/runs/not_started")
            yield RunSkipped(organisation, key)
            return
        if end is None:
            raise site.PageError(
                response.url, site.RUN_DETAILS_SELECTOR, "neither an end date nor a duration"
            )
        run = RunItem(
            organisation=organisation,
            organisation_name=name,
            course=listing.course_title,
            course_slug=listing.course_slug,
            run=listing.run,
            start_date=start,
            end_date=end,
            duration_weeks=details.duration_weeks,
            folder=f"{course}/{tree.run_folder_name(listing.run, start, end)}",
            url=response.url,
        )
        yield self._page(
            site.DASHBOARD_PAGE,
            listing.dashboard_url,
            self.parse_dashboard,
            organisation,
            of_run=key,
            run=run,
        )

    def parse_dashboard(
        self, response: TextResponse, organisation: str, run: RunItem
    ) -> Iterator[Any]:
        instead = self._unreadable(response, organisation)
        if instead:
            yield instead  # a failure, or the page again
            return
        dashboard = site.read_dashboard(response)
        datasets = dashboard.datasets
        if dashboard.by_path:
            self._fallback(
                "dataset_links",
                "Stats dashboard (changed): %(url)s: %(selector)s matched nothing; the"
                " %(count)d dataset links found by their "
                + site.DATASET_LINK_PATH
                + " path are used instead",
                response.url,
                site.DATASETS_SELECTOR,
                len(datasets.links),
            )
        for label in datasets.unlinked:
            self.crawler.stats.inc_value("flsync/datasets/unlinked")
            if f"unlinked:{label}" not in self.said:  # said once per sync
                self.said.add(f"unlinked:{label}")
                self.logger.warning(
                    "Stats dashboard: %(url)s lists %(label)r with no link to a file: nothing"
                    " to fetch for it (nor on other runs' dashboards that list it so)",
                    {"url": response.url, "label": label},
                )
        links = {d.name: d.url for d in datasets.links if self._wanted(d.name)}
        if self._wanted(site.SUBDIVISIONS_DATASET):
            links[site.SUBDIVISIONS_DATASET] = site.subdivisions_url(
                self.config.base_url, run.course_slug, run.run
            )
        held = self.mirror.state(organisation).runs.get(run.key, {}).get("datasets", {})
        run.datasets = tree.dataset_file_names(list(links), held, site.DATASET_HEADERS)
        for dataset, file_name in run.datasets.items():
            if file_name != tree.dataset_file_name(dataset):
                self.logger.warning(
                    "Dataset %(dataset)r of %(url)s is stored as %(file)r: its own file name"
                    " is another dataset's, or metadata.csv",
                    {"dataset": dataset, "url": response.url, "file": file_name},
                )
            self.crawler.stats.inc_value("flsync/datasets/listed")
            yield DatasetItem(
                organisation=organisation,
                dataset=dataset,
                run_key=run.key,
                url=links[dataset],
                path=f"{run.folder}/{file_name}",
            )
        run.files.extend(run.datasets.values())
        self.crawler.stats.inc_value("flsync/runs/synced")
        yield run

    def organisations_failed(self, failure: Failure) -> None:
        self._log_failure(failure)

    def page_failed(self, failure: Failure) -> Iterator[RunFailure]:
        request = self._log_failure(failure)
        yield RunFailure(
            organisation=request.cb_kwargs["organisation"],
            url=request.url,
            reason=failure.getErrorMessage(),
            run_key=request.meta.get(RUN_META),
        )

    def _log_failure(self, failure: Failure) -> scrapy.Request:
        """Log a page that could not be had, in one line; the request it was."""
        # Scrapy sets it on the Failure of every request's errback.
        request: scrapy.Request = failure.request  # type: ignore[attr-defined]
        if not failure.check(SyncStopped):  # the reason was logged once, where it happened
            self.crawler.stats.inc_value("flsync/pages/failed")
            self.logger.error(
                "Page (failed): %(url)s: %(reason)s",
                {"url": request.url, "reason": failure.getErrorMessage() + tries_note(request)},
            )
        return request

    def _failed(
        self, organisation: str, url: str, reason: str, key: str | None, kind: str = "Page"
    ) -> RunFailure:
        """One ERROR line for a page that could not be read, and the failure to account."""
        self.crawler.stats.inc_value("flsync/pages/failed")
        self.logger.error(
            "%(kind)s (failed): %(url)s: %(reason)s", {"kind": kind, "url": url, "reason": reason}
        )
        return RunFailure(organisation=organisation, url=url, reason=reason, run_key=key)

    def _is_frozen(self, organisation: str, key: str) -> bool:
        state = self.mirror.state(organisation)
        return state.is_frozen(key, self.today, self.frozen_after_days, self.mirror.store)

    def _always_asked(self, organisation: str, key: str) -> Iterator[DatasetItem]:
        """The datasets of a frozen run that change forever all the same (see site.py)."""
        state = self.mirror.state(organisation)
        record = state.runs[key]
        for name in site.NEVER_FINAL_DATASETS:
            file_name = record.get("datasets", {}).get(name) or tree.dataset_file_name(name)
            path = f"{record['folder']}/{file_name}"
            stored = state.files.get(path)
            if stored and stored.get("url") and self._wanted(name):
                self.crawler.stats.inc_value("flsync/datasets/listed")
                yield DatasetItem(
                    organisation=organisation,
                    dataset=name,
                    run_key=key,
                    url=stored["url"],
                    path=path,
                )

    def _fallback(self, kind: str, message: str, url: str, selector: str, count: int) -> None:
        """A page read by its second source (see flsync/site.py): counted every time, said
        once per sync, naming the page, the selector that stopped matching and what was
        used instead."""
        self.crawler.stats.inc_value(f"flsync/fallback/{kind}")
        if kind in self.said:
            return
        self.said.add(kind)
        self.logger.warning(
            message + " (FutureLearn changed this page; flsync/site.py reads it)",
            {"url": url, "selector": selector, "count": count},
        )

    def _wanted(self, dataset: str) -> bool:
        return wanted_dataset(dataset, self.config.datasets)

    def _unreadable(self, response: TextResponse, organisation: str) -> Any:
        """A page built by script that holds nothing to read: its script failed (rendered
        again while RETRY_TIMES allows, as its own calls may have met a lapse of the session
        or of the bot pass; then that page fails: a RunFailure), or it was not run at all
        (without FLSYNC_BROWSER: the sync stops). None for a page to read."""
        assert response.request is not None  # set by Scrapy on every response it hands
        key = response.request.meta.get(RUN_META)
        error = site.build_error(response)
        if error:
            retry = get_retry_request(response.request, spider=self, reason="script_failed")
            if retry is not None:
                retry.meta.pop("download_latency", None)  # the last try's, not this one's
                return retry
            reason = f"its script failed to build it: {error}{tries_note(response.request)}"
            return self._failed(organisation, response.url, reason, key)
        if site.is_unbuilt(response):
            self.crawler.stats.inc_value("flsync/pages/unbuilt")
            stopper(self.crawler).stop(
                "needs_browser",
                f"{response.url} is built by script in the browser (it came with its list"
                " empty and marked aria-busy): reading it needs FLSYNC_BROWSER on"
                " (-s FLSYNC_BROWSER=1, with Chromium installed; see docs/network.md)",
            )
            return RunFailure(organisation, response.url, "unbuilt", key)
        return None

    def _page(
        self,
        kind: site.PageKind,
        url: str,
        callback: Any,
        organisation: str,
        of_run: str | None = None,
        **kwargs: Any,
    ) -> scrapy.Request:
        """A page of an organisation (``of_run``: of that run, by its key), read in the
        browser when FLSYNC_BROWSER is on and FutureLearn may build its kind by script."""
        meta = rendered_meta() if kind.rendered and self.browser else {}
        if of_run is not None:
            meta[RUN_META] = of_run
        return scrapy.Request(
            url,
            callback=callback,
            errback=self.page_failed,
            cb_kwargs={"organisation": organisation, **kwargs},
            meta=meta,
        )
