"""The forward proxy of tests/proxy.py, against small origin servers started here."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from curl_cffi import CurlOpt
from curl_cffi import requests as creq

from tests.proxy import RELAY_CHUNK, THREAD_NAME, ForwardProxy, refusing_proxy_url

BIG = 50 * 1024 * 1024
# The origin sends this much of a big body, then waits until the client has had it through
# the proxy: a proxy that read bodies whole would never pass it on, and the test would fail.
GATE_AT = 1024 * 1024
GATE_TIMEOUT = 30.0  # seconds; only ever reached when the proxy buffers (the test then fails)
BLOCK = bytes(range(256)) * 1024  # 256 KiB of the big body's repeating pattern
CREDENTIALS = ("proxyuser", "s3cret:pass")  # a colon in the password, as Basic allows


def big_blocks(size: int) -> Iterator[bytes]:
    """The big body, in blocks; the same on both sides, so its digest can be compared."""
    left = size
    while left > 0:
        yield BLOCK[:left]
        left -= len(BLOCK)


def big_digest(size: int) -> str:
    digest = hashlib.sha256()
    for block in big_blocks(size):
        digest.update(block)
    return digest.hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class OriginHandler(BaseHTTPRequestHandler):
    """/echo answers the request as JSON; /chunked and /close-delimited answer with those
    framings; /big?size=N&framing=length|chunked streams a big body, with a gate."""

    protocol_version = "HTTP/1.1"
    server: Origin.Server

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows stderr of failing tests only, and this is noise there

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        if url.path == "/echo":
            self._echo()
        elif url.path == "/chunked":
            self._send_chunked([b"first,", b"second,", b"third"])
        elif url.path == "/close-delimited":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ends when the origin hangs up")
        elif url.path == "/big":
            self._big(int(query["size"]), query.get("framing", "length"))
        else:
            self.send_error(404)

    def _request_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()  # the empty line after the last chunk (no trailer)
            return body
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _echo(self) -> None:
        echo = {
            "method": self.command,
            "path": self.path,
            "headers": [[name, value] for name, value in self.headers.items()],
            "body": self._request_body().decode(),
        }
        body = json.dumps(echo).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_chunked(self, pieces: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in pieces:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _big(self, size: int, framing: str) -> None:
        self.send_response(200)
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        sent = 0
        for block in big_blocks(size):
            if sent == GATE_AT and not self.server.gate.wait(GATE_TIMEOUT):
                self.close_connection = True
                return  # hang up short: the client sees a truncated body
            frame = b"%x\r\n%s\r\n" % (len(block), block) if framing == "chunked" else block
            self.wfile.write(frame)
            sent += len(block)
        if framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")


class Origin:
    """An origin server on 127.0.0.1 (TLS if given a context), run from a thread."""

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        gate: threading.Event

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.server = self.Server(("127.0.0.1", 0), OriginHandler)
        self.server.gate = threading.Event()
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Origin:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.gate.set()  # let a gated answer finish rather than wait
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.authority}{path}"


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as server:
        yield server


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_origin(tls_files: tuple[Path, Path]) -> Iterator[Origin]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    with Origin(context) as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


def connect(proxy: ForwardProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)


def tunnel(
    proxy: ForwardProxy, origin: Origin, headers: dict[str, str] | None = None
) -> http.client.HTTPConnection:
    conn = connect(proxy)
    conn.set_tunnel("127.0.0.1", origin.port, headers=headers)
    return conn


def echo(response: http.client.HTTPResponse) -> dict[str, Any]:
    assert response.status == 200, response.read()
    return json.loads(response.read())


def header_names(echoed: dict[str, Any]) -> set[str]:
    return {name.lower() for name, _ in echoed["headers"]}


def proxy_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


# Plain forwarding (absolute-URI requests)


def test_forwards_two_requests_on_one_kept_alive_connection(
    proxy: ForwardProxy, origin: Origin
) -> None:
    conn = connect(proxy)
    for n in (1, 2):
        conn.request("GET", origin.url(f"/echo?n={n}"))
        echoed = echo(conn.getresponse())
        # The origin gets an origin-form target, and the Host of the URL.
        assert echoed["path"] == f"/echo?n={n}"
        assert dict(echoed["headers"])["Host"] == origin.authority
    conn.close()
    stats = proxy.stats()
    assert stats.client_connections == 1
    assert stats.forwarded == [("GET", origin.url("/echo?n=1")), ("GET", origin.url("/echo?n=2"))]
    assert stats.connects == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_forwards_a_request_body(proxy: ForwardProxy, origin: Origin, chunked: bool) -> None:
    conn = connect(proxy)
    if chunked:
        parts = iter([b"a=1&", b"b=2"])
        conn.request("POST", origin.url("/echo"), body=parts, encode_chunked=True)
    else:
        conn.request("POST", origin.url("/echo"), body=b"a=1&b=2")
    assert echo(conn.getresponse())["body"] == "a=1&b=2"
    conn.request("GET", origin.url("/echo"))  # the connection is still usable
    assert echo(conn.getresponse())["method"] == "GET"
    conn.close()
    assert proxy.stats().client_connections == 1


@pytest.mark.parametrize(
    ("path", "body", "kept_alive"),
    [
        ("/chunked", b"first,second,third", True),
        ("/close-delimited", b"ends when the origin hangs up", False),
    ],
)
def test_relays_chunked_and_close_delimited_answers(
    proxy: ForwardProxy, origin: Origin, path: str, body: bytes, kept_alive: bool
) -> None:
    conn = connect(proxy)
    conn.request("GET", origin.url(path))
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == body
    # A body that ends with the connection can only end the client's connection too.
    assert response.will_close is not kept_alive
    conn.close()


def test_head_answer_has_no_body(proxy: ForwardProxy, origin: Origin) -> None:
    conn = connect(proxy)
    conn.request("HEAD", origin.url("/echo"))
    response = conn.getresponse()
    assert response.status == 200
    assert int(response.headers["Content-Length"]) > 0
    assert response.read() == b""
    conn.request("GET", origin.url("/echo"))  # nothing of a body was left in the way
    assert echo(conn.getresponse())["method"] == "GET"
    conn.close()


def test_strips_hop_by_hop_headers(proxy: ForwardProxy, origin: Origin) -> None:
    conn = connect(proxy)
    headers = {
        "Proxy-Authorization": basic("someone", "secret"),
        "Proxy-Connection": "keep-alive",
        "Connection": "X-Hop",
        "X-Hop": "for the proxy only",
        "X-End": "for the origin",
    }
    conn.request("GET", origin.url("/echo"), headers=headers)
    names = header_names(echo(conn.getresponse()))
    conn.close()
    assert {"proxy-authorization", "proxy-connection", "x-hop"}.isdisjoint(names)
    assert "x-end" in names
    stats = proxy.stats()
    # Without credentials to demand, the proxy still records what it got, and drops it.
    assert stats.proxy_authorizations == [basic("someone", "secret")]
    assert not stats.origin_saw_proxy_authorization


def test_curl_cffi_forwards_through_the_proxy(proxy: ForwardProxy, origin: Origin) -> None:
    response = creq.get(origin.url("/echo?via=curl"), proxy=proxy.url, timeout=30)
    assert response.status_code == 200
    assert response.json()["path"] == "/echo?via=curl"
    assert proxy.stats().forwarded == [("GET", origin.url("/echo?via=curl"))]
    assert proxy.stats().connects == []


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_streams_a_big_answer(proxy: ForwardProxy, origin: Origin, framing: str) -> None:
    conn = connect(proxy)
    conn.request("GET", origin.url(f"/big?size={BIG}&framing={framing}"))
    assert_streams_big_body(conn.getresponse(), origin)
    conn.close()
    stats = proxy.stats()
    assert stats.forwarded_body_bytes >= BIG
    # The proxy never held more than one read's worth of the body.
    assert 0 < stats.largest_read <= RELAY_CHUNK


def assert_streams_big_body(response: http.client.HTTPResponse, origin: Origin) -> None:
    """Read the gated big body: its first part must arrive before the origin sends more."""
    assert response.status == 200
    digest = hashlib.sha256(response.read(GATE_AT))
    origin.server.gate.set()
    while block := response.read(RELAY_CHUNK):
        digest.update(block)
    assert digest.hexdigest() == big_digest(BIG)


# CONNECT tunnels


def test_tunnels_to_a_plain_origin(proxy: ForwardProxy, origin: Origin) -> None:
    conn = tunnel(proxy, origin)
    for n in (1, 2):  # the tunnel is a byte pipe: keep-alive inside it is the origin's
        conn.request("GET", f"/echo?n={n}")
        assert echo(conn.getresponse())["path"] == f"/echo?n={n}"
    conn.close()
    stats = proxy.stats()
    assert stats.connects == [origin.authority]
    assert stats.forwarded == []  # inside a tunnel the proxy sees no requests
    assert stats.tunnel_bytes > 0


def test_curl_cffi_tunnels_when_asked(proxy: ForwardProxy, origin: Origin) -> None:
    with creq.Session(curl_options={CurlOpt.HTTPPROXYTUNNEL: 1}) as session:
        response = session.get(origin.url("/echo"), proxy=proxy.url, timeout=30)
    assert response.status_code == 200
    assert response.json()["path"] == "/echo"
    assert proxy.stats().connects == [origin.authority]


def test_tunnels_tls(proxy: ForwardProxy, tls_origin: Origin) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=30, context=context)
    conn.set_tunnel("127.0.0.1", tls_origin.port)
    conn.request("GET", "/echo?tls=1")
    assert echo(conn.getresponse())["path"] == "/echo?tls=1"
    conn.close()
    response = creq.get(tls_origin.url("/echo?via=curl"), proxy=proxy.url, verify=False)
    assert response.json()["path"] == "/echo?via=curl"
    assert proxy.stats().connects == [tls_origin.authority] * 2


def test_streams_a_big_answer_through_a_tunnel(proxy: ForwardProxy, origin: Origin) -> None:
    conn = tunnel(proxy, origin)
    conn.request("GET", f"/big?size={BIG}")
    assert_streams_big_body(conn.getresponse(), origin)
    conn.close()
    stats = proxy.stats()
    assert stats.tunnel_bytes >= BIG
    assert 0 < stats.largest_read <= RELAY_CHUNK


# Proxy authentication


def test_requires_credentials_when_given_some(origin: Origin) -> None:
    with ForwardProxy(credentials=CREDENTIALS) as proxy:
        conn = connect(proxy)
        for wrong in (None, basic("proxyuser", "wrong"), "Bearer token"):
            headers = {} if wrong is None else {"Proxy-Authorization": wrong}
            conn.request("GET", origin.url("/echo"), headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 407
            assert response.headers["Proxy-Authenticate"] == 'Basic realm="test"'
        right = basic(*CREDENTIALS)
        conn.request("GET", origin.url("/echo"), headers={"Proxy-Authorization": right})
        assert "proxy-authorization" not in header_names(echo(conn.getresponse()))
        conn.close()
        stats = proxy.stats()
    assert stats.auth_challenges == 3
    assert stats.proxy_authorizations == [basic("proxyuser", "wrong"), "Bearer token", right]
    assert stats.forwarded == [("GET", origin.url("/echo"))]  # the 407s went nowhere
    assert stats.client_connections == 1  # a 407 keeps the connection for the retry
    assert not stats.origin_saw_proxy_authorization


def test_requires_credentials_on_connect(origin: Origin) -> None:
    with ForwardProxy(credentials=CREDENTIALS) as proxy:
        conn = tunnel(proxy, origin)
        with pytest.raises(OSError, match="407"):
            conn.request("GET", "/echo")
        conn.close()
        conn = tunnel(proxy, origin, headers={"Proxy-Authorization": basic(*CREDENTIALS)})
        conn.request("GET", "/echo")
        # The credentials went to the proxy in CONNECT, never into the tunnel.
        assert "proxy-authorization" not in header_names(echo(conn.getresponse()))
        conn.close()
        stats = proxy.stats()
    assert stats.auth_challenges == 1
    assert stats.connects == [origin.authority]  # only the allowed CONNECT
    assert stats.proxy_authorizations == [basic(*CREDENTIALS)]


def test_curl_cffi_sends_credentials_from_the_proxy_url(origin: Origin) -> None:
    with ForwardProxy(credentials=CREDENTIALS) as proxy:
        refused = creq.get(origin.url("/echo"), proxy=proxy.url, timeout=30)
        accepted = creq.get(
            origin.url("/echo"), proxy=proxy.url_with_credentials(*CREDENTIALS), timeout=30
        )
        stats = proxy.stats()
    assert refused.status_code == 407
    assert accepted.status_code == 200
    assert "proxy-authorization" not in {name.lower() for name, _ in accepted.json()["headers"]}
    assert stats.proxy_authorizations == [basic(*CREDENTIALS)]


# Proxies that refuse, origins that cannot be reached


def test_refusing_proxy_answers_403(origin: Origin) -> None:
    with ForwardProxy(refuse=True) as proxy:
        conn = connect(proxy)
        conn.request("GET", origin.url("/echo"))
        assert conn.getresponse().status == 403
        conn.close()
        conn = tunnel(proxy, origin)
        with pytest.raises(OSError, match="403"):
            conn.request("GET", "/echo")
        conn.close()
        stats = proxy.stats()
    assert stats.refusals == 2
    assert stats.forwarded == [] and stats.connects == []


def test_stopped_proxy_port_refuses_connections(origin: Origin) -> None:
    proxy = ForwardProxy().start()
    proxy.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=5).close()


def test_refusing_proxy_url_refuses_connections(origin: Origin) -> None:
    with refusing_proxy_url() as url:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", urlsplit(url).port or 0), timeout=5).close()
        with pytest.raises(creq.exceptions.RequestException):
            creq.get(origin.url("/echo"), proxy=url, timeout=30)


def test_unreachable_origin_gives_502(proxy: ForwardProxy) -> None:
    with refusing_proxy_url() as dead:
        port = urlsplit(dead).port
        conn = connect(proxy)
        conn.request("GET", f"http://127.0.0.1:{port}/echo")
        response = conn.getresponse()
        response.read()
        assert response.status == 502
        conn.close()
        conn = connect(proxy)
        conn.set_tunnel("127.0.0.1", port)
        with pytest.raises(OSError, match="502"):
            conn.request("GET", "/echo")
        conn.close()


# Stopping


def test_stop_ends_tunnels_and_kept_alive_connections(origin: Origin) -> None:
    before = len(proxy_threads())
    proxy = ForwardProxy().start()
    idle = connect(proxy)
    idle.request("GET", origin.url("/echo"))
    echo(idle.getresponse())  # kept alive, its proxy thread waiting for another request
    open_tunnel = tunnel(proxy, origin)
    open_tunnel.request("GET", "/echo")
    echo(open_tunnel.getresponse())  # the origin keeps it open: a tunnel with both ends idle
    proxy.stop()
    assert len(proxy_threads()) == before
    # Both clients see their connection ended rather than hanging.
    for conn in (idle, open_tunnel):
        assert conn.sock is not None and conn.sock.recv(1) == b""
        conn.close()
