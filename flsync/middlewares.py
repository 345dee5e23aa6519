"""Downloader middlewares: polite retries, and the signed-in session.

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

from scrapy import Request
from scrapy.downloadermiddlewares.cookies import CookiesMiddleware
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured

from flsync import signals as flsync_signals
from flsync import site
from flsync.bodies import discard_body
from flsync.config import config_from_settings
from flsync.session import Session, SessionError, SignInRefused, SignInRejected
from flsync.stopping import PromptStop, SyncStopped
from flsync.transport import CertificateError, ProxyError

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
GENERATION_META = "flsync_session"  # the sign-in (generation) this request was sent under
SESSION_RESENDS_META = "flsync_session_resends"  # times it was sent again after "signed out"
SIGN_IN_SLOT = "flsync-sign-in"


def tries_note(request: Request | None) -> str:
    """ " (after N tries)" for a request sent more than once (retries, and sends again after
    "signed out"), for the one line that says it failed; else ""."""
    if request is None:
        return ""
    tries = 1 + request.meta.get("retry_times", 0) + request.meta.get(SESSION_RESENDS_META, 0)
    return f" (after {tries} tries)" if tries > 1 else ""


def stopper(crawler: Crawler) -> PromptStop:
    """The crawl's PromptStop extension (its waits end when the sync is stopped)."""
    stop = crawler.get_extension(PromptStop)
    if stop is None:
        raise NotConfigured("flsync.stopping.PromptStop must be in EXTENSIONS")
    return stop


class RetryAfterMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware, waiting before each retry: as long as the server's
    ``Retry-After`` asks (at most ``FLSYNC_RETRY_AFTER_MAX`` s), else an exponential back-off
    from ``FLSYNC_RETRY_BACKOFF_BASE`` s. Only the retried request waits, not the crawl, and
    the wait ends at once if the sync is stopped."""

    def __init__(self, settings: BaseSettings):
        super().__init__(settings)
        self.max_wait = settings.getfloat("FLSYNC_RETRY_AFTER_MAX", 120.0)
        self.backoff_base = settings.getfloat("FLSYNC_RETRY_BACKOFF_BASE", 1.0)

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
    """Scrapy's CookiesMiddleware that also keeps the crawl signed in (see flsync.session).

    It signs in before the first request leaves, and again when an answer says the session
    has expired (a redirect to the sign-in page, or HTML where a CSV was asked for); that
    answer never reaches the spider or the files pipeline, and its cookies (a new signed-out
    session, often) never reach the jar. Cookies are added when a request enters the
    downloader, as usual, and brought up to date when it leaves if a sign-in happened
    meanwhile. A request is sent again after "signed out" at most ``FLSYNC_SESSION_RETRIES``
    times; a sign-in that is refused, or whose session serves nothing, stops the sync.
    """

    def __init__(self, crawler: Crawler, config: FlsyncConfig):
        super().__init__(crawler.settings.getbool("COOKIES_DEBUG"))
        self.crawler = crawler
        self.config = config
        self.max_resends = crawler.settings.getint("FLSYNC_SESSION_RETRIES")
        self.session = Session(
            self._sign_in,
            account=config.username,
            max_sign_ins=crawler.settings.getint("FLSYNC_SIGN_IN_MAX"),
            sign_in_wait=crawler.settings.getfloat("FLSYNC_SIGN_IN_WAIT"),
            sleep=self._sleep,
        )
        crawler.signals.connect(self.request_leaving, signal=flsync_signals.request_leaving)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("COOKIES_ENABLED"):
            raise NotConfigured("SessionMiddleware needs COOKIES_ENABLED")
        return cls(crawler, config_from_settings(crawler.settings))

    def process_request(self, request: Request, spider: Any = None) -> None:
        super().process_request(request)
        request.meta[GENERATION_META] = self.session.generation

    async def request_leaving(self, request: Request, **kwargs: Any) -> None:
        """Hold the request while a sign-in is under way, then send it under the newest."""
        if request.meta.get(SIGN_IN_META):
            return
        try:
            generation = await self.session.ready()
        except SessionError as exc:
            self._stop(exc)
            raise SyncStopped(str(exc)) from None
        if request.meta.get(GENERATION_META) != generation:
            # It got its cookies when it entered the downloader, before the latest sign-in.
            super().process_request(request)
            request.meta[GENERATION_META] = generation

    async def process_response(  # type: ignore[override]  # a coroutine, which Scrapy awaits
        self, request: Request, response: Response, spider: Any = None
    ) -> Request | Response:
        if request.meta.get(SIGN_IN_META):
            return super().process_response(request, response)
        generation = request.meta.get(GENERATION_META, 0)
        if not self._signed_out(request, response):
            self.session.answered(generation)
            return super().process_response(request, response)
        discard_body(response)
        self.crawler.stats.inc_value("flsync/session/expired")
        resends = request.meta.get(SESSION_RESENDS_META, 0)
        if resends >= self.max_resends:
            self.crawler.stats.inc_value("flsync/session/gave_up")
            raise IgnoreRequest(
                f"answered as signed out {resends + 1} times (FLSYNC_SESSION_RETRIES)"
            )
        try:
            await self.session.expired(generation)
        except SessionError as exc:
            self._stop(exc)
            raise SyncStopped(str(exc)) from None
        self.crawler.stats.inc_value("flsync/session/resent")
        retry = request.replace(dont_filter=True)
        retry.meta[SESSION_RESENDS_META] = resends + 1
        # Its Cookie header is the expired session's: CookiesMiddleware sets a new one only on
        # a request that has none.
        retry.headers.pop(b"Cookie", None)
        return retry

    @staticmethod
    def _signed_out(request: Request, response: Response) -> bool:
        return site.is_sign_in_redirect(response) or (
            request.meta.get(EXPECT_CSV_META, False)
            and response.status == 200
            and site.is_html(response)
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
            answer = await engine.download_async(
                form.to_scrapy(callback=None, meta=meta, dont_filter=True)
            )
        except site.LayoutError as exc:
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
    site's bot protection (a challenge instead of the page), a certificate that does not
    verify, a proxy that refuses. One error line says what happened and what to try; the
    close reason names it (``flsync_bot_wall``, ``flsync_certificate``, ``flsync_proxy``).
    Setting: ``FLSYNC_IMPERSONATE`` (named in the bot wall's line).
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.impersonate = crawler.settings.get("FLSYNC_IMPERSONATE") or "none"

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_response(self, request: Request, response: Response) -> Response:
        if site.is_bot_challenge(response):
            self._stop(
                "bot_wall",
                f"The site's bot protection refused {request.url} (HTTP {response.status},"
                f" a challenge page): it did not take flsync (FLSYNC_IMPERSONATE="
                f"{self.impersonate}) for a browser. Try another browser in"
                " FLSYNC_IMPERSONATE (e.g. chrome, edge, safari)",
            )
        proxy = request.meta.get("proxy")
        if proxy and response.status == 407:
            self._stop(
                "proxy",
                f"the proxy {proxy} asked for credentials that were not given or not"
                " accepted (407): put them in its URL (http_proxy=http://user:password@host:port)",
            )
        return response

    def process_exception(self, request: Request, exception: Exception) -> None:
        if isinstance(exception, CertificateError):
            self._stop("certificate", f"Cannot reach {request.url}: {exception}")
        if isinstance(exception, ProxyError):
            self._stop("proxy", f"Cannot reach {request.url}: {exception}")

    def _stop(self, reason: str, message: str) -> None:
        self.crawler.stats.inc_value(f"flsync/access/{reason}")
        stopper(self.crawler).stop(reason, message)
        raise SyncStopped(message)
