"""Download handler that streams dataset bodies to disk instead of memory.

Scrapy's HTTP/1.1 handler keeps a whole body in memory and cancels bodies larger than
``DOWNLOAD_MAXSIZE``. :class:`StreamingDownloadHandler` writes the 200 body of a request that
has ``meta["flsync_stream_to"]`` (a new file's path, in an existing folder; the store gives it)
to that file as it arrives, so memory stays flat at any size; the file is created only when a
200 arrives. Every other request is passed, as is, to the handler named by
``FLSYNC_PAGE_DOWNLOAD_HANDLER``.

Just before any request leaves, the handler sends ``flsync.signals.request_leaving`` and waits
for its receivers (which may hold the request, update it, or refuse it with IgnoreRequest).
On ``flsync.signals.sync_stopping`` it cancels the streamed transfers in flight.

A 200 becomes a :class:`StreamedResponse`: empty ``body``, plus ``body_path``, ``body_size``
and ``body_sha256``. Whoever gets the response must move the file into place (or delete it)
before the spider closes: files still there at ``spider_closed`` are deleted. Any other
status is read into memory and returned as a plain response, so that redirect, retry and
session middlewares work as usual.

Settings: ``FLSYNC_PAGE_DOWNLOAD_HANDLER`` (class path of the handler for the other requests),
``DOWNLOAD_TIMEOUT`` (for streamed requests: the longest wait for the next bytes, not for the
whole body), ``DOWNLOAD_MAXSIZE`` (only for non-200 bodies of streamed requests),
``CONCURRENT_REQUESTS_PER_DOMAIN`` (persistent connections kept per host).
Request meta: ``flsync_stream_to``, ``download_timeout``, ``download_maxsize``; it sets
``download_latency``.

Streamed requests ask for ``Accept-Encoding: identity`` (HttpCompressionMiddleware cannot
decode a body that is not in memory) and verify TLS certificates; ``meta["proxy"]`` is refused.
A body that may be incomplete (short of ``Content-Length``, or ended by a closed connection
with no length to check) raises ``ResponseDataLossError``, which RetryMiddleware retries.
Stats: ``flsync/stream/files``, ``flsync/stream/bytes``, ``flsync/stream/failed/<reason>``
(``dataloss``, ``timeout``), ``flsync/stream/unclaimed``.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from contextlib import suppress
from io import BytesIO
from time import monotonic
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urldefrag

from scrapy import signals
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    NotConfigured,
    NotSupported,
    ResponseDataLossError,
    UnsupportedURLSchemeError,
)
from scrapy.http import Headers, Response
from scrapy.responsetypes import responsetypes
from scrapy.utils.defer import ensure_awaitable, maybe_deferred_to_future
from scrapy.utils.misc import build_from_crawler, load_object
from scrapy.utils.python import to_bytes, to_unicode
from twisted.internet import defer, error, threads
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TxHeaders
from twisted.web.iweb import UNKNOWN_LENGTH

from flsync import signals as flsync_signals

if TYPE_CHECKING:
    from typing import Self

    from scrapy import Request
    from scrapy.crawler import Crawler
    from twisted.internet.base import DelayedCall, ReactorBase
    from twisted.web.client import Response as TxResponse
    from twisted.web.iweb import IBodyProducer

logger = logging.getLogger(__name__)

# Request meta key: the file (new, in an existing folder) to stream the body of a 200 into.
STREAM_TO_META = "flsync_stream_to"
DEFAULT_PAGE_DOWNLOAD_HANDLER = "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"

# What Scrapy's own handlers do in scrapy.utils._download_handlers (a private module): turn
# Twisted errors into the exceptions RetryMiddleware knows.
_TWISTED_ERRORS: tuple[tuple[type[Exception], type[Exception]], ...] = (
    (defer.CancelledError, DownloadCancelledError),
    (error.ConnectionRefusedError, DownloadConnectionRefusedError),
    (error.DNSLookupError, CannotResolveHostError),
    (error.TimeoutError, DownloadTimeoutError),
    (ResponseFailed, DownloadFailedError),
    (SchemeNotSupported, UnsupportedURLSchemeError),
)


class StreamedResponse(Response):
    """A 200 response whose body is in the file ``body_path``, not in ``body``."""

    attributes: tuple[str, ...] = (*Response.attributes, "body_path", "body_size", "body_sha256")
    __slots__ = ("body_path", "body_sha256", "body_size")

    def __init__(
        self, *args: Any, body_path: str, body_size: int, body_sha256: str, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.body_path = body_path
        self.body_size = body_size
        self.body_sha256 = body_sha256


def discard_body(response: Response) -> None:
    """Delete the body file of a StreamedResponse that will not be kept (no-op otherwise)."""
    if isinstance(response, StreamedResponse):
        os.unlink(response.body_path)


class StreamingDownloadHandler:
    """Streams requests with ``meta["flsync_stream_to"]`` to disk, delegates the others."""

    # Built at start-up, so that a non-lazy page handler (scrapy-playwright) is too.
    lazy = False

    def __init__(self, crawler: Crawler) -> None:
        if not crawler.settings.getbool("TWISTED_REACTOR_ENABLED"):
            raise NotConfigured(f"{type(self).__name__} requires a Twisted reactor.")
        # Not at module level: that would install the default reactor on import.
        from twisted.internet import reactor  # noqa: PLC0415

        self._reactor: ReactorBase = reactor
        self._crawler = crawler
        assert crawler.stats
        self._stats = crawler.stats
        path = crawler.settings.get("FLSYNC_PAGE_DOWNLOAD_HANDLER") or DEFAULT_PAGE_DOWNLOAD_HANDLER
        self._page_handler_cls: type[Any] = load_object(path)
        self._page_handler: Any = None
        if not getattr(self._page_handler_cls, "lazy", True):
            self._page_handler = build_from_crawler(self._page_handler_cls, crawler)
        self._timeout = crawler.settings.getfloat("DOWNLOAD_TIMEOUT")
        self._maxsize = crawler.settings.getint("DOWNLOAD_MAXSIZE")
        self._tls_policy = BrowserLikePolicyForHTTPS()
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = crawler.settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN")
        # Every temporary file this handler made; any still there when the spider closes
        # (response dropped, spider closed mid-way) was never moved into place and is deleted.
        self._temp_files: set[str] = set()
        self._in_flight: set[_StreamedDownload] = set()
        crawler.signals.connect(self._delete_unclaimed, signal=signals.spider_closed)
        crawler.signals.connect(self._cancel_in_flight, signal=flsync_signals.sync_stopping)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def download_request(self, request: Request) -> Response:
        """Stream *request* to disk if it has ``flsync_stream_to``, else delegate it."""
        await self._leaving(request)
        path = request.meta.get(STREAM_TO_META)
        if not path:
            return await self._download_page(request)
        if request.meta.get("proxy"):
            raise NotSupported(f"{type(self).__name__} cannot stream through a proxy: {request}")
        timeout = float(request.meta.get("download_timeout") or self._timeout)
        maxsize = int(request.meta.get("download_maxsize", self._maxsize))
        agent = Agent(self._reactor, self._tls_policy, connectTimeout=timeout, pool=self._pool)
        download = _StreamedDownload(request, path, timeout, maxsize, self._crawler)
        self._temp_files.add(path)
        self._in_flight.add(download)
        try:
            response = await maybe_deferred_to_future(download.start(agent, self._reactor))
        except Exception as exc:
            self._temp_files.discard(path)  # deleted already
            for twisted_cls, scrapy_cls in _TWISTED_ERRORS:
                if isinstance(exc, twisted_cls):
                    raise scrapy_cls(str(exc)) from exc
            raise
        finally:
            self._in_flight.discard(download)
        if isinstance(response, StreamedResponse):
            self._stats.inc_value("flsync/stream/files")
            self._stats.inc_value("flsync/stream/bytes", response.body_size)
        else:
            self._temp_files.discard(path)  # never created: the status was not 200
        return response

    async def _leaving(self, request: Request) -> None:
        """Send request_leaving; a receiver's IgnoreRequest refuses the request."""
        results = await self._crawler.signals.send_catch_log_async(
            flsync_signals.request_leaving, request=request, dont_log=IgnoreRequest
        )
        for _, result in results:
            if isinstance(result, Failure):
                result.raiseException()

    def _cancel_in_flight(self) -> None:
        for download in list(self._in_flight):
            download.cancel()

    async def _download_page(self, request: Request) -> Response:
        if self._page_handler is None:
            self._page_handler = build_from_crawler(self._page_handler_cls, self._crawler)
        if inspect.iscoroutinefunction(self._page_handler.download_request):
            response: Response = await self._page_handler.download_request(request)
            return response
        # Deprecated handler interface: download_request(request, spider) -> Deferred.
        result = self._page_handler.download_request(request, self._crawler.spider)
        return await maybe_deferred_to_future(result)

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
        """Delete unclaimed files, close the page handler and the pooled connections."""
        self._delete_unclaimed()
        if self._page_handler is not None and hasattr(self._page_handler, "close"):
            await ensure_awaitable(self._page_handler.close())
        d = self._pool.closeCachedConnections()
        # closeCachedConnections() can hang on a stuck server; Scrapy's HTTP/1.1 handler
        # waits 1 s at most for the same reason (twisted/twisted#7738).
        timer = self._reactor.callLater(1, d.callback, None)
        await maybe_deferred_to_future(d)
        if timer.active():
            timer.cancel()


class _StreamedDownload:
    """One streamed request: its idle timer, its body file (made on a 200), its receiver."""

    def __init__(
        self, request: Request, path: str, timeout: float, maxsize: int, crawler: Crawler
    ) -> None:
        self.request = request
        self.path = path
        self.timeout = timeout
        self.maxsize = maxsize
        self.crawler = crawler
        self.url = urldefrag(request.url)[0]
        self.owns_file = False  # made the file at self.path, and has not handed it over
        self.receiver: _BodyReceiver | None = None
        self.expected_size: int | None = None
        self.timed_out = False
        self.sink: BinaryIO = BytesIO()  # the file, or a BytesIO for a non-200 body
        self.idle_timer: DelayedCall
        self.result: defer.Deferred[Response]

    def start(self, agent: Agent, clock: ReactorBase) -> defer.Deferred[Response]:
        # Idle timeout: reset by every chunk, so only a stalled transfer is cut.
        self.idle_timer = clock.callLater(self.timeout, self._on_idle)
        headers = TxHeaders(self.request.headers)
        headers.setRawHeaders(b"Accept-Encoding", [b"identity"])
        body = (
            cast("IBodyProducer", FileBodyProducer(BytesIO(self.request.body)))
            if self.request.body
            else None
        )
        start_time = monotonic()
        d: defer.Deferred[Any] = agent.request(
            to_bytes(self.request.method), to_bytes(self.url, "ascii"), headers, body
        )
        d.addCallback(self._on_headers, start_time)
        d.addErrback(self._on_failure)
        d.addBoth(self._stop_timer)
        self.result = d
        return d

    def cancel(self) -> None:
        self.result.cancel()

    def _on_idle(self) -> None:
        self.timed_out = True
        self.result.cancel()

    def _stop_timer(self, result: Any) -> Any:
        if self.idle_timer.active():
            self.idle_timer.cancel()
        return result

    def _discard_file(self) -> None:
        self.sink.close()
        if self.owns_file:
            with suppress(FileNotFoundError):
                os.unlink(self.path)
            self.owns_file = False

    def _on_headers(self, txresponse: TxResponse, start_time: float) -> defer.Deferred[Response]:
        self.request.meta["download_latency"] = monotonic() - start_time
        self.idle_timer.reset(self.timeout)
        if txresponse.length != UNKNOWN_LENGTH:
            self.expected_size = cast("int", txresponse.length)
        if txresponse.code != 200:
            # A 304, a redirect, an error page: small, read into memory; no file is made.
            return self._receive(
                txresponse, _BodyReceiver(self.sink, self.idle_timer, self.timeout, self.maxsize)
            )
        # Creating a file can cost a millisecond, more than the rest of a small download
        # costs the reactor thread: a worker thread does it.
        d = _open_new_file(self.path)
        return d.addCallbacks(
            self._on_file,
            self._on_file_failed,
            (txresponse,),
            errbackArgs=(txresponse,),
        )

    def _on_file(self, sink: BinaryIO, txresponse: TxResponse) -> defer.Deferred[Response]:
        self.sink = sink
        self.owns_file = True
        receiver = _BodyReceiver(sink, self.idle_timer, self.timeout, 0, strict=True)
        return self._receive(txresponse, receiver)

    def _on_file_failed(self, failure: Failure, txresponse: TxResponse) -> Failure:
        txresponse.deliverBody(_Dropper())
        return failure

    def _receive(self, txresponse: TxResponse, receiver: _BodyReceiver) -> defer.Deferred[Response]:
        self.receiver = receiver
        txresponse.deliverBody(receiver)
        return receiver.finished.addCallback(self._make_response, txresponse)

    def _make_response(self, flags: list[str] | None, txresponse: TxResponse) -> Response:
        assert self.receiver
        headers = Headers()
        if self.expected_size is not None:
            headers[b"Content-Length"] = str(self.expected_size).encode()
        headers.update(txresponse.headers.getAllRawHeaders())
        version = txresponse.version
        protocol = f"{to_unicode(version[0])}/{version[1]}.{version[2]}"
        if not self.owns_file:
            body = cast("BytesIO", self.sink).getvalue()
            respcls = responsetypes.from_args(headers=headers, url=self.url, body=body)
            return respcls(
                url=self.url,
                status=txresponse.code,
                headers=headers,
                body=body,
                flags=flags,
                protocol=protocol,
            )
        self.sink.close()
        if self.expected_size not in (None, self.receiver.size):
            raise ResponseDataLossError(f"Got {self.receiver.size} bytes from {self.url}")
        response = StreamedResponse(
            url=self.url,
            status=200,
            headers=headers,
            flags=["streamed"],
            protocol=protocol,
            body_path=self.path,
            body_size=self.receiver.size,
            body_sha256=self.receiver.sha256.hexdigest(),
        )
        self.owns_file = False  # handed over with the response
        return response

    def _on_failure(self, failure: Failure) -> Failure:
        self._discard_file()
        reason = "dataloss" if failure.check(ResponseDataLossError) else None
        if self.timed_out:
            reason = "timeout"
        if reason:
            assert self.crawler.stats
            self.crawler.stats.inc_value(f"flsync/stream/failed/{reason}")
            logger.warning(
                "Stream (%(reason)s): %(url)s, %(size)s of %(expected)s bytes",
                {
                    "reason": reason,
                    "url": self.url,
                    "size": self.receiver.size if self.receiver else 0,
                    "expected": "?" if self.expected_size is None else self.expected_size,
                },
                extra={"spider": self.crawler.spider},
            )
        if self.timed_out:
            raise DownloadTimeoutError(f"Getting {self.url}: no data for {self.timeout} seconds.")
        return failure


def _open_new_file(path: str) -> defer.Deferred[BinaryIO]:
    """``open(path, "xb")`` in a worker thread. Cancelled before the file comes (the sync is
    stopping), the file is closed and deleted when it does come, so none is left behind."""
    cancelled = False

    def cancel(_: defer.Deferred[BinaryIO]) -> None:
        nonlocal cancelled
        cancelled = True

    result: defer.Deferred[BinaryIO] = defer.Deferred(cancel)

    def opened(file: BinaryIO) -> None:
        if cancelled:
            file.close()
            os.unlink(path)
        else:
            result.callback(file)

    def failed(failure: Failure) -> None:
        if not cancelled:
            result.errback(failure)

    threads.deferToThread(open, path, "xb").addCallbacks(opened, failed)
    return result


class _Dropper(Protocol):
    """Takes a body nobody wants: drops the connection at once."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pass


class _BodyReceiver(Protocol):
    """Writes a response body to *sink* as it arrives, counting and hashing it.

    Disk writes and hashing run in a worker thread (both release the GIL), in blocks of
    BLOCK bytes, one after another; the reactor thread only reads the socket. When more than
    MAX_QUEUED bytes wait for the disk, the connection is paused, so memory stays bounded.
    """

    BLOCK = 1 << 20
    MAX_QUEUED = 8 << 20

    def __init__(
        self,
        sink: BinaryIO,
        idle_timer: DelayedCall,
        timeout: float,
        maxsize: int,
        *,
        strict: bool = False,
    ) -> None:
        self.sink = sink
        self.idle_timer = idle_timer
        self.timeout = timeout
        self.maxsize = maxsize
        # strict: the body must be known complete (a file on disk); a small in-memory body
        # may end with the connection and no length, as Scrapy allows (flag "partial").
        self.strict = strict
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.finished: defer.Deferred[list[str] | None] = defer.Deferred(self._abort)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._queued = 0
        self._paused = False
        self._writes: defer.Deferred[None] = defer.succeed(None)

    def _abort(self, _: object = None) -> None:
        # Drops the connection at once (the pool does not keep it); what still arrives is
        # ignored, as is the connectionLost() that follows.
        if self.transport is not None:
            self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        self.idle_timer.reset(self.timeout)
        if self.maxsize and self.size > self.maxsize:
            self._fail(
                DownloadCancelledError(f"Body larger than DOWNLOAD_MAXSIZE ({self.maxsize} bytes)")
            )
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= self.BLOCK:
            self._flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone):
            flags = None
        elif reason.check(PotentialDataLoss) and not self.strict:
            flags = ["partial"]
        else:  # PotentialDataLoss, or ResponseFailed wrapping Twisted's private _DataLoss
            exc = ResponseDataLossError(f"Body cut off after {self.size} bytes")
            exc.__cause__ = reason.value
            self.finished.errback(exc)
            return
        self._flush()
        self._writes.addCallback(self._finish, flags)

    def _finish(self, _: None, flags: list[str] | None) -> None:
        if not self.finished.called:
            self.finished.callback(flags)

    def _flush(self) -> None:
        # The chunks as received: joining them would copy every byte on the reactor thread.
        chunks, size = self._buffer, self._buffered
        self._buffer = []
        self._buffered = 0
        if not self._queued and size < self.BLOCK:
            # A small body (most are) with no write in flight: writing it here costs less
            # than the hop to a thread.
            try:
                self._write(chunks)
            except OSError as exc:
                self._fail(exc)
            return
        self._queued += size
        if self._queued > self.MAX_QUEUED and not self._paused and self.transport is not None:
            self.transport.pauseProducing()
            self._paused = True
        self._writes.addCallback(lambda _: threads.deferToThread(self._write, chunks))
        self._writes.addCallbacks(self._written, self._fail, callbackArgs=(size,))

    def _write(self, chunks: list[bytes]) -> None:
        """In the worker thread, unless the body is small."""
        self.sink.writelines(chunks)
        for chunk in chunks:
            self.sha256.update(chunk)

    def _written(self, _: None, size: int) -> None:
        self._queued -= size
        if self._paused and self._queued <= self.MAX_QUEUED // 2 and not self.finished.called:
            self._paused = False
            assert self.transport is not None
            self.transport.resumeProducing()

    def _fail(self, reason: Failure | Exception) -> None:
        """Stop on a failed write (e.g. a full disk: that error, not a data loss) or size."""
        if not self.finished.called:
            self._abort()
            self.finished.errback(reason)
