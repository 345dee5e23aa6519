"""The export's own record in DEST, ``.flsync-export.json``: which key and which free-text
choice DEST was made with, and for each source file what it was when last exported (its size,
its time and the rules' digest). It holds paths of the tree and figures, no identifier: the
export writes no table from pseudonyms back to identifiers, here or anywhere."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flsync.storage import DataStore

MANIFEST_FILE = ".flsync-export.json"
FORMAT = 1

# What a source file was when exported: size (bytes), time (the store's), the rules' digest.
Entry = tuple[int, float, str]


class DestinationError(Exception):
    """DEST cannot take this export; the message is one line for the user."""


@dataclass
class Manifest:
    key: str  # the key's fingerprint
    free_text: str  # "drop" or "keep"
    files: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def load(cls, store: DataStore, where: str) -> Manifest | None:
        """DEST's manifest, None if it has none; DestinationError if it is not one."""
        content = store.read_file(MANIFEST_FILE)
        if content is None:
            return None
        try:
            document: dict[str, Any] = json.loads(content)
            if document["format"] != FORMAT:
                raise ValueError(document["format"])
            files = {
                path: (int(e[0]), float(e[1]), str(e[2])) for path, e in document["files"].items()
            }
            return cls(str(document["key"]), str(document["free_text"]), files)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise DestinationError(
                f"{where}/{MANIFEST_FILE} is no manifest of this version of flsync's export:"
                " export into a new folder"
            ) from None

    def dump(self) -> bytes:
        document = {
            "format": FORMAT,
            "key": self.key,
            "free_text": self.free_text,
            "files": {path: list(entry) for path, entry in sorted(self.files.items())},
        }
        return json.dumps(document, ensure_ascii=False, indent=0).encode()
