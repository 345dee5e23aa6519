"""flsync.browser: its settings, the pass it reads, and pages rendered in real headless
Chromium (Debian's, as on the machines flsync runs on) against a small local server."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from scrapy import Request, Spider, signals
from scrapy.http.cookies import CookieJar
from scrapy.settings import Settings
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler

from fakesite.tls import make_pki
from flsync.browser import (
    BrowserError,
    PageNotBuilt,
    _jar_cookie,
    _nss_home,
    bot_pass,
    browser_path,
    browser_settings,
    skip_resource,
)
from flsync.handlers import CurlDownloadHandler
from flsync.options import SyncOptions, options_of
from flsync.session import GENERATION_META

if TYPE_CHECKING:
    from collections.abc import Generator

    from scrapy.crawler import Crawler

BUILT_LATE = b"""<!doctype html><html><head><title>Dashboard</title></head><body>
<ul class="m-datasets" aria-busy="true"></ul>
<script>
setTimeout(() => {
  const ul = document.querySelector("ul.m-datasets");
  const li = document.createElement("li");
  li.textContent = "comments from " + document.cookie;
  ul.appendChild(li);
  ul.setAttribute("aria-busy", "false");
}, 300);
</script></body></html>"""
NEVER_BUILT = b"""<!doctype html><html><head><title>Runs</title></head><body>
<table class="m-table m-table--runs" aria-busy="true"><tbody></tbody></table></body></html>"""
CHALLENGE = b"""<!doctype html><html><head><title>Just a moment...</title></head><body>
<script>
fetch("/solve", {method: "POST"}).then(() => location.reload());
</script></body></html>"""
PASSED = b"<!doctype html><html><head><title>Sign in</title></head><body>in</body></html>"
# Built once the server has answered /signed-out (to another page), with the cookies it sees.
BUILT_AFTER_SIGN_OUT = b"""<!doctype html><html><head><title>Dashboard</title></head><body>
<ul class="m-datasets" aria-busy="true"></ul>
<script>
async function build() {
  while ((await (await fetch("/gate")).text()) !== "open") {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const ul = document.querySelector("ul.m-datasets");
  const li = document.createElement("li");
  li.textContent = "comments from " + document.cookie;
  ul.appendChild(li);
  ul.setAttribute("aria-busy", "false");
}
build();
</script></body></html>"""
SIGNED_OUT = b"<!doctype html><html><head><title>Sign in</title></head><body>out</body></html>"


class _Handler(BaseHTTPRequestHandler):
    gate_asked = threading.Event()  # a page's script is running
    signed_out_asked = threading.Event()  # /signed-out has been asked for
    signed_out = threading.Event()  # /signed-out has been answered

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/built-late":
            self._send(200, BUILT_LATE, Content_Type="text/html")
        elif self.path == "/built-after-sign-out":
            self._send(200, BUILT_AFTER_SIGN_OUT, Content_Type="text/html")
        elif self.path == "/gate":
            self.gate_asked.set()
            self._send(200, b"open" if self.signed_out.is_set() else b"shut")
        elif self.path == "/signed-out":
            # What a site answers a request of an expired session: a new, signed-out cookie.
            # It comes once a newer page's script runs, if one is allowed to run meanwhile.
            self.signed_out_asked.set()
            self.gate_asked.wait(2)
            cookie = "_future_learn_session=signed-out; Path=/"
            self._send(200, SIGNED_OUT, Content_Type="text/html", Set_Cookie=cookie)
            self.signed_out.set()
        elif self.path == "/never-built":
            self._send(200, NEVER_BUILT, Content_Type="text/html")
        elif self.path == "/challenged":
            if "cf_clearance=passed" in (self.headers.get("Cookie") or ""):
                self._send(200, PASSED, Content_Type="text/html")
            else:
                self._send(403, CHALLENGE, Content_Type="text/html", cf_mitigated="challenge")
        else:
            self._send(404, b"not found")

    def do_POST(self) -> None:
        self._send(200, b"{}", Set_Cookie="cf_clearance=passed; Path=/; HttpOnly")


@pytest.fixture(scope="module")
def base() -> Generator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def options(**extra: Any) -> SyncOptions:
    values = {"FLSYNC_BROWSER_PAGES": 2, "FLSYNC_BROWSER_TIMEOUT": 5.0, **extra}
    return SyncOptions.from_settings(Settings(values))


# Settings


def test_the_default_browser_is_chromium_on_the_path():
    assert browser_path(None).endswith("chromium")


def test_a_browser_path_that_is_not_there_is_one_clear_error():
    with pytest.raises(BrowserError, match=r"FLSYNC_BROWSER_PATH=/opt/none is not an executable"):
        browser_path("/opt/none")


def test_no_chromium_on_the_path_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserError, match=r"there is no chromium or chromium-browser on the PATH"):
        browser_path(None)


def test_browser_settings_for_scrapy_playwright(monkeypatch):
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    result = browser_settings(options(), "https://www.futurelearn.com")
    launch = result["PLAYWRIGHT_LAUNCH_OPTIONS"]
    assert launch["executable_path"].endswith("chromium")
    assert launch["headless"] is True
    assert "proxy" not in launch
    assert result["PLAYWRIGHT_PROCESS_REQUEST_HEADERS"] is None  # the browser's own headers
    assert result["PLAYWRIGHT_MAX_PAGES_PER_CONTEXT"] == 2
    assert result["PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT"] == 5000


def test_the_browser_takes_the_environment_proxy(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://uni:s3cret@proxy.example.ac.uk:3128")
    monkeypatch.setenv("no_proxy", "intranet.example.ac.uk")
    launch = browser_settings(options(), "https://www.futurelearn.com")["PLAYWRIGHT_LAUNCH_OPTIONS"]
    assert launch["proxy"] == {
        "server": "http://proxy.example.ac.uk:3128",
        "username": "uni",
        "password": "s3cret",
    }
    bypassed = browser_settings(options(), "https://intranet.example.ac.uk")
    assert "proxy" not in bypassed["PLAYWRIGHT_LAUNCH_OPTIONS"]


def test_extra_cas_need_certutil(monkeypatch, tmp_path):
    chromium = browser_path(None)
    (tmp_path / "chromium").symlink_to(chromium)
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with Chromium and no certutil
    with pytest.raises(BrowserError, match="needs certutil"):
        browser_settings(options(FLSYNC_CA_BUNDLE="/etc/ca.pem"), "https://x.example")


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"FLSYNC_BROWSER_PAGES": 0}, "FLSYNC_BROWSER_PAGES must be 1 or more, not 0"),
        ({"FLSYNC_BROWSER_TIMEOUT": 0}, "FLSYNC_BROWSER_TIMEOUT must be above 0, not 0.0"),
    ],
)
def test_no_pages_or_no_time_is_refused(bad, error):
    with pytest.raises(ValueError, match=f"^{error}$"):
        options(**bad)


def test_what_the_browser_does_not_need_is_not_loaded():
    for kind in ("image", "media", "font", "stylesheet"):
        assert skip_resource(SimpleNamespace(resource_type=kind))
    for kind in ("document", "script", "xhr", "fetch"):
        assert not skip_resource(SimpleNamespace(resource_type=kind))


# The pass and the CAs


def test_a_pass_goes_into_scrapys_cookie_jar():
    cookies = [
        {"name": "cf_clearance", "value": "abc", "domain": "127.0.0.1", "path": "/",
         "expires": -1, "httpOnly": True, "secure": False},
        {"name": "_future_learn_session", "value": "anon", "domain": "127.0.0.1", "path": "/",
         "expires": -1, "httpOnly": True, "secure": False},
    ]  # fmt: skip
    visit = Request("http://127.0.0.1:8000/sign-in")
    visit.meta["playwright_page_methods"] = [
        SimpleNamespace(result=None),
        SimpleNamespace(result={"cookies": cookies, "user_agent": "Mozilla/5.0 HeadlessChrome"}),
    ]
    found = bot_pass(visit)
    assert found is not None
    assert found.user_agent == "Mozilla/5.0 HeadlessChrome"
    assert [c.name for c in found.cookies] == ["cf_clearance"]  # the visit's session is not
    jar = CookieJar()
    for cookie in found.cookies:
        jar.set_cookie(cookie)
    request = Request("http://127.0.0.1:8000/admin/organisations")
    jar.add_cookie_header(request)
    assert request.headers[b"Cookie"] == b"cf_clearance=abc"


def test_a_visit_without_a_pass_has_none():
    visit = Request("http://127.0.0.1:8000/sign-in")
    visit.meta["playwright_page_methods"] = [
        SimpleNamespace(result={"cookies": [], "user_agent": "x"})
    ]
    assert bot_pass(visit) is None
    assert _jar_cookie({"name": "n", "value": "v", "domain": ".example.org"}).domain_specified


def test_the_browser_trusts_extra_cas_through_its_own_nss_database(tmp_path):
    pki = make_pki(tmp_path)
    home = _nss_home(str(pki.ca_file))
    listed = subprocess.run(
        ["certutil", "-d", f"sql:{home}/.pki/nssdb", "-L"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "flsync-0" in listed.stdout
    assert "C,," in listed.stdout


# Pages rendered in Chromium


async def browser_handler(timeout: float) -> tuple[CurlDownloadHandler, Crawler]:
    """flsync's download handler with the browser on (FLSYNC_BROWSER_TIMEOUT ``timeout``),
    started, and its crawler (``close`` them)."""
    settings = {
        "FLSYNC_BROWSER": True,
        "FLSYNC_BROWSER_TIMEOUT": timeout,
        "FLSYNC_BROWSER_PAGES": 2,
    }
    settings |= browser_settings(options_of(Settings(settings)), "http://127.0.0.1")
    crawler = get_crawler(Spider, {**settings, "EXTENSIONS": {"flsync.browser.BrowserPages": 0}})
    handler = build_from_crawler(CurlDownloadHandler, crawler)
    await crawler.signals.send_catch_log_async(signals.engine_started)
    return handler, crawler


async def close(handler: CurlDownloadHandler, crawler: Crawler) -> None:
    """The handler, then the browser, closed as at a crawl's end."""
    await handler.close()
    await crawler.signals.send_catch_log_async(signals.engine_stopped)


@pytest.fixture(scope="module")
def handler() -> Generator[CurlDownloadHandler]:
    """One browser for the module's pages (each start costs Playwright's driver and Chromium
    seconds of CPU): its pages and cookie store go on from test to test, as they do from page
    to page in a sync."""
    handler, crawler = pytest_twisted.blockon(deferred_from_coro(browser_handler(timeout=5.0)))
    yield handler
    pytest_twisted.blockon(deferred_from_coro(close(handler, crawler)))


def rendered(url: str, **meta: Any) -> Request:
    return Request(url, meta={"playwright": True, **meta})


@pytest_twisted.ensureDeferred
async def test_a_page_is_read_once_built_with_the_requests_cookies(handler, base):
    request = rendered(f"{base}/built-late", dont_merge_cookies=True)
    request.headers[b"Cookie"] = b"_future_learn_session=s1"
    response = await deferred_from_coro(handler.download_request(request))
    assert response.css("ul.m-datasets::attr(aria-busy)").get() == "false"
    # The page's script saw the cookie: it was in the browser context, not only in one header.
    assert response.css("ul.m-datasets li::text").get() == "comments from _future_learn_session=s1"


@pytest_twisted.ensureDeferred
async def test_a_page_of_a_renewed_session_waits_for_the_old_sessions_pages(handler, base):
    for event in (_Handler.gate_asked, _Handler.signed_out_asked, _Handler.signed_out):
        event.clear()
    stale = rendered(f"{base}/signed-out", dont_merge_cookies=True, **{GENERATION_META: (1, 0)})
    stale.headers[b"Cookie"] = b"_future_learn_session=expired"
    renewed = rendered(
        f"{base}/built-after-sign-out", dont_merge_cookies=True, **{GENERATION_META: (2, 0)}
    )
    renewed.headers[b"Cookie"] = b"_future_learn_session=renewed"
    first = deferred_from_coro(handler.download_request(stale))
    while not _Handler.signed_out_asked.is_set():
        await deferred_from_coro(asyncio.sleep(0.02))
    response = await deferred_from_coro(handler.download_request(renewed))
    await first
    # The old session's answer (a signed-out cookie, in the cookie store the pages share)
    # came before this page was loaded with its own cookies, not while its script ran.
    assert response.css("ul.m-datasets li::text").get() == (
        "comments from _future_learn_session=renewed"
    )


@pytest_twisted.ensureDeferred
async def test_a_page_that_never_finishes_building_fails_clearly(base):
    # A browser of its own, with a short timeout: the test waits it out.
    handler, crawler = await deferred_from_coro(browser_handler(timeout=1.0))
    try:
        with pytest.raises(PageNotBuilt, match=r"did not finish building itself within 1 s"):
            await deferred_from_coro(handler.download_request(rendered(f"{base}/never-built")))
    finally:
        await deferred_from_coro(close(handler, crawler))


@pytest_twisted.ensureDeferred
async def test_a_challenge_passed_in_the_page_is_the_page(handler, base):
    response = await deferred_from_coro(handler.download_request(rendered(f"{base}/challenged")))
    assert response.status == 200  # not the first answer's 403
    assert b"cf-mitigated" not in response.headers
    assert response.css("title::text").get() == "Sign in"
