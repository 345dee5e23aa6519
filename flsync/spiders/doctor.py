"""The ``doctor`` spider (run by ``scrapy doctor``): each part of the page model (flsync/site.py)
checked once against the site, each with its outcome: OK with what it found, FAILED with the
URL and what the page holds instead of what was expected, or NOT CHECKED with the reason.

It goes through the sync's own settings and middlewares (SessionMiddleware signs in; the curl
transport; FLSYNC_BROWSER renders the pages the futurelearn spider renders), reads one
organisation's first and second runs pages, the details and dashboard of one started run, and
the first bytes of one dataset (``flsync_first_bytes``: the transfer ends there, no body is
fetched whole). Nothing is written: no item pipeline, no data tree, no lock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

import scrapy
from scrapy.spidermiddlewares.httperror import HttpError

from flsync import site
from flsync.config import config_from_settings
from flsync.handlers import FIRST_BYTES_META
from flsync.middlewares import EXPECT_CSV_META, tries_note
from flsync.options import options_of
from flsync.spiders.common import (
    not_admin_error,
    prepare_settings,
    rendered_meta,
    wanted_dataset,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response, TextResponse
    from scrapy.settings import BaseSettings
    from twisted.python.failure import Failure

    from flsync.config import FlsyncConfig

OK, FAILED, NOT_CHECKED = "OK", "FAILED", "NOT CHECKED"
PROMPT_STOP = "flsync.stopping.PromptStop"
BROWSER = "flsync.browser.BrowserPages"
SIGN_IN = site.SIGN_IN_PAGE.name
ORGANISATIONS = site.ORGANISATIONS_PAGE.name
RUNS = site.RUNS_PAGE.name
LATER_RUNS = "later runs page"  # a second page of the runs listing, when there is one
DETAILS = site.DETAILS_PAGE.name
DASHBOARD = site.DASHBOARD_PAGE.name
HEADER = site.DATASET_PAGE.name
# Each part, in the order told, with the part it needs to have been read first: a page of
# each kind the sync reads (site.PAGE_KINDS), and the listing's second page.
PARTS = {kind.name: kind.after for kind in site.PAGE_KINDS}
PARTS = {
    **{name: PARTS[name] for name in (SIGN_IN, ORGANISATIONS, RUNS)},
    LATER_RUNS: RUNS,
    **{name: PARTS[name] for name in (DETAILS, DASHBOARD, HEADER)},
}


@dataclass(frozen=True)
class Check:
    part: str
    status: str  # OK, FAILED, NOT_CHECKED
    detail: str
    url: str | None = None

    def line(self) -> str:
        """``OK      runs listing: 25 runs, … (URL)``; a failure names its URL first."""
        if self.status == FAILED and self.url:
            return f"{self.status:<6}  {self.part}: {self.url}: {self.detail}"
        where = f" ({self.url})" if self.url else ""
        return f"{self.status:<6}  {self.part}: {self.detail}{where}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class DoctorSpider(scrapy.Spider):
    name = "doctor"
    config: FlsyncConfig
    browser: bool
    checks: dict[str, Check]
    run_chosen: bool  # a started run's details were asked for

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        prepare_settings(settings)
        # Nothing is written and nothing shown but the checks: no item pipeline, and of the
        # project's extensions only the prompt stop that the middlewares rely on and the
        # browser (no data tree, no progress line, nothing run after a sync).
        pipelines = settings.getwithbase("ITEM_PIPELINES")
        settings.set("ITEM_PIPELINES", dict.fromkeys(pipelines, None), "spider")
        extensions = dict.fromkeys(settings.getdict("EXTENSIONS"), None)
        kept = {PROMPT_STOP: 0, BROWSER: 0}
        settings.set("EXTENSIONS", {**extensions, **kept}, "spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.config = config_from_settings(crawler.settings)
        spider.browser = options_of(crawler.settings).browser
        spider.checks = {}
        spider.run_chosen = False
        return spider

    def report(self) -> list[Check]:
        """Every part's check, in order; a part not reached is NOT CHECKED, saying why."""
        report: dict[str, Check] = {}
        for part, needs in PARTS.items():
            check = self.checks.get(part)
            if check is None:
                before = report.get(needs) if needs else None
                if before is None:
                    why = "the doctor was stopped before it"
                elif before.status == OK:
                    why = "not reached (the log says why)"
                else:
                    why = f"needs the {needs} part, which " + (
                        "failed" if before.status == FAILED else "was not checked"
                    )
                check = Check(part, NOT_CHECKED, why)
            report[part] = check
        return list(report.values())

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(
            site.organisations_url(self.config.base_url),
            callback=self.parse_organisations,
            errback=self.failed,
            cb_kwargs={"part": ORGANISATIONS},
            meta={"handle_httpstatus_list": [403]},
        )

    def parse_organisations(self, response: Response, part: str) -> Iterator[scrapy.Request]:
        self._signed_in()
        if response.status == 403:
            error = not_admin_error(self.config.username)
            self.logger.error("%(error)s", {"error": error})
            self._failed(part, error, response.url)
            return
        try:
            found = site.parse_organisations(cast("TextResponse", response))
        except site.PageError as exc:
            self._failed(part, exc.reason, exc.url)
            return
        if not found:
            problem = f"no organisations ({site.ORGANISATIONS_SELECTOR} matched nothing)"
            self._failed(part, problem, response.url)
            return
        slugs = [o.slug for o in found]
        plural = "s" if len(found) != 1 else ""
        self._ok(part, f"{len(found)} organisation{plural}: {', '.join(slugs)}", response.url)
        chosen = next((o for o in found if o.slug in self.config.organisations), found[0])
        yield self._page(site.RUNS_PAGE, chosen.runs_url, self.parse_runs, RUNS, first=True)

    def parse_runs(self, response: TextResponse, part: str, first: bool) -> Iterator[Any]:
        """The first runs page, then the second; the first started run on them is the one
        whose details, dashboard and dataset are checked."""
        runs, next_url = self._check_runs(response, part)
        started = next((listing for listing in runs if listing.started), None)
        if started and not self.run_chosen:
            self.run_chosen = True
            yield self._page(
                site.DETAILS_PAGE, started.details_url, self.parse_details, DETAILS, listing=started
            )
        if first and next_url:
            yield self._page(site.RUNS_PAGE, next_url, self.parse_runs, LATER_RUNS, first=False)
            return
        if first and runs:
            self._not_checked(LATER_RUNS, "the organisation has one page of runs")
        if runs and not self.run_chosen:
            self._not_checked(DETAILS, "no started run on the runs pages read")

    def parse_details(
        self, response: TextResponse, part: str, listing: site.RunListing
    ) -> Iterator[scrapy.Request]:
        try:
            details = site.parse_run_details(response)
        except site.PageError as exc:
            self._failed(part, exc.reason, exc.url)
        else:
            self._check_details(details, part, response.url)
        # The dashboard's link comes from the listing: it can be checked either way.
        yield self._page(
            site.DASHBOARD_PAGE,
            listing.dashboard_url,
            self.parse_dashboard,
            DASHBOARD,
            listing=listing,
        )

    def parse_dashboard(
        self, response: TextResponse, part: str, listing: site.RunListing
    ) -> Iterator[scrapy.Request]:
        if self._unbuilt(response, part):
            return
        try:
            dashboard = site.read_dashboard(response)
        except site.PageError as exc:
            self._failed(part, exc.reason, exc.url)
            datasets = []
        else:
            datasets = dashboard.datasets.links
            if datasets and not dashboard.by_path:
                self._ok(part, f"{len(datasets)} datasets", response.url)
            else:
                found = (
                    f"{len(datasets)} links found by their {site.DATASET_LINK_PATH} path"
                    if datasets
                    else f"no link has {site.DATASET_LINK_PATH} in its path either"
                )
                self._failed(
                    part,
                    f"no dataset links ({site.DATASETS_SELECTOR} matched nothing); {found}",
                    response.url,
                )
        subdivisions = site.subdivisions_url(self.config.base_url, listing.course_slug, listing.run)
        candidates = [(d.name, d.url) for d in datasets] + [
            (site.SUBDIVISIONS_DATASET, subdivisions)
        ]
        wanted = [c for c in candidates if wanted_dataset(c[0], self.config.datasets)] or candidates
        # One whose header versions are known, so that there is something to compare.
        name, url = next(((n, u) for n, u in wanted if n in site.DATASET_HEADERS), wanted[0])
        yield scrapy.Request(
            url,
            callback=self.parse_header,
            errback=self.failed,
            cb_kwargs={"part": HEADER, "dataset": name},
            meta={FIRST_BYTES_META: site.HEADER_BYTES, EXPECT_CSV_META: True},
        )

    def parse_header(self, response: Response, part: str, dataset: str) -> None:
        if site.is_html(response):
            self._failed(part, f"{dataset}: an HTML page instead of a CSV", response.url)
            return
        header = site.read_header(response.body)
        if not header:
            self._failed(part, f"{dataset}: an empty body", response.url)
            return
        versions = site.DATASET_HEADERS.get(dataset, ())
        drift = site.header_drift(dataset, header)
        if drift is not None:
            self._failed(
                part,
                f"{dataset}: the header is none of its known versions: {drift.describe()}",
                response.url,
            )
        elif not versions:
            self._ok(part, f"{dataset}: {len(header)} columns, no known versions", response.url)
        else:
            which = "current" if tuple(header) == versions[0] else "an older known"
            self._ok(part, f"{dataset}: {len(header)} columns, the {which} version", response.url)

    def failed(self, failure: Failure) -> None:
        """A page that could not be had: its part fails; before any answer, the sign-in did
        (SessionMiddleware or AccessMiddleware has logged its one line)."""
        request: scrapy.Request = failure.request  # type: ignore[attr-defined]
        if failure.check(HttpError):
            error = cast("HttpError", failure.value)
            reason = f"HTTP {error.response.status}"  # not "Ignoring non-200 response"
        else:
            reason = failure.getErrorMessage()
        reason += tries_note(request)
        if SIGN_IN not in self.checks and not self.crawler.stats.get_value("flsync/signin/ok"):
            self._failed(SIGN_IN, reason, site.sign_in_url(self.config.base_url))
            return
        self._signed_in()
        self._failed(request.cb_kwargs["part"], reason, request.url)

    def _check_runs(
        self, response: TextResponse, part: str
    ) -> tuple[list[site.RunListing], str | None]:
        """The page's runs and next page, with the part's outcome recorded."""
        if self._unbuilt(response, part):
            return [], None
        page = site.read_runs_page(response)
        if page.unreadable:
            error = page.unreadable[0]
            self._failed(part, error.reason, error.url)
            return [], None
        runs, next_url, unread = page.runs, page.next_url, page.dates_unread
        if not runs:
            self._failed(part, f"no runs ({site.RUNS_SELECTOR} matched nothing)", response.url)
        elif unread:
            self._failed(
                part,
                f"{len(runs)} runs, but no start date in {unread} of them"
                f" ({site.START_DATE_SELECTOR} missing or not YYYY-MM-DD); a sync takes"
                " those from the runs' details pages",
                response.url,
            )
        else:
            link = "next page link" if next_url else "no next page link"
            self._ok(part, f"{len(runs)} runs, {link}, dates parsed", response.url)
        return runs, next_url

    def _check_details(self, details: site.RunDetails, part: str, url: str) -> None:
        end = details.effective_end_date
        if details.start_date is None:
            self._failed(part, f"no start date ({site.RUN_DETAILS_SELECTOR} 'Start date')", url)
        elif end is None:
            self._failed(part, f"no end date and no duration ({site.RUN_DETAILS_SELECTOR})", url)
        else:
            how = "stated" if details.end_date else f"start + {details.duration_weeks} weeks"
            self._ok(part, f"start {details.start_date}, end {end} ({how})", url)

    def _unbuilt(self, response: TextResponse, part: str) -> bool:
        """A page built by script that holds nothing to read (its part failed)."""
        error = site.build_error(response)
        if error:
            self._failed(part, f"its script failed to build it: {error}", response.url)
            return True
        if site.is_unbuilt(response):
            self._failed(
                part,
                "it is built by script in the browser (it came with its list empty and marked"
                " aria-busy): reading it needs FLSYNC_BROWSER on (-s FLSYNC_BROWSER=1)",
                response.url,
            )
            return True
        return False

    def _signed_in(self) -> None:
        if SIGN_IN not in self.checks:
            url = site.sign_in_url(self.config.base_url)
            self._ok(SIGN_IN, f"signed in as {self.config.username}", url)

    def _ok(self, part: str, detail: str, url: str | None = None) -> None:
        self.checks[part] = Check(part, OK, detail, url)

    def _failed(self, part: str, detail: str, url: str | None = None) -> None:
        self.checks[part] = Check(part, FAILED, detail, url)

    def _not_checked(self, part: str, why: str) -> None:
        self.checks[part] = Check(part, NOT_CHECKED, why)

    def _page(
        self, kind: site.PageKind, url: str, callback: Any, part: str, **kwargs: Any
    ) -> scrapy.Request:
        """A page, read as the futurelearn spider reads its kind (in the browser, with
        FLSYNC_BROWSER on, when FutureLearn may build it by script)."""
        return scrapy.Request(
            url,
            callback=callback,
            errback=self.failed,
            cb_kwargs={"part": part, **kwargs},
            meta=rendered_meta() if kind.rendered and self.browser else {},
        )
