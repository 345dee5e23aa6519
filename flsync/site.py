"""Everything flsync knows about FutureLearn's pages: paths, selectors, date formats, words.

Each ``parse_*`` function takes a response (or selector) of one page and returns plain data;
none makes requests or reads settings. When FutureLearn changes its markup, this module (and
docs/site-model.md, the description of the site it follows) is the one place to change.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from form2request import form2request
from scrapy.http import TextResponse

if TYPE_CHECKING:
    from form2request import Request as FormRequestData
    from parsel import Selector
    from scrapy.http import Request, Response

SIGN_IN_PATH = "/sign-in"
ORGANISATIONS_PATH = "/admin/organisations"
# The dashboard does not list this dataset; it has a URL of its own per run.
SUBDIVISIONS_DATASET = "country-subdivisions"
# Datasets that keep changing however long ago a run ended: FutureLearn's partner guide says
# enrolments are regenerated nightly with no end (statements bought, learners leaving, years
# later), the other datasets until two weeks after the run's end.
NEVER_FINAL_DATASETS = ("enrolments",)
UPCOMING = "upcoming"
_WEEKS = re.compile(r"(\d+)\s*weeks?", re.IGNORECASE)
_DATASET_PATH = re.compile(r"/stats-dashboard/data/([^/?#]+)")
_ORGANISATION_PATH = re.compile(r"/admin/organisations/([^/?#]+)/runs")
_RUN_PATH = re.compile(r"/admin/courses/([^/?#]+)/([^/?#]+)")
# More dataset links than this on one dashboard is not FutureLearn's page (it lists about a
# dozen): refused rather than fetched.
MAX_DATASETS = 200

# What each part of the page model is read by: named in the warnings and in `scrapy doctor`'s
# lines, so that a changed page says which of these stopped matching.
ORGANISATIONS_SELECTOR = "ul.m-organisation-list li a"
RUNS_SELECTOR = "table.m-table--runs tr.m-run"
START_DATE_SELECTOR = "td.m-run__start[data-order]"
NEXT_PAGE_SELECTOR = 'nav.pagination a[rel~="next"]'
RUN_DETAILS_SELECTOR = "dl.m-metadata dt/dd"
DATASETS_SELECTOR = "ul.m-datasets a.m-datasets__link"
# The second source of dataset links: any link with this in its path.
DATASET_LINK_PATH = "/stats-dashboard/data/"


@dataclass(frozen=True)
class PageKind:
    """A kind of page of the model, as both its readers (the futurelearn spider, which syncs,
    and the doctor, which checks one page of each kind) take it."""

    name: str  # as the doctor's lines name it
    rendered: bool = False  # FutureLearn may build it by script: read it in the browser
    after: str | None = None  # the kind whose page links to it (or signs in, for the first)


SIGN_IN_PAGE = PageKind("sign-in")
ORGANISATIONS_PAGE = PageKind("organisations", after="sign-in")
RUNS_PAGE = PageKind("runs listing", rendered=True, after="organisations")
DETAILS_PAGE = PageKind("run details", after="runs listing")
DASHBOARD_PAGE = PageKind("stats dashboard", rendered=True, after="run details")
DATASET_PAGE = PageKind("dataset header", after="stats dashboard")
PAGE_KINDS = (
    SIGN_IN_PAGE,
    ORGANISATIONS_PAGE,
    RUNS_PAGE,
    DETAILS_PAGE,
    DASHBOARD_PAGE,
    DATASET_PAGE,
)


class PageError(ValueError):
    """A page is not in the form this module reads (FutureLearn changed it, or it is not
    FutureLearn's): names the page, the part (a selector or label) and the text it could not
    read (shortened: it is the site's)."""

    def __init__(self, url: str, part: str, problem: str, text: str | None = None) -> None:
        self.url = url
        shown = "" if text is None else f": {_shorten(text)!r}"
        super().__init__(f"{part}: {problem}{shown}")

    def __str__(self) -> str:
        return f"{self.url}: {self.args[0]}"

    @property
    def reason(self) -> str:
        """What is wrong, without the page's URL."""
        return str(self.args[0])


@dataclass(frozen=True)
class Organisation:
    slug: str
    name: str
    runs_url: str


@dataclass(frozen=True)
class RunListing:
    """One row of an organisation's runs table."""

    course_slug: str
    course_title: str
    run: int
    start_date: date | None
    status: str
    invite_only: bool
    details_url: str
    dashboard_url: str
    # The start cell had no date in the form read (START_DATE_SELECTOR) and did not say
    # "Not set": the start date is the details page's to give.
    start_date_unread: bool = False

    @property
    def started(self) -> bool:
        """Started, as far as the listing tells; with the start date unread, as the status
        flag says (the details page then has the date)."""
        dated = self.start_date is not None or self.start_date_unread
        return dated and self.status != UPCOMING


@dataclass(frozen=True)
class RunDetails:
    start_date: date | None
    end_date: date | None
    duration_weeks: int | None

    @property
    def effective_end_date(self) -> date | None:
        """The given end date, else start + duration (older runs state only the duration)."""
        if self.end_date or not (self.start_date and self.duration_weeks is not None):
            return self.end_date
        return self.start_date + timedelta(weeks=self.duration_weeks)


@dataclass(frozen=True)
class DatasetLink:
    name: str
    label: str
    url: str


def sign_in_url(base_url: str) -> str:
    return base_url + SIGN_IN_PATH


def organisations_url(base_url: str) -> str:
    return base_url + ORGANISATIONS_PATH


def subdivisions_url(base_url: str, course_slug: str, run: int) -> str:
    return (
        f"{base_url}/admin/courses/{course_slug}/{run}"
        "/demographics/countries/country-subdivisions-dataset"
    )


def sign_in_form_request(response: Response, email: str, password: str) -> FormRequestData:
    """The sign-in POST, built from the page's form with every hidden field sent back."""
    part = f"form[action={SIGN_IN_PATH}]"
    if not isinstance(response, TextResponse):
        raise PageError(response.url, part, "no sign-in form (not a web page)")
    form = response.xpath(f'//form[@action="{SIGN_IN_PATH}" or contains(@action, "/sign-in")]')
    if not form:
        raise PageError(response.url, part, "no sign-in form")
    return form2request(form[0], {"email": email, "password": password})


def parse_sign_in_error(response: Response) -> str | None:
    """The error flash of a refused sign-in ("Invalid email or password."), if any."""
    if not isinstance(response, TextResponse):
        return None
    text = response.css(".m-flash--error ::text").getall()
    return " ".join(" ".join(text).split()) or None


def is_sign_in_redirect(response: Response) -> bool:
    """A redirect to the sign-in page: how the site answers once a session has expired."""
    location = response.headers.get(b"Location")
    return (
        300 <= response.status < 400
        and location is not None
        and urlsplit(location.decode("latin-1")).path == SIGN_IN_PATH
    )


def is_signed_in(response: Response) -> bool:
    """The answer to the sign-in POST: a redirect anywhere but back to the sign-in page."""
    return (
        300 <= response.status < 400
        and b"Location" in response.headers
        and not is_sign_in_redirect(response)
    )


# Pages built by script: the runs listing and the stats dashboard may arrive as a shell whose
# table or list is marked aria-busy="true" until its script has filled it in; then the script
# sets aria-busy="false", or data-error="..." when it failed. In a browser, a page is read
# once this holds (the bot challenge's interstitial is not the page either).
RENDERED_PAGE_DONE_JS = (
    "() => document.title !== 'Just a moment...'"
    " && document.readyState !== 'loading'"
    " && !document.querySelector('[aria-busy=\"true\"]')"
)
_UNBUILT = 'table.m-table--runs[aria-busy="true"], ul.m-datasets[aria-busy="true"]'
_BUILD_FAILED = "table.m-table--runs[data-error], ul.m-datasets[data-error]"


def is_unbuilt(response: TextResponse) -> bool:
    """A page built by script, read before its script ran (a plain HTTP fetch of a shell)."""
    return bool(response.css(_UNBUILT))


def build_error(response: TextResponse) -> str | None:
    """What the page's script said went wrong (``data-error``), if it failed."""
    return response.css(_BUILD_FAILED).attrib.get("data-error")


def landed_on_sign_in(request: Request, response: Response) -> bool:
    """The answer is the sign-in page though something else was asked for (a browser follows
    the redirect an expired session gets)."""
    asked, got = urlsplit(request.url).path, urlsplit(response.url).path
    return got == SIGN_IN_PATH and asked != SIGN_IN_PATH


# What the bot protection's script challenge leaves a browser that passed it: a cookie, good
# only with the same User-Agent, for a limited time.
BOT_PASS_COOKIES = ("cf_clearance",)
CHALLENGE_PASSED_JS = "() => document.title !== 'Just a moment...'"


def is_bot_challenge(response: Response) -> bool:
    """The bot protection's answer instead of the page: a 403 marked ``cf-mitigated:
    challenge``, or (the header lost on the way) a 403/503 "Just a moment..." page."""
    if response.status not in (403, 503):
        return False
    if (response.headers.get(b"cf-mitigated") or b"").lower() == b"challenge":
        return True
    return is_challenge_page(response)


def is_challenge_page(response: Response) -> bool:
    """The page is the challenge's interstitial ("Just a moment..."), not the site's."""
    return (
        isinstance(response, TextResponse)
        and response.css("title::text").get("").strip() == "Just a moment..."
    )


def is_html(response: Response) -> bool:
    """An HTML page, e.g. the sign-in page served where a CSV was asked for."""
    content_type = (response.headers.get(b"Content-Type") or b"").decode("latin-1").lower()
    return content_type.startswith(("text/html", "application/xhtml"))


def organisation_links(response: TextResponse) -> list[Selector]:
    """The organisations list's entries, each read by :func:`parse_organisation`."""
    return response.css(ORGANISATIONS_SELECTOR)


def parse_organisation(response: TextResponse, link: Selector) -> Organisation:
    name = _text(link.css("::text").getall())
    href = link.attrib.get("href")
    if not href:
        raise PageError(response.url, ORGANISATIONS_SELECTOR, "an entry without a link", name)
    url = response.urljoin(href)
    match = _ORGANISATION_PATH.fullmatch(urlsplit(url).path)
    if not match:
        raise PageError(response.url, ORGANISATIONS_SELECTOR, "not a runs listing link", href)
    if not name:
        raise PageError(response.url, ORGANISATIONS_SELECTOR, "an entry without a name", href)
    return Organisation(slug=match[1], name=name, runs_url=url)


def parse_organisations(response: TextResponse) -> list[Organisation]:
    """Every organisation of the list (PageError for the first one that cannot be read)."""
    return [parse_organisation(response, link) for link in organisation_links(response)]


def run_rows(response: TextResponse) -> list[Selector]:
    """The runs table's rows, each read by :func:`parse_run_row`."""
    return response.css(RUNS_SELECTOR)


def parse_runs_page(response: TextResponse) -> list[RunListing]:
    """Every run of the page (PageError for the first row that cannot be read)."""
    return [parse_run_row(response, row) for row in run_rows(response)]


@dataclass(frozen=True)
class RunsPage:
    """A runs listing page as read: its runs, the rows that could not be read (each a run
    lost unless said), and the next page."""

    runs: list[RunListing]
    unreadable: list[PageError]
    next_url: str | None

    @property
    def rows(self) -> int:
        return len(self.runs) + len(self.unreadable)

    @property
    def dates_unread(self) -> int:
        """Rows whose start cell is in another form (their details pages give the date)."""
        return sum(run.start_date_unread for run in self.runs)


def read_runs_page(response: TextResponse) -> RunsPage:
    """The page's rows, each read on its own: one that cannot be read does not hide the
    others."""
    runs, unreadable = [], []
    for row in run_rows(response):
        try:
            runs.append(parse_run_row(response, row))
        except PageError as exc:
            unreadable.append(exc)
    return RunsPage(runs, unreadable, next_page_url(response))


def next_page_url(response: TextResponse) -> str | None:
    href = response.css(f"{NEXT_PAGE_SELECTOR}::attr(href)").get()
    return response.urljoin(href) if href else None


def parse_run_details(response: TextResponse) -> RunDetails:
    terms = {
        _text(dt.css("::text").getall()).lower(): _text(
            dt.xpath("following-sibling::dd[1]//text()").getall()
        )
        for dt in response.css("dl.m-metadata dt")
    }
    if not terms:
        raise PageError(response.url, RUN_DETAILS_SELECTOR, "matched nothing")
    duration = terms.get("duration", "")
    weeks = _WEEKS.fullmatch(duration)
    if duration and not weeks:
        raise PageError(response.url, f"{RUN_DETAILS_SELECTOR} 'Duration'", "not N weeks", duration)
    return RunDetails(
        start_date=_details_date(response, terms, "start date"),
        end_date=_details_date(response, terms, "end date"),
        duration_weeks=int(weeks[1]) if weeks else None,
    )


def _details_date(response: TextResponse, terms: dict[str, str], term: str) -> date | None:
    try:
        return parse_date(terms.get(term, ""))
    except ValueError:
        part = f"{RUN_DETAILS_SELECTOR} {term.capitalize()!r}"
        raise PageError(response.url, part, "not a date", terms[term]) from None


@dataclass(frozen=True)
class Datasets:
    """A dashboard's dataset links, and the labels of its entries that link nowhere (an
    entry announced before its file exists)."""

    links: list[DatasetLink]
    unlinked: list[str]


def parse_datasets(response: TextResponse) -> Datasets:
    """The dashboard's dataset links, by the list's class names (DATASETS_SELECTOR)."""
    return _dataset_links(response, response.css(DATASETS_SELECTOR), DATASETS_SELECTOR)


def parse_datasets_by_path(response: TextResponse) -> Datasets:
    """The dashboard's dataset links found by their path alone (DATASET_LINK_PATH): the
    second source, for when the list's class names have changed."""
    links = response.xpath(f'//a[contains(@href, "{DATASET_LINK_PATH}")]')
    return _dataset_links(response, links, DATASET_LINK_PATH)


@dataclass(frozen=True)
class Dashboard:
    datasets: Datasets
    by_path: bool  # found by DATASET_LINK_PATH alone: DATASETS_SELECTOR matched nothing


def read_dashboard(response: TextResponse) -> Dashboard:
    """The dashboard's datasets by the list's class names, else (when those match nothing)
    by their path: the second source, for when the class names have changed."""
    datasets = parse_datasets(response)
    if not datasets.links:
        by_path = parse_datasets_by_path(response)
        if by_path.links:
            return Dashboard(by_path, by_path=True)
    return Dashboard(datasets, by_path=False)


def _dataset_links(response: TextResponse, links: list[Selector], part: str) -> Datasets:
    """Each dataset once (the first of its links); PageError when no entry links anywhere,
    or when there are more than MAX_DATASETS."""
    datasets: dict[str, DatasetLink] = {}
    unlinked = []
    for link in links:
        label = _text(link.css("::text").getall())
        href = link.attrib.get("href")
        if not href:
            unlinked.append(label)
            continue
        url = response.urljoin(href)
        match = _DATASET_PATH.search(urlsplit(url).path)
        if not match:
            raise PageError(response.url, part, "not a dataset link", href)
        datasets.setdefault(match[1], DatasetLink(name=match[1], label=label, url=url))
    if unlinked and not datasets:
        raise PageError(response.url, part, "no entry links to a dataset", unlinked[0])
    if len(datasets) > MAX_DATASETS:
        raise PageError(response.url, part, f"more than {MAX_DATASETS} datasets listed")
    return Datasets(links=list(datasets.values()), unlinked=unlinked)


def parse_run_row(response: TextResponse, row: Selector) -> RunListing:
    """One row of the runs table; PageError names the run's link once it is read."""
    course = row.css("td.m-run__course a")
    href = course.attrib.get("href")
    if not href:
        raise PageError(response.url, "td.m-run__course a", "a run without a link", row.get())
    details_url = response.urljoin(href)
    where = _RUN_PATH.fullmatch(urlsplit(details_url).path)
    if not where:
        raise PageError(response.url, "td.m-run__course a", "not a run's link", href)
    number = _text(row.css("td.m-run__number ::text").getall())
    if not (number.isascii() and number.isdigit() and int(number) > 0):
        raise PageError(details_url, "td.m-run__number", "not a run number", number)
    if where[2] != number:
        raise PageError(details_url, "td.m-run__number", "not the run of its link", number)
    title = course.attrib.get("title") or _text(course.css("::text").getall())
    if not title:
        raise PageError(details_url, "td.m-run__course a", "a run without a course title")
    dashboard = row.css('td.m-run__links a[href$="/stats-dashboard"]::attr(href)').get()
    start_date, unread = _listed_start(row)
    flags = row.css("td.m-run__status span.flag::attr(class)").getall()
    statuses = [c.removeprefix("flag--") for f in flags for c in f.split() if c != "flag"]
    return RunListing(
        course_slug=where[1],
        course_title=title,
        run=int(number),
        start_date=start_date,
        status=next((s for s in statuses if s != "invite-only"), ""),
        invite_only="invite-only" in statuses,
        details_url=details_url,
        dashboard_url=response.urljoin(dashboard or f"{details_url}/stats-dashboard"),
        start_date_unread=unread,
    )


def _listed_start(row: Selector) -> tuple[date | None, bool]:
    """(start date, unread) from the row's start cell: its ``data-order`` ISO date; "Not set"
    is no date; anything else is unread (the cell changed form), not an error."""
    cell = row.css("td.m-run__start")
    order = cell.attrib.get("data-order", "")
    try:
        if _ISO_DATE.fullmatch(order):
            return parse_date(order), False
    except ValueError:
        pass
    return None, _text(cell.css("::text").getall()).lower() != "not set"


# Known header versions of each dataset (the first line of its CSV), current first, then the
# older ones that older runs still carry (docs/site-model.md, "Datasets and their first
# lines"). Keyed by the dataset's name on the site (the dashboard's, and SUBDIVISIONS_DATASET).
DATASET_HEADERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "enrolments": (
        (
            "learner_id", "enrolled_at", "unenrolled_at", "role", "fully_participated_at",
            "purchased_statement_at", "gender", "country", "age_range",
            "highest_education_level", "employment_status", "employment_area",
            "detected_country", "unlimited", "statement_tier",
        ),
        (
            "learner_id", "enrolled_at", "unenrolled_at", "role", "fully_participated_at",
            "purchased_statement_at", "gender", "country", "age_range",
            "highest_education_level", "employment_status", "employment_area",
            "detected_country",
        ),
    ),
    "comments": (
        (
            "id", "author_id", "parent_id", "step", "week_number", "step_number", "text",
            "timestamp", "moderated", "likes",
        ),
        ("id", "author_id", "parent_id", "step", "text", "timestamp", "moderated", "likes"),
    ),
    "step_activity": (
        (
            "learner_id", "step", "week_number", "step_number", "first_visited_at",
            "last_completed_at",
        ),
        ("learner_id", "step", "first_visited_at", "last_completed_at"),
    ),
    "question_response": (
        (
            "learner_id", "quiz_question", "question_type", "week_number", "step_number",
            "question_number", "response", "cloze_response", "submitted_at", "correct",
        ),
        (
            "learner_id", "quiz_question", "week_number", "step_number", "question_number",
            "response", "submitted_at", "correct",
        ),
    ),
    "peer_review_assignments": (
        (
            "id", "step", "step_number", "week_number", "author_id", "text",
            "first_viewed_at", "submitted_at", "moderated", "review_count",
        ),
    ),
    "peer_review_reviews": (
        (
            "id", "step", "week_number", "step_number", "reviewer_id", "assignment_id",
            "guideline_one_feedback", "guideline_two_feedback", "guideline_three_feedback",
            "created_at",
        ),
    ),
    "team_members": (("id", "first_name", "last_name", "team_role", "user_role"),),
    "video_stats": (
        (
            "step_position", "title", "video_duration", "total_views", "total_downloads",
            "total_caption_views", "total_transcript_views", "viewed_hd",
            "viewed_five_percent", "viewed_ten_percent", "viewed_twentyfive_percent",
            "viewed_fifty_percent", "viewed_seventyfive_percent", "viewed_ninetyfive_percent",
            "viewed_onehundred_percent", "console_device_percentage",
            "desktop_device_percentage", "mobile_device_percentage", "tv_device_percentage",
            "tablet_device_percentage", "unknown_device_percentage", "europe_views_percentage",
            "oceania_views_percentage", "asia_views_percentage",
            "north_america_views_percentage", "south_america_views_percentage",
            "africa_views_percentage", "antarctica_views_percentage",
        ),
    ),
    "archetype_survey_responses": (("id", "learner_id", "responded_at", "archetype"),),
    "leaving_survey_responses": (
        (
            "id", "learner_id", "left_at", "leaving_reason", "last_completed_step_at",
            "last_completed_step", "last_completed_week_number", "last_completed_step_number",
        ),
    ),
    "weekly_sentiment_survey_responses": (
        ("id", "responded_at", "week_number", "experience_rating", "reason"),
    ),
    SUBDIVISIONS_DATASET: (
        (
            "subdivision_first", "subdivision_first_code", "country_name", "country_code",
            "country_continent", "joiner_count", "active_learner_count",
        ),
    ),
}  # fmt: skip
# Bytes of a dataset read to find its header: the longest known one (video_stats) is about
# 800 bytes.
HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class HeaderDrift:
    """How a dataset's header differs from its current known version."""

    added: tuple[str, ...]
    gone: tuple[str, ...]

    def describe(self) -> str:
        """E.g. "added sentiment; gone none" (the same columns in another order: said so)."""
        if not (self.added or self.gone):
            return "the same columns in another order"
        return f"added {', '.join(self.added) or 'none'}; gone {', '.join(self.gone) or 'none'}"


def read_header(first_bytes: bytes) -> list[str]:
    """The column names of a CSV's first record, from the file's first bytes (UTF-8, with or
    without a byte-order mark)."""
    text = first_bytes.decode("utf-8-sig", errors="replace")
    return next(csv.reader(io.StringIO(text, newline="")), [])


def header_drift(dataset: str, header: list[str]) -> HeaderDrift | None:
    """How ``header`` differs from the dataset's current version; None when it is one of
    the dataset's known versions, or no version of the dataset is known."""
    versions = DATASET_HEADERS.get(dataset)
    if not versions or tuple(header) in versions:
        return None
    current = versions[0]
    return HeaderDrift(
        added=tuple(c for c in header if c not in current),
        gone=tuple(c for c in current if c not in header),
    )


_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_WEEKDAY = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+", re.IGNORECASE)
_DAY_MONTH_YEAR = re.compile(r"(\d{1,2})(?:st|nd|rd|th)?\s+([a-z]{3,9})\.?,?\s+(\d{4})")
_MONTH_DAY_YEAR = re.compile(r"([a-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_YEARS = (2000, 2199)  # FutureLearn opened in 2013: a year outside these is a misreading


def parse_date(text: str) -> date | None:
    """A date as the site writes it, `D Mon YYYY` ("9 May 2016"), or a form it plausibly
    could: the month written out ("9 September 2016", "Sept"), a weekday before it
    ("Monday 9 May 2016"), an ordinal day ("9th May 2016"), a comma ("9 May, 2016"), the
    month first ("May 9, 2016"), or ISO ("2016-05-09"). `Not set` (or nothing) is None.
    ValueError for anything else: a date is never guessed (is 09/05/2016 May or
    September?)."""
    text = " ".join(text.split())
    if not text or text.lower() == "not set":
        return None
    plain = _WEEKDAY.sub("", text).lower()
    if match := _ISO_DATE.fullmatch(plain):
        year, month, day = int(match[1]), int(match[2]), int(match[3])
    elif match := _DAY_MONTH_YEAR.fullmatch(plain):
        day, month, year = int(match[1]), _month(match[2]), int(match[3])
    elif match := _MONTH_DAY_YEAR.fullmatch(plain):
        month, day, year = _month(match[1]), int(match[2]), int(match[3])
    else:
        raise ValueError(f"not a date: {text!r}")
    if not _YEARS[0] <= year <= _YEARS[1]:
        raise ValueError(f"not a year of FutureLearn's: {year}")
    return date(year, month, day)  # ValueError for 31 Feb


def _month(word: str) -> int:
    """1-12 for a month's name or its first letters (at least three: "sep", "sept");
    ValueError otherwise."""
    for number, name in enumerate(_MONTHS, start=1):
        if len(word) >= 3 and name.startswith(word):
            return number
    raise ValueError(f"not a month: {word!r}")


def _text(parts: list[str]) -> str:
    return " ".join(" ".join(parts).split())


def _shorten(text: str, limit: int = 80) -> str:
    """A site's text as shown in a message: one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
