"""The ``futurelearn`` spider: sign in, find the organisations and their started runs, and
yield one RunItem per run and one DatasetItem per dataset file.

Settings: ``FLSYNC_CONFIG`` (credentials, base_url, data_dir, organisations, datasets),
``FLSYNC_FROZEN_AFTER_DAYS`` and ``FLSYNC_FULL`` (which finished runs are left alone).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import scrapy
from scrapy.exceptions import CloseSpider

from flsync import site, tree
from flsync.config import FlsyncConfig
from flsync.items import DatasetItem, FetchFailure, OrganisationItem, RunItem, run_key
from flsync.middlewares import SIGN_IN_META
from flsync.state import SyncState, load_state
from flsync.storage import open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import TextResponse
    from scrapy.settings import BaseSettings
    from twisted.python.failure import Failure


class FuturelearnSpider(scrapy.Spider):
    name = "futurelearn"

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        # The config's data_dir is where the files pipeline stores (unless -s FILES_STORE=…).
        settings.set("FILES_STORE", FlsyncConfig.from_settings(settings).data_dir, "spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        settings = crawler.settings
        spider.config = FlsyncConfig.from_settings(settings)
        spider.store = open_store(settings["FILES_STORE"])
        spider.frozen_after_days = (
            0 if settings.getbool("FLSYNC_FULL") else settings.getint("FLSYNC_FROZEN_AFTER_DAYS")
        )
        spider.today = datetime.now(UTC).date()
        return spider

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(
            site.sign_in_url(self.config.base_url),
            callback=self.sign_in,
            errback=self.sign_in_failed,
            meta={SIGN_IN_META: True},
            dont_filter=True,
        )

    def sign_in(self, response: TextResponse) -> Iterator[scrapy.Request]:
        form = site.sign_in_form_request(response, self.config.username, self.config.password)
        yield form.to_scrapy(
            callback=self.after_sign_in,
            errback=self.sign_in_failed,
            meta={SIGN_IN_META: True, "dont_redirect": True, "handle_httpstatus_all": True},
            dont_filter=True,
        )

    def after_sign_in(self, response: TextResponse) -> Iterator[scrapy.Request]:
        if not site.is_signed_in(response):
            if response.status == 200:
                reason = site.parse_sign_in_error(response) or "no error message on the page"
                self._stop("refused", "Sign-in refused for %(user)s: %(reason)s", reason)
            self._stop(
                "rejected",
                "Sign-in form rejected for %(user)s (HTTP %(reason)s): the sign-in page has"
                " probably changed",
                response.status,
            )
        self.crawler.stats.inc_value("flsync/signin/ok")
        yield scrapy.Request(
            site.organisations_url(self.config.base_url),
            callback=self.parse_organisations,
            errback=self.sign_in_failed,
            meta={"handle_httpstatus_list": [403]},
        )

    def parse_organisations(self, response: TextResponse) -> Iterator[scrapy.Request]:
        if response.status == 403:
            self._stop(
                "not_admin",
                "Sign-in as %(user)s worked but the account has no admin rights"
                " (%(reason)s): use a partner account that administers the organisations",
                "403 on /admin/organisations",
            )
        found = site.parse_organisations(response)
        wanted = set(self.config.organisations) or {o.slug for o in found}
        for slug in sorted(wanted - {o.slug for o in found}):
            self.crawler.stats.inc_value("flsync/organisations/missing")
            self.logger.error(
                "Organisation %(slug)s is not administered by %(user)s (check 'organisations'"
                " in the config)",
                {"slug": slug, "user": self.config.username},
            )
        if not found:
            self.crawler.stats.inc_value("flsync/layout_changed")
            self.logger.error(
                "No organisations found on %(url)s: FutureLearn's page layout has probably"
                " changed (flsync/site.py reads it)",
                {"url": response.url},
            )
        for organisation in found:
            if organisation.slug in wanted:
                self.crawler.stats.inc_value("flsync/organisations/synced")
                yield self._page(
                    organisation.runs_url,
                    self.parse_runs,
                    organisation.name,
                    slug=organisation.slug,
                )

    def parse_runs(
        self,
        response: TextResponse,
        organisation: str,
        slug: str,
        state: SyncState | None = None,
        listed: int = 0,
    ) -> Iterator[Any]:
        if state is None:
            state = load_state(self.store, tree.organisation_dir(organisation))
        runs = site.parse_runs_page(response)
        self.crawler.stats.inc_value("flsync/runs/listed", len(runs))
        for listing in runs:
            if not listing.started:
                self.crawler.stats.inc_value("flsync/runs/not_started")
            elif state.is_frozen(
                run_key(listing.course_slug, listing.run),
                self.today,
                self.frozen_after_days,
                self.store,
            ):
                self.crawler.stats.inc_value("flsync/runs/frozen")
            else:
                yield self._page(
                    listing.details_url,
                    self.parse_run_details,
                    organisation,
                    listing=listing,
                    state=state,
                )
        next_url = site.next_page_url(response)
        if next_url:
            yield self._page(
                next_url,
                self.parse_runs,
                organisation,
                slug=slug,
                state=state,
                listed=listed + len(runs),
            )
        else:
            yield OrganisationItem(
                organisation=organisation, slug=slug, run_count=listed + len(runs)
            )

    def parse_run_details(
        self,
        response: TextResponse,
        organisation: str,
        listing: site.RunListing,
        state: SyncState,
    ) -> Iterator[Any]:
        details = site.parse_run_details(response)
        start = details.start_date or listing.start_date
        end = details.effective_end_date
        if start is None:
            self.crawler.stats.inc_value("flsync/runs/not_started")
            return
        if end is None:
            self.crawler.stats.inc_value("flsync/runs/failed")
            self.logger.error(
                "Run (no end date): %(url)s gives neither an end date nor a duration",
                {"url": response.url},
            )
            yield FetchFailure(organisation=organisation, url=response.url, reason="no end date")
            return
        run = RunItem(
            organisation=organisation,
            course=listing.course_title,
            course_slug=listing.course_slug,
            run=listing.run,
            start_date=start,
            end_date=end,
            duration_weeks=details.duration_weeks,
            folder=tree.run_dir(organisation, listing.course_title, listing.run, start, end),
        )
        yield self._page(
            listing.dashboard_url, self.parse_dashboard, organisation, run=run, state=state
        )

    def parse_dashboard(
        self, response: TextResponse, organisation: str, run: RunItem, state: SyncState
    ) -> Iterator[Any]:
        links = [(d.name, d.url) for d in site.parse_datasets(response)]
        links.append(
            (
                site.SUBDIVISIONS_DATASET,
                site.subdivisions_url(self.config.base_url, run.course_slug, run.run),
            )
        )
        wanted = {_dataset_key(d) for d in self.config.datasets}
        for name, url in links:
            if wanted and _dataset_key(name) not in wanted:
                continue
            file_name = tree.dataset_file_name(name)
            run.files.append(file_name)
            yield DatasetItem(
                organisation=organisation,
                course=run.course,
                course_slug=run.course_slug,
                run=run.run,
                dataset=name,
                url=url,
                folder=run.folder,
                file_name=file_name,
                previous=dict(state.files.get(f"{run.folder}/{file_name}", {})),
            )
        self.crawler.stats.inc_value("flsync/runs/synced")
        yield run

    def page_failed(self, failure: Failure) -> Iterator[FetchFailure]:
        request = failure.request
        self.crawler.stats.inc_value("flsync/pages/failed")
        self.logger.error(
            "Page (failed): %(url)s: %(reason)s",
            {"url": request.url, "reason": failure.getErrorMessage()},
        )
        yield FetchFailure(
            organisation=request.cb_kwargs["organisation"],
            url=request.url,
            reason=failure.getErrorMessage(),
        )

    def sign_in_failed(self, failure: Failure) -> None:
        self._stop("failed", "Sign-in as %(user)s failed: %(reason)s", failure.getErrorMessage())

    def _page(self, url: str, callback: Any, organisation: str, **kwargs: Any) -> scrapy.Request:
        return scrapy.Request(
            url,
            callback=callback,
            errback=self.page_failed,
            cb_kwargs={"organisation": organisation, **kwargs},
        )

    def _stop(self, what: str, message: str, reason: object) -> None:
        self.crawler.stats.inc_value(f"flsync/signin/{what}")
        self.logger.error(message, {"user": self.config.username, "reason": reason})
        raise CloseSpider(f"flsync_signin_{what}")


def _dataset_key(name: str) -> str:
    return name.replace("_", "-").lower()
