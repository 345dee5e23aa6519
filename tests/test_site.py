"""The site model's parsers, on saved pages (tests/pages, see its README)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from scrapy.http import HtmlResponse, Response

from fakesite.data import UNKNOWN_DATASET
from fakesite.datasets import HEADERS, OLD_HEADERS
from fakesite.wall import CHALLENGE_PAGE
from flsync import site

PAGES = Path(__file__).parent / "pages"
BASE = "https://www.futurelearn.com"


def page_response(name: str, path: str) -> HtmlResponse:
    body = (PAGES / name).read_bytes()
    return HtmlResponse(url=BASE + path, body=body, encoding="utf-8")


@pytest.fixture(scope="module")
def runs_page1():
    return site.parse_runs_page(
        page_response("runs_page1.html", "/admin/organisations/exampleton/runs")
    )


def test_sign_in_form_sends_every_hidden_field_back():
    response = page_response("sign_in.html", "/sign-in")
    request = site.sign_in_form_request(response, "me@example.org", "pa ss&word")
    assert (request.method, request.url) == ("POST", BASE + "/sign-in")
    fields = parse_qs(request.body.decode(), keep_blank_values=True)
    assert fields["authenticity_token"] == ["Xr3mQ9vL2sT8pK1wZ6yB4nC7dF0gH5jA-EuIoOa1b2c"]
    assert fields["utf8"] == ["✓"]
    assert fields["remember_me"] == ["0"]
    assert fields["email"] == ["me@example.org"]
    assert fields["password"] == ["pa ss&word"]
    assert "q" not in fields  # the header's search form is not the sign-in form


def test_sign_in_error():
    assert (
        site.parse_sign_in_error(page_response("sign_in_failed.html", "/sign-in"))
        == "Invalid email or password."
    )
    assert site.parse_sign_in_error(page_response("sign_in.html", "/sign-in")) is None


def test_sign_in_form_missing():
    with pytest.raises(ValueError, match="no sign-in form"):
        site.sign_in_form_request(
            page_response("organisations.html", "/admin/organisations"), "a", "b"
        )


@pytest.mark.parametrize(
    ("status", "location", "signed_in", "expired"),
    [
        (302, "/your-courses", True, False),
        (302, "https://www.futurelearn.com/sign-in", False, True),
        (302, "/sign-in", False, True),
        (200, None, False, False),
        (422, None, False, False),
    ],
)
def test_sign_in_answers_and_expiry(status, location, signed_in, expired):
    headers = {"Location": location} if location else {}
    response = Response(BASE + "/x", status=status, headers=headers)
    assert site.is_signed_in(response) is signed_in
    assert site.is_sign_in_redirect(response) is expired


def test_is_html():
    assert site.is_html(Response(BASE, headers={"Content-Type": "text/html; charset=utf-8"}))
    assert not site.is_html(Response(BASE, headers={"Content-Type": "text/csv; charset=utf-8"}))


def test_organisations():
    organisations = site.parse_organisations(
        page_response("organisations.html", "/admin/organisations")
    )
    assert organisations == [
        site.Organisation(
            "exampleton", "University of Exampleton", BASE + "/admin/organisations/exampleton/runs"
        ),
        site.Organisation(
            "tricky-institute",
            "Institut für Données & “Tests”",
            BASE + "/admin/organisations/tricky-institute/runs",
        ),
    ]


def test_runs_page_rows(runs_page1):
    assert len(runs_page1) == 25
    assert runs_page1[0] == site.RunListing(
        course_slug="foundations-of-data-science",
        course_title="Foundations of Data Science",
        run=22,
        start_date=None,
        status="upcoming",
        invite_only=False,
        details_url=BASE + "/admin/courses/foundations-of-data-science/22",
        dashboard_url=BASE + "/admin/courses/foundations-of-data-science/22/stats-dashboard",
    )
    assert not runs_page1[0].started
    assert runs_page1[1].start_date == date(2025, 5, 9)
    assert not runs_page1[1].started  # upcoming


def test_runs_page_statuses_and_flags(runs_page1):
    by_key = {(r.course_slug, r.run): r for r in runs_page1}
    assert by_key["climate-now", 1].status == "in-progress"
    assert by_key["climate-now", 1].started
    assert by_key["clinical-skills-partners", 1].invite_only
    assert by_key["clinical-skills-partners", 1].status == "finished"
    assert {r.run for r in runs_page1 if r.course_slug == "foundations-of-data-science"} >= set(
        range(10, 21)
    )


def test_runs_page_keeps_titles_exactly(runs_page1):
    titles = {r.course_slug: r.course_title for r in runs_page1}
    assert (
        titles["data-society-ethics"]
        == 'Data/Society: Ethics & "Open" Data — the “Learner’s” Café ☕ 📊'
    )
    long_title = next(t for s, t in titles.items() if s.startswith("understanding-the-long-term"))
    assert len(long_title) == 248


def test_pagination():
    first = page_response("runs_page1.html", "/admin/organisations/exampleton/runs")
    last = page_response("runs_last_page.html", "/admin/organisations/exampleton/runs?page=2")
    assert site.next_page_url(first) == BASE + "/admin/organisations/exampleton/runs?page=2"
    assert site.next_page_url(last) is None
    assert len(site.parse_runs_page(last)) == 11


@pytest.mark.parametrize(
    ("name", "start", "end", "weeks", "effective_end"),
    [
        ("run_details.html", date(2016, 12, 19), None, 6, date(2017, 1, 30)),
        ("run_details_end_date.html", date(2020, 12, 7), date(2021, 2, 1), 6, date(2021, 2, 1)),
        ("run_details_not_set.html", None, None, 6, None),
    ],
)
def test_run_details(name, start, end, weeks, effective_end):
    details = site.parse_run_details(page_response(name, "/admin/courses/x/1"))
    assert details == site.RunDetails(start_date=start, end_date=end, duration_weeks=weeks)
    assert details.effective_end_date == effective_end


def test_datasets():
    path = "/admin/courses/foundations-of-data-science/19/stats-dashboard"
    datasets = site.parse_datasets(page_response("stats_dashboard.html", path))
    links = datasets.links
    assert len(links) == 12
    assert datasets.unlinked == []
    assert links[0].url == BASE + path + "/data/" + links[0].name
    assert links[-1].name == "learner_outcomes_survey_responses"
    assert "step_activity" in {d.name for d in links}
    assert all(d.label for d in links)


def test_no_datasets_yet():
    path = "/admin/courses/foundations-of-data-science/21/stats-dashboard"
    assert site.parse_datasets(page_response("stats_dashboard_empty.html", path)).links == []


def test_urls():
    assert site.sign_in_url(BASE) == BASE + "/sign-in"
    assert site.organisations_url(BASE) == BASE + "/admin/organisations"
    assert site.subdivisions_url(BASE, "c", 12) == (
        BASE + "/admin/courses/c/12/demographics/countries/country-subdivisions-dataset"
    )


# Markup changed as FutureLearn has changed it: the strict parsers miss, the second sources
# (where the model has one) still read the page.


def test_dataset_links_found_by_path_when_the_list_changed_class():
    path = "/admin/courses/foundations-of-data-science/19/stats-dashboard"
    renamed = page_response("stats_dashboard_renamed.html", path)
    assert site.parse_datasets(renamed).links == []
    expected = site.parse_datasets(page_response("stats_dashboard.html", path))
    assert site.parse_datasets_by_path(renamed) == expected


def test_dataset_links_by_path_on_an_upcoming_run():
    path = "/admin/courses/foundations-of-data-science/21/stats-dashboard"
    page = page_response("stats_dashboard_empty.html", path)
    assert site.parse_datasets_by_path(page).links == []


@pytest.mark.parametrize("name", ["runs_page1_date_cell.html", "runs_page1_bad_order.html"])
def test_a_start_cell_in_another_form_leaves_the_date_unread(runs_page1, name):
    changed = site.parse_runs_page(page_response(name, "/admin/organisations/exampleton/runs"))
    assert len(changed) == 25
    by_key = {(r.course_slug, r.run): r for r in changed}
    # "Not set" is still no date, and read as such.
    assert by_key["foundations-of-data-science", 22].start_date is None
    assert not by_key["foundations-of-data-science", 22].start_date_unread
    assert not by_key["foundations-of-data-science", 22].started
    dated = [r for r in changed if r.run != 22 or r.course_slug != "foundations-of-data-science"]
    assert all(r.start_date is None and r.start_date_unread for r in dated)
    # Started or not goes by the status flag then, as the strict reading would have it.
    assert [r.started for r in changed] == [r.started for r in runs_page1]


def test_read_header():
    assert site.read_header(b"\xef\xbb\xbfid,text\n1,hello\n") == ["id", "text"]
    assert site.read_header(b'a,"b,c"\r\n1,2\n') == ["a", "b,c"]
    assert site.read_header(b"a,b") == ["a", "b"]  # a header with no rows and no line end
    assert site.read_header(b"") == []


def test_header_drift():
    current, older = site.DATASET_HEADERS["comments"]
    assert site.header_drift("comments", list(current)) is None
    assert site.header_drift("comments", list(older)) is None
    drift = site.header_drift("comments", [*current[:-1], "sentiment"])
    assert drift == site.HeaderDrift(added=("sentiment",), gone=("likes",))
    assert drift.describe() == "added sentiment; gone likes"
    assert site.header_drift("comments", list(reversed(current))) == site.HeaderDrift((), ())
    assert site.header_drift("learner_outcomes_survey_responses", ["x"]) is None  # none known


def test_known_headers_are_those_of_the_imitation_site():
    # Both follow docs/site-model.md; the imitation site's are its own copy.
    for name, header in HEADERS.items():
        if name != UNKNOWN_DATASET:
            assert site.DATASET_HEADERS[name][0] == header
    for name, header in OLD_HEADERS.items():
        assert site.DATASET_HEADERS[name][1:] == (header,)


@pytest.mark.parametrize(
    ("status", "headers", "page", "challenge"),
    [
        (403, {"cf-mitigated": "challenge"}, CHALLENGE_PAGE, True),
        (403, {}, CHALLENGE_PAGE, True),  # the header lost on the way (a proxy, a CDN rule)
        (503, {}, CHALLENGE_PAGE, True),
        (200, {}, CHALLENGE_PAGE, False),  # a page that only looks like one: no refusal
        (403, {}, "<html><head><title>Forbidden</title></head></html>", False),  # no admin
    ],
)
def test_a_bot_challenge_is_known_with_or_without_its_header(status, headers, page, challenge):
    response = HtmlResponse(
        url=BASE + "/sign-in", status=status, headers=headers, body=page, encoding="utf-8"
    )
    assert site.is_bot_challenge(response) is challenge


# A page in a form the parsers do not read: one error naming the page, the part and the text.


def changed_page(name: str, path: str, old: str, new: str, count: int = 1) -> HtmlResponse:
    body = (PAGES / name).read_text()
    assert body.count(old) >= count, old
    return HtmlResponse(url=BASE + path, body=body.replace(old, new, count), encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9 May 2016", date(2016, 5, 9)),
        ("09 May 2016", date(2016, 5, 9)),
        ("9 September 2016", date(2016, 9, 9)),
        ("9 Sept 2016", date(2016, 9, 9)),
        ("Monday 9 May 2016", date(2016, 5, 9)),
        ("Mon, 9 May 2016", date(2016, 5, 9)),
        ("9th May 2016", date(2016, 5, 9)),
        ("9 May, 2016", date(2016, 5, 9)),
        ("May 9, 2016", date(2016, 5, 9)),
        ("2016-05-09", date(2016, 5, 9)),
        (" 9  May\n2016 ", date(2016, 5, 9)),
        ("Not set", None),
        ("", None),
    ],
)
def test_dates_in_the_sites_form_and_its_plausible_variants(text, expected):
    assert site.parse_date(text) == expected


@pytest.mark.parametrize(
    "text", ["09/05/2016", "2016", "31 Feb 2016", "9 Ma 2016", "9 Mayo 2016", "9 May 1016", "soon"]
)
def test_anything_else_is_not_a_date(text):
    with pytest.raises(ValueError):
        site.parse_date(text)


def test_an_unreadable_date_names_the_page_the_label_and_the_text():
    path = "/admin/courses/x/1"
    page = changed_page("run_details.html", path, "19 Dec 2016", "19/12/2016")
    with pytest.raises(site.PageError) as raised:
        site.parse_run_details(page)
    assert raised.value.url == BASE + path
    assert str(raised.value) == (
        f"{BASE}{path}: dl.m-metadata dt/dd 'Start date': not a date: '19/12/2016'"
    )


def test_a_duration_in_another_form_is_an_error():
    page = changed_page("run_details.html", "/admin/courses/x/1", "6 weeks", "six weeks")
    with pytest.raises(site.PageError, match=r"'Duration': not N weeks: 'six weeks'$"):
        site.parse_run_details(page)


def test_a_details_page_without_its_list_is_an_error():
    page = changed_page("run_details.html", "/admin/courses/x/1", "m-metadata", "m-facts")
    with pytest.raises(
        site.PageError, match=r"/courses/x/1: dl.m-metadata dt/dd: matched nothing$"
    ):
        site.parse_run_details(page)


def test_a_row_whose_run_number_is_not_a_number_fails_alone():
    path = "/admin/organisations/exampleton/runs"
    page = changed_page(
        "runs_page1.html",
        path,
        '<td class="m-run__number">21</td>',
        '<td class="m-run__number">n/a</td>',
    )
    rows = site.run_rows(page)
    with pytest.raises(site.PageError) as raised:
        site.parse_run_row(page, rows[1])
    assert raised.value.url == BASE + "/admin/courses/foundations-of-data-science/21"
    assert raised.value.reason == "td.m-run__number: not a run number: 'n/a'"
    assert [site.parse_run_row(page, row).run for row in (rows[0], rows[2])] == [22, 1]


def test_a_row_without_a_link_is_an_error_of_the_page():
    path = "/admin/organisations/exampleton/runs"
    page = changed_page(
        "runs_page1.html",
        path,
        'class="course-meta__title" href=',
        'class="course-meta__title" data-href=',
    )
    with pytest.raises(site.PageError) as raised:
        site.parse_run_row(page, site.run_rows(page)[0])
    assert raised.value.url == BASE + path
    assert raised.value.reason.startswith("td.m-run__course a: a run without a link: '<tr")


def test_an_organisation_without_a_link_is_an_error():
    path = "/admin/organisations"
    page = changed_page(
        "organisations.html", path, '<a href="/admin/organisations/exampleton/runs">', "<a>"
    )
    with pytest.raises(
        site.PageError, match=r"an entry without a link: 'University of Exampleton'$"
    ):
        site.parse_organisations(page)


def test_a_dataset_entry_without_a_link_is_unlinked_not_an_error():
    path = "/admin/courses/foundations-of-data-science/19/stats-dashboard"
    page = changed_page(
        "stats_dashboard.html",
        path,
        "</ul>\n</section>",
        '<li><a class="m-datasets__link">Coming soon</a></li>\n</ul>\n</section>',
    )
    datasets = site.parse_datasets(page)
    assert len(datasets.links) == 12
    assert datasets.unlinked == ["Coming soon"]


def test_a_dashboard_whose_entries_link_nowhere_is_an_error():
    path = "/admin/courses/foundations-of-data-science/19/stats-dashboard"
    page = changed_page(
        "stats_dashboard.html",
        path,
        'class="m-datasets__link" href=',
        'class="m-datasets__link" data-href=',
        12,
    )
    with pytest.raises(
        site.PageError, match=r"ul\.m-datasets a\.m-datasets__link: no entry links to a dataset: "
    ):
        site.parse_datasets(page)


def test_a_site_text_in_an_error_is_shortened_to_one_line():
    path = "/admin/courses/x/1"
    page = changed_page("run_details.html", path, "19 Dec 2016", "x\n" * 100)
    with pytest.raises(site.PageError) as raised:
        site.parse_run_details(page)
    assert "\n" not in str(raised.value)
    assert str(raised.value).endswith("x x x…'")
    assert len(raised.value.reason) < 150
