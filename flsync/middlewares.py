"""Downloader middlewares: polite retries, and signing in again when a session expires.

Settings: ``FLSYNC_RETRY_AFTER_MAX`` and ``FLSYNC_RETRY_BACKOFF_BASE`` (RetryAfterMiddleware),
plus Scrapy's own ``RETRY_*``; ``FLSYNC_SESSION_RETRIES`` (SessionMiddleware, which reads the
credentials from the config, ``FLSYNC_CONFIG``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from scrapy import Request
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest

from flsync import site
from flsync.config import FlsyncConfig
from flsync.handlers import discard_body

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

# Request meta keys.
SIGN_IN_META = "flsync_sign_in"  # part of a sign-in: never treated as an expired session
EXPECT_CSV_META = "flsync_expect_csv"  # an HTML answer means the session has expired
SESSION_RETRIES_META = "flsync_session_retries"  # times this request met an expired session


class RetryAfterMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware, waiting before each retry: as long as the server's
    ``Retry-After`` asks (at most ``FLSYNC_RETRY_AFTER_MAX`` s), else an exponential back-off
    from ``FLSYNC_RETRY_BACKOFF_BASE`` s. Only the retried request waits, not the crawl."""

    def __init__(self, settings: BaseSettings):
        super().__init__(settings)
        self.max_wait = settings.getfloat("FLSYNC_RETRY_AFTER_MAX", 120.0)
        self.backoff_base = settings.getfloat("FLSYNC_RETRY_BACKOFF_BASE", 1.0)

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        result = super().process_response(request, response)
        if isinstance(result, Request):
            await asyncio.sleep(self.retry_delay(request, response))
        return result

    async def process_exception(self, request: Request, exception: Exception) -> Request | None:
        result = super().process_exception(request, exception)
        if isinstance(result, Request):
            await asyncio.sleep(self.retry_delay(request, None))
        return result

    def retry_delay(self, request: Request, response: Response | None) -> float:
        retry_after = response.headers.get(b"Retry-After") if response is not None else None
        if retry_after:
            seconds = parse_retry_after(retry_after.decode("latin-1"))
            if seconds is not None:
                self.crawler.stats.inc_value("flsync/retry/retry_after")
                return min(seconds, self.max_wait)
        # retry_times counts earlier retries of this request; get_retry_request bumps it after.
        return min(self.backoff_base * 2 ** request.meta.get("retry_times", 0), self.max_wait)


def parse_retry_after(value: str) -> float | None:
    """Retry-After is delay-seconds or an HTTP date (RFC 9110, 10.2.3)."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class SessionMiddleware:
    """Signs in again when the site says the session has expired (a redirect to the sign-in
    page, or HTML where a CSV was asked for), then retries the request with the new session.

    A session is known by its cookie, as sent with each request. Many requests meet the same
    expiry at once: the first signs in, the others wait for it and retry; a request that
    carried the cookie of a session already replaced is just retried. A new session that
    expires before serving a single request means signing in does not help: the request
    fails instead of looping, as does a request that makes flsync sign in again more than
    ``FLSYNC_SESSION_RETRIES`` times.
    """

    def __init__(self, crawler: Crawler, config: FlsyncConfig):
        self.crawler = crawler
        self.config = config
        self.max_retries = crawler.settings.getint("FLSYNC_SESSION_RETRIES")
        self.session: str | None = None  # the current session's cookie value, once seen
        self.renewed = False
        self.served = 0  # responses the current session has served
        self._renewal: asyncio.Future[None] | None = None  # the sign-in under way

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler, FlsyncConfig.from_settings(crawler.settings))

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        if request.meta.get(SIGN_IN_META):
            return response
        sent_with = site.session_sent(request) or ""
        if self.session is None:
            self.session = sent_with
        if not self._expired(request, response):
            if sent_with == self.session:
                self.served += 1
            return response
        discard_body(response)
        self.crawler.stats.inc_value("flsync/session/expired")
        retries = request.meta.get(SESSION_RETRIES_META, 0)
        # Only an expiry that makes flsync sign in again counts against the request: one that
        # finds the sign-in under way, or already done, is simply sent again.
        if sent_with == self.session and self._renewal is None:
            if retries >= self.max_retries:
                self.crawler.stats.inc_value("flsync/session/gave_up")
                raise IgnoreRequest(f"the session expired {retries + 1} times for this request")
            retries += 1
        await self._renew(sent_with)
        retry = request.replace(dont_filter=True)
        retry.meta[SESSION_RETRIES_META] = retries
        # The old session's cookie must not travel with the retry: CookiesMiddleware adds the
        # jar's (new) cookie only to a request that has no Cookie header.
        retry.headers.pop(b"Cookie", None)
        return retry

    @staticmethod
    def _expired(request: Request, response: Response) -> bool:
        return site.is_sign_in_redirect(response) or (
            request.meta.get(EXPECT_CSV_META, False)
            and response.status == 200
            and site.is_html(response)
        )

    async def _renew(self, expired: str) -> None:
        if expired != self.session:
            return  # signed in again since this request was sent
        if self._renewal is None:
            if self.renewed and not self.served:
                self.crawler.stats.inc_value("flsync/session/renew_useless")
                raise IgnoreRequest("the session expired again before serving any request")
            self._renewal = asyncio.ensure_future(self._sign_in_again())
        # Every request that met this expiry waits for the one sign-in; shield() keeps one
        # waiter's cancellation from cancelling it for the others.
        await asyncio.shield(self._renewal)

    async def _sign_in_again(self) -> None:
        logger.info("Session expired: signing in again as %(user)s", {"user": self.config.username})
        try:
            self.session = await self._sign_in()
        finally:
            self._renewal = None
        self.renewed = True
        self.served = 0
        self.crawler.stats.inc_value("flsync/session/renewed")

    async def _sign_in(self) -> str:
        """Sign in; the new session's cookie value."""
        engine = self.crawler.engine
        page = await engine.download_async(
            Request(
                site.sign_in_url(self.config.base_url), meta={SIGN_IN_META: True}, dont_filter=True
            )
        )
        form = site.sign_in_form_request(page, self.config.username, self.config.password)
        answer = await engine.download_async(
            form.to_scrapy(
                callback=None,
                meta={SIGN_IN_META: True, "dont_redirect": True, "handle_httpstatus_all": True},
                dont_filter=True,
            )
        )
        if not site.is_signed_in(answer):
            self.crawler.stats.inc_value("flsync/session/renew_failed")
            raise IgnoreRequest(f"signing in again as {self.config.username} was refused")
        return site.session_set(answer) or ""
