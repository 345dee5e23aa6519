"""One HTTP exchange over curl (curl_cffi), with a browser's TLS and HTTP fingerprint.

A :class:`Transfer` is plain data about a request (method, URL, headers, body, proxy, limits)
and runs, in the calling thread, on a curl handle that the thread keeps for its next transfers
(so connections are reused). curl impersonates the browser named by ``impersonate`` (its TLS
ClientHello, HTTP/2 settings, header order and default headers, User-Agent included); without
one it sends plain curl's fingerprint and flsync's own User-Agent. Certificates are always
verified, against ``ca_file`` (the system's CAs and any extra ones, see
:func:`combined_ca_bundle`). Bodies go to a :mod:`flsync.bodies` sink as they arrive, decoded
(curl undoes gzip, br, zstd), so what is kept is always what the server meant. Redirects and
cookies are left to Scrapy.

Nothing a server does can hold a transfer for ever or fill memory or disk: an exchange whose
body stays in memory (a page) must be over within ``timeout`` seconds; one whose body goes to
a file (a dataset, possibly large, on a slow link) may take as long as it needs while it
receives at least ``min_rate`` bytes a second, but no ``timeout`` seconds in a row below that.
Bodies are bounded as :mod:`flsync.bodies` says (:class:`~flsync.bodies.BodyTooLarge`).

:class:`Workers` runs transfers on daemon threads: a transfer waiting for a server's first byte
cannot be interrupted (curl calls back only as data arrives), and must not keep a stopping
process alive.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from curl_cffi.const import CurlECode, CurlHttpVersion, CurlInfo, CurlOpt
from curl_cffi.curl import DEFAULT_CACERT, Curl, CurlError
from curl_cffi.requests.impersonate import BrowserType, resolve_latest_browser_type

from flsync.bodies import FileBody, FileLimits, MemoryBody

if TYPE_CHECKING:
    from collections.abc import Callable

# What curl's write and header callbacks return to abort the transfer.
_ABORT = 0xFFFFFFFF
_CURLHEADER_SEPARATE = 1  # proxy headers go to the proxy only (CURLOPT_HEADEROPT)
_ACCEPT_ENCODING = b"gzip, deflate, br, zstd"
_BUFFER_SIZE = 512 * 1024  # bytes per write callback at most: fewer calls on a big body
# Headers that describe the encoded body, which curl has decoded.
_ENCODING_HEADERS = {b"content-encoding", b"content-length"}


class TransportError(Exception):
    """The site cannot be reached this way at all (retrying will not help); one line."""


class CertificateError(TransportError):
    """The site's certificate does not verify."""


class ProxyError(TransportError):
    """The proxy refused the connection, or the request."""


def proxy_wants_credentials(proxy: str, url: str) -> str:
    """The one line for a proxy that answered 407 to the request for ``url``."""
    variable = f"{urlsplit(url).scheme}_proxy"
    return (
        f"the proxy {proxy} asked for credentials that were not given or not accepted (407):"
        f" put them in its URL ({variable}=http://user:password@host:port)"
    )


class DataLossError(Exception):
    """The body ended before its end (short of Content-Length, or a cut chunked body)."""


class TransferTimeout(Exception):
    """No answer in time, or a body too slow (see the module's docstring); one line."""


class ConnectionFailed(Exception):
    """The connection was refused or lost before an answer, or the name did not resolve."""


class Cancelled(Exception):
    """The transfer was cancelled (the sync is stopping, or the caller gave up)."""


@dataclass
class Answer:
    """What came back: status, headers (as sent, less the decoded body's), the body sink."""

    status: int
    headers: list[tuple[bytes, bytes]]
    protocol: str
    body: MemoryBody | FileBody
    latency: float  # seconds until the headers were in
    truncated: bool = False  # the body's first bytes only (Transfer.first_bytes)


@dataclass(eq=False)  # kept in sets by identity
class Transfer:
    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    impersonate: str | None
    user_agent: str  # sent when not impersonating and the request has none
    proxy: str | None  # proxy URL without credentials
    # Seconds the whole exchange may take; with a body to a file, the longest time below
    # min_rate (see the module's docstring).
    timeout: float
    maxsize: int  # of a body kept in memory; 0: no limit
    stream_to: str | None = None  # a 200's body goes to this new file
    min_rate: int = 1  # bytes a second a body to a file must keep up
    file_limits: FileLimits = field(default_factory=FileLimits)  # of a body to a file
    # > 0: keep this many bytes of the body, then end the transfer (a header's worth of a
    # file that may be huge); the answer is then marked truncated.
    first_bytes: int = 0
    _cancelled: bool = field(default=False, init=False)
    _answer: Answer | None = field(default=None, init=False)
    _status: int = field(default=0, init=False)
    _protocol: str = field(default="HTTP/1.1", init=False)
    _received: list[tuple[bytes, bytes]] = field(default_factory=list, init=False)
    _started: float = field(default=0.0, init=False)
    _headers_at: float | None = field(default=None, init=False)
    _encoded: bool = field(default=False, init=False)  # the body came compressed
    _curl: Curl | None = field(default=None, init=False)  # while it runs

    def cancel(self) -> None:
        """Abort at the next data from the server (any thread)."""
        self._cancelled = True

    def run(self, curl: Curl) -> Answer:
        """Perform the transfer on ``curl`` (in this thread); the answer, or an exception."""
        self._started = monotonic()
        self._curl = curl
        self._configure(curl)
        try:
            curl.perform()
        except CurlError as exc:
            if self._answer is not None and self._answer.truncated:
                return self._answer  # ended on purpose, its first bytes in
            self._discard()
            raise self._translate(exc) from None
        except BaseException:
            self._discard()
            raise
        finally:
            self._curl = None
        answer = self._headers_done()
        if isinstance(answer.body, FileBody):
            if self._close_delimited():
                self._discard()
                raise DataLossError(
                    f"body of {answer.body.size} bytes ended with the connection, with no"
                    " length to check it against"
                )
            try:
                answer.body.finish()
            except BaseException:
                self._discard()  # the next try makes its file anew
                raise
        return answer

    def _close_delimited(self) -> bool:
        """An HTTP/1 body with neither a length nor chunks: its end cannot be told from a
        connection cut short (HTTP/2 and HTTP/3 mark the end of every stream)."""
        names = {name.lower() for name, _ in self._received}
        chunked = any(
            n.lower() == b"transfer-encoding" and b"chunked" in v.lower() for n, v in self._received
        )
        return (
            self._protocol.startswith("HTTP/1") and b"content-length" not in names and not chunked
        )

    def _configure(self, curl: Curl) -> None:
        curl.reset()
        if self.impersonate:
            curl.impersonate(self.impersonate, default_headers=True)
        # HTTP/2 over TLS only, as browsers: no "Upgrade: h2c" on a plain http:// URL.
        curl.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V2TLS)
        # Chrome's own list, as curl_cffi sends it: the option (not a header) is what makes
        # curl decode the body.
        curl.setopt(CurlOpt.ACCEPT_ENCODING, _ACCEPT_ENCODING)
        curl.setopt(CurlOpt.URL, self.url.encode())
        if self.method == "HEAD":
            curl.setopt(CurlOpt.NOBODY, 1)
        elif self.body or self.method in ("POST", "PUT", "PATCH"):
            curl.setopt(CurlOpt.POSTFIELDS, self.body)
            curl.setopt(CurlOpt.POSTFIELDSIZE, len(self.body))
        if self.method not in ("GET", "HEAD", "POST"):
            curl.setopt(CurlOpt.CUSTOMREQUEST, self.method.encode())
        curl.setopt(CurlOpt.HTTPHEADER, self._header_lines())
        curl.setopt(CurlOpt.FOLLOWLOCATION, 0)
        # curl would read http_proxy/no_proxy itself: the proxy is Scrapy's decision.
        curl.setopt(CurlOpt.PROXY, (self.proxy or "").encode())
        curl.setopt(CurlOpt.NOPROXY, b"")
        if self.proxy:
            curl.setopt(CurlOpt.SUPPRESS_CONNECT_HEADERS, 1)
            curl.setopt(CurlOpt.HEADEROPT, _CURLHEADER_SEPARATE)
            if urlsplit(self.url).scheme == "https":
                curl.setopt(CurlOpt.HTTPPROXYTUNNEL, 1)
        curl.setopt(CurlOpt.CONNECTTIMEOUT_MS, int(self.timeout * 1000))
        if self._to_file():
            # Slower than min_rate (curl's average over the last few seconds) for `timeout`
            # seconds in a row ends it: a big file on a slow but steady link is fine.
            curl.setopt(CurlOpt.LOW_SPEED_LIMIT, max(1, self.min_rate))
            curl.setopt(CurlOpt.LOW_SPEED_TIME, max(1, round(self.timeout)))
        else:
            curl.setopt(CurlOpt.TIMEOUT_MS, int(self.timeout * 1000))
        curl.setopt(CurlOpt.BUFFERSIZE, _BUFFER_SIZE)
        curl.setopt(CurlOpt.NOSIGNAL, 1)
        curl.setopt(CurlOpt.HEADERFUNCTION, self._on_header)
        curl.setopt(CurlOpt.WRITEFUNCTION, self._on_data)
        if self.proxy and self._proxy_authorization():
            curl.setopt(CurlOpt.PROXYHEADER, [self._proxy_authorization()])

    def _header_lines(self) -> list[bytes]:
        lines = [
            name + b": " + value
            for name, value in self.headers
            if name.lower() not in (b"proxy-authorization", b"accept-encoding")
        ]
        if not self.impersonate and not any(n.lower() == b"user-agent" for n, _ in self.headers):
            lines.append(b"User-Agent: " + self.user_agent.encode())
        lines.append(b"Expect:")  # no 100-continue round trip for a form
        return lines

    def _proxy_authorization(self) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == b"proxy-authorization":
                return b"Proxy-Authorization: " + value
        return None

    def _on_header(self, line: bytes) -> int:
        if self._cancelled:
            return _ABORT
        if line.startswith(b"HTTP/"):
            # A new answer (after a 1xx, say): what came before was not the final one.
            version, _, rest = line.partition(b" ")
            self._protocol = version.decode("latin-1")
            self._status = int(rest[:3])
            self._received = []
        elif b":" in line:
            name, _, value = line.partition(b":")
            self._received.append((name.strip(), value.strip()))
        elif not line.strip() and self._status >= 200:
            self._headers_at = monotonic()
        return len(line)

    def _on_data(self, chunk: bytes) -> int:
        if self._cancelled:
            return _ABORT
        answer = self._headers_done()
        if isinstance(answer.body, FileBody):
            self.file_limits.check(answer.body.size + len(chunk), self._received_at_most())
        if self.first_bytes:
            room = self.first_bytes - answer.body.size
            answer.body.write(chunk[:room])
            if len(chunk) > room:  # more than wanted: the rest is not asked for
                answer.truncated = True
                return _ABORT
            return len(chunk)
        answer.body.write(chunk)
        return len(chunk)

    def _to_file(self) -> bool:
        """Whether a 200's body goes to a file (bounded by rate, not by total time)."""
        return bool(self.stream_to) and not self.first_bytes

    def _received_at_most(self) -> int | None:
        """Bytes received for the body so far, before decoding, or more (None: the body is
        not encoded). curl counts a read's bytes only once it has handed all of them over,
        decoded: the read being decoded, up to _BUFFER_SIZE, is added."""
        if not self._encoded or self._curl is None:
            return None
        counted = cast("int", self._curl.getinfo(CurlInfo.SIZE_DOWNLOAD_T))
        return counted + _BUFFER_SIZE

    def _headers_done(self) -> Answer:
        """The answer, once its headers are in (at its first data, or at its end)."""
        if self._answer is None:
            keep_on_disk = self._status == 200 and self._to_file()
            body = FileBody(self.stream_to) if keep_on_disk else MemoryBody(self.maxsize)  # type: ignore[arg-type]
            self._encoded = any(n.lower() == b"content-encoding" for n, _ in self._received)
            headers = [
                (n, v)
                for n, v in self._received
                if not (self._encoded and n.lower() in _ENCODING_HEADERS)
            ]
            latency = (self._headers_at or monotonic()) - self._started
            self._answer = Answer(self._status, headers, self._protocol, body, latency)
        return self._answer

    def _discard(self) -> None:
        if self._answer is not None and isinstance(self._answer.body, FileBody):
            self._answer.body.discard()

    def _translate(self, error: CurlError) -> Exception:
        """curl's error as one of this module's exceptions, in one line."""
        code = error.code
        reason = _reason(error)
        if self._cancelled or code == CurlECode.ABORTED_BY_CALLBACK:
            return Cancelled(reason)
        if code == CurlECode.PEER_FAILED_VERIFICATION:
            host = urlsplit(self.url).hostname
            return CertificateError(
                f"the TLS certificate of {host} does not verify ({reason}): if a"
                " TLS-inspecting proxy is in the way, give its CA in FLSYNC_CA_BUNDLE"
            )
        if self.proxy and code in _PROXY_CODES and not self._status:
            if "407" in reason:  # to a CONNECT: the tunnel to an https site
                return ProxyError(proxy_wants_credentials(self.proxy, self.url))
            return ProxyError(f"the proxy {self.proxy} failed: {reason}")
        if code in (CurlECode.PARTIAL_FILE, CurlECode.RECV_ERROR, CurlECode.HTTP2_STREAM):
            if self._answer is not None or self._status:
                return DataLossError(f"body cut off after {self._received_size()} bytes: {reason}")
            return ConnectionFailed(reason)
        if code == CurlECode.OPERATION_TIMEDOUT:
            return TransferTimeout(self._too_slow())
        if code in (
            CurlECode.COULDNT_CONNECT,
            CurlECode.COULDNT_RESOLVE_HOST,
            CurlECode.GOT_NOTHING,
            CurlECode.SEND_ERROR,
            CurlECode.SSL_CONNECT_ERROR,
        ):
            return ConnectionFailed(reason)
        return ConnectionFailed(f"curl error {int(code)}: {reason}")

    def _too_slow(self) -> str:
        """What was too slow, and the settings that bound it."""
        timeout = f"DOWNLOAD_TIMEOUT ({self.timeout:g} s)"
        if not self._status:
            return f"too slow: no answer within {timeout}"
        received = self._received_size()
        if self._to_file():
            return (
                f"too slow: under FLSYNC_DATASET_MIN_RATE ({self.min_rate} bytes/s) for"
                f" {timeout} in a row, {received} bytes in"
            )
        return f"too slow: not complete within {timeout}, {received} bytes in"

    def _received_size(self) -> int:
        return self._answer.body.size if self._answer is not None else 0


_PROXY_CODES = (
    CurlECode.COULDNT_CONNECT,
    CurlECode.COULDNT_RESOLVE_PROXY,
    CurlECode.RECV_ERROR,
    CurlECode.PROXY,
)


def _reason(error: CurlError) -> str:
    """curl's message without the "Failed to perform, curl: (N)" prefix and doc link."""
    text = str(error).split(" See https://", 1)[0]
    return text.split(") ", 1)[-1].strip().rstrip(".")


def browser_target(name: str) -> str:
    """The curl_cffi target for a browser name: ``chrome`` (the newest Chrome curl_cffi
    knows), ``safari``, ``firefox``, ``edge``, or an exact one such as ``chrome136``.
    Raises ValueError for a name curl_cffi cannot impersonate."""
    target = str(resolve_latest_browser_type(name.strip().lower()))
    if target not in {browser.value for browser in BrowserType}:
        raise ValueError(
            f"FLSYNC_IMPERSONATE {name!r} is not a browser flsync can impersonate"
            " (chrome, edge, safari, firefox, an exact one such as chrome136, or none)"
        )
    return target


def combined_ca_bundle(extra: str | None) -> bytes:
    """The CAs to trust: the system's (as curl_cffi finds them), plus those in ``extra``.

    Raises ValueError, naming the file, when ``extra`` is missing or holds no PEM
    certificate.
    """
    with open(DEFAULT_CACERT, "rb") as f:
        system = f.read()
    if not extra:
        return system
    try:
        ssl.create_default_context().load_verify_locations(cafile=extra)
        with open(extra, "rb") as f:
            added = f.read()
    except ssl.SSLError:
        raise ValueError(f"FLSYNC_CA_BUNDLE {extra}: not a PEM file of certificates") from None
    except OSError as exc:
        raise ValueError(f"FLSYNC_CA_BUNDLE {extra}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in added:
        raise ValueError(f"FLSYNC_CA_BUNDLE {extra}: not a PEM file of certificates")
    return system.rstrip(b"\n") + b"\n" + added


class Workers:
    """Daemon threads, each with a curl handle kept for its next transfers; as many as
    there are transfers at once (Scrapy's concurrency bounds them)."""

    def __init__(self, ca_file: str, name: str = "flsync-curl") -> None:
        self.ca_file = ca_file
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle = 0
        self._count = 0
        self._lock = threading.Lock()

    def run(self, transfer: Transfer) -> asyncio.Future[Answer]:
        """Run ``transfer`` on a worker; its answer (or exception) as a future of this loop."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._count += 1
                threading.Thread(
                    target=self._work, name=f"{self.name}-{self._count}", daemon=True
                ).start()
        self._jobs.put((future, transfer.run))
        return future

    def close(self) -> None:
        """Let every worker end after its current transfer."""
        with self._lock:
            count = self._count
        for _ in range(count):
            self._jobs.put(None)

    def _work(self) -> None:
        curl = Curl(cacert=self.ca_file)
        try:
            while (job := self._jobs.get()) is not None:
                future, run = job
                self._settle(future, run, curl)
                with self._lock:
                    self._idle += 1
        finally:
            curl.close()

    @staticmethod
    def _settle(future: asyncio.Future[Answer], run: Callable[[Curl], Answer], curl: Curl) -> None:
        loop = future.get_loop()
        try:
            result = run(curl)
        except BaseException as exc:  # handed to the waiting coroutine, whatever it is
            settle: Callable[..., None] = _set_exception
            outcome: Any = exc
        else:
            settle, outcome = _set_result, result
        # A loop closed meanwhile (the process is ending) has nobody left waiting.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, future, outcome)


def _set_result(future: asyncio.Future[Answer], result: Answer) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Answer], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
