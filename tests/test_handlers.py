"""Tests for flsync.handlers.CurlDownloadHandler (and the transport under it), against a
local HTTP server that misbehaves on purpose."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
from scrapy import Request, Spider
from scrapy.crawler import CrawlerRunner
from scrapy.exceptions import (
    DownloadCancelledError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from scrapy.http import HtmlResponse, Response
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from fakesite.coding import gzip_bomb
from flsync import settings as flsync_settings
from flsync import signals as flsync_signals
from flsync.bodies import StreamedResponse
from flsync.handlers import FIRST_BYTES_META, STREAM_TO_META, CurlDownloadHandler
from flsync.stopping import SyncStopped
from tests.proxy import ForwardProxy

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from twisted.internet.defer import Deferred

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
CSV = b"learner_id,step,visited_at\n" + b"".join(
    b"%032x,1.%d,2024-01-01 00:00:00 UTC\n" % (i, i % 9) for i in range(2000)
)
BLOCK = bytes(range(256)) * 4096  # 1 MiB
PAGE = b"<html><body><p>Your courses</p></body></html>"
SETTINGS: dict[str, Any] = {
    "DOWNLOAD_HANDLERS": {
        "http": "flsync.handlers.CurlDownloadHandler",
        "https": "flsync.handlers.CurlDownloadHandler",
    },
    "FLSYNC_IMPERSONATE": "chrome",
    "USER_AGENT": "flsync-test",
    "TWISTED_REACTOR": "twisted.internet.asyncioreactor.AsyncioSelectorReactor",
    "RETRY_ENABLED": False,
    # flsync's bounds, as a sync has them.
    **{
        name: getattr(flsync_settings, name)
        for name in (
            "DOWNLOAD_MAXSIZE",
            "FLSYNC_DATASET_MAXSIZE",
            "FLSYNC_DATASET_MAX_RATIO",
            "FLSYNC_DATASET_MIN_RATE",
        )
    },
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled connections are used

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._send(200, json.dumps({"body": body.decode()}).encode(), Content_Type="text/plain")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: float(v[0]) for k, v in parse_qs(url.query).items()}
        self.server.seen.append((url.path, dict(self.headers)))  # type: ignore[attr-defined]
        try:
            self._route(url.path, query)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as meant
            self.close_connection = True

    def _route(self, path: str, query: dict[str, float]) -> None:  # noqa: PLR0912, PLR0915 (one branch per misbehaviour)
        if path == "/page":
            self._send(200, PAGE, Content_Type="text/html", Set_Cookie="fl_session=s3cret; Path=/")
        elif path == "/data.csv":
            self._send(200, CSV, Content_Type="text/csv")
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(int(query["mib"]) * MIB))
            self.end_headers()
            for sent in range(int(query["mib"])):
                self.server.big_sent = sent  # type: ignore[attr-defined]  # MiB sent so far
                self.wfile.write(BLOCK)
        elif path == "/cut":  # says len(CSV), sends half, closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(CSV)))
            self.end_headers()
            self.wfile.write(CSV[: len(CSV) // 2])
            self.close_connection = True
        elif path == "/no-length":  # ends with the connection: completeness unknowable
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(CSV)
            self.close_connection = True
        elif path == "/bomb":  # a small gzip body that decodes to `mib` MiB
            bomb = gzip_bomb(int(query["mib"]))
            self.server.bomb_size = len(bomb)  # type: ignore[attr-defined]
            self._send(200, bomb, Content_Type="text/csv", Content_Encoding="gzip")
        elif path == "/gzip":  # what a CDN sends a client that accepts gzip
            self._send(200, gzip.compress(CSV), Content_Type="text/csv", Content_Encoding="gzip")
        elif path == "/chunked":  # no Content-Length; the last chunk marks the end
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (CSV[:1000], CSV[1000:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            if "cut" not in query:
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = "cut" in query
        elif path == "/silent":  # the headers, then nothing for a while
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.flush()
            time.sleep(4)
        elif path == "/redirect":
            self._send(302, b"moved", Location="/data.csv")
        elif path == "/not-modified":
            self.send_response(304)
            self.send_header("ETag", '"v1"')
            self.end_headers()
        elif path == "/unavailable":
            self._send(503, b"<html><body>Busy</body></html>", Content_Type="text/html")
        elif path == "/trickle":  # 10-byte chunks every `every` s, after a `stall` s pause
            chunks = int(query.get("chunks", 8))
            self.send_response(200)
            self.send_header("Content-Length", str(10 * chunks))
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            time.sleep(query.get("stall", 0))
            for _ in range(chunks - 1):
                time.sleep(query.get("every", 0))
                self.wfile.write(b"0123456789")
                self.wfile.flush()
        else:
            self._send(404, b"not found")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that leaves mid-answer (the cancelled and timed-out transfers these tests
        # make) is no fault of the server's: no traceback in the test output for it.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server() -> Generator[ThreadingHTTPServer]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


@pytest.fixture
def crawler() -> Any:
    return get_crawler(Spider, SETTINGS)


@pytest.fixture
def handler(crawler: Any) -> Generator[CurlDownloadHandler]:
    handler = build_from_crawler(CurlDownloadHandler, crawler)
    yield handler
    pytest_twisted.blockon(deferred_from_coro(handler.close()))


@pytest.fixture
def handler_for() -> Generator[Callable[[dict[str, Any]], CurlDownloadHandler]]:
    """Makes handlers of their own, with settings over the usual ones; closed at the end."""
    made: list[CurlDownloadHandler] = []

    def make(settings: dict[str, Any]) -> CurlDownloadHandler:
        crawler = get_crawler(Spider, {**SETTINGS, **settings})
        made.append(build_from_crawler(CurlDownloadHandler, crawler))
        return made[-1]

    yield make
    for handler in made:
        pytest_twisted.blockon(deferred_from_coro(handler.close()))


def download(handler: CurlDownloadHandler, request: Request) -> Deferred[Response]:
    return deferred_from_coro(handler.download_request(request))


def temp_path(directory: Path | str) -> str:
    """A new temporary file's name in ``directory``, as LocalStore.temp_path gives."""
    return str(Path(directory, f".flsync-tmp-{uuid.uuid4().hex}.part"))


def streamed(url: str, directory: Path, **meta: Any) -> Request:
    return Request(url, meta={STREAM_TO_META: temp_path(directory), **meta})


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def last_headers(server: ThreadingHTTPServer) -> dict[str, str]:
    """The headers of the last request the server saw, by lower-case name."""
    return {k.lower(): v for k, v in server.seen[-1][1].items()}  # type: ignore[attr-defined]


def wait_for(condition: Callable[[], bool]) -> Deferred[bool]:
    from twisted.internet import reactor  # noqa: PLC0415 (installed by pytest-twisted)

    @inlineCallbacks
    def poll() -> Generator[Deferred[None], None, bool]:
        for _ in range(250):
            if condition():
                return True
            yield deferLater(reactor, 0.02)
        return condition()

    return poll()


@pytest_twisted.inlineCallbacks
def test_streams_body_to_disk(handler, crawler, base, tmp_path):
    request = streamed(f"{base}/data.csv", tmp_path)
    response = yield download(handler, request)

    assert isinstance(response, StreamedResponse)
    assert response.status == 200
    assert response.body == b""
    assert response.flags == ["streamed"]
    assert response.protocol == "HTTP/1.1"
    assert response.headers[b"Content-Length"] == str(len(CSV)).encode()
    assert response.headers[b"Content-Type"] == b"text/csv"
    assert Path(response.body_path).read_bytes() == CSV
    assert response.body_path == request.meta[STREAM_TO_META]
    assert response.body_size == len(CSV)
    assert response.body_sha256 == hashlib.sha256(CSV).hexdigest()
    assert request.meta["download_latency"] > 0
    assert crawler.stats.get_value("flsync/stream/files") == 1
    assert crawler.stats.get_value("flsync/stream/bytes") == len(CSV)


@pytest_twisted.inlineCallbacks
def test_large_body(handler, base, tmp_path):
    response = yield download(handler, streamed(f"{base}/big?mib=64", tmp_path))

    expected = hashlib.sha256()
    for _ in range(64):
        expected.update(BLOCK)
    assert response.body_size == os.path.getsize(response.body_path) == 64 * MIB
    assert response.body_sha256 == expected.hexdigest()


@pytest_twisted.inlineCallbacks
def test_first_bytes_only_ends_a_big_transfer_early(handler, server, base, tmp_path):
    # 1 GiB on offer; at most 1 MiB may be read into memory (download_maxsize), and no file.
    meta = {FIRST_BYTES_META: 5000, "download_maxsize": MIB}
    response = yield download(handler, streamed(f"{base}/big?mib=1024", tmp_path, **meta))

    assert not isinstance(response, StreamedResponse)
    assert response.status == 200
    assert response.body == BLOCK[:5000]
    assert response.flags == ["truncated"]
    assert server.big_sent < 64  # the server was left blocked early on, not read to the end
    assert files_in(tmp_path) == []
    # The next transfer is whole again.
    whole = yield download(handler, Request(f"{base}/data.csv"))
    assert whole.body == CSV


@pytest_twisted.inlineCallbacks
def test_first_bytes_of_a_shorter_body_are_all_of_it(handler, base):
    request = Request(f"{base}/data.csv", meta={FIRST_BYTES_META: len(CSV)})
    response = yield download(handler, request)
    assert response.body == CSV
    assert response.flags == []


@pytest_twisted.inlineCallbacks
def test_a_compressed_body_is_kept_decoded(handler, base, tmp_path):
    response = yield download(handler, streamed(f"{base}/gzip", tmp_path))

    assert Path(response.body_path).read_bytes() == CSV
    assert response.body_sha256 == hashlib.sha256(CSV).hexdigest()
    # The headers described the encoded body; they would mislead whoever reads them now.
    assert b"Content-Encoding" not in response.headers
    assert b"Content-Length" not in response.headers


@pytest_twisted.inlineCallbacks
def test_a_chunked_body_is_complete_at_its_last_chunk(handler, base, tmp_path):
    response = yield download(handler, streamed(f"{base}/chunked", tmp_path))
    assert Path(response.body_path).read_bytes() == CSV

    with pytest.raises(ResponseDataLossError):
        yield download(handler, streamed(f"{base}/chunked?cut=1", tmp_path))
    assert files_in(tmp_path) == [Path(response.body_path).name]


@pytest_twisted.inlineCallbacks
def test_requests_carry_the_browser_fingerprint_headers(handler, server, base, tmp_path):
    yield download(handler, streamed(f"{base}/data.csv", tmp_path))

    headers = last_headers(server)
    assert "Chrome/" in headers["user-agent"]
    assert headers["accept-encoding"] == "gzip, deflate, br, zstd"
    assert headers["sec-ch-ua-platform"]
    assert "upgrade" not in headers  # browsers speak HTTP/2 over TLS only, never h2c


@pytest_twisted.inlineCallbacks
def test_without_impersonation_the_user_agent_setting_is_sent(server, base, tmp_path):
    crawler = get_crawler(Spider, {**SETTINGS, "FLSYNC_IMPERSONATE": "none"})
    handler = build_from_crawler(CurlDownloadHandler, crawler)
    try:
        yield download(handler, Request(f"{base}/page"))
    finally:
        yield deferred_from_coro(handler.close())
    assert last_headers(server)["user-agent"] == "flsync-test"
    assert "sec-ch-ua" not in last_headers(server)


@pytest_twisted.inlineCallbacks
def test_pages_are_read_into_memory(handler, base):
    response = yield download(handler, Request(f"{base}/page"))

    assert isinstance(response, HtmlResponse)
    assert response.body == PAGE
    assert response.headers.getlist(b"Set-Cookie") == [b"fl_session=s3cret; Path=/"]


@pytest_twisted.inlineCallbacks
def test_a_form_is_posted(handler, base):
    request = Request(f"{base}/form", method="POST", body=b"email=a%40b&password=x")
    response = yield download(handler, request)
    assert json.loads(response.body) == {"body": "email=a%40b&password=x"}


@pytest.mark.parametrize(
    ("path", "status"), [("/redirect", 302), ("/not-modified", 304), ("/unavailable", 503)]
)
@pytest_twisted.inlineCallbacks
def test_other_statuses_make_no_file(handler, base, tmp_path, path, status):
    request = streamed(base + path, tmp_path)
    response = yield download(handler, request)

    assert not isinstance(response, StreamedResponse)
    assert response.status == status
    assert files_in(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_cut_off_body_is_data_loss(handler, crawler, base, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="flsync.handlers")
    with pytest.raises(ResponseDataLossError):
        yield download(handler, streamed(f"{base}/cut", tmp_path))

    assert files_in(tmp_path) == []
    assert crawler.stats.get_value("flsync/stream/failed/dataloss") == 1
    # Said once the file has no try left (flsync.pipelines); each try's line is DEBUG.
    [(logger, level, message)] = [r for r in caplog.record_tuples if "Stream (" in r[2]]
    assert (logger, level) == ("flsync.handlers", logging.DEBUG)
    assert message.startswith(f"Stream (dataloss): {base}/cut: body cut off after ")


@pytest_twisted.inlineCallbacks
def test_body_without_length_is_data_loss(handler, base, tmp_path):
    # Ended by the connection with no length: complete or cut, there is no telling.
    with pytest.raises(ResponseDataLossError, match="no length to check it against"):
        yield download(handler, streamed(f"{base}/no-length", tmp_path))

    assert files_in(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_idle_timeout(handler, crawler, base, tmp_path):
    request = streamed(f"{base}/silent", tmp_path, download_timeout=1)
    with pytest.raises(DownloadTimeoutError):
        yield download(handler, request)

    assert files_in(tmp_path) == []
    assert crawler.stats.get_value("flsync/stream/failed/timeout") == 1


@pytest_twisted.inlineCallbacks
def test_a_page_must_be_complete_within_the_timeout(handler, crawler, base):
    # 20 chunks 0.3 s apart: 5.7 s in all, however steadily they come.
    request = Request(f"{base}/trickle?every=0.3&chunks=20", meta={"download_timeout": 1})
    with pytest.raises(DownloadTimeoutError) as raised:
        yield download(handler, request)

    assert re.fullmatch(
        r"too slow: not complete within DOWNLOAD_TIMEOUT \(1 s\), \d+ bytes in", str(raised.value)
    )
    assert crawler.stats.get_value("flsync/stream/failed/timeout") is None  # not a file


@pytest_twisted.inlineCallbacks
def test_a_file_at_a_steady_rate_may_take_longer_than_the_timeout(handler_for, base, tmp_path):
    # 8 chunks 0.4 s apart (25 bytes/s): 2.8 s in all, longer than the 2 s timeout, and
    # never under the minimum rate of 10 bytes/s.
    handler = handler_for({"FLSYNC_DATASET_MIN_RATE": 10})
    request = streamed(f"{base}/trickle?every=0.4", tmp_path, download_timeout=2)
    response = yield download(handler, request)

    assert response.body_size == 80


@pytest_twisted.inlineCallbacks
def test_a_file_under_the_minimum_rate_for_the_timeout_fails(handler_for, base, tmp_path):
    # 25 bytes/s for 8 s, under 100 bytes/s from the start.
    handler = handler_for({"FLSYNC_DATASET_MIN_RATE": 100})
    request = streamed(f"{base}/trickle?every=0.4&chunks=20", tmp_path, download_timeout=1)
    with pytest.raises(DownloadTimeoutError) as raised:
        yield download(handler, request)

    assert re.fullmatch(
        r"too slow: under FLSYNC_DATASET_MIN_RATE \(100 bytes/s\) for DOWNLOAD_TIMEOUT \(1 s\)"
        r" in a row, \d+ bytes in",
        str(raised.value),
    )
    assert files_in(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_a_page_past_download_maxsize_is_refused(handler, crawler, server, base):
    request = Request(f"{base}/big?mib=64")  # DOWNLOAD_MAXSIZE: 4 MiB
    with pytest.raises(DownloadCancelledError) as raised:
        yield download(handler, request)

    assert str(raised.value) == (
        "the answer is larger than DOWNLOAD_MAXSIZE (4194304 bytes): not read further (raise"
        " DOWNLOAD_MAXSIZE if such a page is genuine)"
    )
    assert server.big_sent < 32  # left early, not read to the end
    assert crawler.stats.get_value("flsync/bodies/refused/DOWNLOAD_MAXSIZE") == 1


@pytest_twisted.inlineCallbacks
def test_a_compressed_page_is_bounded_decoded(handler, crawler, base):
    # 2 MB of gzip, 2 GiB of spaces: refused at 4 MiB, as memory holds it decoded.
    with pytest.raises(DownloadCancelledError, match=r"larger than DOWNLOAD_MAXSIZE"):
        yield download(handler, Request(f"{base}/bomb?mib=2048"))

    assert crawler.stats.get_value("flsync/bodies/refused/DOWNLOAD_MAXSIZE") == 1


@pytest_twisted.inlineCallbacks
def test_a_compression_bomb_is_refused_and_its_file_deleted(
    handler, crawler, server, base, tmp_path
):
    with pytest.raises(DownloadCancelledError) as raised:
        yield download(handler, streamed(f"{base}/bomb?mib=1024", tmp_path))

    message = str(raised.value)
    match = re.fullmatch(
        r"decodes to more than FLSYNC_DATASET_MAX_RATIO \(100\) times the bytes received \(a"
        r" compression bomb\?\): not stored, refused after (\d+) bytes \(raise"
        r" FLSYNC_DATASET_MAX_RATIO if such a file is genuine\)",
        message,
    )
    assert match, message
    # At most 100 times what came, plus the read being decoded: never the whole GiB.
    assert int(match[1]) <= 100 * (server.bomb_size + 512 * 1024) < 1024 * MIB
    assert files_in(tmp_path) == []
    assert crawler.stats.get_value("flsync/bodies/refused/FLSYNC_DATASET_MAX_RATIO") == 1


@pytest_twisted.inlineCallbacks
def test_a_file_past_the_dataset_maxsize_is_refused_and_deleted(
    handler_for, server, base, tmp_path
):
    handler = handler_for({"FLSYNC_DATASET_MAXSIZE": 8 * MIB})
    with pytest.raises(DownloadCancelledError) as raised:
        yield download(handler, streamed(f"{base}/big?mib=64", tmp_path))

    assert str(raised.value) == (
        "larger than FLSYNC_DATASET_MAXSIZE (8388608 bytes): not stored (raise"
        " FLSYNC_DATASET_MAXSIZE if such a file is genuine)"
    )
    assert server.big_sent < 32
    assert files_in(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_cancel_deletes_the_file_at_once(handler, base, tmp_path):
    request = streamed(f"{base}/trickle?stall=30", tmp_path)
    d = download(handler, request)
    d.addErrback(lambda _: None)
    # download_latency is set only at the end: wait for the first bytes on disk instead.
    assert (yield wait_for(lambda: len(files_in(tmp_path)) == 1))
    d.cancel()

    # Within a few seconds, not 30 s later when the server would send again.
    assert (yield wait_for(lambda: files_in(tmp_path) == []))


@pytest_twisted.inlineCallbacks
def test_a_stopping_sync_fails_transfers_at_once_and_quietly(handler, crawler, base, tmp_path):
    waiting = download(handler, Request(f"{base}/trickle?stall=30&chunks=2"))
    streaming = download(handler, streamed(f"{base}/trickle?stall=30", tmp_path))
    assert (yield wait_for(lambda: len(files_in(tmp_path)) == 1))
    started = time.monotonic()
    crawler.signals.send_catch_log(signal=flsync_signals.sync_stopping)

    for d in (waiting, streaming):
        with pytest.raises(SyncStopped):
            yield d
    assert time.monotonic() - started < 5
    assert files_in(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_connection_refused_is_a_scrapy_error(handler, tmp_path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadFailedError):
        yield download(handler, streamed(f"http://127.0.0.1:{port}/a.csv", tmp_path))

    assert files_in(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_missing_directory_fails_and_the_handler_goes_on(handler, base, tmp_path):
    with pytest.raises(FileNotFoundError):
        yield download(handler, streamed(f"{base}/data.csv", tmp_path / "missing"))

    response = yield download(handler, streamed(f"{base}/data.csv", tmp_path))
    assert Path(response.body_path).read_bytes() == CSV


@pytest_twisted.inlineCallbacks
def test_request_leaving_receivers_hold_update_or_refuse(handler, crawler, server, base):
    def stamp(request: Request) -> None:
        request.headers[b"X-Stamped-At-Departure"] = b"yes"

    def refuse(request: Request) -> None:
        if request.url.endswith("/unavailable"):
            raise IgnoreRequest("not this one")

    crawler.signals.connect(stamp, signal=flsync_signals.request_leaving)
    crawler.signals.connect(refuse, signal=flsync_signals.request_leaving)
    sent = len(server.seen)

    yield download(handler, Request(f"{base}/page"))
    assert last_headers(server)["x-stamped-at-departure"] == "yes"
    with pytest.raises(IgnoreRequest, match="not this one"):
        yield download(handler, Request(f"{base}/unavailable"))
    assert len(server.seen) == sent + 1  # the refused one never left


class _MixedSpider(Spider):
    name = "mixed"
    custom_settings = {"RETRY_ENABLED": True, "RETRY_TIMES": 1, "LOG_LEVEL": "INFO"}  # noqa: RUF012

    def __init__(self, base: str, directory: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = base
        self.directory = directory
        self.responses: list[Response] = []
        self.failures: list[Any] = []

    async def start(self) -> Any:
        yield Request(f"{self.base}/page", callback=self.parse_page)

    def parse_page(self, response: Response) -> Any:
        self.responses.append(response)

        def meta() -> dict[str, str]:
            return {STREAM_TO_META: temp_path(self.directory)}

        yield Request(f"{self.base}/redirect", meta=meta(), callback=self.keep_file)
        yield Request(f"{self.base}/big?mib=1", meta=meta(), callback=self.responses.append)
        yield Request(f"{self.base}/cut", meta=meta(), errback=self.failures.append)

    def keep_file(self, response: StreamedResponse) -> None:
        self.responses.append(response)
        os.replace(response.body_path, Path(self.directory, "data.csv"))


@pytest_twisted.inlineCallbacks
def test_crawl_through_middlewares(server, base, tmp_path, caplog):
    runner = CrawlerRunner(SETTINGS)
    crawler = runner.create_crawler(_MixedSpider)
    yield runner.crawl(crawler, base=base, directory=str(tmp_path))

    spider = crawler.spider
    ignored, dataset, page = sorted(spider.responses, key=lambda r: r.url)  # /big, /data.csv, /page
    assert page.body == PAGE
    assert isinstance(dataset, StreamedResponse)
    assert dataset.url == f"{base}/data.csv"  # RedirectMiddleware kept the meta key
    assert dataset.body_sha256 == hashlib.sha256(CSV).hexdigest()
    assert (tmp_path / "data.csv").read_bytes() == CSV
    # The file nobody moved was deleted when the spider closed; /cut left nothing.
    assert files_in(tmp_path) == ["data.csv"]
    assert (
        "flsync.handlers",
        logging.WARNING,
        f"Stream (unclaimed): deleted {ignored.body_path}",
    ) in caplog.record_tuples
    [failure] = spider.failures
    assert failure.check(ResponseDataLossError)
    # CookiesMiddleware sent the page's cookie with the streamed requests.
    cookies = {path: headers.get("Cookie") for path, headers in server.seen}
    assert cookies["/data.csv"] == "fl_session=s3cret"
    assert cookies["/cut"] == "fl_session=s3cret"
    stats = crawler.stats.get_stats()
    assert stats["flsync/stream/files"] == 2
    assert stats["flsync/stream/bytes"] == len(CSV) + MIB
    assert stats["flsync/stream/unclaimed"] == 1
    assert stats["flsync/stream/failed/dataloss"] == 2
    assert stats["retry/reason_count/scrapy.exceptions.ResponseDataLossError"] == 1
    assert stats["downloader/response_status_count/302"] == 1
    assert stats["downloader/response_status_count/200"] == 3
    assert stats["finish_reason"] == "finished"


_RSS_SCRIPT = """
import os, resource, sys
from scrapy.utils.reactor import install_reactor
install_reactor("twisted.internet.asyncioreactor.AsyncioSelectorReactor")
from twisted.internet import reactor
from scrapy import Request
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.misc import build_from_crawler
from scrapy.utils.test import get_crawler
from flsync.handlers import CurlDownloadHandler

def peak_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

async def main():
    handler = build_from_crawler(CurlDownloadHandler, get_crawler())
    before = peak_kib()
    request = Request(sys.argv[1], meta={"flsync_stream_to": sys.argv[2] + "/.flsync-tmp-rss.part"})
    response = await handler.download_request(request)
    os.unlink(response.body_path)
    await handler.close()
    print(response.body_size, before, peak_kib())

def run():
    d = deferred_from_coro(main())
    d.addErrback(lambda f: (f.printTraceback(), sys.exit(1)))
    d.addBoth(lambda _: reactor.stop())

reactor.callWhenRunning(run)
reactor.run()
"""


def peak_rss_kib(url: str, directory: Path) -> tuple[int, int]:
    """Stream *url* in a fresh process; return its peak RSS (KiB) before and after."""
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, url, str(directory)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    size, before, after = map(int, result.stdout.split())
    assert size == int(parse_qs(urlsplit(url).query)["mib"][0]) * MIB
    return before, after


def test_memory_does_not_grow_with_body_size(base, tmp_path):
    # 112 MiB more body: held in memory, it would be nearly 3 times the 40 MiB allowed.
    start_16, peak_16 = peak_rss_kib(f"{base}/big?mib=16", tmp_path)
    start_128, peak_128 = peak_rss_kib(f"{base}/big?mib=128", tmp_path)

    print(f"peak RSS KiB: 16 MiB {start_16} -> {peak_16}, 128 MiB {start_128} -> {peak_128}")  # noqa: T201
    assert files_in(tmp_path) == []
    assert peak_128 < peak_16 + 40 * 1024


@pytest_twisted.inlineCallbacks
def test_a_request_goes_through_the_proxy_its_meta_names(handler, base, tmp_path):
    with ForwardProxy() as proxy:
        page = yield download(handler, Request(f"{base}/page", meta={"proxy": proxy.url}))
        dataset = yield download(handler, streamed(f"{base}/data.csv", tmp_path, proxy=proxy.url))
        stats = proxy.stats()
    assert page.status == dataset.status == 200
    assert Path(dataset.body_path).read_bytes() == CSV
    assert stats.forwarded == [("GET", f"{base}/page"), ("GET", f"{base}/data.csv")]
