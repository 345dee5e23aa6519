"""A real browser (headless Chromium through scrapy-playwright), for what plain HTTP cannot do:
pages built by script, and the bot protection's script challenge.

:func:`browser_settings` turns flsync's settings into scrapy-playwright's (checked when the
crawl is set up, so a missing browser is one error before anything starts).
:class:`BrowserPages` is a thin adapter over scrapy-playwright's handler, an extension (one
browser for the crawl, whichever schemes' download handlers use it): the download handler
passes it the requests marked ``meta["playwright"]``. Before a page loads, the request's own
cookies (the signed-in session's, set when it left) go into the browser context, since the
page's scripts send theirs from there. A page is read once it is complete by the site's own
signal (``site.RENDERED_PAGE_DONE_JS``), not at its ``load`` event; a page that does not get
there in ``FLSYNC_BROWSER_TIMEOUT`` seconds fails with :class:`PageNotBuilt`.

Settings: ``FLSYNC_BROWSER`` (on/off), ``FLSYNC_BROWSER_PATH`` (the browser executable; by
default ``chromium`` or ``chromium-browser`` on the PATH), ``FLSYNC_BROWSER_PAGES`` (pages open
at once), ``FLSYNC_BROWSER_TIMEOUT`` (seconds), and ``FLSYNC_CA_BUNDLE`` (trusted by the browser
too, through an NSS database of its own; needs ``certutil``, Debian's ``libnss3-tools``).
Proxies from the environment (``https_proxy``/``http_proxy``, ``no_proxy``) apply to it as to
plain requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from http.cookiejar import Cookie
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from scrapy import signals
from scrapy.exceptions import IgnoreRequest, NotConfigured

from flsync import site
from flsync.options import SyncOptions, options_of
from flsync.session import GENERATION_META

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from playwright.async_api import Page
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.http import Response

DEFAULT_BROWSERS = ("chromium", "chromium-browser")
# Pages one browser page shows before it is closed for a new one: what a long-lived page
# gathers (in the renderer, and in Playwright's driver) goes with it, so memory stays flat.
PAGE_USES = 20
# The download slot of rendered pages: a page takes the browser many times a plain request's
# time, and in the site's own slot AutoThrottle would space every request out by that.
BROWSER_SLOT = "flsync-browser"
# Quiet, headless, no calls home (refused on closed networks, and slow to fail there).
_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # A tab shows page after page: the pages it left are not kept alive for "back".
    "--disable-features=BackForwardCache",
]
# Resources that build nothing a reader reads (the scripts are kept): not loaded.
_SKIPPED_RESOURCES = {"image", "media", "font", "stylesheet"}
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class BrowserError(Exception):
    """The browser cannot be used (missing, or failing to start); one line for the user."""


class PageNotBuilt(IgnoreRequest):
    """A page built by script did not finish building itself in time."""


def browser_settings(options: SyncOptions, base_url: str) -> dict[str, Any]:
    """scrapy-playwright's settings for flsync's (FLSYNC_BROWSER on); BrowserError if the
    browser or, for FLSYNC_CA_BUNDLE, certutil cannot be found."""
    executable = browser_path(options.browser_path)
    if options.ca_bundle and not shutil.which("certutil"):
        raise BrowserError(
            "FLSYNC_CA_BUNDLE with FLSYNC_BROWSER needs certutil, to make the browser trust"
            " those CAs too (Debian: apt-get install libnss3-tools)"
        )
    launch: dict[str, Any] = {"executable_path": executable, "headless": True, "args": _ARGS}
    proxy = _browser_proxy(base_url)
    if proxy:
        launch["proxy"] = proxy
    timeout_ms = int(options.browser_timeout * 1000)
    return {
        "PLAYWRIGHT_BROWSER_TYPE": "chromium",
        "PLAYWRIGHT_LAUNCH_OPTIONS": launch,
        # The browser's own headers, not Scrapy's: it is there to be taken for a browser.
        "PLAYWRIGHT_PROCESS_REQUEST_HEADERS": None,
        "PLAYWRIGHT_MAX_PAGES_PER_CONTEXT": options.browser_pages,
        "PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT": timeout_ms,
        "PLAYWRIGHT_ABORT_REQUEST": skip_resource,
    }


def browser_path(named: str | None) -> str:
    """The browser executable: ``named`` (FLSYNC_BROWSER_PATH), else Chromium on the PATH."""
    candidates = [named] if named else list(DEFAULT_BROWSERS)
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    problem = (
        f"FLSYNC_BROWSER_PATH={named} is not an executable browser"
        if named
        else f"there is no {' or '.join(DEFAULT_BROWSERS)} on the PATH"
    )
    raise BrowserError(
        f"FLSYNC_BROWSER is on but {problem}: install Chromium"
        " (Debian: apt-get install chromium) or set FLSYNC_BROWSER_PATH to it"
    )


def skip_resource(request: Any) -> bool:
    """PLAYWRIGHT_ABORT_REQUEST: images, media, fonts and stylesheets are not loaded."""
    return request.resource_type in _SKIPPED_RESOURCES


def _browser_proxy(base_url: str) -> dict[str, str] | None:
    """The environment's proxy for the site, in Playwright's form (as curl and Scrapy use)."""
    parts = urlsplit(base_url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    url = urlsplit(proxy)
    server = {"server": f"{url.scheme}://{url.hostname}:{url.port}"}
    if url.username:
        server |= {"username": url.username, "password": url.password or ""}
    return server


class _NoTraceback(logging.Filter):
    """scrapy-playwright logs a failed page with its traceback; flsync reports the failure
    itself, in one line, so its record keeps the message and drops the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = None
        return True


class BrowserPages:
    """Renders the requests marked ``meta["playwright"]`` in one browser for the crawl.

    Its pages are used again, page after page: opening a tab (and a renderer process) for
    every page costs the browser more than showing the page does. There are at most
    ``FLSYNC_BROWSER_PAGES`` of them, and each is closed for a new one after ``PAGE_USES``
    pages, so that memory stays the same however many runs there are.

    Its pages share one cookie store, and an answer that ends a session sets a signed-out
    cookie there: the pages shown at once are those of one session (``GENERATION_META``),
    so a page of a renewed session waits until the pages still loading under the old one
    are done (each within FLSYNC_BROWSER_TIMEOUT). A cookie store per page would isolate
    them too, but was measured to cost about a quarter more browser time.
    """

    _quiet = _NoTraceback()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        """The crawl's browser when FLSYNC_BROWSER is on, closed once the engine stops."""
        if not options_of(crawler.settings).browser:
            raise NotConfigured  # no message: Scrapy logs one as a WARNING, and off is usual
        pages = cls(crawler)
        crawler.signals.connect(pages.close, signal=signals.engine_stopped)
        return pages

    def __init__(self, crawler: Crawler) -> None:
        # Imported here: scrapy-playwright (and Playwright, and Scrapy's Twisted HTTP stack
        # under it) is loaded only when the browser is on.
        from scrapy_playwright.handler import ScrapyPlaywrightDownloadHandler  # noqa: PLC0415

        self._handler = ScrapyPlaywrightDownloadHandler(crawler)
        logging.getLogger("scrapy-playwright").addFilter(self._quiet)
        options = options_of(crawler.settings)
        self._timeout_ms = int(options.browser_timeout * 1000)
        self._pages = options.browser_pages
        self._idle: list[Page] = []  # pages done with, to show the next ones in
        self._uses: dict[Page, int] = {}  # pages shown by each page still open
        self._turns = asyncio.Semaphore(self._pages)
        self._session: object = None  # the generations of the pages being shown
        self._showing = 0  # pages being shown
        self._shown = asyncio.Condition()  # notified when a page has been shown
        self._home: str | None = None
        extra = options.ca_bundle
        if extra:
            self._home = _nss_home(extra)
            launch = self._handler.config.launch_options
            launch["env"] = {**os.environ, "HOME": self._home}

    async def download(self, request: Request) -> Response:
        request.meta.setdefault("playwright_page_init_callback", _add_request_cookies)
        request.meta.setdefault("playwright_page_methods", [self.wait_until_built()])
        # No more renders at once than there are pages: one more would wait, for ever, for a
        # page that only goes back to the pool.
        async with self._one_session(request), self._turns:
            request.meta["playwright_include_page"] = True
            if self._idle:
                request.meta["playwright_page"] = self._idle.pop()
            try:
                response: Response = await self._handler.download_request(request)
            except Exception as exc:
                await self._done_with(request, reuse=False)
                raise self._failure(exc) from None
            await self._done_with(request, reuse=True)
        if site.is_bot_challenge(response) and not site.is_challenge_page(response):
            # The status and headers are those of the first answer, the challenge; the page
            # read is the site's, reached once the browser passed it.
            response.headers.pop(b"cf-mitigated", None)
            response = response.replace(status=200)
        return response

    @contextlib.asynccontextmanager
    async def _one_session(self, request: Request) -> AsyncIterator[None]:
        """Hold the request until the pages being shown are all of its session."""
        session = request.meta.get(GENERATION_META)
        async with self._shown:
            await self._shown.wait_for(lambda: not self._showing or self._session == session)
            self._session = session
            self._showing += 1
        try:
            yield
        finally:
            async with self._shown:
                self._showing -= 1
                self._shown.notify_all()

    async def _done_with(self, request: Request, *, reuse: bool) -> None:
        page = request.meta.pop("playwright_page", None)
        if page is None or page.is_closed():
            return
        self._uses[page] = self._uses.get(page, 0) + 1
        if reuse and self._uses[page] < PAGE_USES and len(self._idle) < self._pages:
            self._idle.append(page)
        else:
            del self._uses[page]
            await page.close()

    def wait_until_built(self) -> Any:
        """A page method: wait for the page's completion signal (see site.py)."""
        from scrapy_playwright.page import PageMethod  # noqa: PLC0415

        return PageMethod(
            "wait_for_function", site.RENDERED_PAGE_DONE_JS, timeout=self._timeout_ms, polling=50
        )

    def _failure(self, error: Exception) -> Exception:
        """The browser's exception as flsync's: a page not built in time, or a browser that
        cannot run; anything else as it is."""
        from playwright.async_api import Error as PlaywrightError  # noqa: PLC0415
        from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: PLC0415

        if isinstance(error, PlaywrightTimeout):
            return PageNotBuilt(
                f"the page did not finish building itself within {self._timeout_ms / 1000:g} s"
                " (FLSYNC_BROWSER_TIMEOUT)"
            )
        if isinstance(error, PlaywrightError) and "launch" in str(error).lower():
            executable = self._handler.config.launch_options["executable_path"]
            first_line = str(error).strip().splitlines()[0]
            return BrowserError(
                f"The browser {executable} (FLSYNC_BROWSER_PATH) failed to start: {first_line}"
            )
        return error

    async def close(self) -> None:
        for page in self._idle:
            await page.close()
        self._idle.clear()
        await self._handler.close()
        logging.getLogger("scrapy-playwright").removeFilter(self._quiet)
        if self._home:
            shutil.rmtree(self._home, ignore_errors=True)


@dataclass(frozen=True)
class BotPass:
    """What a browser that passed the bot challenge holds: its pass cookies, its User-Agent."""

    cookies: tuple[Cookie, ...]
    user_agent: str


def challenge_visit(url: str, timeout_s: float, meta: dict[str, Any]) -> Request:
    """A browser visit to ``url`` that lets the bot challenge's script run until the page is
    the site again, then reads the pass (see :func:`bot_pass`)."""
    from scrapy import Request  # noqa: PLC0415
    from scrapy_playwright.page import PageMethod  # noqa: PLC0415

    methods = [
        PageMethod("wait_for_function", site.CHALLENGE_PASSED_JS, timeout=timeout_s * 1000),
        PageMethod(_read_pass),
    ]
    return Request(url, meta={**meta, "playwright_page_methods": methods}, dont_filter=True)


def bot_pass(visit: Request) -> BotPass | None:
    """The pass a challenge visit came back with, if it holds one."""
    found = visit.meta["playwright_page_methods"][-1].result
    cookies = tuple(_jar_cookie(c) for c in found["cookies"] if c["name"] in site.BOT_PASS_COOKIES)
    return BotPass(cookies, found["user_agent"]) if cookies else None


async def _read_pass(page: Page) -> dict[str, Any]:
    return {
        "cookies": await page.context.cookies(),
        "user_agent": await page.evaluate("navigator.userAgent"),
    }


def _jar_cookie(cookie: dict[str, Any]) -> Cookie:
    """A browser cookie (Playwright's form) as the standard library's, for Scrapy's jar."""
    domain = cookie["domain"]
    expires = cookie.get("expires", -1)
    return Cookie(
        version=0,
        name=cookie["name"],
        value=cookie["value"],
        port=None,
        port_specified=False,
        domain=domain,
        domain_specified=domain.startswith("."),
        domain_initial_dot=domain.startswith("."),
        path=cookie.get("path", "/"),
        path_specified=True,
        secure=bool(cookie.get("secure")),
        expires=int(expires) if expires and expires > 0 else None,
        discard=not (expires and expires > 0),
        comment=None,
        comment_url=None,
        rest={"HttpOnly": ""} if cookie.get("httpOnly") else {},
    )


async def _add_request_cookies(page: Page, request: Request) -> None:
    """Put the cookies the request carries (the session's) into the page's context."""
    origin = "{0.scheme}://{0.netloc}/".format(urlsplit(request.url))
    cookies = []
    for header in request.headers.getlist(b"Cookie"):
        for name, morsel in SimpleCookie(header.decode("latin-1")).items():
            cookies.append({"name": name, "value": morsel.value, "url": origin})
    if cookies:
        await page.context.add_cookies(cookies)  # type: ignore[arg-type]


def _nss_home(ca_bundle: str) -> str:
    """A home folder whose NSS database (what Chromium on Linux trusts besides its own roots)
    holds the CAs of ``ca_bundle``."""
    home = tempfile.mkdtemp(prefix="flsync-browser-")
    database = os.path.join(home, ".pki", "nssdb")
    os.makedirs(database)
    certutil = ["certutil", "-d", f"sql:{database}"]
    subprocess.run([*certutil, "-N", "--empty-password"], check=True, capture_output=True)
    with open(ca_bundle, "rb") as f:
        certificates = _PEM_CERTIFICATE.findall(f.read())
    for number, certificate in enumerate(certificates):
        subprocess.run(
            [*certutil, "-A", "-t", "C,,", "-n", f"flsync-{number}"],
            input=certificate,
            check=True,
            capture_output=True,
        )
    return home
