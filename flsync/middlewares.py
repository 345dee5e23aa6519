"""Downloader middlewares: polite retries, redirects, and the signed-in session.

Settings: ``FLSYNC_RETRY_AFTER_MAX`` and ``FLSYNC_RETRY_BACKOFF_BASE`` (RetryAfterMiddleware),
plus Scrapy's own ``RETRY_*``; ``FLSYNC_SESSION_RETRIES``, ``FLSYNC_SIGN_IN_MAX`` and
``FLSYNC_SIGN_IN_WAIT`` (SessionMiddleware, which takes the credentials from the config, see
flsync.config), plus Scrapy's ``COOKIES_*``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.downloadermiddlewares.cookies import CookiesMiddleware
from scrapy.downloadermiddlewares.redirect import RedirectMiddleware
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured

from flsync import signals as flsync_signals
from flsync import site
from flsync.bodies import discard_body
from flsync.browser import BrowserError, bot_pass, challenge_visit
from flsync.config import config_from_settings
from flsync.options import options_of
from flsync.origins import OriginRefused, credential_refusal, refusal
from flsync.session import (
    GENERATION_META,
    ChallengeFailed,
    Clearance,
    Renewable,
    Session,
    SessionError,
    SignInRefused,
    SignInRejected,
)
from flsync.stopping import SyncStopped, stopper
from flsync.transport import CertificateError, ProxyError, proxy_wants_credentials

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from scrapy.settings import BaseSettings

    from flsync.config import FlsyncConfig

logger = logging.getLogger(__name__)

# Request meta keys.
SIGN_IN_META = "flsync_sign_in"  # part of a sign-in: never held, never taken as "signed out"
EXPECT_CSV_META = "flsync_expect_csv"  # an HTML answer means the session has expired
SESSION_RESENDS_META = "flsync_session_resends"  # times it was sent again after "signed out"
CLEARANCE_META = "flsync_clearance"  # the browser visit that passes the bot challenge
SIGN_IN_SLOT = "flsync-sign-in"


def tries_note(request: Request | None) -> str:
    """ " (after N tries)" for a request sent more than once (retries, and sends again after
    "signed out"), for the one line that says it failed; else ""."""
    if request is None:
        return ""
    tries = 1 + request.meta.get("retry_times", 0) + request.meta.get(SESSION_RESENDS_META, 0)
    return f" (after {tries} tries)" if tries > 1 else ""


class UnfilteredRedirectMiddleware(RedirectMiddleware):
    """Scrapy's redirects, each sent even to a page already asked for in this sync.

    Scrapy's duplicate filter drops a redirect to a page it has seen, without a word: the
    page redirected is then never read, and a sync would call itself complete without it. Sent
    all the same, a loop ends at REDIRECT_MAX_TIMES in the request's errback (one line, and
    the organisation incomplete), and a redirect elsewhere is read where it leads.
    """

    def process_response(  # type: ignore[override]  # Scrapy's takes a deprecated spider too
        self, request: Request, response: Response
    ) -> Request | Response:
        result = super().process_response(request, response)
        if isinstance(result, Request) and result is not request:
            return result.replace(dont_filter=True)
        return result


class OriginMiddleware:
    """Refuses, before it is sent, every request to an origin flsync does not fetch from
    (flsync.origins.refusal): its page or dataset then fails in one line. Redirects pass
    here too."""

    def __init__(self, base_url: str, extra: frozenset[str]) -> None:
        self.base_url = base_url
        self.extra = extra

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = crawler.settings
        return cls(config_from_settings(settings).base_url, options_of(settings).extra_origins)

    def process_request(self, request: Request) -> None:
        why = refusal(request.url, self.base_url, self.extra)
        if why is not None:
            raise OriginRefused(why)


class RetryAfterMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware, waiting before each retry: as long as the server's
    ``Retry-After`` asks (at most ``FLSYNC_RETRY_AFTER_MAX`` s), else an exponential back-off
    from ``FLSYNC_RETRY_BACKOFF_BASE`` s. Only the retried request waits, not the crawl, and
    the wait ends at once if the sync is stopped."""

    def __init__(self, settings: BaseSettings):
        super().__init__(settings)
        options = options_of(settings)
        self.max_wait = options.retry_after_max
        self.backoff_base = options.retry_backoff_base

    # Coroutines, which Scrapy awaits: the wait must not block the reactor.
    async def process_response(  # type: ignore[override]
        self, request: Request, response: Response
    ) -> Request | Response:
        result = super().process_response(request, response)
        if isinstance(result, Request):
            await stopper(self.crawler).sleep(self.retry_delay(request, response))
        return result

    async def process_exception(  # type: ignore[override]
        self, request: Request, exception: Exception
    ) -> Request | Response | None:
        result = super().process_exception(request, exception)
        if isinstance(result, Request):
            await stopper(self.crawler).sleep(self.retry_delay(request, None))
        return result

    def retry_delay(self, request: Request, response: Response | None) -> float:
        retry_after = response.headers.get(b"Retry-After") if response is not None else None
        if retry_after:
            seconds = parse_retry_after(retry_after.decode("latin-1"))
            if seconds is not None:
                self.crawler.stats.inc_value("flsync/retry/retry_after")
                return min(seconds, self.max_wait)
        # retry_times counts earlier retries of this request; get_retry_request bumps it after.
        retries = int(request.meta.get("retry_times", 0))
        return min(self.backoff_base * 2.0**retries, self.max_wait)


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


class SessionMiddleware(CookiesMiddleware):
    """Scrapy's CookiesMiddleware that also keeps the crawl signed in (see flsync.session),
    and, with FLSYNC_BROWSER, holds the pass through the site's bot challenge.

    It signs in before the first request leaves, and again when an answer says the session
    has expired (a redirect to the sign-in page, or HTML where a CSV was asked for); that
    answer never reaches the spider or the files pipeline, and its cookies (a new signed-out
    session, often) never reach the jar. With FLSYNC_BROWSER on, an answer that is the bot
    challenge sends a browser to pass it (flsync.browser); its pass (a cookie, and the
    browser's User-Agent, which the cookie is good for) then goes with every request.
    Cookies are added when a request enters the downloader, as usual, and brought up to date
    when it leaves if a sign-in or a pass came meanwhile. A request is sent again after
    "signed out" or a challenge at most ``FLSYNC_SESSION_RETRIES`` times; a sign-in that is
    refused, or a session or pass that serves nothing, stops the sync.
    """

    def __init__(self, crawler: Crawler, config: FlsyncConfig):
        super().__init__(crawler.settings.getbool("COOKIES_DEBUG"))
        self.crawler = crawler
        self.config = config
        options = options_of(crawler.settings)
        self.max_resends = options.session_retries
        max_renewals = options.sign_in_max
        wait = options.sign_in_wait
        self.session = Session(
            self._sign_in,
            holder=config.username,
            max_renewals=max_renewals,
            renewal_wait=wait,
            sleep=self._sleep,
        )
        self.clearance: Clearance | None = None
        if options.browser:
            self.clearance = Clearance(
                self._pass_challenge,
                holder=urlsplit(config.base_url).netloc,
                max_renewals=max_renewals,
                renewal_wait=wait,
                sleep=self._sleep,
            )
        self.browser_timeout = options.browser_timeout
        self.user_agent: str | None = None  # the browser's, once it passed a challenge
        crawler.signals.connect(self.request_leaving, signal=flsync_signals.request_leaving)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("COOKIES_ENABLED"):
            raise NotConfigured("SessionMiddleware needs COOKIES_ENABLED")
        return cls(crawler, config_from_settings(crawler.settings))

    def process_request(self, request: Request, spider: Any = None) -> None:
        super().process_request(request)
        request.meta[GENERATION_META] = self._generations()

    def _generations(self) -> tuple[int, int]:
        """(sign-ins, passes) so far: what a request's cookies are as of."""
        return self.session.generation, self.clearance.generation if self.clearance else 0

    async def request_leaving(self, request: Request, **kwargs: Any) -> None:
        """Hold the request while a sign-in or a challenge visit is under way, then send it
        with the newest session and pass."""
        if request.meta.get(CLEARANCE_META):
            return
        try:
            if self.clearance is not None:
                await self.clearance.ready()
            if not request.meta.get(SIGN_IN_META):
                await self.session.ready()
        except SessionError as exc:
            self._stop(exc)
            raise SyncStopped(str(exc)) from None
        generations = self._generations()
        if request.meta.get(GENERATION_META) != generations:
            # It got its cookies when it entered the downloader, before a sign-in or a pass.
            request.headers.pop(b"Cookie", None)
            super().process_request(request)
            request.meta[GENERATION_META] = generations
        if self.user_agent and not request.meta.get("playwright"):
            request.headers[b"User-Agent"] = self.user_agent

    async def process_response(  # type: ignore[override]  # a coroutine, which Scrapy awaits
        self, request: Request, response: Response, spider: Any = None
    ) -> Request | Response:
        if request.meta.get(CLEARANCE_META):
            return response  # the browser keeps its cookies; the pass is read from there
        session, clearance = request.meta.get(GENERATION_META, (0, 0))
        if self.clearance is not None:
            if site.is_bot_challenge(response):
                self.crawler.stats.inc_value("flsync/challenge/met")
                return await self._send_again(request, response, self.clearance, clearance)
            self.clearance.answered(clearance)
        if request.meta.get(SIGN_IN_META):
            return super().process_response(request, response)
        if not self._signed_out(request, response):
            self.session.answered(session)
            if not self.session.is_current(session):
                # A site may set the session cookie on every answer: an older session's
                # value, or one arriving during a sign-in, would replace the new session's
                # (or the one the sign-in form's token is tied to). Its cookies are not kept.
                self.crawler.stats.inc_value("flsync/session/stale_cookies")
                return response
            return super().process_response(request, response)
        self.crawler.stats.inc_value("flsync/session/expired")
        return await self._send_again(request, response, self.session, session)

    async def _send_again(
        self, request: Request, response: Response, renewal: Renewable, generation: int
    ) -> Request:
        """The request again, once ``renewal`` (the session, the pass) has been renewed."""
        discard_body(response)
        resends = request.meta.get(SESSION_RESENDS_META, 0)
        if resends >= self.max_resends:
            self.crawler.stats.inc_value("flsync/session/gave_up")
            what = "challenged" if isinstance(renewal, Clearance) else "answered as signed out"
            raise IgnoreRequest(f"{what} {resends + 1} times (FLSYNC_SESSION_RETRIES)")
        try:
            await renewal.expired(generation)
        except SessionError as exc:
            self._stop(exc)
            raise SyncStopped(str(exc)) from None
        self.crawler.stats.inc_value("flsync/session/resent")
        retry = request.replace(dont_filter=True)
        retry.meta[SESSION_RESENDS_META] = resends + 1
        # Its Cookie header is the old one: CookiesMiddleware sets a new one only on a
        # request that has none.
        retry.headers.pop(b"Cookie", None)
        return retry

    async def _pass_challenge(self) -> None:
        """One visit in the browser that passes the bot challenge; its pass kept."""
        logger.info(
            "The site's bot protection challenged flsync: passing its challenge in the browser"
        )
        meta = {
            CLEARANCE_META: True,
            "playwright": True,
            "dont_redirect": True,
            "handle_httpstatus_all": True,
            "download_slot": SIGN_IN_SLOT,
        }
        url = site.sign_in_url(self.config.base_url)
        visit = challenge_visit(url, self.browser_timeout, meta)
        try:
            await self.crawler.engine.download_async(visit)
            found = bot_pass(visit)
        except SyncStopped:
            raise
        except Exception as exc:
            raise ChallengeFailed(
                f"The browser could not pass the bot challenge of {url}: {exc}"
            ) from None
        if found is None:
            raise ChallengeFailed(
                f"The browser came back from {url} without the bot challenge's pass"
            )
        for cookie in found.cookies:
            self.jars[None].set_cookie(cookie)
        self.user_agent = found.user_agent
        self.crawler.stats.inc_value("flsync/challenge/passed")

    @staticmethod
    def _signed_out(request: Request, response: Response) -> bool:
        return (
            site.is_sign_in_redirect(response)
            or site.landed_on_sign_in(request, response)
            or (
                request.meta.get(EXPECT_CSV_META, False)
                and response.status == 200
                and site.is_html(response)
            )
        )

    async def _sign_in(self) -> None:
        """One sign-in through the site's own form, every hidden field sent back."""
        engine = self.crawler.engine
        account = self.config.username
        meta = {
            SIGN_IN_META: True,
            "dont_redirect": True,
            "handle_httpstatus_all": True,
            # A download slot of their own: the requests held for this sign-in fill the
            # site's slot, and would otherwise keep it from ever leaving.
            "download_slot": SIGN_IN_SLOT,
        }
        if self.session.generation:
            logger.info("Session expired: signing in again as %(user)s", {"user": account})
        else:
            logger.info("Signing in as %(user)s", {"user": account})
        try:
            page = await engine.download_async(
                Request(site.sign_in_url(self.config.base_url), meta=meta, dont_filter=True)
            )
            form = site.sign_in_form_request(page, account, self.config.password)
            unsafe = credential_refusal(form.method, form.url, self.config.base_url)
            if unsafe:
                raise SignInRejected(
                    f"Sign-in as {account} refused: the sign-in form on {page.url} would send"
                    f" the password {unsafe}; nothing was sent (the sign-in page has changed, or"
                    " is not FutureLearn's: check base_url)"
                )
            answer = await engine.download_async(
                form.to_scrapy(callback=None, meta=meta, dont_filter=True)
            )
        except SignInRejected:
            raise
        except site.PageError as exc:
            raise SignInRejected(
                f"Sign-in as {account} failed: {exc} (the sign-in page has probably changed)"
            ) from None
        except SyncStopped:
            raise
        except Exception as exc:
            raise SessionError(f"Sign-in as {account} failed: {exc}") from None
        if site.is_signed_in(answer):
            self.crawler.stats.inc_value("flsync/signin/ok")
            return
        if answer.status == 200:
            reason = site.parse_sign_in_error(answer) or "no error message on the page"
            raise SignInRefused(f"Sign-in refused for {account}: {reason}")
        raise SignInRejected(
            f"Sign-in form rejected for {account} (HTTP {answer.status}): the sign-in page"
            " has probably changed"
        )

    async def _sleep(self, seconds: float) -> None:
        await stopper(self.crawler).sleep(seconds)

    def _stop(self, error: SessionError) -> None:
        """Stop the sync with the error's one line and a close reason naming it."""
        self.crawler.stats.inc_value(f"flsync/signin/{error.reason}")
        stopper(self.crawler).stop(f"signin_{error.reason}", str(error))


class AccessMiddleware:
    """Stops the sync at the first answer that no retry and no sign-in can change: the
    site's bot protection (a challenge instead of the page, unless FLSYNC_BROWSER is on), a
    certificate that does not verify, a proxy that refuses. One error line says what
    happened and what to try; the close reason names it (``flsync_bot_wall``,
    ``flsync_certificate``, ``flsync_proxy``; a browser that will not start:
    ``flsync_browser``). Settings: ``FLSYNC_IMPERSONATE`` (named in the
    bot wall's line), ``FLSYNC_BROWSER``.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        options = options_of(crawler.settings)
        self.impersonate = options.impersonate
        # With a browser, a challenge is passed there (SessionMiddleware), not the end.
        self.browser = options.browser

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_response(self, request: Request, response: Response) -> Response:
        if site.is_bot_challenge(response) and not self.browser:
            self._stop(
                "bot_wall",
                f"The site's bot protection refused {request.url} (HTTP {response.status},"
                f" a challenge page): it did not take flsync (FLSYNC_IMPERSONATE="
                f"{self.impersonate}) for a browser. Try another browser in"
                " FLSYNC_IMPERSONATE (e.g. chrome, edge, safari), or FLSYNC_BROWSER=1 to pass"
                " its challenge in a real browser",
            )
        proxy = request.meta.get("proxy")
        if proxy and response.status == 407:
            self._stop("proxy", proxy_wants_credentials(proxy, request.url))
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        if isinstance(exception, CertificateError):
            self._stop("certificate", f"Cannot reach {request.url}: {exception}")
        if isinstance(exception, ProxyError):
            self._stop("proxy", f"Cannot reach {request.url}: {exception}")
        if isinstance(exception, BrowserError):
            self._stop("browser", str(exception))

    def _stop(self, reason: str, message: str) -> None:
        self.crawler.stats.inc_value(f"flsync/access/{reason}")
        stopper(self.crawler).stop(reason, message)
        raise SyncStopped(message)
