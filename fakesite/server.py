"""The imitation site over real HTTP/1.1 (keep-alive), and ``FakeSite`` to run it from tests.

Besides the site's own paths it answers ``/_fakesite/...`` (control, stats, reset-stats, data)
so that a site running in another process can be steered; those requests are neither
counted, delayed nor failed. ``POST /_fakesite/control`` with a JSON object sets knobs of
``Faults`` (400 names a bad one), ``GET`` lists them all. Among them, how sessions behave:
``session_cookie`` ("new_at_sign_in", "kept" or "every_answer": when the session cookie takes
a new value), ``expire_session_after`` (/admin requests per sign-in), ``expiry_answer``
("redirect" or "html" on dataset URLs) and ``expiry_cookie`` (whether an expired answer
brings a new signed-out cookie or leaves the old one signed out); and how the CDN sends
dataset bodies: ``dataset_transfer`` ("length" or "chunked"), ``weak_etag`` and ``compress``
("none", "gzip" or "br", for requests whose Accept-Encoding takes it).

HTTPS (``FakeSite(https=True)``): the same site over TLS, with a certificate for 127.0.0.1
from a CA made for the run (``site.ca_file``; tls.py), or with an expired certificate or one
for another host (``certificate=``). On HTTPS the knob ``bot_wall`` (or ``bot_wall=True``)
raises Cloudflare's wall (wall.py): a connection whose ClientHello has no GREASE cipher suite
gets a ``403`` challenge page with ``cf-mitigated: challenge`` for every request but the
control ones, counted as ``walled`` in the stats. The ClientHello is read before the
handshake whether the wall is up or not, so the knob takes effect on open connections too; a
connection that sends no ClientHello is closed.

Pages built by script (``script_pages``, pages.py and api.py) and the script challenge
(``script_challenge``, challenge.py, on HTTP or HTTPS): see ``Faults``. The challenge is
answered in front of the site, after the wall: challenged requests are counted as
``challenged``, clearances earned at ``/cdn-cgi/challenge-platform/solve`` as ``passes``.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import date
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakesite import coding
from fakesite.app import SESSION_COOKIE, App, Reply, Request, extra_dataset_file, route
from fakesite.challenge import CLEARANCE_COOKIE, SOLVE_PATH, Challenges
from fakesite.control import DATASET_KINDS, Faults, Stats
from fakesite.data import SUBDIVISIONS, SiteData, SiteOptions, build_site_data
from fakesite.datasets import DatasetFile
from fakesite.tls import CERTIFICATES, TestPKI, make_pki
from fakesite.wall import ClientHello, challenge_reply, read_client_hello

logger = logging.getLogger(__name__)
CONTROL_PREFIX = "/_fakesite/"
# A chunked body goes in chunks of at most this many bytes, and a small file still in about
# _CHUNKS_PER_FILE of them, so that every file exercises a client's reading of chunks.
_CHUNK_MAX = 16 * 1024
_CHUNKS_PER_FILE = 4
_LAST_CHUNK = b"0\r\n\r\n"  # the zero-length chunk, with no trailer fields
# Seconds a new HTTPS connection has to send its ClientHello, and then to end the handshake;
# a connection still silent then is closed, so that it holds no thread for long.
_HELLO_SECONDS = 5.0
_HANDSHAKE_SECONDS = 10.0


class FakeSite:
    """The site on a port of its own, served from a background thread.

    ``with FakeSite(SiteOptions(...)) as site:`` starts it (port 0 picks a free port) and
    stops it at the end; ``site.faults`` can be changed at any time.

    ``https=True`` serves it over TLS: ``base_url`` is then ``https://...`` and ``ca_file``
    the CA that clients must trust (``pki`` has the other files, among them an unrelated CA).
    The certificate and keys are made at ``start`` into ``tls_dir``, or into a temporary
    folder removed at ``stop``. ``certificate`` picks the server certificate: ``"good"``,
    ``"expired"`` or ``"wrong_host"`` (for ``example.invalid`` only). ``bot_wall=True``
    starts with the knob of that name on: see wall.py.
    """

    def __init__(
        self,
        options: SiteOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_requests: bool = False,
        https: bool = False,
        certificate: str = "good",
        tls_dir: Path | str | None = None,
        bot_wall: bool = False,
    ) -> None:
        _check_tls_options(https, certificate, tls_dir, bot_wall)
        self.options = options or SiteOptions()
        self.data: SiteData = build_site_data(self.options, date.today())
        self._bot_wall = bot_wall
        self.faults = Faults(bot_wall=bot_wall)
        self._stats = Stats()
        self._app = App(self.data, self.faults)
        self._address = (host, port)
        self._log_requests = log_requests
        self.https = https
        self._certificate = certificate
        self._tls_dir = Path(tls_dir) if tls_dir is not None else None
        self._temporary_dir: tempfile.TemporaryDirectory[str] | None = None
        self.pki: TestPKI | None = None  # while it runs on HTTPS
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeSite:
        tls = self._make_tls() if self.https else None
        self._server = _Server(self._address, self._app, self._stats, self._log_requests, tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
        self.pki = None
        if self._temporary_dir is not None:
            self._temporary_dir.cleanup()
            self._temporary_dir = None

    def _make_tls(self) -> ssl.SSLContext:
        """Make the certificates (``self.pki``) and the server's TLS context."""
        folder = self._tls_dir
        if folder is None:
            self._temporary_dir = tempfile.TemporaryDirectory(prefix="fakesite-tls-")
            folder = Path(self._temporary_dir.name)
        self.pki = make_pki(folder, self._certificate)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.pki.cert_file, self.pki.key_file)
        # Browsers offer h2 first; the server speaks HTTP/1.1 only, and says so.
        context.set_alpn_protocols(["http/1.1"])
        return context

    def __enter__(self) -> FakeSite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the site is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        scheme = "https" if self.https else "http"
        return f"{scheme}://{self._address[0]}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The PEM file of the CA that signed the server's certificate (HTTPS, running)."""
        if self.pki is None:
            raise RuntimeError("the site is not running on HTTPS")
        return self.pki.ca_file

    def url(self, path: str) -> str:
        return self.base_url + path

    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def reset(self) -> None:
        """Back to what a new site starts with: faults as ``__init__`` set them, no session,
        no challenge pass, no stats. Its data, port and dataset files stay: one site can
        serve test after test."""
        self.faults.update(Faults(bot_wall=self._bot_wall).as_dict())
        self._app.forget_sessions()
        if self._server is not None:
            self._server.challenges = Challenges()
        self._stats.reset()

    def dataset_file(
        self, course_slug: str, run_number: int, dataset: str, generation: int | None = None
    ) -> DatasetFile:
        """The file as served now (or for another generation): size, chunks(), etag...

        ``dataset`` is a dashboard name or ``country-subdivisions``; KeyError if the run has
        no such file.
        """
        run = self.data.run(course_slug, run_number)
        if run is None or not run.started_on(self.data.today):
            raise KeyError((course_slug, run_number))
        generation = generation or self.faults.generation
        if dataset in self.faults.extra_datasets and dataset not in run.datasets:
            return extra_dataset_file(run, dataset, generation)
        if dataset not in (*run.datasets, SUBDIVISIONS):
            raise KeyError((course_slug, run_number, dataset))
        return self._app.files.get(run, dataset, generation, dataset == self.faults.extra_column)

    def dataset_bytes(
        self, course_slug: str, run_number: int, dataset: str, generation: int | None = None
    ) -> bytes:
        """The whole file; for a big file prefer ``dataset_file(...).chunks()``."""
        return self.dataset_file(course_slug, run_number, dataset, generation).content()


def _check_tls_options(
    https: bool, certificate: str, tls_dir: Path | str | None, bot_wall: bool
) -> None:
    if certificate not in CERTIFICATES:
        raise ValueError(f"certificate must be one of {CERTIFICATES}, not {certificate!r}")
    if not https and (certificate != "good" or tls_dir is not None or bot_wall):
        raise ValueError("certificate, tls_dir and bot_wall need https=True")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops connections when a client opens many at once;
    # the client's kernel then retries after 1, 2, 4, 8… s, which looks like a stalled crawl.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        stats: Stats,
        log_requests: bool,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.stats = stats
        self.log_requests = log_requests
        self.tls = tls
        self.challenges = Challenges()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection, in its own thread: over TLS, read its ClientHello first."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        # Peeked at before the handshake, which then reads it as usual.
        hello = read_client_hello(request, _HELLO_SECONDS)
        self.stats.add_client_hello(None if hello is None else hello.grease)
        if hello is None:
            return  # not TLS, or cut short: shutdown_request closes it
        connection = self._handshake(request)
        if connection is None:
            return
        try:
            _Handler(connection, client_address, self, client_hello=hello)
        finally:
            self._close(connection)

    def _handshake(self, request: socket.socket) -> ssl.SSLSocket | None:
        """The connection over TLS, or None (closed) if the handshake failed."""
        assert self.tls is not None
        with self._connections_lock:
            # wrap_socket takes over the socket's descriptor: stop() must now reach it here.
            connection = self.tls.wrap_socket(
                request, server_side=True, do_handshake_on_connect=False
            )
            self._connections.discard(request)
            self._connections.add(connection)
        connection.settimeout(_HANDSHAKE_SECONDS)
        try:
            connection.do_handshake()
        except OSError as error:  # SSLError and the timeout too
            # A client refusing the certificate ends here: what fault tests look for.
            logger.debug("fakesite: TLS handshake failed: %s", error)
            self._close(connection)
            return None
        return connection

    def _close(self, connection: ssl.SSLSocket) -> None:
        # No close_notify: waiting for the client's could hold the thread.
        with self._connections_lock:
            self._connections.discard(connection)
        with suppress(OSError):
            connection.shutdown(socket.SHUT_WR)
        connection.close()

    def close_connections(self) -> None:
        """End kept-alive connections, whose threads would otherwise wait for a request."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is normal (and tested); anything else is a bug.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        logger.exception("fakesite: error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds an idle kept-alive connection stays open
    # Headers and body go out in separate writes; with Nagle on, each answer would wait for
    # the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def __init__(
        self,
        request: Any,
        client_address: Any,
        server: _Server,
        *,
        client_hello: ClientHello | None = None,
    ) -> None:
        # Set first: the base class serves the whole connection from its __init__.
        self.client_hello = client_hello  # None on plain HTTP
        super().__init__(request, client_address, server)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def version_string(self) -> str:
        return "nginx"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)

    def _serve(self) -> None:
        self._body_sent = 0
        self._count_bytes = False
        self._trickle = False
        body = self._read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        if url.path.startswith(CONTROL_PREFIX):
            self._send(_control(self.server, self.command, url.path, body))
            return
        if self._walled():
            # Answered in front of the site: no latency, no fault, no session touched.
            self.server.stats.record_walled(self.command, self.path)
            self._send(challenge_reply())
            return
        challenge = self._challenge(url.path, body)
        if challenge is not None:
            self._send(challenge)
            return
        kind, _ = route(self.command, url.path)
        time.sleep(self.server.app.faults.latency_ms / 1000)
        self._trickle = self.server.app.faults.trickles(url.path)
        reply = self._answer(url.path, url.query, body)
        # Counted before sending, so a client that has its answer also sees it counted.
        self.server.stats.record(self.command, self.path, kind, reply.status)
        self._count_bytes = kind in DATASET_KINDS
        if self._count_bytes and reply.file is not None:
            self.server.stats.add_dataset_answer(reply.content_coding, reply.chunked)
        self._send(reply)

    def _walled(self) -> bool:
        """Whether the bot wall is up and this connection's ClientHello had no GREASE."""
        hello = self.client_hello
        return hello is not None and self.server.app.faults.bot_wall and not hello.grease

    def _challenge(self, path: str, body: bytes) -> Reply | None:
        """The script challenge's answer (its page, or its endpoint's), or None: go on."""
        if not self.server.app.faults.script_challenge:
            return None
        challenges, stats = self.server.challenges, self.server.stats
        user_agent = self.headers.get("User-Agent", "")
        if path == SOLVE_PATH and self.command == "POST":
            faults = self.server.app.faults
            secure = self.server.tls is not None
            reply = challenges.solve(
                body,
                user_agent,
                faults.challenge_pass_seconds,
                secure,
                requests=faults.challenge_pass_requests,
            )
            stats.record_solve(self.command, self.path, reply.status)
            return reply
        if challenges.cleared(self._cookie(CLEARANCE_COOKIE), user_agent):
            return None
        stats.record_challenged(self.command, self.path)
        return challenges.challenge()

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering a body that cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self.send_error(411, "Length Required")
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self.send_error(400, "Bad Content-Length")
            return None
        return self.rfile.read(length)

    def _answer(self, path: str, query: str, body: bytes) -> Reply:
        form: dict[str, list[str]] = {}
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            text = body.decode("utf-8", "replace")
            form = parse_qs(text, keep_blank_values=True, encoding="utf-8", errors="replace")
        request = Request(
            method=self.command,
            path=path,
            query=parse_qs(query),
            headers=self.headers,
            session_id=self._cookie(SESSION_COOKIE),
            form=form,
        )
        try:
            return self.server.app.handle(request)
        except Exception:
            logger.exception("fakesite: error answering %s %s", self.command, self.path)
            return Reply(500, [("Content-Type", "text/plain; charset=utf-8")], b"Server error\n")

    def _cookie(self, name: str) -> str | None:
        cookies = SimpleCookie()
        try:
            cookies.load("; ".join(self.headers.get_all("Cookie") or []))
        except CookieError:
            return None
        morsel = cookies.get(name)
        return morsel.value if morsel else None

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if not reply.chunked:
            self.send_header("Content-Length", str(reply.length))
        elif reply.status != 304:
            # A 304 gets neither: it has no body, and the 200 would have had no length.
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD" or reply.status == 304:
            return
        if reply.file is None:
            self._write(reply.body)
            return
        started = time.monotonic()
        if reply.chunked:
            self._send_chunked(reply.file, reply.content_coding, reply.truncate)
        else:
            self._send_length(reply.file, reply.truncate)
        if self._count_bytes:
            self.server.stats.add_dataset_seconds(time.monotonic() - started)
        if reply.truncate:
            # Hanging up short of the end is what the client is meant to notice.
            self.close_connection = True

    def _send_length(self, file: DatasetFile, truncate: bool) -> None:
        limit = file.size // 2 if truncate else file.size
        for chunk in file.chunks():
            room = limit - self._body_sent
            self._write(chunk if len(chunk) <= room else memoryview(chunk)[:room])
            if self._body_sent >= limit:
                break

    def _send_chunked(self, file: DatasetFile, content_coding: str, truncate: bool) -> None:
        encoder = coding.encoder(content_coding)
        for piece in _pieces(file, file.size // 2 if truncate else file.size):
            self._write_chunk(encoder.encode(piece))
        if truncate:
            # Gone before the last chunk (and the end of a compressed stream): a client sees
            # a body that never ended, whatever it has decoded so far.
            return
        self._write_chunk(encoder.finish())
        self._write(_LAST_CHUNK, counted=0)

    def _write_chunk(self, data: bytes | memoryview) -> None:
        if not data:
            return  # an empty chunk would end the body
        # One write per chunk: with Nagle off, the size line alone would be a packet.
        frame = b"%x\r\n" % len(data) + data + b"\r\n"
        self._write(frame, counted=len(data))

    def _write(self, data: bytes | memoryview, counted: int | None = None) -> None:
        """Send ``data``, of which ``counted`` bytes (default: all) are the body's."""
        counted = len(data) if counted is None else counted
        if self._count_bytes:
            self.server.stats.add_dataset_bytes(counted)
        try:
            if self._trickle:
                self._write_slowly(data)
            else:
                self.wfile.write(data)
        except OSError:
            if self._count_bytes:
                self.server.stats.add_dataset_bytes(-counted)
            raise
        self._body_sent += counted

    def _write_slowly(self, data: bytes | memoryview) -> None:
        """Send ``data`` at ``trickle_rate`` bytes a second: pieces a tenth of a second apart
        (a byte at least)."""
        rate = self.server.app.faults.trickle_rate
        step = max(1, int(rate / 10))
        view = memoryview(data)
        for start in range(0, len(view), step):
            self.wfile.write(view[start : start + step])
            time.sleep(step / rate)


def _pieces(file: DatasetFile, limit: int) -> Iterator[memoryview]:
    """The first ``limit`` bytes of the file, in slices for chunks; never the file joined."""
    size = max(1, min(_CHUNK_MAX, file.size // _CHUNKS_PER_FILE + 1))
    left = limit
    for block in file.chunks():
        view = memoryview(block)[:left]
        for start in range(0, len(view), size):
            yield view[start : start + size]
        left -= len(view)
        if left <= 0:
            return


def _control(server: _Server, method: str, path: str, body: bytes) -> Reply:
    app = server.app
    if path == "/_fakesite/stats" and method == "GET":
        return _json(200, server.stats.snapshot())
    if path == "/_fakesite/reset-stats" and method == "POST":
        server.stats.reset()
        return _json(200, {"ok": True})
    if path == "/_fakesite/data" and method == "GET":
        return _json(200, app.data.as_json())
    if path == "/_fakesite/control" and method in ("GET", "POST"):
        if method == "POST":
            try:
                values = json.loads(body or b"{}")
                if not isinstance(values, dict):
                    raise ValueError("expected a JSON object")
                if values.get("bot_wall") is True and server.tls is None:
                    raise ValueError("bot_wall needs the site on HTTPS")
                app.faults.update(values)
            except ValueError as error:
                return _json(400, {"error": str(error)})
        return _json(200, app.faults.as_dict())
    return _json(404, {"error": f"no control endpoint {method} {path}"})


def _json(status: int, value: Any) -> Reply:
    body = json.dumps(value, ensure_ascii=False).encode()
    return Reply(status, [("Content-Type", "application/json; charset=utf-8")], body)
