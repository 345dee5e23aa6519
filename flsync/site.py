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
from datetime import date, datetime, timedelta
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
_DATE_FORMAT = "%d %b %Y"  # "9 May 2016"
_WEEKS = re.compile(r"(\d+)\s*weeks?", re.IGNORECASE)
_DATASET_PATH = re.compile(r"/stats-dashboard/data/([^/?#]+)")

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


class LayoutError(ValueError):
    """A page does not have the shape this module reads (FutureLearn changed its markup)."""


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
    if not isinstance(response, TextResponse):
        raise LayoutError(f"no sign-in form on {response.url} (not a web page)")
    form = response.xpath(f'//form[@action="{SIGN_IN_PATH}" or contains(@action, "/sign-in")]')
    if not form:
        raise LayoutError(f"no sign-in form on {response.url}")
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


def parse_organisations(response: TextResponse) -> list[Organisation]:
    organisations = []
    for link in response.css(ORGANISATIONS_SELECTOR):
        url = response.urljoin(link.attrib["href"])
        match = re.search(r"/admin/organisations/([^/]+)/runs", url)
        if match:
            name = _text(link.css("::text").getall())
            organisations.append(Organisation(slug=match[1], name=name, runs_url=url))
    return organisations


def parse_runs_page(response: TextResponse) -> list[RunListing]:
    return [_parse_run_row(response, row) for row in response.css(RUNS_SELECTOR)]


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
    weeks = _WEEKS.search(terms.get("duration", ""))
    return RunDetails(
        start_date=_parse_date(terms.get("start date", "")),
        end_date=_parse_date(terms.get("end date", "")),
        duration_weeks=int(weeks[1]) if weeks else None,
    )


def parse_datasets(response: TextResponse) -> list[DatasetLink]:
    """The dashboard's dataset links, by the list's class names (DATASETS_SELECTOR)."""
    return _dataset_links(response, response.css(DATASETS_SELECTOR))


def parse_datasets_by_path(response: TextResponse) -> list[DatasetLink]:
    """The dashboard's dataset links found by their path alone (DATASET_LINK_PATH): the
    second source, for when the list's class names have changed."""
    links = response.xpath(f'//a[contains(@href, "{DATASET_LINK_PATH}")]')
    unique = {link.attrib["href"]: link for link in links}
    return _dataset_links(response, list(unique.values()))


def _dataset_links(response: TextResponse, links: list[Selector]) -> list[DatasetLink]:
    datasets = []
    for link in links:
        url = response.urljoin(link.attrib["href"])
        match = _DATASET_PATH.search(url)
        if match:
            label = _text(link.css("::text").getall())
            datasets.append(DatasetLink(name=match[1], label=label, url=url))
    return datasets


def _parse_run_row(response: TextResponse, row: Selector) -> RunListing:
    course = row.css("td.m-run__course a")
    details_url = response.urljoin(course.attrib["href"])
    dashboard = row.css('td.m-run__links a[href$="/stats-dashboard"]::attr(href)').get()
    start_date, unread = _listed_start(row)
    flags = row.css("td.m-run__status span.flag::attr(class)").getall()
    statuses = [c.removeprefix("flag--") for f in flags for c in f.split() if c != "flag"]
    return RunListing(
        course_slug=urlsplit(details_url).path.split("/")[3],
        course_title=course.attrib.get("title") or _text(course.css("::text").getall()),
        run=int(_text(row.css("td.m-run__number ::text").getall())),
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
    try:
        return date.fromisoformat(cell.attrib.get("data-order", "")), False
    except ValueError:
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


def _parse_date(text: str) -> date | None:
    """A `D Mon YYYY` date; `Not set` (or nothing) is None."""
    if not text or text.lower() == "not set":
        return None
    return datetime.strptime(text, _DATE_FORMAT).date()


def _text(parts: list[str]) -> str:
    return " ".join(" ".join(parts).split())
