"""The imitation site, over real HTTP on 127.0.0.1, against the site model it stands for."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import csv
import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import logging
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import PolicyBuilder, Store
from curl_cffi import requests as creq
from parsel import Selector
from playwright.async_api import Browser as PlaywrightBrowser
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page as Tab
from playwright.async_api import TimeoutError as PlaywrightTimeout
from playwright.async_api import async_playwright
from scrapy.http import HtmlResponse

from fakesite import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LEARNER_EMAIL,
    LEARNER_PASSWORD,
    PARTIAL_EMAIL,
    PARTIAL_PASSWORD,
    FakeSite,
    Faults,
    SiteOptions,
    challenge,
    coding,
    wall,
)
from fakesite.app import SESSION_COOKIE
from fakesite.challenge import SOLVE_PATH
from fakesite.control import SESSION_COOKIE_MODES
from fakesite.datasets import HEADERS, OLD_HEADERS, DatasetFile
from fakesite.tls import CERTIFICATES, make_pki
from flsync.site import RunListing, next_page_url, parse_datasets, parse_runs_page

ROOT = Path(__file__).resolve().parent.parent
SERIES = "foundations-of-data-science"  # the tricky course with 22 runs
DATASET = f"/admin/courses/{SERIES}/19/stats-dashboard/data/comments"
SUBDIVISIONS_PATH = "/demographics/countries/country-subdivisions-dataset"
# The first lines of the site model, verbatim.
CONTRACT_HEADERS = {
    "enrolments": (
        "learner_id,enrolled_at,unenrolled_at,role,fully_participated_at,purchased_statement_at,"
        "gender,country,age_range,highest_education_level,employment_status,employment_area,"
        "detected_country,unlimited,statement_tier"
    ),
    "comments": (
        "id,author_id,parent_id,step,week_number,step_number,text,timestamp,moderated,likes"
    ),
    "step_activity": ("learner_id,step,week_number,step_number,first_visited_at,last_completed_at"),
    "question_response": (
        "learner_id,quiz_question,question_type,week_number,step_number,question_number,"
        "response,cloze_response,submitted_at,correct"
    ),
    "peer_review_assignments": (
        "id,step,step_number,week_number,author_id,text,first_viewed_at,submitted_at,moderated,"
        "review_count"
    ),
    "peer_review_reviews": (
        "id,step,week_number,step_number,reviewer_id,assignment_id,guideline_one_feedback,"
        "guideline_two_feedback,guideline_three_feedback,created_at"
    ),
    "team_members": "id,first_name,last_name,team_role,user_role",
    "video_stats": (
        "step_position,title,video_duration,total_views,total_downloads,total_caption_views,"
        "total_transcript_views,viewed_hd,viewed_five_percent,viewed_ten_percent,"
        "viewed_twentyfive_percent,viewed_fifty_percent,viewed_seventyfive_percent,"
        "viewed_ninetyfive_percent,viewed_onehundred_percent,console_device_percentage,"
        "desktop_device_percentage,mobile_device_percentage,tv_device_percentage,"
        "tablet_device_percentage,unknown_device_percentage,europe_views_percentage,"
        "oceania_views_percentage,asia_views_percentage,north_america_views_percentage,"
        "south_america_views_percentage,africa_views_percentage,antarctica_views_percentage"
    ),
    "archetype_survey_responses": "id,learner_id,responded_at,archetype",
    "leaving_survey_responses": (
        "id,learner_id,left_at,leaving_reason,last_completed_step_at,last_completed_step,"
        "last_completed_week_number,last_completed_step_number"
    ),
    "weekly_sentiment_survey_responses": "id,responded_at,week_number,experience_rating,reason",
    "country-subdivisions": (
        "subdivision_first,subdivision_first_code,country_name,country_code,country_continent,"
        "joiner_count,active_learner_count"
    ),
}


@dataclass
class Page:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def sel(self) -> Selector:
        return Selector(text=self.text)


class Browser:
    """One kept-alive connection with a cookie jar; redirects are not followed."""

    def __init__(self, site: FakeSite) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> Page:
        headers = {**(self.cookie_header() if self.cookies else {}), **(headers or {})}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        page = Page(response.status, response.headers, response.read())
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(header)
            self.cookies.update({name: morsel.value for name, morsel in cookie.items()})
        return page

    def get(self, path: str, **headers: str) -> Page:
        """GET with headers given as If_None_Match="..." and so on."""
        return self.request(
            "GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )

    def cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def post_form(self, path: str, fields: dict[str, str]) -> Page:
        content_type = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.request("POST", path, urlencode(fields).encode(), content_type)

    def sign_in_fields(self, page: Page | None = None) -> dict[str, str]:
        """The hidden fields of the sign-in form on ``page`` (by default a fresh one)."""
        form = (page or self.get("/sign-in")).sel.css('form[action="/sign-in"]')
        return {i.attrib["name"]: i.attrib.get("value", "") for i in form.css("input[type=hidden]")}

    def sign_in(
        self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD, page: Page | None = None
    ) -> Page:
        fields = {**self.sign_in_fields(page), "email": email, "password": password}
        return self.post_form("/sign-in", fields)

    def close(self) -> None:
        self.conn.close()


def cookie_set(page: Page) -> str | None:
    """The value the answer sets for the session cookie, or None if it sets none."""
    for header in page.headers.get_all("Set-Cookie") or []:
        morsel = SimpleCookie(header).get(SESSION_COOKIE)
        if morsel is not None:
            return morsel.value
    return None


def with_value(browser: Browser, path: str, value: str) -> Page:
    """GET with the session cookie set to ``value``, as a request queued earlier would."""
    return browser.get(path, Cookie=f"{SESSION_COOKIE}={value}")


@pytest.fixture
def browser(fakesite: FakeSite) -> Iterator[Browser]:
    client = Browser(fakesite)
    yield client
    client.close()


@pytest.fixture
def admin(browser: Browser) -> Browser:
    assert browser.sign_in().status == 302
    return browser


def runs_listed(browser: Browser, organisation: str) -> list[tuple[str, int, str, str, bool]]:
    rows, path = [], f"/admin/organisations/{organisation}/runs"
    while path:
        sel = browser.get(path).sel
        for row in sel.css("tr.m-run"):
            flags = row.css("td.m-run__status span::attr(class)").getall()
            rows.append(
                (
                    row.css("td.m-run__course a::attr(href)").get().split("/")[3],
                    int(row.css("td.m-run__number::text").get()),
                    row.css("td.m-run__start::attr(data-order)").get(),
                    flags[-1].removeprefix("flag flag--"),
                    "flag flag--invite-only" in flags,
                )
            )
        path = sel.css('nav.pagination a[rel="next"]::attr(href)').get()
    return rows


# Sign-in


def test_sign_in_form_cookie_and_redirect(browser: Browser) -> None:
    page = browser.get("/sign-in")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    set_cookie = page.headers["Set-Cookie"]
    assert set_cookie.startswith("_future_learn_session=")
    assert "HttpOnly" in set_cookie and "path=/" in set_cookie.lower()
    form = page.sel.css('form[action="/sign-in"][method="post"]')
    assert len(form) == 1
    assert form.css('input[name="utf8"]::attr(value)').get() == "✓"
    assert len(form.css('input[name="authenticity_token"]::attr(value)').get()) >= 32
    assert form.css('input[name="email"]') and form.css('input[name="password"]')
    assert form.css('[type="submit"]')
    first_session = browser.cookies["_future_learn_session"]

    fields = browser.sign_in_fields()
    assert browser.cookies["_future_learn_session"] == first_session  # kept, not set again
    signed_in = browser.post_form(
        "/sign-in", {**fields, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert signed_in.status == 302
    assert signed_in.headers["Location"] == "/your-courses"
    assert browser.cookies["_future_learn_session"] != first_session
    assert browser.get("/your-courses").status == 200
    names = browser.get("/admin/organisations").sel.css("ul.m-organisation-list li a::text")
    assert names.getall() == ["University of Exampleton", "Institut für Données & “Tests”"]


def test_wrong_password_shows_the_flash_and_a_fresh_form(browser: Browser) -> None:
    fields = browser.sign_in_fields()
    page = browser.post_form("/sign-in", {**fields, "email": ADMIN_EMAIL, "password": "nope"})
    assert page.status == 200
    flash = page.sel.css("div.m-flash.m-flash--error::text").get()
    assert flash == "Invalid email or password."
    token = page.sel.css('input[name="authenticity_token"]::attr(value)').get()
    assert token != fields["authenticity_token"]
    assert browser.get("/admin/organisations").status == 302
    retry = {
        **fields,
        "authenticity_token": token,
        "email": ADMIN_EMAIL,
        "password": ADMIN_PASSWORD,
    }
    assert browser.post_form("/sign-in", retry).status == 302


def test_stale_used_or_foreign_token_is_refused(fakesite: FakeSite, browser: Browser) -> None:
    credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    before_sign_in = browser.sign_in_fields()
    other = Browser(fakesite)
    foreign = other.sign_in_fields()
    other.close()
    assert browser.post_form("/sign-in", {**foreign, **credentials}).status == 422
    used = browser.sign_in_fields()
    assert browser.post_form("/sign-in", {**used, **credentials}).status == 302
    assert browser.post_form("/sign-in", {**used, **credentials}).status == 422
    # Signing in starts a new session: the forms shown before it are stale.
    assert browser.post_form("/sign-in", {**before_sign_in, **credentials}).status == 422
    fakesite.faults.expire_session_after = 1
    browser.sign_in()
    before_expiry = browser.sign_in_fields()
    assert [browser.get("/admin/organisations").status for _ in range(2)] == [200, 302]
    assert browser.post_form("/sign-in", {**before_expiry, **credentials}).status == 422
    no_token = {k: v for k, v in browser.sign_in_fields().items() if k != "authenticity_token"}
    assert browser.post_form("/sign-in", {**no_token, **credentials}).status == 422


def test_every_form_shown_to_a_session_is_valid(browser: Browser) -> None:
    # Concurrent requests may each get a sign-in form (an expired session on dataset URLs).
    first, second = browser.sign_in_fields(), browser.sign_in_fields()
    assert first["authenticity_token"] != second["authenticity_token"]
    assert (
        browser.post_form("/sign-in", {**first, "email": ADMIN_EMAIL, "password": "no"}).status
        == 200
    )
    assert (
        browser.post_form(
            "/sign-in", {**second, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        ).status
        == 302
    )


def test_hidden_field_missing_or_changed_is_refused(browser: Browser) -> None:
    credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    fields = browser.sign_in_fields()
    del fields["utf8"]
    assert browser.post_form("/sign-in", {**fields, **credentials}).status == 422
    fields = browser.sign_in_fields()
    assert browser.post_form("/sign-in", {**fields, **credentials, "utf8": "x"}).status == 422
    fields = browser.sign_in_fields()
    assert browser.post_form("/sign-in", {**fields, **credentials}).status == 302


def test_admin_without_session_redirects_to_sign_in(browser: Browser) -> None:
    for path in ("/admin/organisations", "/admin/organisations/exampleton/runs", DATASET):
        page = browser.get(path)
        assert page.status == 302
        assert page.headers["Location"] == "/sign-in"
        assert int(page.headers["Content-Length"]) == len(page.body)


def test_learner_gets_403(browser: Browser) -> None:
    assert browser.sign_in(LEARNER_EMAIL, LEARNER_PASSWORD).status == 302
    assert browser.get("/admin/organisations").status == 403
    assert browser.get("/admin/organisations/exampleton/runs").status == 403
    assert browser.get(DATASET).status == 403


def test_partial_admin_sees_only_the_first_organisation(browser: Browser) -> None:
    assert browser.sign_in(PARTIAL_EMAIL, PARTIAL_PASSWORD).status == 302
    links = browser.get("/admin/organisations").sel.css("ul.m-organisation-list a::attr(href)")
    assert links.getall() == ["/admin/organisations/exampleton/runs"]
    assert browser.get("/admin/organisations/exampleton/runs").status == 200
    assert browser.get("/admin/organisations/tricky-institute/runs").status == 403
    assert browser.get("/admin/organisations/no-such-org/runs").status == 404


# Pages


def test_runs_pages_list_every_run_newest_first(fakesite: FakeSite, admin: Browser) -> None:
    first = admin.get("/admin/organisations/exampleton/runs").sel
    assert first.css("h1.m-action-bar__title::text").get() == "University of Exampleton"
    assert len(first.css("table.m-table.m-table--runs tbody tr.m-run")) == 25
    next_href = first.css('nav.pagination a[rel="next"]::attr(href)').get()
    assert next_href == "/admin/organisations/exampleton/runs?page=2"
    last = admin.get(next_href).sel
    assert len(last.css("tr.m-run")) == 11
    assert not last.css('nav.pagination a[rel="next"]')
    assert admin.get("/admin/organisations/exampleton/runs?page=3").status == 404
    single = admin.get("/admin/organisations/tricky-institute/runs").sel
    assert len(single.css("tr.m-run")) == 9 and not single.css("nav.pagination")

    for organisation in fakesite.data.organisations:
        expected = [
            (r.course_slug, r.number, str(r.start_date or ""), r.status, r.invite_only)
            for r in organisation.runs
        ]
        assert runs_listed(admin, organisation.slug) == expected
    starts = [row[2] for row in runs_listed(admin, "exampleton")]
    assert starts[0] == "" and starts[1:] == sorted(starts[1:], reverse=True)


def test_runs_page_covers_the_edge_cases(fakesite: FakeSite, admin: Browser) -> None:
    rows = runs_listed(admin, "exampleton")
    statuses = {row[3] for row in rows}
    assert statuses == {"upcoming", "in-progress", "finished"}
    assert any(row[4] for row in rows)
    assert any(row[1] >= 10 for row in rows)
    page = admin.get("/admin/organisations/exampleton/runs").sel
    titles = page.css("td.m-run__course a::attr(title)").getall()
    tricky = next(t for t in titles if "/" in t)
    assert all(c in tricky for c in ':&"“\u2019é📊')
    assert max(map(len, titles)) > 200
    not_set = page.xpath('//td[@class="m-run__start"][@data-order=""]/text()').get()
    assert not_set == "Not set"
    assert re.search(r'data-order="2024-06-17">17 Jun 2024<', page.get())


def test_run_details(admin: Browser) -> None:
    def details(run: int) -> dict[str, str]:
        sel = admin.get(f"/admin/courses/{SERIES}/{run}").sel
        return {
            dt.css("::text").get(): dt.xpath("following-sibling::dd[1]/text()").get()
            for dt in sel.css("dl.m-metadata dt")
        }

    assert details(3)["Start date"] == "19 Dec 2016"
    assert details(3)["Duration"] == "6 weeks"
    assert "End date" not in details(3)
    assert details(12)["End date"] == "1 Feb 2021"
    assert details(22)["Start date"] == "Not set"
    assert admin.get(f"/admin/courses/{SERIES}/99").status == 404
    assert admin.get("/admin/courses/no-such-course/1").status == 404


def test_dashboard_lists_datasets_only_for_started_runs(fakesite: FakeSite, admin: Browser) -> None:
    sel = admin.get(f"/admin/courses/{SERIES}/19/stats-dashboard").sel
    hrefs = sel.css("ul.m-datasets li a.m-datasets__link::attr(href)").getall()
    prefix = f"/admin/courses/{SERIES}/19/stats-dashboard/data/"
    assert [h.removeprefix(prefix) for h in hrefs] == list(fakesite.data.run(SERIES, 19).datasets)
    assert "learner_outcomes_survey_responses" in hrefs[-1]
    for run in (21, 22):  # upcoming, not set
        empty = admin.get(f"/admin/courses/{SERIES}/{run}/stats-dashboard").sel
        assert empty.css("ul.m-datasets") and not empty.css("ul.m-datasets li")
        assert (
            admin.get(f"/admin/courses/{SERIES}/{run}/stats-dashboard/data/comments").status == 404
        )
        assert admin.get(f"/admin/courses/{SERIES}/{run}{SUBDIVISIONS_PATH}").status == 404
    assert admin.get(f"{prefix}no_such_dataset").status == 404


# Datasets


def test_dataset_response(fakesite: FakeSite, admin: Browser) -> None:
    page = admin.get(DATASET)
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert page.headers["Content-Disposition"] == (
        f'attachment; filename="{SERIES}-19_comments.csv"'
    )
    assert int(page.headers["Content-Length"]) == len(page.body)
    assert page.body == fakesite.dataset_bytes(SERIES, 19, "comments")
    assert re.fullmatch(r'"[^"]+"', page.headers["ETag"])
    assert page.headers["Last-Modified"].endswith(" GMT")
    subdivisions = admin.get(f"/admin/courses/{SERIES}/19{SUBDIVISIONS_PATH}")
    assert subdivisions.headers["Content-Disposition"] == (
        f'attachment; filename="{SERIES}-19_country-subdivisions.csv"'
    )
    assert subdivisions.body == fakesite.dataset_bytes(SERIES, 19, "country-subdivisions")


def test_conditional_requests(fakesite: FakeSite, admin: Browser) -> None:
    page = admin.get(DATASET)
    etag, last_modified = page.headers["ETag"], page.headers["Last-Modified"]
    not_modified = admin.get(DATASET, If_None_Match=etag)
    assert not_modified.status == 304 and not_modified.body == b""
    assert not_modified.headers["ETag"] == etag
    assert admin.get(DATASET, If_None_Match=f'"other", W/{etag}').status == 304
    assert admin.get(DATASET, If_Modified_Since=last_modified).status == 304
    fakesite.reset_stats()
    modified = fakesite.dataset_file(SERIES, 19, "comments").last_modified
    earlier = format_datetime(modified - timedelta(seconds=1), usegmt=True)
    assert admin.get(DATASET, If_Modified_Since=earlier).status == 200
    # If-None-Match decides when both are sent (RFC 9110 13.2.2).
    both = admin.get(DATASET, If_None_Match='"other"', If_Modified_Since=last_modified)
    assert both.status == 200 and both.body == page.body
    assert admin.get(DATASET, If_None_Match=etag, If_Modified_Since=earlier).status == 304
    stats = fakesite.stats()
    assert stats["not_modified"] == 1 and stats["by_status"] == {"200": 2, "304": 1}


def test_validators_off(fakesite: FakeSite, admin: Browser) -> None:
    etag = admin.get(DATASET).headers["ETag"]
    fakesite.faults.validators = False
    page = admin.get(DATASET, If_None_Match=etag)
    assert page.status == 200 and page.body
    assert "ETag" not in page.headers and "Last-Modified" not in page.headers


def test_reset_makes_a_shared_site_as_new(fakesite: FakeSite, admin: Browser) -> None:
    """What one test did to the session's site is gone for the next: faults, sessions and
    stats (the data, port and dataset files stay)."""
    port, before = fakesite.port, admin.get(DATASET)
    fakesite.faults.update({"generation": 2, "fail_next": 3, "foreign_links": {"comments": "x"}})
    fakesite.reset()
    assert fakesite.faults == Faults()
    assert fakesite.stats()["requests"] == 0
    assert admin.get(DATASET).status == 302  # the session signed in before is forgotten
    assert admin.sign_in().status == 302
    assert admin.get(DATASET).body == before.body  # generation 1 again
    assert fakesite.port == port


def test_generation_bump_changes_every_file(fakesite: FakeSite, admin: Browser) -> None:
    before = admin.get(DATASET)
    fakesite.faults.generation = 2
    after = admin.get(DATASET, If_None_Match=before.headers["ETag"])
    assert after.status == 200
    assert after.body != before.body and after.headers["ETag"] != before.headers["ETag"]
    assert after.body == fakesite.dataset_bytes(SERIES, 19, "comments")
    assert before.body == fakesite.dataset_bytes(SERIES, 19, "comments", generation=1)
    old = fakesite.dataset_file(SERIES, 19, "comments", generation=1).last_modified
    assert fakesite.dataset_file(SERIES, 19, "comments").last_modified > old
    assert admin.get(DATASET, If_Modified_Since=before.headers["Last-Modified"]).status == 200
    for run in fakesite.data.runs:
        for dataset in run.datasets:
            if dataset not in run.header_only:
                one = fakesite.dataset_bytes(run.course_slug, run.number, dataset, generation=1)
                assert one != fakesite.dataset_bytes(run.course_slug, run.number, dataset)


# Faults


def test_session_expires_after_n_requests(fakesite: FakeSite, browser: Browser) -> None:
    fakesite.faults.expire_session_after = 3
    browser.sign_in()
    assert [browser.get("/admin/organisations").status for _ in range(3)] == [200] * 3
    for path in ("/admin/organisations", DATASET):
        page = browser.get(path)
        assert (page.status, page.headers["Location"]) == (302, "/sign-in")
    browser.sign_in()  # a fresh budget
    statuses = [browser.get(DATASET).status for _ in range(4)]
    assert statuses == [200, 200, 200, 302]


def test_expired_session_is_dropped_and_its_id_gets_a_new_cookie(
    fakesite: FakeSite, browser: Browser
) -> None:
    fakesite.faults.expire_session_after = 1
    browser.sign_in()
    signed_in = browser.cookies[SESSION_COOKIE]
    assert browser.get(DATASET).status == 200
    expired = browser.get(DATASET)
    assert expired.status == 302
    anonymous = browser.cookies[SESSION_COOKIE]
    assert anonymous != signed_in
    assert browser.get(DATASET).status == 302
    assert browser.cookies[SESSION_COOKIE] == anonymous  # a known session keeps its cookie


def test_expire_session_after_0_never_gives_a_working_session(
    fakesite: FakeSite, browser: Browser
) -> None:
    fakesite.faults.expire_session_after = 0
    for session_cookie in SESSION_COOKIE_MODES:
        for expiry_cookie in (True, False):
            fakesite.faults.update(
                {"session_cookie": session_cookie, "expiry_cookie": expiry_cookie}
            )
            for _ in range(2):
                assert browser.sign_in().status == 302
                assert browser.get("/your-courses").status == 200  # the sign-in itself works
                for path in (DATASET, "/admin/organisations"):
                    page = browser.get(path)
                    assert (page.status, page.headers["Location"]) == (302, "/sign-in")


# Session cookies: the contract allows each of these, and combinations with expiry.


def test_new_at_sign_in_forgets_the_old_value(fakesite: FakeSite, browser: Browser) -> None:
    assert fakesite.faults.session_cookie == "new_at_sign_in"
    anonymous = cookie_set(browser.get("/sign-in"))
    assert anonymous is not None
    signed_in = browser.sign_in()
    assert cookie_set(signed_in) == browser.cookies[SESSION_COOKIE] != anonymous
    assert browser.get("/admin/organisations").status == 200
    old = with_value(browser, "/admin/organisations", anonymous)
    assert old.status == 302
    assert cookie_set(old) not in (None, anonymous)  # unknown: a new anonymous session


@pytest.mark.parametrize("expiry_cookie", [True, False])
def test_kept_session_cookie_keeps_its_value(
    fakesite: FakeSite, browser: Browser, expiry_cookie: bool
) -> None:
    fakesite.faults.update(
        {"session_cookie": "kept", "expire_session_after": 2, "expiry_cookie": expiry_cookie}
    )
    before_sign_in = browser.sign_in_fields()
    value = browser.cookies[SESSION_COOKIE]
    signed_in = browser.sign_in()
    assert signed_in.status == 302 and cookie_set(signed_in) is None
    assert browser.cookies[SESSION_COOKIE] == value
    assert [browser.get(p).status for p in ("/admin/organisations", DATASET)] == [200, 200]
    # The forms shown before the sign-in are stale all the same.
    credentials = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    assert browser.post_form("/sign-in", {**before_sign_in, **credentials}).status == 422
    expired = browser.get(DATASET)
    assert expired.status == 302
    assert (cookie_set(expired) is not None) == expiry_cookie
    value = browser.cookies[SESSION_COOKIE]  # a new anonymous value, or the same one
    again = browser.sign_in()
    assert again.status == 302 and cookie_set(again) is None
    assert browser.cookies[SESSION_COOKIE] == value
    assert browser.get(DATASET).status == 200  # a fresh budget
    assert browser.get(DATASET).status == 200


def test_every_answer_gives_a_new_value_and_keeps_the_old_ones(
    fakesite: FakeSite, browser: Browser
) -> None:
    fakesite.faults.update({"session_cookie": "every_answer", "expire_session_after": 5})
    first_anonymous = cookie_set(browser.get("/sign-in"))
    fields = browser.sign_in_fields()  # a live anonymous session gets new values too
    assert browser.cookies[SESSION_COOKIE] != first_anonymous
    signed_in = browser.post_form(
        "/sign-in", {**fields, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    first = cookie_set(signed_in)
    assert first is not None
    values = [first_anonymous, first]
    etag = fakesite.dataset_file(SERIES, 19, "comments").etag
    answers = [
        browser.get("/admin/organisations"),
        browser.get(DATASET),
        browser.get(DATASET, If_None_Match=etag),
        browser.get("/sign-in"),
        browser.get("/"),
    ]
    assert [a.status for a in answers] == [200, 200, 304, 200, 200]
    values += [cookie_set(a) for a in answers]
    assert None not in values and len(set(values)) == len(values)
    # A value from before the newest answer (a request queued earlier) is served as well,
    # and counts against the same budget of 5.
    from_first = with_value(browser, DATASET, first)
    assert from_first.status == 200 and cookie_set(from_first) not in values
    assert with_value(browser, "/admin/organisations", values[-2]).status == 200
    newest = browser.cookies[SESSION_COOKIE]
    # The values from before the sign-in name a forgotten session.
    other = Browser(fakesite)
    assert with_value(other, "/admin/organisations", first_anonymous).status == 302
    other.close()
    assert with_value(browser, DATASET, newest).status == 302  # budget spent: expired
    # Expired and dropped: every value of the session is forgotten at once, so each one
    # now gets a new anonymous session with the redirect.
    for value in (first, values[-2], newest):
        page = with_value(browser, DATASET, value)
        assert (page.status, page.headers["Location"]) == (302, "/sign-in")
        assert cookie_set(page) not in (None, *values)


def test_every_answer_values_stay_signed_out_together_without_expiry_cookie(
    fakesite: FakeSite, browser: Browser
) -> None:
    fakesite.faults.update(
        {"session_cookie": "every_answer", "expire_session_after": 1, "expiry_cookie": False}
    )
    first = cookie_set(browser.sign_in())
    newest = cookie_set(browser.get(DATASET))
    assert None not in (first, newest) and first != newest
    for value in (newest, first, newest):
        page = with_value(browser, DATASET, value)
        assert page.status == 302 and cookie_set(page) is None
    assert browser.cookies[SESSION_COOKIE] == newest
    # Signed out, the session is live again: the sign-in page renews its value too.
    signed_in = browser.sign_in()
    assert signed_in.status == 302 and cookie_set(signed_in) not in (None, first, newest)
    assert browser.get(DATASET).status == 200
    assert with_value(browser, DATASET, first).status == 302


@pytest.mark.parametrize("expiry_answer", ["redirect", "html"])
@pytest.mark.parametrize("expiry_cookie", [True, False])
def test_expiry_cookie_new_or_kept(
    fakesite: FakeSite, browser: Browser, expiry_answer: str, expiry_cookie: bool
) -> None:
    fakesite.faults.update(
        {
            "expire_session_after": 1,
            "expiry_answer": expiry_answer,
            "expiry_cookie": expiry_cookie,
        }
    )
    browser.sign_in()
    signed_in = browser.cookies[SESSION_COOKIE]
    assert browser.get(DATASET).status == 200
    expired = browser.get(DATASET)
    assert expired.status == (200 if expiry_answer == "html" else 302)
    new_value = cookie_set(expired)
    if expiry_cookie:
        assert new_value not in (None, signed_in)
    else:
        assert new_value is None and browser.cookies[SESSION_COOKIE] == signed_in
        # The kept value names a signed-out session, on every /admin URL.
        page = browser.get("/admin/organisations")
        assert page.status == 302 and cookie_set(page) is None
    if expiry_answer == "html":
        form = expired
    else:
        form = browser.get("/sign-in")
        assert cookie_set(form) is None  # the value in the jar names a live session
    assert browser.sign_in(page=form).status == 302
    assert browser.get(DATASET).headers["Content-Type"] == "text/csv; charset=utf-8"


@pytest.mark.parametrize("expiry_cookie", [True, False], ids=["new-cookie", "kept-cookie"])
@pytest.mark.parametrize("expiry_answer", ["redirect", "html"])
@pytest.mark.parametrize("session_cookie", SESSION_COOKIE_MODES)
def test_sessions_expire_and_renew_in_every_combination(
    fakesite: FakeSite,
    browser: Browser,
    session_cookie: str,
    expiry_answer: str,
    expiry_cookie: bool,
) -> None:
    fakesite.faults.update(
        {
            "session_cookie": session_cookie,
            "expire_session_after": 3,
            "expiry_answer": expiry_answer,
            "expiry_cookie": expiry_cookie,
        }
    )
    dashboard = f"/admin/courses/{SERIES}/19/stats-dashboard"
    page: Page | None = None  # the sign-in form to use, if the site showed one
    for _ in range(3):  # each sign-in gives a fresh budget
        before = browser.get("/sign-in") if page is None else None
        value = browser.cookies[SESSION_COOKIE]
        signed_in = browser.sign_in(page=page or before)
        assert signed_in.status == 302
        if session_cookie == "kept":
            assert cookie_set(signed_in) is None and browser.cookies[SESSION_COOKIE] == value
        else:
            assert cookie_set(signed_in) not in (None, value)
        statuses = [browser.get(p).status for p in ("/admin/organisations", dashboard, DATASET)]
        assert statuses == [200] * 3
        value = browser.cookies[SESSION_COOKIE]
        expired = browser.get(DATASET)
        if expiry_answer == "html":
            assert expired.status == 200
            assert expired.headers["Content-Type"] == "text/html; charset=utf-8"
            assert expired.sel.css('form[action="/sign-in"] input[name="authenticity_token"]')
        else:
            assert (expired.status, expired.headers["Location"]) == (302, "/sign-in")
        assert (cookie_set(expired) is not None) == expiry_cookie
        if not expiry_cookie:
            assert browser.cookies[SESSION_COOKIE] == value
        other = browser.get("/admin/organisations")
        assert (other.status, other.headers["Location"]) == (302, "/sign-in")
        page = expired if expiry_answer == "html" else None
    assert fakesite.stats()["by_kind"]["sign_in_post"] == 3


def test_302_fault_redirects_to_sign_in(fakesite: FakeSite, admin: Browser) -> None:
    fakesite.faults.update({"fail_with": 302, "fail_next": 1, "fail_path": r"/data/"})
    page = admin.get(DATASET)
    assert (page.status, page.headers["Location"]) == (302, "/sign-in")
    assert admin.get(DATASET).status == 200


def test_expired_session_answers_html_on_dataset_urls(fakesite: FakeSite, browser: Browser) -> None:
    fakesite.faults.update({"expire_session_after": 1, "expiry_answer": "html"})
    browser.sign_in()
    assert browser.get(DATASET).status == 200
    page = browser.get(DATASET)
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.sel.css('form[action="/sign-in"] input[name="authenticity_token"]')
    assert browser.get("/admin/organisations").status == 302
    assert browser.sign_in(page=page).status == 302  # the form served in place of the CSV
    assert browser.get(DATASET).headers["Content-Type"] == "text/csv; charset=utf-8"


def test_failures_with_retry_after(fakesite: FakeSite, admin: Browser) -> None:
    fakesite.faults.update({"fail_next": 2, "retry_after": "1"})
    for _ in range(2):
        page = admin.get(DATASET)
        assert page.status == 503 and page.headers["Retry-After"] == "1"
    assert admin.get(DATASET).status == 200
    fakesite.faults.update({"fail_with": 429, "fail_next": 1, "fail_path": r"/data/"})
    assert admin.get("/admin/organisations").status == 200
    assert admin.get(DATASET).status == 429
    assert admin.get(DATASET).status == 200
    assert fakesite.faults.fail_next == 0


def test_latency_is_per_response_and_overlaps(fakesite: FakeSite) -> None:
    fakesite.faults.latency_ms = 500
    started = time.monotonic()
    statuses = []

    def fetch() -> None:
        client = Browser(fakesite)
        statuses.append(client.get("/sign-in").status)
        client.close()

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert statuses == [200] * 4
    assert 0.5 <= elapsed < 1.5  # one after another, the four would take 2 s


def test_truncated_download(fakesite: FakeSite, admin: Browser) -> None:
    fakesite.faults.truncate_next = 1
    admin.conn.request("GET", DATASET, headers=admin.cookie_header())
    response = admin.conn.getresponse()
    length = int(response.headers["Content-Length"])
    with pytest.raises(http.client.IncompleteRead) as raised:
        response.read()
    assert 0 < len(raised.value.partial) < length
    admin.conn.close()
    page = admin.get(DATASET)
    assert page.status == 200 and len(page.body) == length
    assert fakesite.stats()["dataset_bytes"] == len(raised.value.partial) + length


def test_dropped_connection_leaves_the_site_serving() -> None:
    with FakeSite(SiteOptions(big_file_mb=4)) as site:
        client = Browser(site)
        client.sign_in()
        course, run = site.data.big_file
        request = (
            f"GET /admin/courses/{course}/{run}/stats-dashboard/data/step_activity HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nCookie: {client.cookie_header()['Cookie']}\r\n\r\n"
        )
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", site.port))
            sock.sendall(request.encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
            # Linger 0: close with a reset while the server is still sending.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        assert client.get("/admin/organisations").status == 200
        assert len(site.stats()["log"]) == 6
        client.close()


def test_big_file_is_exact_and_streamed() -> None:
    with FakeSite(SiteOptions(big_file_mb=3)) as site:
        client = Browser(site)
        client.sign_in()
        course, run = site.data.big_file
        page = client.get(f"/admin/courses/{course}/{run}/stats-dashboard/data/step_activity")
        client.close()
        file = site.dataset_file(course, run, "step_activity")
    assert page.status == 200
    assert int(page.headers["Content-Length"]) == len(page.body) == 3 * 1024 * 1024 == file.size
    assert page.body == b"".join(file.chunks())
    rows = list(csv.reader(io.StringIO(page.text, newline="")))
    assert rows[0] == CONTRACT_HEADERS["step_activity"].split(",")
    assert len(rows) > 30_000 and all(len(row) == 6 for row in rows)
    assert page.body.endswith(b"\n")


# Control and stats


def test_control_endpoint_over_http(fakesite: FakeSite, browser: Browser) -> None:
    def control(method: str, path: str, value: object = None) -> tuple[int, object]:
        body = json.dumps(value).encode() if value is not None else None
        page = browser.request(method, path, body, {"Content-Type": "application/json"})
        return page.status, json.loads(page.body)

    knobs = {"fail_next": 1, "fail_with": 429, "latency_ms": 5}
    status, knobs = control("POST", "/_fakesite/control", knobs)
    assert status == 200 and knobs["fail_next"] == 1 and knobs["latency_ms"] == 5
    assert fakesite.faults.fail_with == 429
    assert browser.get("/admin/organisations").status == 429
    assert control("GET", "/_fakesite/control")[1]["fail_next"] == 0
    assert control("POST", "/_fakesite/control", {"no_such_knob": 1})[0] == 400
    assert control("POST", "/_fakesite/control", {"expiry_answer": "maybe"})[0] == 400
    sessions = {"session_cookie": "kept", "expiry_cookie": False, "expire_session_after": 0}
    status, knobs = control("POST", "/_fakesite/control", sessions)
    assert status == 200 and {k: knobs[k] for k in sessions} == sessions
    assert fakesite.faults.session_cookie == "kept" and fakesite.faults.expiry_cookie is False
    bad_values = [
        ({"session_cookie": "sometimes"}, "session_cookie"),
        ({"session_cookie": None}, "session_cookie"),
        ({"expiry_cookie": "no"}, "expiry_cookie"),
        ({"expiry_cookie": 0}, "expiry_cookie"),
        ({"session_cookie": "every_answer", "expiry_cookie": None}, "expiry_cookie"),
    ]
    for values, bad in bad_values:
        status, error = control("POST", "/_fakesite/control", values)
        assert status == 400 and bad in error["error"]
    assert fakesite.faults.session_cookie == "kept"  # a refused update sets nothing
    fakesite.faults.update(
        {"session_cookie": "new_at_sign_in", "expiry_cookie": True, "expire_session_after": None}
    )
    status, data = control("GET", "/_fakesite/data")
    assert [o["slug"] for o in data["organisations"]] == ["exampleton", "tricky-institute"]
    status, stats = control("GET", "/_fakesite/stats")
    assert stats["requests"] == 1 and stats["by_status"] == {"429": 1}
    assert control("POST", "/_fakesite/reset-stats")[0] == 200
    assert fakesite.stats()["requests"] == 0


def test_stats_counters(fakesite: FakeSite, browser: Browser) -> None:
    browser.get("/admin/organisations")
    browser.sign_in()
    browser.get("/admin/organisations")
    browser.get("/admin/organisations/exampleton/runs?page=2")
    browser.get(f"/admin/courses/{SERIES}/19")
    browser.get(f"/admin/courses/{SERIES}/19/stats-dashboard")
    body = browser.get(DATASET).body
    etag = fakesite.dataset_file(SERIES, 19, "comments").etag
    browser.get(DATASET, If_None_Match=etag)
    sub = browser.get(f"/admin/courses/{SERIES}/19{SUBDIVISIONS_PATH}").body
    browser.get("/nowhere")
    stats = fakesite.stats()
    assert stats["requests"] == 11
    assert stats["by_kind"] == {
        "sign_in_get": 1, "sign_in_post": 1, "organisations": 2, "runs": 1, "run_details": 1,
        "dashboard": 1, "dataset": 2, "subdivisions": 1, "api": 0, "other": 1,
    }  # fmt: skip
    assert stats["by_status"] == {"200": 7, "302": 2, "304": 1, "404": 1}
    assert stats["not_modified"] == 1
    assert stats["dataset_bytes"] == len(body) + len(sub)
    assert stats["log"][0] == ("GET", "/admin/organisations", 302)
    assert stats["log"][4] == ("GET", "/admin/organisations/exampleton/runs?page=2", 200)
    fakesite.reset_stats()
    assert fakesite.stats()["log"] == [] and fakesite.stats()["by_kind"]["dataset"] == 0


# Data


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    def snapshot(seed: int) -> list[bytes]:
        with FakeSite(SiteOptions(seed=seed)) as site:
            client = Browser(site)
            client.sign_in()
            listing = client.get("/admin/organisations/tricky-institute/runs")
            pages = [listing.sel.css("tbody").get().encode()]
            run = site.data.organisations[1].runs[0]
            for dataset in (*run.datasets, "country-subdivisions"):
                pages.append(site.dataset_bytes(run.course_slug, run.number, dataset))
            client.close()
            return pages

    assert snapshot(7) == snapshot(7)
    assert snapshot(7)[1:] != snapshot(8)[1:]


def test_csv_files_follow_the_site_model(fakesite: FakeSite) -> None:
    steps, texts = set(), []
    for run in fakesite.data.runs:
        if not run.started_on(fakesite.data.today):
            assert run.datasets == ()
            continue
        for dataset in (*run.datasets, "country-subdivisions"):
            body = fakesite.dataset_bytes(run.course_slug, run.number, dataset)
            assert body.endswith(b"\n")
            rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
            header = ",".join(rows[0])
            if run.old_headers and dataset in OLD_HEADERS:
                assert header == ",".join(OLD_HEADERS[dataset])
            else:
                assert header == CONTRACT_HEADERS.get(dataset, ",".join(HEADERS[dataset]))
            expected_rows = 0 if dataset in run.header_only else fakesite.options.rows
            assert len(rows) - 1 == expected_rows
            assert all(len(row) == len(rows[0]) for row in rows)
            if dataset == "step_activity":
                steps.update(row[1] for row in rows[1:])
            if dataset == "comments":
                texts += [row[rows[0].index("text")] for row in rows[1:]]
    assert {"1.1", "1.10"} <= steps
    for needle in (",", '"', "\n", "“", "😀"):
        assert any(needle in text for text in texts), needle
    old = fakesite.data.run(SERIES, 1)
    columns = {
        d: fakesite.dataset_bytes(SERIES, 1, d).split(b"\n", 1)[0].count(b",") + 1
        for d in old.datasets
    }
    assert columns == {"enrolments": 13, "comments": 8, "step_activity": 4, "question_response": 8}
    enrolments = fakesite.dataset_bytes(SERIES, 19, "enrolments").decode()
    assert re.search(r",\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC,", enrolments)
    assert ",organisation_admin," in enrolments and ",learner," in enrolments
    empty = fakesite.dataset_bytes("data-society-ethics", 1, "weekly_sentiment_survey_responses")
    assert empty == (CONTRACT_HEADERS["weekly_sentiment_survey_responses"] + "\n").encode()


@contextlib.contextmanager
def cli_site(*options: str) -> Iterator[http.client.HTTPConnection]:
    """The imitation site started from its command line (3 rows, ``options``), which must
    say where it serves and as whom to sign in: a connection to it; then stopped, which it
    must take as a clean exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fakesite", "--port", "0", "--rows", "3", *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.fullmatch(
            r"FakeSite serving (http://127\.0\.0\.1:(\d+)) "
            r"\(sign in as demo@example\.org / demo-password\)\n",
            line,
        )
        assert match, line
        connection = http.client.HTTPConnection("127.0.0.1", int(match[2]), timeout=10)
        yield connection
        connection.close()
    finally:
        process.terminate()
        status = process.wait(timeout=10)
    assert status == 0


def cli_knobs(connection: http.client.HTTPConnection) -> dict[str, Any]:
    """The site's switches, as its control endpoint reports them."""
    connection.request("GET", "/_fakesite/control")
    return json.loads(connection.getresponse().read())


def test_cli_serves_until_terminated() -> None:
    sessions = ["--session-cookie", "kept", "--expire-session-after", "0"]
    sessions += ["--expiry-answer", "html", "--no-expiry-cookie"]
    with cli_site(*sessions) as connection:
        connection.request("GET", "/sign-in")
        response = connection.getresponse()
        assert response.status == 200 and response.read()
        knobs = cli_knobs(connection)
    assert knobs["session_cookie"] == "kept" and knobs["expire_session_after"] == 0
    assert knobs["expiry_answer"] == "html" and knobs["expiry_cookie"] is False


def test_saved_pages_are_there() -> None:
    pages = ROOT / "tests" / "pages"
    markers = {
        "sign_in.html": 'name="authenticity_token"',
        "sign_in_failed.html": "m-flash m-flash--error",
        "organisations.html": "m-organisation-list",
        "runs_page1.html": 'rel="next"',
        "runs_last_page.html": "m-table--runs",
        "run_details.html": "<dt>Duration</dt>",
        "run_details_end_date.html": "<dt>End date</dt>",
        "run_details_not_set.html": "<dd>Not set</dd>",
        "stats_dashboard.html": "m-datasets__link",
        "stats_dashboard_empty.html": 'class="m-datasets"',
        "stats_dashboard_renamed.html": "m-downloads__link",
        "runs_page1_date_cell.html": '<time datetime="2025-05-09">Friday 9 May 2025</time>',
        "runs_page1_bad_order.html": 'data-order="09/05/2025"',
    }
    readme = (pages / "README.md").read_text()
    for name, marker in markers.items():
        assert marker in (pages / name).read_text(), name
        assert f"`{name}`" in readme
    assert 'rel="next"' not in (pages / "runs_last_page.html").read_text()
    assert "End date" not in (pages / "run_details.html").read_text()


# Dataset answers as the CDN may send them: chunked, with a weak ETag, compressed

SUBDIVISIONS_URL = f"/admin/courses/{SERIES}/19{SUBDIVISIONS_PATH}"
BR = "br"  # brotli comes with Scrapy (a dependency of it on CPython): never skipped


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]  # names in lower case
    chunks: list[bytes]  # as framed on the wire (one item for a Content-Length body)
    complete: bool  # a chunked body ended with the zero-length chunk

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class RawConnection:
    """One kept-alive connection read by hand, to see how a body is framed (http.client
    hides chunks, and quietly opens a new connection when the server closed the old one)."""

    def __init__(self, site: FakeSite, cookie: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", site.port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.cookie = cookie

    def get(self, path: str, **headers: str) -> RawAnswer:
        """GET with headers given as Accept_Encoding="..."; no Accept-Encoding unless given."""
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", f"Cookie: {self.cookie}"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = int(self.file.readline().split()[1])
        fields = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            return RawAnswer(status, fields, [self.file.read(int(fields["content-length"]))], True)
        if fields.get("transfer-encoding") != "chunked":
            return RawAnswer(status, fields, [], True)  # a 304
        return RawAnswer(status, fields, *self._chunks())

    def _chunks(self) -> tuple[list[bytes], bool]:
        chunks = []
        while line := self.file.readline():
            size = int(line.split(b";")[0], 16)
            if size == 0:
                return chunks, self.file.readline() == b"\r\n"  # no trailer fields
            chunks.append(self.file.read(size))
            if len(chunks[-1]) < size or self.file.readline() != b"\r\n":
                break
        return chunks, False

    def closed_by_server(self) -> bool:
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw(fakesite: FakeSite, admin: Browser) -> Iterator[RawConnection]:
    connection = RawConnection(fakesite, admin.cookie_header()["Cookie"])
    yield connection
    connection.close()


def decode(body: bytes, content_coding: str) -> bytes:
    if content_coding == "gzip":
        return gzip.decompress(body)
    return coding.brotli.decompress(body)


def test_chunked_answers_decode_to_the_file_without_a_length(
    fakesite: FakeSite, admin: Browser
) -> None:
    fakesite.faults.update({"dataset_transfer": "chunked"})
    bodies = []
    for path, dataset in ((DATASET, "comments"), (SUBDIVISIONS_URL, "country-subdivisions")):
        page = admin.get(path)
        assert page.status == 200 and page.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in page.headers
        assert page.body == fakesite.dataset_bytes(SERIES, 19, dataset)
        bodies.append(page.body)
    listing = admin.get("/admin/organisations")  # pages are not chunked
    assert int(listing.headers["Content-Length"]) == len(listing.body)
    assert "Transfer-Encoding" not in listing.headers
    stats = fakesite.stats()
    assert stats["dataset_bytes"] == sum(map(len, bodies))
    assert stats["dataset_chunked"] == 2 and stats["dataset_codings"]["identity"] == 2


def test_chunked_body_comes_in_several_chunks_and_keeps_the_connection(
    fakesite: FakeSite, raw: RawConnection
) -> None:
    fakesite.faults.update({"dataset_transfer": "chunked"})
    expected = fakesite.dataset_bytes(SERIES, 19, "comments")
    etag = fakesite.dataset_file(SERIES, 19, "comments").etag
    for _ in range(2):  # the second on the same connection, after the zero-length chunk
        answer = raw.get(DATASET)
        assert answer.status == 200 and answer.complete
        assert "content-length" not in answer.headers
        assert len(answer.chunks) >= 3 and answer.body == expected
    not_modified = raw.get(DATASET, If_None_Match=etag)
    assert not_modified.status == 304
    assert "content-length" not in not_modified.headers  # the 200 has none to repeat
    assert "transfer-encoding" not in not_modified.headers
    page = raw.get("/admin/organisations")
    assert page.status == 200 and b"m-organisation-list" in page.body
    subdivisions = raw.get(SUBDIVISIONS_URL)
    assert subdivisions.complete and len(subdivisions.chunks) >= 3
    assert subdivisions.body == fakesite.dataset_bytes(SERIES, 19, "country-subdivisions")


@pytest.mark.parametrize("compress", ["none", "gzip", BR])
def test_big_file_chunked_is_exact_and_streamed(
    compress: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def joined(self: DatasetFile) -> bytes:
        raise AssertionError("the site joined a whole file")

    monkeypatch.setattr(DatasetFile, "content", joined)
    with FakeSite(SiteOptions(big_file_mb=3)) as site:
        client = Browser(site)
        client.sign_in()
        site.faults.update({"dataset_transfer": "chunked", "compress": compress})
        course, run = site.data.big_file
        raw = RawConnection(site, client.cookie_header()["Cookie"])
        path = f"/admin/courses/{course}/{run}/stats-dashboard/data/step_activity"
        answer = raw.get(path, Accept_Encoding="gzip, br")
        raw.close()
        client.close()
        file = site.dataset_file(course, run, "step_activity")
        assert site.stats()["dataset_bytes"] == len(answer.body)
    assert answer.status == 200 and answer.complete
    assert max(map(len, answer.chunks)) <= 16 * 1024
    body = answer.body if compress == "none" else decode(answer.body, compress)
    assert answer.headers.get("content-encoding") == (None if compress == "none" else compress)
    assert body == b"".join(file.chunks()) and len(body) == 3 * 1024 * 1024
    if compress == "none":
        assert len(answer.chunks) >= 3 * 1024 * 1024 // (16 * 1024)
    else:  # flushed as it goes, as a CDN compressing on the fly does
        assert len(answer.chunks) > 10 and len(answer.body) < len(body) // 2


def test_weak_etag_is_sent_and_matched_both_ways(fakesite: FakeSite, admin: Browser) -> None:
    strong = fakesite.dataset_file(SERIES, 19, "comments").etag
    fakesite.faults.update({"weak_etag": True})
    page = admin.get(DATASET)
    assert page.status == 200 and page.headers["ETag"] == f"W/{strong}"
    assert page.body == fakesite.dataset_bytes(SERIES, 19, "comments")
    for tag in (f"W/{strong}", strong, f'"other", W/{strong}', "*"):
        answer = admin.get(DATASET, If_None_Match=tag)
        assert answer.status == 304 and answer.body == b"", tag
        assert answer.headers["ETag"] == f"W/{strong}"
    assert admin.get(DATASET, If_None_Match='W/"other"').status == 200
    subdivisions = admin.get(SUBDIVISIONS_URL)
    assert subdivisions.headers["ETag"].startswith('W/"')
    assert admin.get(SUBDIVISIONS_URL, If_None_Match=subdivisions.headers["ETag"]).status == 304
    fakesite.faults.update({"dataset_transfer": "chunked"})
    chunked = admin.get(DATASET, If_None_Match=strong)
    assert chunked.status == 304 and chunked.headers["ETag"] == f"W/{strong}"
    assert "Content-Length" not in chunked.headers
    fakesite.faults.update({"weak_etag": False})
    assert admin.get(DATASET).headers["ETag"] == strong
    assert fakesite.stats()["not_modified"] == 6


def accept_encodings(content_coding: str) -> tuple[list[str], list[str]]:
    """Accept-Encoding values that take ``content_coding``, and values that do not."""
    alias = "x-gzip" if content_coding == "gzip" else "br"
    taken = [
        content_coding,
        content_coding.upper(),
        alias,
        "gzip, deflate, br, zstd",
        "*",
        f"identity;q=1, {content_coding};q=0.5",
        f"{content_coding};q=0.001",
        "deflate, *;q=0.1",
    ]
    refused = [
        "identity",
        "",
        "deflate",
        f"{content_coding};q=0",
        f"{content_coding};q=0.000, identity",
        f"*, {content_coding};q=0",
        "*;q=0",
        f"{content_coding};q=2",  # malformed: not taken as a yes
    ]
    return taken, refused


@pytest.mark.parametrize("content_coding", ["gzip", BR])
def test_compressed_only_when_accepted(
    fakesite: FakeSite, admin: Browser, raw: RawConnection, content_coding: str
) -> None:
    fakesite.faults.update({"compress": content_coding})
    expected = fakesite.dataset_bytes(SERIES, 19, "comments")
    taken, refused = accept_encodings(content_coding)
    sent = 0
    for accept_encoding in taken:
        page = admin.get(DATASET, Accept_Encoding=accept_encoding)
        assert page.headers["Content-Encoding"] == content_coding, accept_encoding
        assert page.headers["Vary"] == "Accept-Encoding"
        assert page.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in page.headers
        assert decode(page.body, content_coding) == expected
        assert len(page.body) < len(expected)
        sent += len(page.body)
    for accept_encoding in refused:
        page = admin.get(DATASET, Accept_Encoding=accept_encoding)
        assert "Content-Encoding" not in page.headers, accept_encoding
        assert page.headers["Vary"] == "Accept-Encoding"
        assert int(page.headers["Content-Length"]) == len(page.body)
        assert page.body == expected
        sent += len(page.body)
    plain = raw.get(DATASET)  # no Accept-Encoding at all: not compressed either
    assert "content-encoding" not in plain.headers and plain.body == expected
    etag = plain.headers["etag"]
    not_modified = admin.get(DATASET, If_None_Match=etag, Accept_Encoding=content_coding)
    assert not_modified.status == 304 and not_modified.headers["Vary"] == "Accept-Encoding"
    page = admin.get("/admin/organisations", Accept_Encoding=content_coding)
    assert "Content-Encoding" not in page.headers and "Vary" not in page.headers
    stats = fakesite.stats()
    assert stats["dataset_codings"][content_coding] == len(taken)
    assert stats["dataset_codings"]["identity"] == len(refused) + 1
    assert stats["dataset_chunked"] == len(taken)
    assert stats["dataset_bytes"] == sent + len(plain.body)


def test_compressed_and_chunked_subdivisions(fakesite: FakeSite, raw: RawConnection) -> None:
    fakesite.faults.update({"compress": "gzip", "dataset_transfer": "chunked"})
    answer = raw.get(SUBDIVISIONS_URL, Accept_Encoding="gzip")
    assert answer.complete and answer.headers["content-encoding"] == "gzip"
    expected = fakesite.dataset_bytes(SERIES, 19, "country-subdivisions")
    assert decode(answer.body, "gzip") == expected
    identity = raw.get(SUBDIVISIONS_URL, Accept_Encoding="identity")
    assert identity.complete and "content-length" not in identity.headers  # chunked all the same
    assert identity.body == expected


@pytest.mark.parametrize("compress", ["none", "gzip"])
def test_truncated_chunked_answer_lacks_the_last_chunk(
    fakesite: FakeSite, admin: Browser, raw: RawConnection, compress: str
) -> None:
    fakesite.faults.update({"dataset_transfer": "chunked", "compress": compress})
    expected = fakesite.dataset_bytes(SERIES, 19, "comments")
    fakesite.faults.update({"truncate_next": 1})
    headers = {**admin.cookie_header(), "Accept-Encoding": "identity"}
    admin.conn.request("GET", DATASET, headers=headers)
    response = admin.conn.getresponse()
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    with pytest.raises(http.client.IncompleteRead) as raised:
        response.read()
    partial = raised.value.partial
    assert 0 < len(partial) < len(expected) and expected.startswith(partial)
    admin.conn.close()
    fakesite.faults.update({"truncate_next": 1})
    cut = raw.get(DATASET, Accept_Encoding="gzip")
    assert cut.status == 200 and cut.chunks and not cut.complete
    assert raw.closed_by_server()
    decoder = zlib.decompressobj(wbits=31) if compress == "gzip" else None
    decoded = decoder.decompress(cut.body) if decoder else cut.body
    assert 0 < len(decoded) < len(expected) and expected.startswith(decoded)
    assert decoder is None or not decoder.eof  # the gzip stream never ended either
    assert fakesite.stats()["dataset_bytes"] == len(partial) + len(cut.body)
    assert admin.get(DATASET).body == expected  # the next answer is whole


def test_transfer_knobs_are_checked_and_set_over_http(
    fakesite: FakeSite, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = fakesite.faults.as_dict()
    assert (defaults["dataset_transfer"], defaults["weak_etag"], defaults["compress"]) == (
        "length",
        False,
        "none",
    )
    bad = [
        ("dataset_transfer", "gzip"),
        ("dataset_transfer", None),
        ("weak_etag", "yes"),
        ("weak_etag", 1),
        ("compress", "deflate"),
        ("compress", True),
    ]
    for name, value in bad:
        with pytest.raises(ValueError, match=f"bad value for {name}"):
            fakesite.faults.update({name: value})
    knobs = {"dataset_transfer": "chunked", "weak_etag": True, "compress": "gzip"}
    headers = {"Content-Type": "application/json"}
    page = browser.request("POST", "/_fakesite/control", json.dumps(knobs).encode(), headers)
    assert page.status == 200 and {k: json.loads(page.body)[k] for k in knobs} == knobs
    refused = json.dumps({"weak_etag": False, "compress": "zstd"}).encode()
    page = browser.request("POST", "/_fakesite/control", refused, headers)
    assert page.status == 400 and "compress" in json.loads(page.body)["error"]
    assert fakesite.faults.weak_etag is True  # a refused update sets nothing
    monkeypatch.setattr(coding, "brotli", None)
    with pytest.raises(ValueError, match="'br' needs the brotli package"):
        fakesite.faults.update({"compress": "br"})
    assert fakesite.faults.compress == "gzip"


def test_cli_sets_the_transfer_knobs() -> None:
    options = ["--dataset-transfer", "chunked", "--weak-etag", "--compress", "gzip"]
    with cli_site(*options) as connection:
        knobs = cli_knobs(connection)
    assert knobs["dataset_transfer"] == "chunked" and knobs["weak_etag"] is True
    assert knobs["compress"] == "gzip"


# In front of the site: HTTPS with a test CA, and the bot wall (the contract's "In front of
# the site: HTTPS and bot protection")


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """Python's own client side: OpenSSL, verifying against ``ca_file`` only."""
    return ssl.create_default_context(cafile=ca_file)


def tls_browser(site: FakeSite, ca_file: Path | None = None) -> Browser:
    """A ``Browser`` on HTTPS (the connection opens at the first request)."""
    browser = Browser(site)
    context = tls_context(ca_file or site.ca_file)
    browser.conn = http.client.HTTPSConnection("127.0.0.1", site.port, timeout=10, context=context)
    return browser


def tls_raw(site: FakeSite, cookie: str) -> RawConnection:
    """A ``RawConnection`` on HTTPS, to see how bodies are framed inside TLS."""
    raw = RawConnection(site, cookie)
    raw.file.close()
    raw.sock = tls_context(site.ca_file).wrap_socket(raw.sock, server_hostname="127.0.0.1")
    raw.file = raw.sock.makefile("rb")
    return raw


def control(browser: Browser, knobs: dict[str, object]) -> Page:
    body = json.dumps(knobs).encode()
    return browser.request("POST", "/_fakesite/control", body, {"Content-Type": "application/json"})


def assert_challenge(status: int, headers: dict[str, str], body: bytes) -> None:
    """Cloudflare's 403 interstitial, as the contract describes it (headers: lower case)."""
    assert status == 403
    assert headers["cf-mitigated"] == "challenge"
    assert headers["content-type"] == "text/html; charset=UTF-8"
    assert headers["cache-control"] == "private, max-age=0, no-store, no-cache, must-revalidate"
    assert Selector(text=body.decode()).css("title::text").get() == "Just a moment..."


def lower_headers(headers: object) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.fixture
def https_site() -> Iterator[FakeSite]:
    with FakeSite(https=True) as site:
        yield site


@pytest.fixture
def walled_site() -> Iterator[FakeSite]:
    with FakeSite(https=True, bot_wall=True) as site:
        yield site


def test_https_serves_the_site_with_the_test_ca(https_site: FakeSite) -> None:
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", https_site.base_url)
    assert https_site.ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    browser = tls_browser(https_site)
    page = browser.get("/sign-in")
    assert page.status == 200 and page.sel.css('form[action="/sign-in"]')
    assert browser.sign_in(page=page).status == 302
    assert browser.get("/admin/organisations").status == 200
    sock = browser.conn.sock
    assert browser.get(DATASET).body == https_site.dataset_bytes(SERIES, 19, "comments")
    assert browser.conn.sock is sock  # kept alive
    stats = json.loads(browser.get("/_fakesite/stats").body)  # control, over TLS too
    assert stats["requests"] == 4 and stats["walled"] == 0
    # One connection, and Python's ssl sends no GREASE.
    assert stats["client_hellos"] == {"grease": 0, "no_grease": 1, "malformed": 0}
    browser.close()
    # A browser offers h2 first: the site speaks HTTP/1.1 only, and says so.
    context = tls_context(https_site.ca_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    plain = socket.create_connection(("127.0.0.1", https_site.port), timeout=10)
    with context.wrap_socket(plain, server_hostname="127.0.0.1") as secure:
        assert secure.selected_alpn_protocol() == "http/1.1"


def test_https_keeps_the_transfer_variants_and_faults(https_site: FakeSite) -> None:
    browser = tls_browser(https_site)
    browser.sign_in()
    https_site.faults.update({"dataset_transfer": "chunked", "compress": "gzip"})
    raw = tls_raw(https_site, browser.cookie_header()["Cookie"])
    answer = raw.get(DATASET, Accept_Encoding="gzip")
    expected = https_site.dataset_bytes(SERIES, 19, "comments")
    assert answer.headers["content-encoding"] == "gzip" and len(answer.chunks) > 1
    assert answer.complete and gzip.decompress(answer.body) == expected
    assert raw.get(DATASET).body == expected  # same connection, kept after the last chunk
    https_site.faults.update({"truncate_next": 1, "compress": "none"})
    cut = raw.get(DATASET)
    assert not cut.complete and raw.closed_by_server()
    raw.close()
    https_site.faults.update({"dataset_transfer": "length", "truncate_next": 1})
    browser.conn.request("GET", DATASET, headers=browser.cookie_header())
    with pytest.raises(http.client.IncompleteRead):
        browser.conn.getresponse().read()
    browser.close()
    https_site.faults.update({"fail_next": 1, "fail_with": 429})
    assert browser.get("/admin/organisations").status == 429
    assert browser.get("/admin/organisations").status == 200
    stats = https_site.stats()
    assert stats["dataset_chunked"] == 3 and stats["dataset_codings"]["gzip"] == 1
    browser.close()


def test_bot_wall_refuses_python_ssl_even_signed_in(https_site: FakeSite) -> None:
    browser = tls_browser(https_site)
    browser.sign_in()
    page = control(browser, {"bot_wall": True})
    assert page.status == 200 and json.loads(page.body)["bot_wall"] is True
    # The same connection, with a valid session cookie: refused from its next request on.
    for path in ("/sign-in", "/admin/organisations", DATASET):
        page = browser.get(path)
        assert_challenge(page.status, lower_headers(page.headers), page.body)
    assert browser.request("HEAD", "/sign-in").status == 403
    stats = https_site.stats()
    assert stats["walled"] == 4 and stats["by_status"]["403"] == 4
    assert stats["log"][-1] == ("HEAD", "/sign-in", 403)
    assert stats["by_kind"]["dataset"] == 0 and stats["dataset_bytes"] == 0
    control(browser, {"bot_wall": False})
    assert browser.get("/admin/organisations").status == 200  # still signed in
    browser.close()


@pytest.mark.parametrize(
    ("impersonate", "grease"),
    [
        ("chrome", True),
        ("safari", True),
        (None, False),  # curl_cffi on its own: BoringSSL without GREASE
        # Firefox's NSS sends no GREASE: stricter than Cloudflare, which lets Firefox in.
        ("firefox", False),
    ],
)
def test_bot_wall_lets_in_only_clients_that_send_grease(
    walled_site: FakeSite, impersonate: str | None, grease: bool
) -> None:
    response = creq.get(
        walled_site.url("/sign-in"), impersonate=impersonate, verify=str(walled_site.ca_file)
    )
    hellos = walled_site.stats()["client_hellos"]
    assert hellos == {"grease": int(grease), "no_grease": int(not grease), "malformed": 0}
    if grease:
        assert response.status_code == 200 and "authenticity_token" in response.text
    else:
        assert_challenge(response.status_code, lower_headers(response.headers), response.content)


def test_chrome_impersonation_signs_in_and_downloads_through_the_wall(
    walled_site: FakeSite,
) -> None:
    session = creq.Session(impersonate="chrome", verify=str(walled_site.ca_file))
    form = Selector(text=session.get(walled_site.url("/sign-in")).text)
    fields = {
        i.attrib["name"]: i.attrib.get("value", "")
        for i in form.css('form[action="/sign-in"] input[type=hidden]')
    }
    fields |= {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    signed_in = session.post(walled_site.url("/sign-in"), data=fields, allow_redirects=False)
    assert signed_in.status_code == 302
    dataset = session.get(walled_site.url(DATASET))
    assert dataset.status_code == 200
    assert dataset.content == walled_site.dataset_bytes(SERIES, 19, "comments")
    session.close()
    assert walled_site.stats()["walled"] == 0


@pytest.mark.parametrize(
    ("certificate", "trust_other_ca", "reason"),
    [
        ("expired", False, "certificate has expired"),
        ("wrong_host", False, "mismatch"),
        ("good", True, "unable to get local issuer certificate"),
    ],
)
def test_certificates_that_python_ssl_rejects(
    certificate: str, trust_other_ca: bool, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeSite(https=True, certificate=certificate) as site:
        assert site.pki is not None
        ca_file = site.pki.other_ca_file if trust_other_ca else site.ca_file
        browser = tls_browser(site, ca_file)
        with pytest.raises(ssl.SSLCertVerificationError, match=reason):
            browser.get("/sign-in")
        browser.close()
        if certificate == "good":
            assert tls_browser(site).get("/sign-in").status == 200  # the right CA passes
        else:
            assert site.stats()["requests"] == 0
    # A client refusing the certificate is no server error.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("certificate", ["expired", "wrong_host"])
def test_certificates_that_curl_cffi_rejects(certificate: str) -> None:
    with FakeSite(https=True, certificate=certificate) as site:
        with pytest.raises(creq.exceptions.CertificateVerifyError):
            creq.get(site.url("/sign-in"), impersonate="chrome", verify=str(site.ca_file))
        assert site.stats()["client_hellos"]["grease"] == 1


def test_https_connection_without_a_client_hello_is_closed(https_site: FakeSite) -> None:
    plain = socket.create_connection(("127.0.0.1", https_site.port), timeout=10)
    plain.sendall(b"GET /sign-in HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert plain.recv(100) == b""  # plain HTTP on the HTTPS port: closed unanswered
    plain.close()
    cut = socket.create_connection(("127.0.0.1", https_site.port), timeout=10)
    cut.sendall(client_hello_record([0x1301])[:20])
    cut.shutdown(socket.SHUT_WR)  # the rest of the record will never come
    assert cut.recv(100) == b""
    cut.close()
    assert https_site.stats()["client_hellos"] == {"grease": 0, "no_grease": 0, "malformed": 2}
    assert tls_browser(https_site).get("/sign-in").status == 200


def test_tls_options_and_the_bot_wall_knob_are_checked(
    fakesite: FakeSite, browser: Browser, https_site: FakeSite
) -> None:
    for options in ({"bot_wall": True}, {"certificate": "expired"}, {"tls_dir": "/tmp"}):
        with pytest.raises(ValueError, match="need https=True"):
            FakeSite(**options)
    with pytest.raises(ValueError, match="certificate must be one of"):
        FakeSite(https=True, certificate="self-signed")
    with pytest.raises(RuntimeError, match="not running on HTTPS"):
        fakesite.ca_file  # noqa: B018
    assert fakesite.faults.bot_wall is False
    page = control(browser, {"bot_wall": True})  # plain HTTP: there is no ClientHello
    assert page.status == 400 and "needs the site on HTTPS" in json.loads(page.body)["error"]
    secure = tls_browser(https_site)
    page = control(secure, {"bot_wall": "yes"})
    assert page.status == 400 and "bot_wall" in json.loads(page.body)["error"]
    assert https_site.faults.bot_wall is False
    secure.close()


def test_pki_files_and_variants(tmp_path: Path) -> None:
    pkis = {variant: make_pki(tmp_path / variant, variant) for variant in CERTIFICATES}
    good = pkis["good"]
    ca = x509.load_pem_x509_certificate(good.ca_file.read_bytes())
    leaf = x509.load_pem_x509_certificate(good.cert_file.read_bytes())
    # Elliptic-curve keys: made in milliseconds, where RSA keys would slow every test's site.
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    other = x509.load_pem_x509_certificate(good.other_ca_file.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    leaf.verify_directly_issued_by(ca)
    with pytest.raises(ValueError):  # the other CA's name is not the issuer's
        leaf.verify_directly_issued_by(other)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    expired = x509.load_pem_x509_certificate(pkis["expired"].cert_file.read_bytes())
    assert expired.not_valid_after_utc < datetime.now(UTC)
    wrong = x509.load_pem_x509_certificate(pkis["wrong_host"].cert_file.read_bytes())
    wrong_names = wrong.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(wrong_names) == [x509.DNSName("example.invalid")]
    # The key goes with the certificate (load_cert_chain checks that).
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        good.cert_file, good.key_file
    )


def client_hello_record(suites: list[int], session_id: bytes = b"\x5a" * 32) -> bytes:
    """A TLS record with a ClientHello offering ``suites``, as a client would send it."""
    body = b"".join(
        [
            b"\x03\x03" + bytes(range(32)),  # legacy_version TLS 1.2, random
            bytes([len(session_id)]) + session_id,
            struct.pack("!H", 2 * len(suites)) + b"".join(struct.pack("!H", s) for s in suites),
            b"\x01\x00",  # compression methods: null only
            struct.pack("!H", 4) + b"\x00\x17\x00\x00",  # extensions: extended_master_secret
        ]
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def test_client_hello_parser() -> None:
    assert {int(f"{d}A{d}A", 16) for d in "0123456789ABCDEF"} == wall.GREASE
    plain = wall.parse_client_hello(client_hello_record([0x1301, 0x1302, 0xC02F]))
    assert plain.cipher_suites == (0x1301, 0x1302, 0xC02F) and not plain.grease
    assert plain.version == 0x0303 and plain.session_id == b"\x5a" * 32
    greasy = wall.parse_client_hello(client_hello_record([0x3A3A, 0x1301], session_id=b""))
    assert greasy.grease and greasy.cipher_suites == (0x3A3A, 0x1301)
    for near_miss in (0x0A1A, 0x0B0B, 0xAAAB, 0x00FF):
        assert not wall.parse_client_hello(client_hello_record([near_miss])).grease
    # A ClientHello going on in a second record: parsed from the first as far as the suites.
    record = bytearray(client_hello_record([0xDADA]))
    record[6:9] = (len(record) + 100).to_bytes(3, "big")
    assert wall.parse_client_hello(bytes(record)).grease
    whole = client_hello_record([0x1301, 0x2A2A])
    refused = {
        "truncated record": whole[:-1],
        "truncated record header": whole[:4],
        "not a handshake record": b"GET / HTTP/1.1\r\n",
        "bad record length": b"\x16\x03\x01\x00\x00",
        # A record that is whole, but whose ClientHello stops inside the cipher suites.
        "cut short": b"\x16\x03\x01\x00\x2c" + whole[5:49],
        "not a ClientHello": whole[:5] + b"\x02" + whole[6:],
    }
    for message, data in refused.items():
        with pytest.raises(wall.MalformedHello, match=message):
            wall.parse_client_hello(data)


HTTPS_OPTIONS = ("--https", "--bot-wall")


def test_cli_serves_https_behind_the_bot_wall() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fakesite", "--port", "0", "--rows", "3", *HTTPS_OPTIONS],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        serving = re.match(
            r"FakeSite serving https://127\.0\.0\.1:(\d+) ", process.stdout.readline()
        )
        assert serving
        port = int(serving[1])
        ca_file = Path(re.fullmatch(r"CA certificate: (.+)\n", process.stdout.readline())[1])
        context = tls_context(ca_file)
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        connection.request("GET", "/sign-in")
        response = connection.getresponse()
        assert_challenge(response.status, lower_headers(response.headers), response.read())
        connection.request("GET", "/_fakesite/control")
        assert json.loads(connection.getresponse().read())["bot_wall"] is True
        connection.close()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert not ca_file.exists()  # the temporary folder went with the site
    refused = subprocess.run(
        [sys.executable, "-m", "fakesite", "--port", "0", "--bot-wall"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2 and "need https=True" in refused.stderr


# Pages built by script and the script challenge, in a real browser (the contract's "Pages
# built by script (client-side rendering)" and "In front of the site"): headless Chromium
# driven by Playwright.

CHROMIUM = "/usr/bin/chromium"  # Debian's: Playwright's own browser download is not used
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
RUNS_PATH = "/admin/organisations/exampleton/runs"  # two pages, with every edge case
TRICKY_RUNS_PATH = "/admin/organisations/tricky-institute/runs"  # one page
TRICKY_TITLE = 'Data/Society: Ethics & "Open" Data — the “Learner’s” Café ☕ 📊'
DONE = '[data-source][aria-busy="false"]'  # a script-built page, complete
API_CALLS = "**/admin/api/**"  # the JSON a script-built page fetches
T = TypeVar("T")


class Chromium:
    """Headless Chromium, driven through Playwright's async API on a loop in its own thread.

    The tests run inside pytest-twisted's asyncio loop (``--reactor=asyncio``), where
    Playwright's sync API refuses to start, and which turns only while a test waits on a
    Deferred. On a loop of its own the browser serves plain tests: ``run(coroutine)``.
    """

    def __init__(self, pinned_keys: list[str]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._playwright = self.run(async_playwright().start())
        # Certificates are checked as usual, but for the keys pinned here (the sites' own).
        pins = f"--ignore-certificate-errors-spki-list={','.join(pinned_keys)}"
        launch = self._playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, pins]
        )
        self.browser: PlaywrightBrowser = self.run(launch)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coroutine`` on the browser's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        self.run(self.browser.close())
        self.run(self._playwright.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def spki_pin(site: FakeSite) -> str:
    """What ``--ignore-certificate-errors-spki-list`` takes for the site's certificate (the
    base64 SHA-256 of its SubjectPublicKeyInfo), once its chain to the test CA verifies."""
    assert site.pki is not None
    ca = x509.load_pem_x509_certificate(site.pki.ca_file.read_bytes())
    leaf = x509.load_pem_x509_certificate(site.pki.cert_file.read_bytes())
    local = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    PolicyBuilder().store(Store([ca])).build_server_verifier(local).verify(leaf, [])
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def pinned_site() -> Iterator[FakeSite]:
    """An HTTPS site behind the bot wall whose certificate ``chromium`` trusts: made once,
    since Chromium takes the pin at launch."""
    with FakeSite(https=True, bot_wall=True) as site:
        yield site


@pytest.fixture(scope="module")
def chromium(pinned_site: FakeSite) -> Iterator[Chromium]:
    browser = Chromium([spki_pin(pinned_site)])
    yield browser
    browser.close()


@asynccontextmanager
async def tab(chromium: Chromium, site: FakeSite, session: str | None = None) -> AsyncIterator[Tab]:
    """A page in a browser context of its own (cookies and all), signed in as ``session``."""
    context = await chromium.browser.new_context()
    try:
        if session is not None:
            cookie = {"name": SESSION_COOKIE, "value": session, "url": site.base_url + "/"}
            await context.add_cookies([cookie])
        yield await context.new_page()
    finally:
        await context.close()


@dataclass
class Rendered:
    url: str
    at_load: str  # the document right after its load event
    complete: str  # ... once it is complete (the same, for a server-rendered page)
    # The markup flsync reads, as Chromium serialises it: the runs table's body, the
    # pagination and the dataset list (None: not on the page).
    fragments: dict[str, str | None]


FRAGMENTS_JS = """() => {
  const html = (selector, property) => document.querySelector(selector)?.[property] ?? null;
  return {
    runs: html("table.m-table--runs tbody", "innerHTML"),
    pagination: html("nav.pagination", "outerHTML"),
    datasets: html("ul.m-datasets", "innerHTML"),
  };
}"""


async def render(page: Tab, url: str, *, script: bool, hold_json: bool = False) -> Rendered:
    """Open ``url``: the document at its load event and, once complete, what flsync reads.
    ``hold_json``: the page's JSON calls wait until the document at its load event is read,
    so that it is the page as served however late the read comes on a busy machine."""
    read = asyncio.Event()

    async def held(route: Any) -> None:
        await read.wait()
        await route.fallback()

    if hold_json:
        await page.route(API_CALLS, held)
    await page.goto(url, wait_until="load")
    at_load = await page.content()  # before anything else: no time for the script to start
    read.set()
    if script:
        await page.wait_for_selector(DONE, state="attached", timeout=10_000)
    if hold_json:
        await page.unroute(API_CALLS, held)
    return Rendered(url, at_load, await page.content(), await page.evaluate(FRAGMENTS_JS))


def read_page(url: str, html: str | bytes) -> tuple[list[RunListing], str | None, list]:
    """What flsync reads from a page: its runs, the next page and the datasets."""
    body = html.encode() if isinstance(html, str) else html
    response = HtmlResponse(url=url, body=body, encoding="utf-8")
    return parse_runs_page(response), next_page_url(response), parse_datasets(response).links


def shell_of(html: str) -> Selector:
    """The element a shell page's script fills."""
    return Selector(text=html).css("[data-source][aria-busy]")


SCRIPT_PAGES = {
    RUNS_PATH: (25, True),  # (runs or datasets, whether there is a next page)
    RUNS_PATH + "?page=2": (11, False),  # the last page: a previous link, no next
    TRICKY_RUNS_PATH: (9, False),  # one page: no pagination at all
    f"/admin/courses/{SERIES}/19/stats-dashboard": (12, False),
    "/admin/courses/data-society-ethics/2/stats-dashboard": (11, False),
    f"/admin/courses/{SERIES}/22/stats-dashboard": (0, False),  # upcoming: none
}


def test_script_pages_render_what_the_server_renders(
    fakesite: FakeSite, admin: Browser, chromium: Chromium
) -> None:
    urls = [fakesite.url(path) for path in SCRIPT_PAGES]
    served = {
        url: read_page(url, admin.get(url.removeprefix(fakesite.base_url)).body) for url in urls
    }
    session = admin.cookies[SESSION_COOKIE]

    async def open_all(script: bool) -> list[Rendered]:
        # All at once, each in a page of its own in one context: twice as fast as in turn.
        async with tab(chromium, fakesite, session) as first:
            pages = [first, *[await first.context.new_page() for _ in urls[1:]]]
            opened = zip(pages, urls, strict=True)
            renders = (render(page, url, script=script, hold_json=script) for page, url in opened)
            return await asyncio.gather(*renders)

    rendered = chromium.run(open_all(script=False))
    # Six pages at once on a busy machine: the read right after a load event may come a second
    # later, so their JSON waits for it (hold_json), and the script need not wait to start.
    fakesite.faults.update({"script_pages": True, "script_delay_ms": 0})
    scripted = chromium.run(open_all(script=True))
    expected = SCRIPT_PAGES.values()
    for (count, has_next), plain, built in zip(expected, rendered, scripted, strict=True):
        url = built.url
        runs, next_url, datasets = served[url]
        assert len(runs if "/runs" in url else datasets) == count, url
        assert (next_url is not None) == has_next, url
        assert read_page(url, plain.complete) == served[url], url  # Chromium's own parse
        # At the load event: the shell, with nothing in it for a parser to find.
        assert read_page(url, built.at_load) == ([], None, []), url
        shell = shell_of(built.at_load)
        assert shell.attrib["aria-busy"] == "true", url
        assert shell.attrib["data-source"].startswith("/admin/api/"), url
        assert not shell.css("tbody tr, li"), url
        at_load = Selector(text=built.at_load)
        assert "needs JavaScript" in at_load.css("noscript").get(), url
        assert at_load.css('meta[name="csrf-token"]::attr(content)').get(), url
        # Complete: the same runs, links, titles, dates, flags, pages and datasets...
        assert read_page(url, built.complete) == served[url], url
        assert shell_of(built.complete).attrib.get("data-error") is None, url
        # ... and the very same markup, as Chromium serialises either.
        assert built.fragments == plain.fragments, url
    titles = {run.course_title for run in served[urls[0]][0]}
    assert TRICKY_TITLE in titles  # quotes, &, /, Unicode and emoji, come out exactly
    stats = fakesite.stats()
    assert stats["by_kind"]["api"] == len(urls)
    assert stats["by_kind"]["runs"] == stats["by_kind"]["dashboard"] == 2 * 3 + 3


def test_script_page_shows_data_error_when_its_json_fails(
    fakesite: FakeSite, admin: Browser, chromium: Chromium
) -> None:
    fakesite.faults.update({"script_pages": True, "script_delay_ms": 0, "script_error_next": 1})
    dashboard = fakesite.url(f"/admin/courses/{SERIES}/19/stats-dashboard")

    async def scenario(session: str) -> list[Rendered]:
        async with tab(chromium, fakesite, session) as page:
            failed = await render(page, fakesite.url(RUNS_PATH), script=True)
            again = await render(page, fakesite.url(RUNS_PATH), script=True)  # counted down
            fakesite.faults.update({"fail_next": 1, "fail_path": "^/admin/api/"})
            unavailable = await render(page, dashboard, script=True)  # a 503 in front
            await page.route("**/admin/api/**", lambda route: route.abort())
            cut_off = await render(page, dashboard, script=True)  # no answer at all
            return [failed, again, unavailable, cut_off]

    failed, again, unavailable, cut_off = chromium.run(scenario(admin.cookies[SESSION_COOKIE]))
    assert shell_of(failed.complete).attrib["data-error"] == "HTTP 500"
    assert read_page(failed.url, failed.complete) == ([], None, [])  # no rows, no next page
    assert failed.fragments == {"runs": "", "pagination": None, "datasets": None}
    assert len(read_page(again.url, again.complete)[0]) == 25
    assert shell_of(unavailable.complete).attrib["data-error"] == "HTTP 503"
    assert unavailable.fragments["datasets"] == ""
    assert shell_of(cut_off.complete).attrib["data-error"] == "Failed to fetch"
    # A session that expires between the page and its JSON: the page is served, the JSON
    # refused as signed out (401, not the pages' redirect).
    admin.sign_in()
    fakesite.faults.update({"expire_session_after": 1})

    async def expiring(session: str) -> Rendered:
        async with tab(chromium, fakesite, session) as page:
            return await render(page, fakesite.url(RUNS_PATH), script=True)

    expired = chromium.run(expiring(admin.cookies[SESSION_COOKIE]))
    assert shell_of(expired.complete).attrib["data-error"] == "HTTP 401"
    assert read_page(expired.url, expired.complete)[0] == []
    api = [(path, status) for _, path, status in fakesite.stats()["log"] if "/admin/api/" in path]
    assert [status for _, status in api] == [500, 200, 503, 401]
    assert fakesite.stats()["by_kind"]["api"] == 4


def test_script_page_that_never_completes(
    fakesite: FakeSite, admin: Browser, chromium: Chromium
) -> None:
    fakesite.faults.update({"script_pages": True, "script_delay_ms": 0, "script_never_next": 1})

    async def scenario(session: str) -> tuple[str, Rendered]:
        async with tab(chromium, fakesite, session) as page:
            await page.goto(fakesite.url(RUNS_PATH), wait_until="load")
            with pytest.raises(PlaywrightTimeout):
                await page.wait_for_selector(DONE, state="attached", timeout=700)
            stuck = await page.content()
            return stuck, await render(page, fakesite.url(RUNS_PATH), script=True)

    stuck, next_one = chromium.run(scenario(admin.cookies[SESSION_COOKIE]))
    assert shell_of(stuck).attrib["aria-busy"] == "true"
    assert read_page(fakesite.url(RUNS_PATH), stuck) == ([], None, [])
    assert len(read_page(next_one.url, next_one.complete)[0]) == 25  # only the next N
    assert fakesite.stats()["by_kind"]["api"] == 1  # the stuck page never asked
    assert fakesite.faults.script_never_next == 0


def api_get(client: Browser, source: str, token: str | None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"} | ({"X-CSRF-Token": token} if token else {})
    page = client.request("GET", source, headers=headers)
    assert page.headers["Content-Type"] == "application/json; charset=utf-8"
    return page.status, json.loads(page.body)


def test_script_json_needs_the_signed_in_session_and_its_csrf_token(
    fakesite: FakeSite, admin: Browser
) -> None:
    fakesite.faults.update({"script_pages": True})
    shell = admin.get(RUNS_PATH).sel
    source = shell.css("table.m-table--runs::attr(data-source)").get()
    token = shell.css('meta[name="csrf-token"]::attr(content)').get()
    assert source == "/admin/api/organisations/exampleton/runs?page=1" and token
    assert not shell.css("tr.m-run") and not shell.css("nav.pagination")
    status, data = api_get(admin, source, token)
    assert status == 200 and len(data["runs"]) == 25
    assert data["pages"] == {"current": 1, "count": 2, "url": RUNS_PATH}
    tricky = next(run for run in data["runs"] if run["title"] == TRICKY_TITLE)
    assert tricky["url"] == "/admin/courses/data-society-ethics/2"
    assert tricky["start"] == {"order": "2023-10-02", "text": "2 Oct 2023"}
    assert tricky["flags"] == [{"flag": "finished", "label": "Finished"}]
    assert api_get(admin, source, None) == (422, {"error": "Invalid authenticity token."})
    assert api_get(admin, source, token[::-1])[0] == 422
    signed_out = Browser(fakesite)
    assert api_get(signed_out, source, token)[0] == 401  # no session: 401, not a redirect
    other = Browser(fakesite)
    other.sign_in()
    assert api_get(other, source, token)[0] == 422  # a token is good for its session only
    dashboard = admin.get(f"/admin/courses/{SERIES}/19/stats-dashboard").sel
    datasets_source = dashboard.css("ul.m-datasets::attr(data-source)").get()
    assert datasets_source == f"/admin/api/courses/{SERIES}/19/datasets"
    status, data = api_get(admin, datasets_source, token)
    assert status == 200 and data["datasets"][1] == {
        "name": "comments",
        "label": "Comments",
        "url": f"/admin/courses/{SERIES}/19/stats-dashboard/data/comments",
    }
    assert api_get(admin, source.replace("page=1", "page=3"), token)[0] == 404
    # Everything else stays server-rendered.
    assert admin.get(f"/admin/courses/{SERIES}/19").sel.css("dl.m-metadata")
    assert admin.get("/admin/organisations").sel.css("ul.m-organisation-list li")
    # A sign-in renews the token; the JSON calls count against the session like any /admin
    # request: here the refused one, the page and the next one, then the session expires.
    admin.sign_in()
    assert api_get(admin, source, token)[0] == 422
    fakesite.faults.update({"expire_session_after": 3})
    fresh = admin.get(RUNS_PATH).sel.css('meta[name="csrf-token"]::attr(content)').get()
    assert api_get(admin, source, fresh)[0] == 200
    assert api_get(admin, source, fresh)[0] == 401  # expired
    stats = fakesite.stats()
    assert stats["by_kind"]["api"] == 10 and stats["by_status"]["422"] == 4


def test_script_knobs_over_http_and_from_the_cli(fakesite: FakeSite, browser: Browser) -> None:
    knobs = {"script_pages": True, "script_delay_ms": 50, "script_error_next": 2}
    knobs |= {"script_never_next": 1, "script_challenge": True, "challenge_pass_seconds": 2.5}
    page = control(browser, knobs)  # the challenge works on plain HTTP too
    assert page.status == 200 and {k: json.loads(page.body)[k] for k in knobs} == knobs
    bad = [
        {"script_pages": "yes"},
        {"script_delay_ms": -1},
        {"script_error_next": 1.5},
        {"script_never_next": -1},
        {"script_challenge": 1},
        {"challenge_pass_seconds": 0},
    ]
    for values in bad:
        page = control(browser, values)
        assert page.status == 400 and next(iter(values)) in json.loads(page.body)["error"]
    options = ["--script-pages", "--script-delay-ms", "75", "--script-challenge"]
    options += ["--challenge-pass-seconds", "60"]
    with cli_site(*options) as connection:
        knobs = cli_knobs(connection)
        connection.request("GET", "/sign-in")
        response = connection.getresponse()
        assert_challenge(response.status, lower_headers(response.headers), response.read())
    assert knobs["script_pages"] is True and knobs["script_delay_ms"] == 75
    assert knobs["script_challenge"] is True and knobs["challenge_pass_seconds"] == 60


def solve(client: Browser, nonce: str, answer: object) -> Page:
    body = json.dumps({"nonce": nonce, "answer": answer}).encode()
    return client.request("POST", SOLVE_PATH, body, {"Content-Type": "application/json"})


def nonce_of(page: Page) -> str:
    return re.search(r'const nonce = "([0-9a-f]+)"', page.text)[1]


def test_script_challenge_stops_clients_that_run_no_script(
    fakesite: FakeSite, admin: Browser
) -> None:
    fakesite.faults.update({"script_challenge": True})
    for path in ("/", "/sign-in", "/admin/organisations", DATASET):
        page = admin.get(path)  # signed in, but no clearance
        assert_challenge(page.status, lower_headers(page.headers), page.body)
        assert SOLVE_PATH in page.sel.css("script::text").get()
        assert "cf_clearance" not in (page.headers.get("Set-Cookie") or "")
    assert admin.request("HEAD", "/sign-in").status == 403
    made_up = admin.get("/sign-in", Cookie="cf_clearance=made-up")
    assert made_up.status == 403
    page = admin.get("/admin/organisations")
    nonce = nonce_of(page)
    assert solve(admin, nonce, challenge.solution(nonce) ^ 1).status == 403  # wrong answer
    assert solve(admin, nonce, challenge.solution(nonce)).status == 403  # a nonce serves once
    assert solve(admin, "0" * 32, challenge.solution("0" * 32)).status == 403  # not handed out
    assert (
        admin.request("POST", SOLVE_PATH, b"{", {"Content-Type": "application/json"}).status == 400
    )
    stats = fakesite.stats()
    assert stats["challenged"] == 7 and stats["passes"] == 0
    assert stats["by_kind"]["dataset"] == 0 and stats["dataset_bytes"] == 0
    assert stats["log"][-1] == ("POST", SOLVE_PATH, 400)
    fakesite.faults.update({"script_challenge": False})
    assert admin.get("/admin/organisations").status == 200  # the session was never touched


async def pass_challenge(chromium: Chromium, site: FakeSite, path: str, session: str | None):
    """Open ``path`` in a fresh context: the first answer's status and headers, then the
    page reached through the challenge, the clearance cookie and the browser's User-Agent."""
    async with tab(chromium, site, session) as page:
        first = await page.goto(site.url(path), wait_until="commit")
        await page.wait_for_selector("h1.m-action-bar__title", timeout=10_000)
        cookies = await page.context.cookies()
        clearance = next(c for c in cookies if c["name"] == challenge.CLEARANCE_COOKIE)
        user_agent = await page.evaluate("navigator.userAgent")
        return first.status, await first.all_headers(), await page.content(), clearance, user_agent


def with_clearance(site: FakeSite, path: str, cookies: str, user_agent: str | None) -> Page:
    """GET with these cookies and User-Agent (None: none), as a plain client."""
    client = Browser(site)
    headers = {"Cookie": cookies} | ({"User-Agent": user_agent} if user_agent else {})
    page = client.request("GET", path, headers=headers)
    client.close()
    return page


def test_chromium_passes_the_script_challenge_for_its_user_agent_only(
    fakesite: FakeSite, admin: Browser, chromium: Chromium
) -> None:
    fakesite.faults.update({"script_challenge": True})
    session = admin.cookies[SESSION_COOKIE]
    status, headers, html, clearance, user_agent = chromium.run(
        pass_challenge(chromium, fakesite, TRICKY_RUNS_PATH, session)
    )
    assert status == 403 and headers["cf-mitigated"] == "challenge"
    assert len(read_page(fakesite.url(TRICKY_RUNS_PATH), html)[0]) == 9  # then the page
    assert clearance["httpOnly"] and clearance["path"] == "/" and clearance["sameSite"] == "Lax"
    assert clearance["secure"] is False  # plain HTTP
    assert "HeadlessChrome" in user_agent
    stats = fakesite.stats()
    assert stats["passes"] == 1 and stats["challenged"] >= 1
    # The clearance is the browser's User-Agent's: a plain client sending both gets in...
    cookies = f"{challenge.CLEARANCE_COOKIE}={clearance['value']}; {SESSION_COOKIE}={session}"
    page = with_clearance(fakesite, TRICKY_RUNS_PATH, cookies, user_agent)
    assert page.status == 200 and len(page.sel.css("tr.m-run")) == 9
    # ... but not with another User-Agent, or none.
    for other in ("python-requests/2.32", user_agent.replace("HeadlessChrome", "Chrome"), None):
        page = with_clearance(fakesite, TRICKY_RUNS_PATH, cookies, other)
        assert_challenge(page.status, lower_headers(page.headers), page.body)
    assert fakesite.stats()["passes"] == 1


def test_script_challenge_pass_expires(
    fakesite: FakeSite, admin: Browser, chromium: Chromium
) -> None:
    # A pass for a minute, for a plain client to see it hold whatever the machine's load.
    fakesite.faults.update({"script_challenge": True, "challenge_pass_seconds": 60})
    session = admin.cookies[SESSION_COOKIE]
    _, _, _, held, user_agent = chromium.run(
        pass_challenge(chromium, fakesite, "/admin/organisations", session)
    )
    held_cookies = f"{challenge.CLEARANCE_COOKIE}={held['value']}; {SESSION_COOKIE}={session}"
    assert with_clearance(fakesite, "/admin/organisations", held_cookies, user_agent).status == 200
    # Then one for two seconds, to wait out: it held for the browser's own reload (one pass,
    # not a challenge again), and then no more.
    fakesite.faults.update({"challenge_pass_seconds": 2})
    status, _, _, clearance, _ = chromium.run(
        pass_challenge(chromium, fakesite, "/admin/organisations", session)
    )
    passed = time.monotonic()  # the pass was earned before now
    assert status == 403 and fakesite.stats()["passes"] == 2
    cookies = f"{challenge.CLEARANCE_COOKIE}={clearance['value']}; {SESSION_COOKIE}={session}"
    time.sleep(max(0.0, passed + 2 - time.monotonic()))  # by then it has run out
    page = with_clearance(fakesite, "/admin/organisations", cookies, user_agent)
    assert_challenge(page.status, lower_headers(page.headers), page.body)
    # A pass lasts as long as the knob said when it was earned, whatever it says later.
    assert with_clearance(fakesite, "/admin/organisations", held_cookies, user_agent).status == 200
    status, _, html, renewed, _ = chromium.run(
        pass_challenge(chromium, fakesite, "/admin/organisations", session)
    )
    assert status == 403 and renewed["value"] != clearance["value"]
    assert Selector(text=html).css("ul.m-organisation-list li")
    assert fakesite.stats()["passes"] == 3


def reset(site: FakeSite, **knobs: object) -> None:
    """The module's site as new: every knob at its default (but the wall up), no stats."""
    site.faults.update({**Faults().as_dict(), "bot_wall": True, **knobs})
    site.reset_stats()


def test_chromium_through_the_wall_and_the_challenge_over_https(
    pinned_site: FakeSite, chromium: Chromium
) -> None:
    site = pinned_site
    # Every cookie value stays valid, and a new one comes with each answer: the browser
    # keeps up, a plain client holding its values too.
    reset(site, script_challenge=True, script_pages=True, session_cookie="every_answer")
    plain = tls_browser(site)  # Python's ssl: refused by the wall, before any challenge
    page = plain.get("/sign-in")
    assert_challenge(page.status, lower_headers(page.headers), page.body)
    plain.close()
    verify = str(site.ca_file)
    response = creq.get(site.url("/sign-in"), impersonate="chrome", verify=verify)
    assert_challenge(response.status_code, lower_headers(response.headers), response.content)
    assert site.stats()["walled"] == 1 and site.stats()["challenged"] == 1  # no script run

    async def scenario() -> tuple[int, Rendered, list[dict], str]:
        async with tab(chromium, site) as page:
            first = await page.goto(site.url(TRICKY_RUNS_PATH), wait_until="commit")
            # Through the challenge, then sent to sign in: done in the form, as a person would.
            await page.wait_for_selector('form[action="/sign-in"]', timeout=10_000)
            await page.fill("#user_email", ADMIN_EMAIL)
            await page.fill("#user_password", ADMIN_PASSWORD)
            await page.click('input[type="submit"]')
            await page.wait_for_url("**/your-courses")
            rendered = await render(page, site.url(TRICKY_RUNS_PATH), script=True)
            user_agent = await page.evaluate("navigator.userAgent")
            return first.status, rendered, await page.context.cookies(), user_agent

    status, rendered, cookies, user_agent = chromium.run(scenario())
    assert status == 403
    runs = read_page(rendered.url, rendered.complete)[0]
    assert [run.course_title for run in runs] == [
        run.course_title for run in site.data.organisation("tricky-institute").runs
    ]
    clearance = next(c for c in cookies if c["name"] == challenge.CLEARANCE_COOKIE)
    assert clearance["secure"] and clearance["httpOnly"]
    stats = site.stats()
    assert stats["passes"] == 1 and stats["walled"] == 1  # Chromium sends GREASE
    assert stats["client_hellos"]["grease"] >= 2 and stats["by_kind"]["api"] == 1
    # curl_cffi as Chrome, with the browser's cookies and User-Agent: the shell, and its JSON.
    jar = "; ".join(f"{c['name']}={c['value']}" for c in cookies)
    assert len(as_chrome(site, TRICKY_RUNS_PATH, jar, user_agent)["runs"]) == 9
    with pytest.raises(AssertionError, match="403"):
        as_chrome(site, TRICKY_RUNS_PATH, jar, "curl/8.5.0")


def as_chrome(site: FakeSite, path: str, cookies: str, user_agent: str) -> Any:
    """The JSON behind the shell at ``path``, fetched as curl_cffi impersonating Chrome."""
    verify, same = str(site.ca_file), {"Cookie": cookies, "User-Agent": user_agent}
    shell = creq.get(site.url(path), impersonate="chrome", verify=verify, headers=same)
    assert shell.status_code == 200, shell.status_code
    selector = Selector(text=shell.text)
    assert selector.css("table.m-table--runs::attr(aria-busy)").get() == "true"
    assert not selector.css("tr.m-run")
    source = selector.css("table.m-table--runs::attr(data-source)").get()
    token = selector.css('meta[name="csrf-token"]::attr(content)').get()
    headers = same | {"X-CSRF-Token": token}
    data = creq.get(site.url(source), impersonate="chrome", verify=verify, headers=headers)
    assert data.status_code == 200
    return data.json()


def test_chromium_trusts_only_the_pinned_certificate(chromium: Chromium) -> None:
    # Another site, with a test CA of its own: Chromium refuses it, as it would any site.
    with FakeSite(https=True) as unpinned:

        async def refused() -> None:
            async with tab(chromium, unpinned) as page:
                with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                    await page.goto(unpinned.url("/sign-in"))

        chromium.run(refused())
        assert unpinned.stats()["requests"] == 0


# Changes beyond the contract, as FutureLearn has made them (markup_change, extra_column)


def test_markup_changes_render_one_part_in_another_form(fakesite: FakeSite, admin: Browser) -> None:
    runs, dashboard = (
        "/admin/organisations/exampleton/runs",
        f"/admin/courses/{SERIES}/19/stats-dashboard",
    )
    organisations = admin.get("/admin/organisations").sel
    listing, datasets = admin.get(runs).sel, admin.get(dashboard).sel
    orgs_links = organisations.css("ul.m-organisation-list li a::attr(href)").getall()
    orders = listing.css("td.m-run__start::attr(data-order)").getall()
    dataset_links = datasets.css("ul.m-datasets a.m-datasets__link::attr(href)").getall()
    assert len(orgs_links) == 2 and len(orders) == 25 and len(dataset_links) == 12

    fakesite.faults.update({"markup_change": "organisations_class"})
    changed = admin.get("/admin/organisations").sel
    assert not changed.css("ul.m-organisation-list")
    assert changed.css("ul.m-org-index li a::attr(href)").getall() == orgs_links

    fakesite.faults.update({"markup_change": "runs_class"})
    changed = admin.get(runs).sel
    assert not changed.css("table.m-table--runs")
    assert len(changed.css("table.m-table--course-runs tr.m-run")) == 25

    fakesite.faults.update({"markup_change": "date_cell"})
    cells = admin.get(runs).sel.css("td.m-run__start")
    assert not [c for c in cells if "data-order" in c.attrib]
    assert [c.css("time::attr(datetime)").get() or "" for c in cells] == orders
    assert [c.css("::text").get() for c in cells if not c.css("time")] == ["Not set"]
    day = datetime.fromisoformat(orders[1])
    assert cells[1].css("time::text").get() == f"{day:%A} {day.day} {day:%B %Y}"

    fakesite.faults.update({"markup_change": "datasets_class"})
    changed = admin.get(dashboard).sel
    assert not changed.css("ul.m-datasets, a.m-datasets__link")
    assert changed.css("ul.m-downloads a.m-downloads__link::attr(href)").getall() == dataset_links

    fakesite.faults.update({"markup_change": None})
    assert admin.get(runs).sel.css("td.m-run__start::attr(data-order)").getall() == orders


def test_extra_column_in_one_dataset(fakesite: FakeSite, admin: Browser) -> None:
    comments, enrolments = DATASET, DATASET.replace("/comments", "/enrolments")
    before = {path: admin.get(path).body for path in (comments, enrolments)}
    fakesite.faults.update({"extra_column": "comments"})
    page = admin.get(comments)
    assert page.body == fakesite.dataset_bytes(SERIES, 19, "comments")
    rows = list(csv.reader(io.StringIO(page.text, newline="")))
    old_rows = list(csv.reader(io.StringIO(before[comments].decode(), newline="")))
    assert rows[0] == [*HEADERS["comments"], "sentiment"]
    assert [row[:-1] for row in rows] == old_rows
    assert {row[-1] for row in rows[1:]} <= {"positive", "neutral", "negative"}
    assert admin.get(enrolments).body == before[enrolments]  # the other datasets unchanged


def test_page_change_knobs_are_checked_and_set_from_the_cli(fakesite: FakeSite) -> None:
    for name, value in [("markup_change", "tables"), ("extra_column", "no_such_dataset")]:
        with pytest.raises(ValueError, match=f"bad value for {name}"):
            fakesite.faults.update({name: value})
    options = ["--markup-change", "date_cell", "--extra-column", "comments"]
    with cli_site(*options) as connection:
        knobs = cli_knobs(connection)
    assert (knobs["markup_change"], knobs["extra_column"]) == ("date_cell", "comments")


# A broken or hostile site (issue 19): gzip bombs, trickles, a huge dashboard


DASHBOARD = f"/admin/courses/{SERIES}/19/stats-dashboard"


def test_gzip_bomb_on_pages_and_datasets(fakesite: FakeSite, admin: Browser) -> None:
    assert fakesite.faults.bomb_path is None and fakesite.faults.bomb_mb == 2048
    etag = admin.get(DATASET).headers["ETag"]
    fakesite.faults.update({"bomb_path": r"/stats-dashboard(/data/comments)?$", "bomb_mb": 16})
    # Sent whatever the request accepts (none here), and over a 304 too.
    for page in (admin.get(DASHBOARD), admin.get(DATASET, If_None_Match=etag)):
        assert page.status == 200
        assert page.headers["Content-Encoding"] == "gzip"
        assert int(page.headers["Content-Length"]) == len(page.body) < 16 * 1024 * 1024 // 900
        decoder, decoded = zlib.decompressobj(31), 0
        for start in range(0, len(page.body), 4096):
            piece = decoder.decompress(page.body[start : start + 4096])
            assert not piece.strip(b" ")
            decoded += len(piece)
        assert decoded == 16 * 1024 * 1024
        assert decoder.eof and not decoder.unused_data  # a whole stream, its CRC checked
    assert admin.get(DASHBOARD).headers["Content-Type"] == "text/html; charset=utf-8"
    assert admin.get(DATASET).headers["Content-Type"] == "text/csv; charset=utf-8"
    other = admin.get(DATASET.replace("/comments", "/enrolments"))
    assert "Content-Encoding" not in other.headers
    assert other.body == fakesite.dataset_bytes(SERIES, 19, "enrolments")


def test_trickle_sends_the_body_at_its_rate(fakesite: FakeSite, admin: Browser) -> None:
    expected = fakesite.dataset_bytes(SERIES, 19, "comments")
    # Ten pieces, a tenth of a second apart.
    fakesite.faults.update({"trickle_path": "/data/comments$", "trickle_rate": len(expected)})
    raw = RawConnection(fakesite, admin.cookie_header()["Cookie"])
    raw.sock.sendall(
        f"GET {DATASET} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {raw.cookie}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.sock.recv(65536)
    head, _, body = head.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    started, pieces = time.monotonic(), 0
    while len(body) < len(expected):
        body += raw.sock.recv(65536)
        pieces += 1
    elapsed = time.monotonic() - started
    raw.close()
    assert body == expected
    assert pieces >= 5 and elapsed >= 0.8  # at least this slow; a busy machine is slower
    assert admin.get("/admin/organisations").status == 200  # other answers at once


def test_dashboard_links_make_a_huge_dashboard(fakesite: FakeSite, admin: Browser) -> None:
    own = list(fakesite.data.run(SERIES, 19).datasets)
    fakesite.faults.update({"dashboard_links": 3})
    hrefs = admin.get(DASHBOARD).sel.css("ul.m-datasets li a.m-datasets__link::attr(href)")
    names = [href.removeprefix(f"{DASHBOARD}/data/") for href in hrefs.getall()]
    assert names == [*own, "extra_dataset_0", "extra_dataset_1", "extra_dataset_2"]
    assert admin.get(f"{DASHBOARD}/data/extra_dataset_1").status == 404
    fakesite.faults.update({"dashboard_links": 100_000})
    assert len(admin.get(DASHBOARD).body) > 8 * 1024 * 1024


def test_hostile_site_knobs_are_checked_and_set_over_http(
    fakesite: FakeSite, browser: Browser
) -> None:
    bad = [
        ("bomb_path", "("),
        ("bomb_path", 1),
        ("bomb_mb", 0),
        ("bomb_mb", 1.5),
        ("trickle_path", "["),
        ("trickle_rate", 0),
        ("trickle_rate", "fast"),
        ("dashboard_links", -1),
        ("dashboard_links", True),
    ]
    for name, value in bad:
        with pytest.raises(ValueError, match=f"bad value for {name}"):
            fakesite.faults.update({name: value})
    knobs = {
        "bomb_path": "/data/",
        "bomb_mb": 16,
        "trickle_path": "/stats-dashboard$",
        "trickle_rate": 2.5,
        "dashboard_links": 10,
    }
    page = control(browser, knobs)
    assert page.status == 200 and {k: json.loads(page.body)[k] for k in knobs} == knobs
