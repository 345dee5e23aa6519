"""The site model's parsers, on saved pages (tests/pages, see its README)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from scrapy.http import HtmlResponse, Response

from flsync import site
from tests.fakesite.data import UNKNOWN_DATASET
from tests.fakesite.datasets import HEADERS, OLD_HEADERS
from tests.fakesite.wall import CHALLENGE_PAGE

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
    assert len(datasets) == 12
    assert datasets[0].url == BASE + path + "/data/" + datasets[0].name
    assert datasets[-1].name == "learner_outcomes_survey_responses"
    assert "step_activity" in {d.name for d in datasets}
    assert all(d.label for d in datasets)


def test_no_datasets_yet():
    path = "/admin/courses/foundations-of-data-science/21/stats-dashboard"
    assert site.parse_datasets(page_response("stats_dashboard_empty.html", path)) == []


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
    assert site.parse_datasets(renamed) == []
    expected = site.parse_datasets(page_response("stats_dashboard.html", path))
    assert site.parse_datasets_by_path(renamed) == expected


def test_dataset_links_by_path_on_an_upcoming_run():
    path = "/admin/courses/foundations-of-data-science/21/stats-dashboard"
    assert site.parse_datasets_by_path(page_response("stats_dashboard_empty.html", path)) == []


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
