"""The download handler for http and https: every request flsync sends goes out through curl
with a browser's TLS and HTTP fingerprint (see flsync.transport).

It is a thin adapter: a Scrapy request becomes a :class:`~flsync.transport.Transfer`, run on
a worker thread, and its answer a Scrapy response. The 200 body of a request with
``meta["flsync_stream_to"]`` (a new file's path, in an existing folder: the store gives it)
is written to that file as it arrives, and the response is a
:class:`~flsync.bodies.StreamedResponse`; any other body is read into memory. Just before a
request leaves, the handler sends ``flsync.signals.request_leaving`` and waits for its
receivers (they may hold the request, update it, or refuse it with IgnoreRequest). On
``flsync.signals.sync_stopping`` it cancels the transfers in flight. Requests marked
``meta["playwright"]`` are rendered in a browser instead (see flsync.browser), once they leave.

Every request is bounded (see flsync.transport and flsync.bodies): a body past its bound fails
the request with DownloadCancelledError, which is not retried (the same answer would come
again), and a request too slow with DownloadTimeoutError, which is.

Settings: ``FLSYNC_IMPERSONATE`` (the browser to impersonate, or ``none``), ``FLSYNC_CA_BUNDLE``
(extra CAs to trust), ``USER_AGENT`` (sent only when not impersonating), ``DOWNLOAD_TIMEOUT``
(the longest a request may take; for a body streamed to a file, the longest it may stay under
``FLSYNC_DATASET_MIN_RATE`` bytes a second), ``DOWNLOAD_MAXSIZE`` (bodies kept in memory),
``FLSYNC_DATASET_MAXSIZE`` and ``FLSYNC_DATASET_MAX_RATIO`` (bodies streamed to a file, once
decoded). Request meta: ``flsync_stream_to``, ``flsync_first_bytes`` (keep that many bytes
of the body, in memory, and end the transfer there: the response is flagged ``truncated``),
``proxy`` (set by HttpProxyMiddleware, with its ``Proxy-Authorization`` header sent to the
proxy only), ``download_timeout``, ``download_maxsize``; it sets ``download_latency``. Stats:
``flsync/stream/files``, ``flsync/stream/bytes``, ``flsync/stream/failed/<reason>``
(``dataloss``, ``timeout``), ``flsync/stream/unclaimed``, ``flsync/bodies/refused/<setting>``
(a body past the bound that setting sets, e.g. ``flsync/bodies/refused/DOWNLOAD_MAXSIZE``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from contextlib import suppress
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.exceptions import (
    DownloadCancelledError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from scrapy.http import Headers, Response
from scrapy.responsetypes import responsetypes

from flsync import signals as flsync_signals
from flsync.bodies import (
    BodyTooLarge,
    BodyWriteError,
    FileBody,
    FileLimits,
    StreamedResponse,
)
from flsync.browser import BrowserPages
from flsync.options import NO_IMPERSONATION, SyncOptions, options_of
from flsync.stopping import SyncStopped
from flsync.transport import (
    Answer,
    Cancelled,
    ConnectionFailed,
    DataLossError,
    Transfer,
    TransferTimeout,
    Workers,
    browser_target,
    combined_ca_bundle,
)

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

# Request meta key: the file (new, in an existing folder) to stream the body of a 200 into.
STREAM_TO_META = "flsync_stream_to"
# Request meta key: N > 0 keeps the body's first N bytes (in memory) and ends the transfer
# there; a response cut so is flagged "truncated".
FIRST_BYTES_META = "flsync_first_bytes"


def impersonation(options: SyncOptions) -> str | None:
    """The curl_cffi target FLSYNC_IMPERSONATE names, or None for plain curl (``none``).
    Raises ValueError for a name curl_cffi does not know."""
    name = options.impersonate
    return None if name.lower() == NO_IMPERSONATION else browser_target(name)


class CurlDownloadHandler:
    lazy = False  # built at start-up: a bad setting fails before any request

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        options = options_of(settings)
        self._crawler = crawler
        assert crawler.stats
        self._stats = crawler.stats
        self._impersonate = impersonation(options)
        self._user_agent = settings.get("USER_AGENT") or "flsync"
        self._timeout = settings.getfloat("DOWNLOAD_TIMEOUT")
        self._maxsize = settings.getint("DOWNLOAD_MAXSIZE")
        self._min_rate = options.dataset_min_rate
        self._file_limits = FileLimits(
            maxsize=options.dataset_maxsize, max_ratio=options.dataset_max_ratio
        )
        self._ca_file = _write_ca_file(combined_ca_bundle(options.ca_bundle))
        self._workers = Workers(self._ca_file)
        # Pages marked meta["playwright"] are rendered in the crawl's browser (FLSYNC_BROWSER):
        # one for the http and https handlers, each of which would start Playwright's driver.
        self._browser = crawler.get_extension(BrowserPages)
        self._in_flight: dict[Transfer, asyncio.Future[Answer]] = {}
        self._rendering: set[asyncio.Future[Response]] = set()  # pages in the browser
        self._stopping = False
        # Body files this handler made; any still there when the spider closes (response
        # dropped, spider closed mid-way) was never moved into place and is deleted.
        self._temp_files: set[str] = set()
        crawler.signals.connect(self._delete_unclaimed, signal=signals.spider_closed)
        crawler.signals.connect(self._cancel_in_flight, signal=flsync_signals.sync_stopping)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def download_request(self, request: Request) -> Response:
        await self._leaving(request)
        if request.meta.get("playwright") and self._browser is not None:
            return await self._render(request, self._browser)
        transfer = Transfer(
            method=request.method,
            url=request.url.split("#", 1)[0],
            headers=[(name, value) for name, values in request.headers.items() for value in values],
            body=request.body,
            impersonate=self._impersonate,
            user_agent=self._user_agent,
            proxy=request.meta.get("proxy"),
            timeout=float(request.meta.get("download_timeout") or self._timeout),
            maxsize=int(request.meta.get("download_maxsize", self._maxsize)),
            stream_to=request.meta.get(STREAM_TO_META),
            first_bytes=int(request.meta.get(FIRST_BYTES_META, 0)),
            min_rate=self._min_rate,
            file_limits=self._file_limits,
        )
        if transfer.stream_to:
            self._temp_files.add(transfer.stream_to)
        future = self._in_flight[transfer] = self._workers.run(transfer)
        try:
            answer = await future
        except asyncio.CancelledError:
            self._abandon(transfer)
            raise
        except Cancelled:
            if self._stopping:
                raise SyncStopped("the sync is stopping") from None
            raise DownloadCancelledError(f"Getting {transfer.url} was cancelled") from None
        except (DataLossError, TransferTimeout) as exc:
            self._stream_failed(transfer, exc)
            raise _scrapy_error(exc) from None
        except ConnectionFailed as exc:
            raise _scrapy_error(exc) from None
        except BodyTooLarge as exc:
            self._stats.inc_value(f"flsync/bodies/refused/{exc.setting}")
            raise DownloadCancelledError(str(exc)) from None
        except BodyWriteError as exc:
            self._stats.inc_value("flsync/bodies/unwritable")
            raise DownloadCancelledError(str(exc)) from None
        finally:
            self._in_flight.pop(transfer, None)
        request.meta["download_latency"] = answer.latency
        return self._response(request, answer)

    async def _render(self, request: Request, browser: BrowserPages) -> Response:
        rendering = asyncio.ensure_future(browser.download(request))
        self._rendering.add(rendering)
        try:
            return await rendering
        except asyncio.CancelledError:
            if self._stopping:
                raise SyncStopped("the sync is stopping") from None
            raise
        finally:
            self._rendering.discard(rendering)

    def _response(self, request: Request, answer: Answer) -> Response:
        headers = Headers()
        for name, value in answer.headers:
            headers.appendlist(name, value)
        url = request.url.split("#", 1)[0]
        if isinstance(answer.body, FileBody):
            self._stats.inc_value("flsync/stream/files")
            self._stats.inc_value("flsync/stream/bytes", answer.body.size)
            return StreamedResponse(
                url=url,
                status=answer.status,
                headers=headers,
                flags=["streamed"],
                protocol=answer.protocol,
                body_path=answer.body.path,
                body_size=answer.body.size,
                body_sha256=answer.body.sha256,
            )
        body = answer.body.getvalue()
        respcls = responsetypes.from_args(headers=headers, url=url, body=body)
        return respcls(
            url=url,
            status=answer.status,
            headers=headers,
            body=body,
            protocol=answer.protocol,
            flags=["truncated"] if answer.truncated else None,
        )

    async def _leaving(self, request: Request) -> None:
        """Send request_leaving; a receiver's IgnoreRequest refuses the request."""
        results = await self._crawler.signals.send_catch_log_async(
            flsync_signals.request_leaving, request=request, dont_log=IgnoreRequest
        )
        for _, result in results:  # a receiver's exception comes back as its result
            if isinstance(result, BaseException):
                raise result

    def _stream_failed(self, transfer: Transfer, error: Exception) -> None:
        if not transfer.stream_to:
            return
        reason = "dataloss" if isinstance(error, DataLossError) else "timeout"
        self._stats.inc_value(f"flsync/stream/failed/{reason}")
        # Each try's; the file's failure, once it has no try left, is one line of its own
        # (flsync.pipelines), which says the same.
        logger.debug(
            "Stream (%(reason)s): %(url)s: %(error)s",
            {"reason": reason, "url": transfer.url, "error": error},
            extra={"spider": self._crawler.spider},
        )

    def _cancel_in_flight(self) -> None:
        """The sync is stopping: fail every transfer in flight now, without waiting for its
        thread (one waiting for a server's first byte cannot be interrupted), and every page
        in the browser."""
        self._stopping = True
        for rendering in list(self._rendering):
            rendering.cancel()
        for transfer, future in list(self._in_flight.items()):
            self._abandon(transfer)
            if not future.done():
                future.set_exception(Cancelled("the sync is stopping"))

    @staticmethod
    def _abandon(transfer: Transfer) -> None:
        # Its thread aborts at the next bytes from the server and makes no new file; the
        # file it may have made goes now (unlinked under the thread, which is harmless).
        transfer.cancel()
        if transfer.stream_to:
            with suppress(FileNotFoundError):
                os.unlink(transfer.stream_to)

    def _delete_unclaimed(self) -> None:
        for path in self._temp_files:
            with suppress(FileNotFoundError):
                os.unlink(path)
                self._stats.inc_value("flsync/stream/unclaimed")
                logger.warning(
                    "Stream (unclaimed): deleted %(path)s",
                    {"path": path},
                    extra={"spider": self._crawler.spider},
                )
        self._temp_files.clear()

    async def close(self) -> None:
        """Delete unclaimed files and the CA file; let the worker threads end."""
        self._delete_unclaimed()
        self._workers.close()
        with suppress(FileNotFoundError):
            os.unlink(self._ca_file)


def _scrapy_error(error: Exception) -> Exception:
    """The transport's error as the Scrapy exception RetryMiddleware knows."""
    if isinstance(error, DataLossError):
        return ResponseDataLossError(str(error))
    if isinstance(error, TransferTimeout):
        return DownloadTimeoutError(str(error))
    return DownloadFailedError(str(error))


def _write_ca_file(bundle: bytes) -> str:
    """The CA bundle in a private temporary file, for curl to read."""
    fd, path = tempfile.mkstemp(prefix="flsync-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as f:
        f.write(bundle)
    return path
