"""E-mail addresses and URLs masked in free text (kept only with ``-a free_text=keep``).

What counts (docs/export.md lists cases): an e-mail address is ``local@domain.tld`` (any
letters, Unicode included; ``+tags`` and dots in the local part); a URL starts with a scheme
(``https://``, ``http://``, ``ftp://``) or ``www.``, or is a domain with a path
(``linkedin.com/in/someone``). A URL ends at white space, ``<``, ``>`` or ``"``, less the
punctuation that closes a sentence or a bracket around it. Addresses written to dodge a
machine (``jane at example dot com``) and names are not found: free text stays personal data.
"""

from __future__ import annotations

import re

EMAIL_MASK = "[email]"
URL_MASK = "[url]"
EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(
    r"(?:\b(?:https?|ftp)://|\bwww\.|\b(?:[\w-]+\.)+[a-z]{2,}/)[^\s<>\"]*", re.IGNORECASE
)
# Punctuation after a URL that belongs to the sentence, not to the URL. Not "]": a URL may end
# in "[email]", an address already masked inside it.
_TRAILING = ".,;:!?)'\u2019\u201d\u00bb"


def mask(text: str) -> str:
    """``text`` with each e-mail address replaced by [email] and each URL by [url]."""
    return URL.sub(_mask_url, EMAIL.sub(EMAIL_MASK, text))


def _mask_url(match: re.Match[str]) -> str:
    url = match.group()
    kept = url.rstrip(_TRAILING)
    return URL_MASK + url[len(kept) :]
