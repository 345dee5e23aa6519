"""Where flsync may send a request, and where the password may go: links on a page are the
site's to choose, and a compromised or broken page must not lead the sync (or the account's
password) elsewhere.

Pages and datasets are fetched only from base_url's origin (scheme, host and port) and the
origins ``FLSYNC_EXTRA_ORIGINS`` lists (a CDN FutureLearn might one day serve downloads from),
and never from https to plain http. The sign-in form is submitted only by POST, to base_url's
origin, over https (or http when base_url itself is http on a loopback address: the tests).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from scrapy.exceptions import IgnoreRequest

if TYPE_CHECKING:
    from collections.abc import Iterable

_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginRefused(IgnoreRequest):
    """A request to an origin flsync does not fetch from (the message says which, and why)."""


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL, the port always written out; "" when it has none."""
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number
        return ""
    if not parts.hostname or port is None:
        return ""
    return f"{parts.scheme}://{parts.hostname}:{port}"


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_origins(values: Iterable[str]) -> frozenset[str]:
    """The origins of ``FLSYNC_EXTRA_ORIGINS``; ValueError naming one that is not an
    http(s) origin."""
    found = set()
    for value in values:
        parts = urlsplit(value)
        if parts.scheme not in _DEFAULT_PORTS or not origin(value) or parts.path not in ("", "/"):
            raise ValueError(
                f"FLSYNC_EXTRA_ORIGINS: {value!r} is not an origin (https://host[:port])"
            )
        found.add(origin(value))
    return frozenset(found)


def refusal(url: str, base_url: str, extra: frozenset[str] = frozenset()) -> str | None:
    """Why a page or dataset at ``url`` is not fetched (None: it is)."""
    if urlsplit(base_url).scheme == "https" and urlsplit(url).scheme != "https":
        return f"refused: {url} is not https, as base_url is (a downgrade)"
    if origin(url) in {origin(base_url), *extra}:
        return None
    return (
        f"refused: {origin(url) or url} is not base_url's origin ({origin(base_url)}) nor one"
        " FLSYNC_EXTRA_ORIGINS lists"
    )


def credential_refusal(method: str, url: str, base_url: str) -> str | None:
    """Why the sign-in form's password may not be sent as the form asks (None: it may). The
    URL is named without its query, which a GET form fills with the password."""
    url = urlsplit(url)._replace(query="", fragment="").geturl()
    if method.upper() != "POST":
        return f"by {method.upper()} (in the URL) to {url}"
    if origin(url) != origin(base_url):
        return f"to {url}, not to base_url's origin ({origin(base_url)})"
    if urlsplit(url).scheme != "https" and not is_loopback(base_url):
        return f"over plain http to {url}"
    return None
