from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import pytest_twisted
from scrapy import Request, Spider
from scrapy.http import Response
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler
from twisted.internet.defer import Deferred

from flsync.config import LOADED_CONFIG, FlsyncConfig
from flsync.middlewares import RetryAfterMiddleware, SessionMiddleware, parse_retry_after
from flsync.session import GENERATION_META
from flsync.stopping import PromptStop

URL = "http://127.0.0.1/admin/organisations"


@pytest.fixture
def middleware():
    crawler = get_crawler(
        Spider,
        {
            "FLSYNC_RETRY_AFTER_MAX": 60,
            "FLSYNC_RETRY_BACKOFF_BASE": 0.5,
            "EXTENSIONS": {PromptStop: 0},
        },
    )
    crawler.spider = crawler._create_spider("test")
    return build_from_crawler(RetryAfterMiddleware, crawler)


def test_retry_after_seconds_is_honoured(middleware):
    response = Response(URL, status=503, headers={"Retry-After": "7"})
    assert middleware.retry_delay(Request(URL), response) == 7
    assert middleware.crawler.stats.get_value("flsync/retry/retry_after") == 1


def test_retry_after_is_capped(middleware):
    response = Response(URL, status=429, headers={"Retry-After": "3600"})
    assert middleware.retry_delay(Request(URL), response) == 60


def test_backoff_doubles_without_retry_after(middleware):
    response = Response(URL, status=503)
    delays = [
        middleware.retry_delay(Request(URL, meta={"retry_times": n}), response) for n in range(9)
    ]
    assert delays[:4] == [0.5, 1, 2, 4]
    assert delays[-1] == 60  # capped


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), (" 12 ", 12.0), ("soon", None), ("", None)],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    when = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 < parse_retry_after(format_datetime(when, usegmt=True)) <= 30
    past = datetime.now(UTC) - timedelta(seconds=30)
    assert parse_retry_after(format_datetime(past, usegmt=True)) == 0


@pytest.mark.parametrize("status", [429, 503])
@pytest_twisted.ensureDeferred
async def test_429_and_503_are_retried_after_the_wait(middleware, status):
    response = Response(URL, status=status, headers={"Retry-After": "0"})
    coroutine = middleware.process_response(Request(URL), response)
    retry = await Deferred.fromFuture(asyncio.ensure_future(coroutine))
    assert isinstance(retry, Request)
    assert retry.meta["retry_times"] == 1
    assert middleware.crawler.stats.get_value("flsync/retry/retry_after") == 1


@pytest_twisted.ensureDeferred
async def test_other_answers_pass_straight_through(middleware):
    response = Response(URL, status=200)
    coroutine = middleware.process_response(Request(URL), response)
    assert await Deferred.fromFuture(asyncio.ensure_future(coroutine)) is response


@pytest.mark.parametrize(("sent_under", "kept"), [(2, True), (1, False)])
@pytest_twisted.ensureDeferred
async def test_an_older_sessions_cookies_are_not_kept(sent_under, kept):
    crawler = get_crawler(
        Spider,
        {
            LOADED_CONFIG: FlsyncConfig(username="u@example.org", password="pw"),
            "EXTENSIONS": {PromptStop: 0},
        },
    )
    crawler.spider = crawler._create_spider("test")
    middleware = build_from_crawler(SessionMiddleware, crawler)
    middleware.session.generation = 2  # two sign-ins so far
    # A site that sets the session cookie on every answer (a Rails cookie store): an answer
    # to a request of the first session, arriving late, carries that session's cookie.
    request = Request(URL, meta={GENERATION_META: (sent_under, 0)})
    response = Response(URL, headers={"Set-Cookie": "_future_learn_session=v; Path=/"})
    coroutine = middleware.process_response(request, response)
    assert await Deferred.fromFuture(asyncio.ensure_future(coroutine)) is response
    cookies = [cookie.value for cookie in middleware.jars[None].jar]
    assert cookies == (["v"] if kept else [])
