"""The bot wall in front of the HTTPS site, as Cloudflare's looks to a client that is no browser.

futurelearn.com refuses clients whose TLS handshake is not a browser's with a ``403``
challenge (docs/site-model.md, "In front of the site"). The imitation tells them apart by
one trait of the ClientHello: browsers built on BoringSSL or their own TLS stack (Chrome,
Edge, Safari) put GREASE values (RFC 8701: 0x0A0A, 0x1A1A, ... 0xFAFA) among their cipher
suites, and OpenSSL-based clients (Python's ``ssl``, ``urllib``, curl, Twisted) never do.

Before the handshake the server peeks at the client's first TLS record, leaving it in the
socket for the handshake to read, and parses the ClientHello in it as far as the cipher
suites (``read_client_hello``). A ClientHello longer than one record is parsed from its first
record: the cipher suites come within its first few hundred bytes.
"""

from __future__ import annotations

import secrets
import select
import socket
import time
from dataclasses import dataclass

from fakesite.app import Reply

# Both bytes equal, low nibble 0xA: the 16 values RFC 8701 reserves for cipher suites.
GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))
RECORD_HEADER = 5  # content type, legacy record version, length
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_MAX_FRAGMENT = 2**14  # RFC 8446 5.1: a plaintext record carries at most this much
# A partly arrived record is peeked at again after this long: peeking at once would spin,
# since a peek returns what is there without waiting for more.
_POLL_SECONDS = 0.005
CHALLENGE_HEADERS = [
    ("Content-Type", "text/html; charset=UTF-8"),
    ("cf-mitigated", "challenge"),
    ("Cache-Control", "private, max-age=0, no-store, no-cache, must-revalidate"),
    ("Expires", "Thu, 01 Jan 1970 00:00:01 GMT"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "SAMEORIGIN"),
]
CHALLENGE_PAGE = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>\
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">\
<meta http-equiv="X-UA-Compatible" content="IE=Edge">\
<meta name="robots" content="noindex,nofollow">\
<meta name="viewport" content="width=device-width,initial-scale=1"></head>
<body><div class="main-wrapper" role="main"><div class="main-content">
<h1 class="zone-name-title h1">www.futurelearn.com</h1>
<h2 class="h2" id="challenge-running">Verifying you are human. This may take a few seconds.</h2>
<noscript><div class="h2"><span id="challenge-error-text">Enable JavaScript and cookies to \
continue</span></div></noscript>
<div class="core-msg spacer">www.futurelearn.com needs to review the security of your \
connection before proceeding.</div></div></div>
<div class="footer" role="contentinfo"><div class="footer-inner">
<div class="text-center" id="footer-text">Performance &amp; security by Cloudflare</div>
</div></div></body></html>
"""


class MalformedHello(ValueError):
    """The bytes are not (the start of) a TLS record carrying a whole ClientHello."""


@dataclass(frozen=True)
class ClientHello:
    """The ClientHello's fields up to its cipher suites."""

    version: int  # legacy_version: 0x0303 for TLS 1.2 and 1.3 alike
    session_id: bytes
    cipher_suites: tuple[int, ...]

    @property
    def grease(self) -> bool:
        """Whether any cipher suite is a GREASE value, as a browser's are."""
        return any(suite in GREASE for suite in self.cipher_suites)


def record_size(header: bytes) -> int:
    """The size of the whole record, header included, that starts with this header."""
    if len(header) < RECORD_HEADER:
        raise MalformedHello("truncated record header")
    if header[0] != _HANDSHAKE:
        raise MalformedHello(f"not a handshake record (content type {header[0]:#04x})")
    if header[1] != 3:
        raise MalformedHello(f"not a TLS record version ({header[1]}.{header[2]})")
    length = int.from_bytes(header[3:5], "big")
    if not 0 < length <= _MAX_FRAGMENT:
        raise MalformedHello(f"bad record length {length}")
    return RECORD_HEADER + length


def parse_client_hello(record: bytes) -> ClientHello:
    """Parse the ClientHello in the first TLS record of ``record``; MalformedHello if not."""
    size = record_size(record)
    if len(record) < size:
        raise MalformedHello(f"truncated record: {len(record)} of {size} bytes")
    reader = _Reader(record[RECORD_HEADER:size])
    if reader.integer(1) != _CLIENT_HELLO:
        raise MalformedHello("not a ClientHello")
    # The body may go on in later records; the fields read here must be in this one.
    reader.integer(3)
    version = reader.integer(2)
    reader.take(32)  # random
    session_id = reader.vector(1)
    if len(session_id) > 32:
        raise MalformedHello("session id longer than 32 bytes")
    suites = reader.vector(2)
    if not suites or len(suites) % 2:
        raise MalformedHello(f"bad cipher suites length {len(suites)}")
    pairs = (suites[i : i + 2] for i in range(0, len(suites), 2))
    return ClientHello(version, session_id, tuple(int.from_bytes(p, "big") for p in pairs))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, count: int) -> bytes:
        if self._at + count > len(self._data):
            raise MalformedHello("ClientHello cut short")
        self._at += count
        return self._data[self._at - count : self._at]

    def integer(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        """A field preceded by its length in ``length_size`` bytes."""
        return self.take(self.integer(length_size))


def read_client_hello(sock: socket.socket, timeout: float) -> ClientHello | None:
    """The ClientHello the client sent on ``sock``, left unread for the TLS handshake.

    None if none came whole within ``timeout`` seconds, the client hung up first, or what
    came is not a ClientHello. Leaves ``sock`` with a timeout: set the one you need.
    """
    deadline = time.monotonic() + timeout
    try:
        header = _peek(sock, RECORD_HEADER, deadline)
        record = header and _peek(sock, record_size(header), deadline)
        return parse_client_hello(record) if record else None
    except MalformedHello:
        return None


def _peek(sock: socket.socket, count: int, deadline: float) -> bytes | None:
    """The first ``count`` bytes waiting on ``sock``, not taken from it; None if they never come."""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data = sock.recv(count, socket.MSG_PEEK)
        except OSError:  # the timeout too
            return None
        if len(data) >= count:
            return data
        if not data or _hung_up(sock):
            return None
        time.sleep(_POLL_SECONDS)
    return None


def _hung_up(sock: socket.socket) -> bool:
    """Whether the client has closed its side: the rest of a record will never come."""
    rdhup = getattr(select, "POLLRDHUP", 0)  # Linux only; elsewhere the deadline ends it
    poller = select.poll()
    poller.register(sock, rdhup)
    # POLLHUP and POLLERR are reported whether asked for or not.
    return bool(poller.poll(0))


def challenge_reply() -> Reply:
    """Cloudflare's ``403`` interstitial for a client taken for a bot by its handshake.

    With no script: the wall lets no such client through whatever it runs. The page with a
    script to solve is the script challenge's (challenge.py), which builds on this one.
    """
    # Every Cloudflare answer carries a ray id: 16 hex digits and the data centre.
    headers = [*CHALLENGE_HEADERS, ("CF-RAY", f"{secrets.token_hex(8)}-LHR")]
    return Reply(403, headers, CHALLENGE_PAGE.encode())
