"""The accounting that decides whether an organisation's sync is complete, the middleware that
turns a page that raised into a failed run, and the exit status that follows from both."""

from __future__ import annotations

import logging

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.statscollectors import MemoryStatsCollector
from scrapy.utils.test import get_crawler

from flsync import site
from flsync.commands.crawl import report_outcome
from flsync.failures import RUN_META, PageFailureMiddleware
from flsync.items import ListingItem, RunFailure
from flsync.ledger import OrganisationLedger

A, B, C = "course-a/1", "course-b/1", "course-c/2"


def listing(**frozen: list[str]) -> ListingItem:
    runs = {A: "https://x/a/1", B: "https://x/b/1"}
    return ListingItem("org", listed=3, runs=runs, frozen=frozen)


def test_complete_when_every_listed_run_closed_in_any_order():
    ledger = OrganisationLedger()
    ledger.file_done(A, "comments.csv")  # before the listing's last page
    ledger.run_read(A, "https://x/a/1", ["comments.csv"])
    assert not ledger.complete  # no listing yet
    ledger.listed(listing())
    ledger.run_read(B, "https://x/b/1", ["comments.csv", "enrolments.csv"])
    ledger.file_done(B, "enrolments.csv")
    assert not ledger.complete
    ledger.file_done(B, "comments.csv")
    assert ledger.complete
    assert (ledger.runs_closed, ledger.files_expected, ledger.files_accounted) == (2, 3, 3)


def test_a_run_that_never_arrived_is_named_with_why():
    ledger = OrganisationLedger()
    ledger.listed(listing())
    ledger.run_read(A, "https://x/a/1", ["comments.csv", "enrolments.csv", "x.csv", "y.csv"])
    assert not ledger.complete
    assert ledger.unclosed() == [
        ("https://x/a/1", "4 of its files never ended: comments.csv, enrolments.csv, x.csv, …"),
        ("https://x/b/1", "its details page and dashboard were not both read"),
    ]


def test_a_failure_said_elsewhere_is_not_said_again_but_counts():
    ledger = OrganisationLedger()
    ledger.listed(listing())
    ledger.failed(A, "https://x/a/1/data/comments", "comments.csv: HTTP 503")
    ledger.run_skipped(B)  # not started after all: closed
    assert not ledger.complete
    assert ledger.unclosed() == []
    assert ledger.failed_runs() == [("https://x/a/1", "comments.csv: HTTP 503")]


def test_a_frozen_run_closes_when_the_files_still_asked_did():
    ledger = OrganisationLedger()
    ledger.listed(listing(**{C: ["enrolments.csv"]}))
    ledger.run_skipped(A)
    ledger.run_skipped(B)
    assert not ledger.complete
    ledger.file_done(C, "enrolments.csv")
    assert ledger.complete


def test_a_failed_page_of_the_organisation_makes_it_incomplete():
    ledger = OrganisationLedger()
    ledger.listed(ListingItem("org", listed=0))
    assert ledger.complete
    ledger.failed(None, "https://x/runs?page=2", "HTTP 500")
    assert not ledger.complete
    assert ledger.failed_runs() == [("https://x/runs?page=2", "HTTP 500")]


# --- the middleware -------------------------------------------------------------------------


def raised(exception: Exception, caplog, **meta: str) -> list[RunFailure]:
    crawler = get_crawler()
    crawler.stats = MemoryStatsCollector(crawler)
    middleware = PageFailureMiddleware.from_crawler(crawler)
    request = Request("https://x/admin/courses/a/1", cb_kwargs={"organisation": "org"}, meta=meta)
    response = HtmlResponse(request.url, body=b"<html></html>", request=request)
    with caplog.at_level(logging.DEBUG, logger="flsync.failures"):
        result = middleware.process_spider_exception(response, exception)
    assert result is not None
    return list(result)


def test_a_page_error_fails_its_run_in_one_line(caplog):
    error = site.PageError(
        "https://x/admin/courses/a/1", "td.m-run__number", "not a run number", "n/a"
    )
    [failure] = raised(error, caplog, **{RUN_META: A})
    assert failure == RunFailure("org", error.url, "td.m-run__number: not a run number: 'n/a'", A)
    assert [r for r in caplog.record_tuples if r[0] == "flsync.failures"] == [
        (
            "flsync.failures",
            logging.ERROR,
            "Run (failed): https://x/admin/courses/a/1: td.m-run__number: not a run number: 'n/a'",
        )
    ]


def test_any_other_exception_fails_its_run_with_its_type_and_the_traceback_at_debug(caplog):
    [failure] = raised(KeyError("href"), caplog)
    assert failure == RunFailure("org", "https://x/admin/courses/a/1", "KeyError: 'href'", None)
    [debug, error] = [r for r in caplog.records if r.name == "flsync.failures"]
    assert (debug.levelno, debug.exc_info is not None) == (logging.DEBUG, True)
    assert error.getMessage() == "Page (failed): https://x/admin/courses/a/1: KeyError: 'href'"


def test_a_page_of_no_organisation_is_left_to_scrapy():
    middleware = PageFailureMiddleware.from_crawler(get_crawler())
    request = Request("https://x/admin/organisations")
    response = HtmlResponse(request.url, body=b"", request=request)
    assert middleware.process_spider_exception(response, KeyError("x")) is None


# --- the exit status ------------------------------------------------------------------------


def outcome(caplog, **values: int | str) -> int:
    stats = MemoryStatsCollector(get_crawler())
    stats.set_value("finish_reason", "finished")
    for key, value in values.items():
        stats.set_value(key.replace("__", "/"), value)
    with caplog.at_level(logging.INFO, logger="flsync.commands.crawl"):
        return report_outcome(stats)


def test_complete_when_every_organisation_started_is_complete(caplog):
    assert outcome(caplog, flsync__organisations__synced=2, flsync__organisations__complete=2) == 0
    assert caplog.messages[-1].startswith("Sync complete: ")


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"log_count__ERROR": 1}, "errors logged: 1"),
        ({"spider_exceptions__KeyError": 1}, "spider_exceptions/KeyError: 1"),
        ({"flsync__organisations__complete": 1}, "organisations never reported: 1"),
        (
            {"flsync__organisations__complete": 1, "flsync__organisations__incomplete": 1},
            "organisations/incomplete: 1",
        ),
    ],
)
def test_anything_left_unaccounted_fails_the_sync(caplog, values, problem):
    base = {"flsync__organisations__synced": 2, "flsync__organisations__complete": 2}
    assert outcome(caplog, **{**base, **values}) == 1
    assert f"Sync FAILED (finished; {problem}): " in caplog.messages[-1]
