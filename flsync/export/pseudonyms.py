"""The export key and the pseudonyms made with it.

A pseudonym is ``{kind}-{first 20 hex digits of HMAC-SHA-256(key, kind + NUL + value)}``: the
same value of the same kind gets the same pseudonym in every file, run, course and export made
with one key, and without the key no one can tell which value it stands for, nor compute the
pseudonym of a value they know. 20 hex digits are 80 bits: among ten million learners, the
chance that two share a pseudonym is about 4 in 10^11.

The key is the content of a file held by the institution (``FLSYNC_EXPORT_KEY_FILE``), less a
final line end: at least 32 bytes, and readable by its owner only, as ssh asks of a private
key. ``scrapy export --new-key FILE`` writes 32 random bytes as 64 hex digits.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from functools import lru_cache

MIN_KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 4096  # a bigger file is no key file (a data file named by mistake)
NEW_KEY_BYTES = 32
PSEUDONYM_HEX_DIGITS = 20
# Pseudonyms remembered for the rows that follow (learners come back row after row); bounded,
# so memory stays flat whatever the number of learners. Held in memory only, never written.
CACHED_PSEUDONYMS = 1 << 16


class KeyFileError(Exception):
    """The key file cannot be used; the message is one line for the user."""


def load_key(path: str) -> bytes:
    """The key in the file at ``path``; KeyFileError if it is missing, not a regular file,
    readable or writable by others than its owner, or shorter than 32 bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(
            f"export key file {path} does not exist (make one with: scrapy export --new-key {path})"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"export key file {path} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"export key file {path} is not a regular file")
        if mode & 0o077:
            raise KeyFileError(
                f"export key file {path} is open to others (mode {stat.S_IMODE(mode):04o}):"
                f" make it its owner's only (chmod 600 {path})"
            )
        key = f.read(MAX_KEY_FILE_BYTES + 1)
    if len(key) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(
            f"export key file {path} is over {MAX_KEY_FILE_BYTES} bytes: not a key file"
        )
    key = key.removesuffix(b"\n").removesuffix(b"\r")
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"export key file {path} holds {len(key)} bytes: a key needs at least"
            f" {MIN_KEY_BYTES} (make one with: scrapy export --new-key FILE)"
        )
    return key


def new_key(path: str) -> bytes:
    """Write a new random key to a new file at ``path``, mode 0600; KeyFileError if the file
    exists (a key is never overwritten: the pseudonyms made with it would be lost)."""
    key = secrets.token_bytes(NEW_KEY_BYTES).hex().encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} exists: a key file is never overwritten (the pseudonyms made with its key"
            " would be lost); give a new file name"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot write a key to {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


def fingerprint(key: bytes) -> str:
    """A short name for the key, to tell exports apart: it does not reveal the key."""
    return hashlib.sha256(b"flsync-export-key\0" + key).hexdigest()[:16]


class Pseudonyms:
    """The pseudonyms of one key."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.of = lru_cache(maxsize=CACHED_PSEUDONYMS)(self._pseudonym)

    def _pseudonym(self, kind: str, value: str) -> str:
        digest = hmac.digest(self.key, f"{kind}\0{value}".encode(), "sha256")
        return f"{kind}-{digest.hex()[:PSEUDONYM_HEX_DIGITS]}"
