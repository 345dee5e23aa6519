"""A real HTTP/1.1 forward proxy on 127.0.0.1, for tests of flsync behind a proxy.

``with ForwardProxy() as proxy:`` starts it (port 0 picks a free port); point a client at
``proxy.url``. It does what a university's outbound proxy does:

- ``CONNECT host:port`` opens a tunnel: ``200 Connection established``, then bytes are relayed
  both ways until either side closes (so https goes through it unseen);
- an absolute-URI request (``GET http://host:port/path HTTP/1.1``) is forwarded to the origin
  with hop-by-hop headers (``Proxy-Authorization``, ``Proxy-Connection``, ``Connection`` and
  the headers it names...) removed, and the answer is relayed back; the client's connection
  is kept alive when the answer's framing allows it.

Bodies are streamed through in pieces of at most ``RELAY_CHUNK`` bytes, never read whole.
``credentials=("user", "pass")`` makes it demand Basic proxy authentication (407 otherwise),
``refuse=True`` makes it answer every request 403. For a proxy whose port refuses connections
use ``refusing_proxy_url()``, or the ``url`` of a proxy after ``stop()``.

``proxy.stats()`` says what it saw: CONNECT targets, forwarded requests, 407s and 403s sent,
the ``Proxy-Authorization`` values received, and whether any request it sent to an origin
carried ``Proxy-Authorization`` (it must not). Inside a tunnel it sees only encrypted bytes,
so it records nothing about the requests in there.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

# Big enough that hundreds of MB go through in few system calls, small enough that memory
# stays bounded whatever the size of the body.
RELAY_CHUNK = 256 * 1024
_MAX_LINE = 64 * 1024  # a request or header line longer than this is refused
_MAX_HEADERS = 200
_ORIGIN_CONNECT_TIMEOUT = 10.0
_JOIN_TIMEOUT = 5.0
_REALM = "test"
THREAD_NAME = "forward-proxy"  # every thread of the proxy, so tests can see none outlive it
# Headers that concern one connection only (RFC 9110 7.6.1), never passed on. Content-Length
# and Transfer-Encoding stay: bodies are relayed with their framing unchanged.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    }
)

Headers = list[tuple[str, str]]


@dataclass
class ProxyStats:
    """What the proxy has seen; ``ForwardProxy.stats()`` gives a copy."""

    client_connections: int = 0  # connections accepted from clients
    connects: list[str] = field(default_factory=list)  # CONNECT targets, "host:port"
    forwarded: list[tuple[str, str]] = field(default_factory=list)  # (method, absolute URL)
    auth_challenges: int = 0  # 407s sent
    refusals: int = 0  # 403s sent because of refuse=True
    proxy_authorizations: list[str] = field(default_factory=list)  # values received
    # True if a request the proxy sent to an origin carried Proxy-Authorization: a leak.
    origin_saw_proxy_authorization: bool = False
    tunnel_bytes: int = 0  # bytes relayed through tunnels, both directions
    forwarded_body_bytes: int = 0  # answer body bytes relayed for forwarded requests
    largest_read: int = 0  # most bytes held from one read: bounded, however big the body


class _Counters:
    """The live counters behind a lock; handler threads update them concurrently."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = ProxyStats()

    def set(self, name: str, value: Any) -> None:
        with self._lock:
            setattr(self._stats, name, value)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self._stats, name, getattr(self._stats, name) + amount)

    def append(self, name: str, item: Any) -> None:
        with self._lock:
            getattr(self._stats, name).append(item)

    def note_read(self, size: int) -> None:
        with self._lock:
            self._stats.largest_read = max(self._stats.largest_read, size)

    def snapshot(self) -> ProxyStats:
        with self._lock:
            stats = self._stats
            # The lists go on growing in the live counters; the copy must not.
            return replace(
                stats,
                connects=list(stats.connects),
                forwarded=list(stats.forwarded),
                proxy_authorizations=list(stats.proxy_authorizations),
            )

    def reset(self) -> None:
        with self._lock:
            self._stats = ProxyStats()


class ForwardProxy:
    """A threaded HTTP/1.1 forward proxy on ``host:port``, run from a background thread.

    ``credentials``: (user, password) that clients must send as Basic
    ``Proxy-Authorization`` (default: none required). ``refuse``: answer every request
    ``403 Forbidden``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: tuple[str, str] | None = None,
        refuse: bool = False,
    ) -> None:
        self.credentials = credentials
        self.refuse = refuse
        self._address = (host, port)
        self._counters = _Counters()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None  # kept after stop(), so that url names a dead port

    def start(self) -> ForwardProxy:
        self._server = _Server(self._address, self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=THREAD_NAME,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end every connection and tunnel, and wait for their threads."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()  # the port refuses connections from here on
        self._server.close_all()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT)
        self._server.join_threads()
        self._server = self._thread = None

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._address[0]

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_with_credentials(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@{self.host}:{self.port}"

    def stats(self) -> ProxyStats:
        return self._counters.snapshot()

    def reset_stats(self) -> None:
        self._counters.reset()

    def _authorized(self, value: str | None) -> bool:
        if self.credentials is None:
            return True
        if value is None:
            return False
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == "{}:{}".format(*self.credentials)


@contextmanager
def refusing_proxy_url(host: str = "127.0.0.1") -> Iterator[str]:
    """A proxy URL whose port refuses connections, for as long as the block runs.

    The port is bound but not listening: connecting gets ECONNREFUSED, and no other program
    can start listening there meanwhile (which a merely unused port would not promise).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield f"http://{host}:{sock.getsockname()[1]}"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a safety net; stop() ends and joins them itself
    block_on_close = False
    # The default backlog of 5 drops connections when a client opens many at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], proxy: ForwardProxy) -> None:
        self.proxy = proxy
        self.counters = proxy._counters
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._closing = False
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket) -> None:
        """Remember a socket to close at stop(); close it now if stop() has begun."""
        with self._lock:
            if not self._closing:
                self._sockets.add(sock)
                return
        _hang_up(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def spawn(self, target: Any, *args: Any) -> threading.Thread:
        """Run ``target(*args)`` in a thread that stop() will wait for."""

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._workers.discard(thread)

        thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
        with self._lock:
            self._workers.add(thread)
        thread.start()
        return thread

    def process_request(self, request: Any, client_address: Any) -> None:
        # Like ThreadingMixIn's, but the thread is remembered so that stop() can join it.
        self.spawn(self.process_request_thread, request, client_address)

    def close_all(self) -> None:
        """Hang up every client, origin and tunnel socket, which wakes their threads."""
        with self._lock:
            self._closing = True
            sockets = list(self._sockets)
        for sock in sockets:
            _hang_up(sock)

    def join_threads(self) -> None:
        with self._lock:
            threads = list(self._workers)
        for thread in threads:
            thread.join(_JOIN_TIMEOUT)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A peer hanging up, or stop() hanging up on it, is normal; anything else is a bug.
        if isinstance(sys.exc_info()[1], OSError):
            return
        logger.exception("proxy: error while serving %s", client_address)


def _hang_up(sock: socket.socket) -> None:
    # shutdown() rather than close(): it wakes a thread blocked in recv() or sendall() on it.
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Reader:
    """Reads lines and bytes from a socket through a buffer of our own.

    A buffer we control (not a file object's) lets a tunnel pass on bytes that arrived
    along with the CONNECT request, and lets a body go through in bounded pieces.
    """

    def __init__(self, sock: socket.socket, counters: _Counters) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._counters = counters

    def _fill(self) -> bool:
        data = self.sock.recv(RELAY_CHUNK)
        self._counters.note_read(len(data))
        self._buffer += data
        return bool(data)

    def readline(self) -> bytes:
        """One line with its line end; b"" at end of stream; what is left if it ends midway."""
        start = 0
        while (end := self._buffer.find(b"\n", start)) < 0:
            if len(self._buffer) > _MAX_LINE:
                raise _BadRequest("line too long")
            start = len(self._buffer)
            if not self._fill():
                end = len(self._buffer) - 1
                break
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line

    def read_some(self, limit: int = RELAY_CHUNK) -> bytes:
        """Up to ``limit`` bytes, waiting only if none are buffered; b"" at end of stream."""
        if not self._buffer:
            data = self.sock.recv(min(limit, RELAY_CHUNK))
            self._counters.note_read(len(data))
            return data
        data = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return data

    def take_buffered(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class _BadRequest(Exception):
    pass


@dataclass
class _Head:
    """A request or status line and its header fields, as received."""

    line: str
    headers: Headers

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` field, lowercased."""
        name = name.lower()
        return {
            token.strip().lower()
            for key, value in self.headers
            if key.lower() == name
            for token in value.split(",")
            if token.strip()
        }


def _read_head(reader: _Reader) -> _Head | None:
    """The next head on the connection, or None if it ends first."""
    line = reader.readline()
    while line in (b"\r\n", b"\n"):  # RFC 9112 2.2: ignore empty lines before a request
        line = reader.readline()
    if not line:
        return None
    headers: Headers = []
    while True:
        field_line = reader.readline()
        if field_line in (b"\r\n", b"\n"):
            break
        if not field_line.endswith(b"\n"):
            raise _BadRequest("connection closed inside the header")
        name, sep, value = field_line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip() or len(headers) >= _MAX_HEADERS:
            raise _BadRequest("bad header field")
        headers.append((name, value.strip()))
    return _Head(line.decode("latin-1").rstrip("\r\n"), headers)


def _encode_head(line: str, headers: Headers) -> bytes:
    text = line + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return text.encode("latin-1")


def _without_hop_by_hop(head: _Head) -> Headers:
    dropped = _HOP_BY_HOP | head.tokens("Connection") | head.tokens("Proxy-Connection")
    return [(name, value) for name, value in head.headers if name.lower() not in dropped]


def _wants_close(head: _Head, version: str) -> bool:
    tokens = head.tokens("Connection") | head.tokens("Proxy-Connection")
    if version == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


class _Handler(socketserver.BaseRequestHandler):
    server: _Server
    request: socket.socket

    def setup(self) -> None:
        self.server.track(self.request)
        self.server.counters.add("client_connections")
        # Heads and bodies go out in separate writes; Nagle would hold each for an ACK.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = _Reader(self.request, self.server.counters)

    def finish(self) -> None:
        self.server.untrack(self.request)

    def handle(self) -> None:
        try:
            while (head := _read_head(self.client)) is not None:
                if not self._answer(head):
                    break
        except _BadRequest:
            self._reply(400, "Bad Request", close=True)

    def _answer(self, head: _Head) -> bool:
        """Answer one request; True if the client's connection stays open for another."""
        method, target, version = _split_request_line(head.line)
        proxy = self.server.proxy
        authorization = head.get("Proxy-Authorization")
        if authorization is not None:
            self.server.counters.append("proxy_authorizations", authorization)
        keep_alive = not _wants_close(head, version) and not _has_body(head)
        if proxy.refuse:
            self.server.counters.add("refusals")
            self._reply(403, "Forbidden", close=True, body=b"This proxy refuses requests.\n")
            return False
        if not proxy._authorized(authorization):
            self.server.counters.add("auth_challenges")
            challenge = [("Proxy-Authenticate", f'Basic realm="{_REALM}"')]
            # A body we did not read would be taken for the next request: close instead.
            self._reply(407, "Proxy Authentication Required", close=not keep_alive, extra=challenge)
            return keep_alive
        if method == "CONNECT":
            self._tunnel(target)
            return False
        if target.lower().startswith("http://"):
            return _Forward(self, head, method, target, version).run()
        self._reply(400, "Bad Request", close=True, body=b"Expected an http:// URI or CONNECT.\n")
        return False

    def _reply(
        self,
        status: int,
        reason: str,
        *,
        close: bool,
        body: bytes = b"",
        extra: Headers | None = None,
    ) -> None:
        headers = [*(extra or []), ("Content-Length", str(len(body)))]
        if close:
            headers.append(("Connection", "close"))
        with suppress(OSError):
            self.request.sendall(_encode_head(f"HTTP/1.1 {status} {reason}", headers) + body)

    def _tunnel(self, target: str) -> None:
        address = _split_authority(target)
        if address is None:
            self._reply(400, "Bad Request", close=True, body=b"CONNECT needs host:port.\n")
            return
        self.server.counters.append("connects", target)
        upstream = _connect(self.server, address)
        if upstream is None:
            self._reply(502, "Bad Gateway", close=True)
            return
        try:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            # The client may have sent its first bytes (a TLS hello) right behind CONNECT.
            early = self.client.take_buffered()
            if early:
                upstream.sendall(early)
                self.server.counters.add("tunnel_bytes", len(early))
            # One direction in a thread of its own, the other in this one: each may block
            # in sendall() without stalling the other (a select loop could deadlock there).
            back = self.server.spawn(_pipe, upstream, self.request, self.server)
            _pipe(self.request, upstream, self.server)
            back.join()
        finally:
            self.server.untrack(upstream)
            upstream.close()


def _pipe(source: socket.socket, sink: socket.socket, server: _Server) -> None:
    """Copy bytes until ``source`` ends, then pass the end on (half-close) to ``sink``."""
    try:
        while data := source.recv(RELAY_CHUNK):
            server.counters.note_read(len(data))
            sink.sendall(data)
            server.counters.add("tunnel_bytes", len(data))
    except OSError:
        # One side failed: end both, so that the other direction stops too.
        _hang_up(source)
        _hang_up(sink)
        return
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class _Forward:
    """One absolute-URI request: sent on to the origin, its answer relayed to the client."""

    def __init__(self, handler: _Handler, head: _Head, method: str, target: str, version: str):
        self.handler = handler
        self.server = handler.server
        self.head = head
        self.method = method
        self.target = target
        self.version = version

    def run(self) -> bool:
        """Forward the request; True if the client's connection stays open afterwards."""
        url = urlsplit(self.target)
        address = _split_authority(url.netloc.rpartition("@")[2], default_port=80)
        if address is None:
            raise _BadRequest("bad URL")
        self.server.counters.append("forwarded", (self.method, self.target))
        if (self.head.get("Expect") or "").lower() == "100-continue":
            # Answered here, so that the client sends its body without waiting for the origin.
            self.handler.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        upstream = _connect(self.server, address)
        if upstream is None:
            self._discard_request_body()
            self.handler._reply(502, "Bad Gateway", close=True)
            return False
        try:
            return self._exchange(upstream, url.path or "/", url.query)
        finally:
            self.server.untrack(upstream)
            upstream.close()

    def _exchange(self, upstream: socket.socket, path: str, query: str) -> bool:
        headers = [
            (name, value)
            for name, value in _without_hop_by_hop(self.head)
            if name.lower() != "expect"
        ]
        if not any(name.lower() == "host" for name, _ in headers):
            headers.insert(0, ("Host", urlsplit(self.target).netloc.rpartition("@")[2]))
        # A new origin connection per request, closed after the answer: no pool to go stale.
        headers.append(("Connection", "close"))
        if any(name.lower() == "proxy-authorization" for name, _ in headers):
            self.server.counters.set("origin_saw_proxy_authorization", True)
        request_target = path + ("?" + query if query else "")
        upstream.sendall(_encode_head(f"{self.method} {request_target} HTTP/1.1", headers))
        if not _copy_body(self.handler.client, upstream, self.head, None):
            return False
        origin = _Reader(upstream, self.server.counters)
        answer = self._read_final_answer(origin)
        if answer is None:
            self.handler._reply(502, "Bad Gateway", close=True)
            return False
        return self._relay_answer(origin, answer)

    def _read_final_answer(self, origin: _Reader) -> _Head | None:
        """The origin's final head, after relaying any 1xx (interim) heads to the client."""
        while True:
            try:
                answer = _read_head(origin)
            except _BadRequest:
                return None
            if answer is None:
                return None
            status = _status(answer)
            if status is None:
                return None
            if not 100 <= status < 200:
                return answer
            self.handler.request.sendall(_encode_head(answer.line, answer.headers))

    def _relay_answer(self, origin: _Reader, answer: _Head) -> bool:
        status = _status(answer) or 0
        bodiless = self.method == "HEAD" or status in (204, 304)
        delimited = bodiless or _is_chunked(answer) or answer.get("Content-Length") is not None
        # A body that ends when the origin hangs up can only reach the client the same way.
        keep_alive = delimited and not _wants_close(self.head, self.version)
        headers = _without_hop_by_hop(answer)
        if not keep_alive:
            headers.append(("Connection", "close"))
        _, _, rest = answer.line.partition(" ")
        self.handler.request.sendall(_encode_head(f"HTTP/1.1 {rest}", headers))
        if bodiless:
            return keep_alive
        counted = _CountingSink(self.handler.request, self.server.counters)
        complete = _copy_body(origin, counted, answer, None if delimited else -1)
        # An answer cut short must reach the client cut short: hang up rather than reuse.
        return keep_alive and complete

    def _discard_request_body(self) -> None:
        with suppress(OSError):
            _copy_body(self.handler.client, None, self.head, None)


class _CountingSink:
    """A socket's sendall() that counts the forwarded answer's body bytes."""

    def __init__(self, sock: socket.socket, counters: _Counters) -> None:
        self._sock = sock
        self._counters = counters

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)
        self._counters.add("forwarded_body_bytes", len(data))


def _copy_body(source: _Reader, sink: Any, head: _Head, length: int | None) -> bool:
    """Relay the body that follows ``head``, framing unchanged; False if it ends short.

    ``length`` -1 means a body delimited by the end of the connection; None means: from the
    head's Transfer-Encoding or Content-Length (no body if neither). ``sink`` None discards.
    """
    if length is None:
        if _is_chunked(head):
            return _copy_chunked(source, sink)
        length = _content_length(head)
    if length < 0:
        while data := source.read_some():
            _send(sink, data)
        return True
    while length > 0:
        data = source.read_some(length)
        if not data:
            return False
        _send(sink, data)
        length -= len(data)
    return True


def _copy_chunked(source: _Reader, sink: Any) -> bool:
    """Relay a chunked body as it is, chunk-size lines and trailer included."""
    while True:
        line = source.readline()
        if not line.endswith(b"\n"):
            return False
        _send(sink, line)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            # Mid-body, a 400 could no longer be told apart from the body: hang up instead.
            return False
        if size == 0:
            break
        if not _copy_body(source, sink, _Head("", []), size + 2):  # the data and its CRLF
            return False
    while True:  # the trailer section, up to its empty line
        line = source.readline()
        if not line.endswith(b"\n"):
            return False
        _send(sink, line)
        if line in (b"\r\n", b"\n"):
            return True


def _send(sink: Any, data: bytes) -> None:
    if sink is not None:
        sink.sendall(data)


def _is_chunked(head: _Head) -> bool:
    return "chunked" in head.tokens("Transfer-Encoding")


def _has_body(head: _Head) -> bool:
    return _is_chunked(head) or _content_length(head) > 0


def _content_length(head: _Head) -> int:
    value = head.get("Content-Length")
    if value is None:
        return 0
    if not value.isdigit():
        raise _BadRequest("bad Content-Length")
    return int(value)


def _status(answer: _Head) -> int | None:
    parts = answer.line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return None
    return int(parts[1])


def _split_request_line(line: str) -> tuple[str, str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest("bad request line")
    return parts[0], parts[1], parts[2]


def _split_authority(authority: str, default_port: int | None = None) -> tuple[str, int] | None:
    """("host", port) from "host:port" or "[v6]:port"; None if it is not one."""
    host, sep, port = authority.rpartition(":")
    if not sep or "]" in port:  # no port at all, or the colon was inside [v6]
        host, port = authority, ""
    host = host.removeprefix("[").removesuffix("]")
    if not port:
        return (host, default_port) if host and default_port else None
    if not port.isdigit() or not host or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _connect(server: _Server, address: tuple[str, int]) -> socket.socket | None:
    """A connection to the origin (tracked, so stop() can end it), or None if refused."""
    try:
        upstream = socket.create_connection(address, timeout=_ORIGIN_CONNECT_TIMEOUT)
    except OSError:
        return None
    upstream.settimeout(None)  # a slow origin is the client's business, not the proxy's
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.track(upstream)
    return upstream
