"""Content codings that the CDN in front of the site may apply to dataset bodies (gzip, br).

``accepts`` reads a request's Accept-Encoding; ``encoder`` compresses a body piece by piece,
flushing after each piece as a CDN compressing on the fly does, so that a big file is never
held whole and a client receives compressed bytes as they are made. ``gzip_bomb`` is what a
hostile or broken server may send instead: a small gzip body that decodes to gigabytes.
"""

from __future__ import annotations

import importlib
import re
import struct
import zlib
from functools import lru_cache
from typing import Any, Protocol


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# Optional for the site (then "br" is refused); Scrapy brings it on CPython.
brotli: Any = _optional("brotli")

IDENTITY = "identity"
CODINGS = (IDENTITY, "gzip", "br")
# RFC 9110 8.4.1.3: a recipient should take "x-gzip" as "gzip".
_ALIASES = {"x-gzip": "gzip"}
_QVALUE = re.compile(r"[qQ]=(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)")
# Brotli's default quality (11) is for static files; CDNs compress on the fly at about 4.
_BROTLI_QUALITY = 4


def brotli_available() -> bool:
    return brotli is not None


def accepts(accept_encoding: str | None, coding: str) -> bool:
    """Whether a request whose Accept-Encoding is this (None: absent) takes ``coding``.

    RFC 9110 12.5.3: a coding listed with q=0 is refused, one not listed takes the weight of
    ``*`` if given. Without the header RFC 9110 would allow any coding, but CDNs compress
    only for clients that ask, and so does this one.
    """
    if accept_encoding is None:
        return False
    qualities = _qualities(accept_encoding)
    return qualities.get(coding, qualities.get("*", 0.0)) > 0


def _qualities(header: str) -> dict[str, float]:
    qualities = {}
    for element in header.split(","):
        name, *params = (part.strip() for part in element.split(";"))
        if name:
            qualities[_ALIASES.get(name.lower(), name.lower())] = _quality(params)
    return qualities


def _quality(params: list[str]) -> float:
    """The weight of one element: 1 without q, 0 when q is malformed (refusing is the safe
    misreading: a client that cannot decode a coding gets none)."""
    for param in params:
        if param[:2].lower() == "q=":
            match = _QVALUE.fullmatch(param)
            return float(match[1]) if match else 0.0
    return 1.0


class Encoder(Protocol):
    def encode(self, data: bytes | memoryview) -> bytes | memoryview:
        """The coded bytes for ``data``, everything given so far flushed (may be empty)."""
        ...

    def finish(self) -> bytes:
        """The end of the coded stream."""
        ...


class _Identity:
    def encode(self, data: bytes | memoryview) -> bytes | memoryview:
        return data

    def finish(self) -> bytes:
        return b""


class _Gzip:
    def __init__(self) -> None:
        self._compressor = zlib.compressobj(wbits=31)  # 31: a gzip header and trailer

    def encode(self, data: bytes | memoryview) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._compressor.flush()


class _Brotli:
    def __init__(self) -> None:
        self._compressor = brotli.Compressor(mode=brotli.MODE_TEXT, quality=_BROTLI_QUALITY)

    def encode(self, data: bytes | memoryview) -> bytes:
        return bytes(self._compressor.process(data) + self._compressor.flush())

    def finish(self) -> bytes:
        return bytes(self._compressor.finish())


def encoder(coding: str) -> Encoder:
    """A fresh encoder for one body in ``coding`` (one of CODINGS)."""
    if coding == "gzip":
        return _Gzip()
    if coding == "br":
        if brotli is None:
            raise ValueError("the brotli package is not installed")
        return _Brotli()
    if coding == IDENTITY:
        return _Identity()
    raise ValueError(f"unknown content coding {coding!r}")


_MIB = 1024 * 1024


@lru_cache(maxsize=4)
def gzip_bomb(mib: int) -> bytes:
    """A valid gzip stream of ``mib`` MiB of spaces, about a thousandth of that in size
    (2 GiB: 2.1 MB), made without ever holding the decoded bytes.

    After a full flush deflate starts afresh, so every MiB after the first compresses to the
    same bytes; the trailer's CRC-32 and size are those of the whole.
    """
    block = b" " * _MIB
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    last_block = b"\x03\x00"  # an empty final block of fixed codes
    trailer = struct.pack("<II", crc, (mib * _MIB) & 0xFFFFFFFF)
    return first + again * (mib - 1) + last_block + trailer
