"""The one storage layer: every file flsync writes goes through a store of ``STORE_SCHEMES``.

A store is a Scrapy files store (``persist_file``/``stat_file``, what ``FilesPipeline``
uses; ``DatasetFilesPipeline`` registers these classes in its ``STORE_SCHEMES``) with what a
mirror also needs: temporary files for downloads and their move into place, a cheap ``stat``,
reading a small file back, listing a folder, sweeping what a killed sync left behind, and a
lock per organisation against two syncs of it at once. ``LocalStore`` makes every write
atomic: a temporary file in the destination folder, then a rename, so a reader never sees a
partial file and a failed write never replaces a good one. ``S3Store`` keeps the tree in an S3
bucket (``s3://bucket/prefix``), where every object is whole or absent by S3's own nature.

``base`` holds the protocol and what all stores share; ``local`` and ``s3`` one store each.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flsync.storage.base import (
    LOCK_PREFIX,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    DataStore,
    FileStat,
    StoreError,
    StoreLocationError,
    StoreLockedError,
    StoreWriteError,
)
from flsync.storage.local import LocalStore
from flsync.storage.s3 import S3_PART_SIZE, S3Store

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

__all__ = [
    "LOCK_PREFIX",
    "S3_PART_SIZE",
    "STORE_SCHEMES",
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "DataStore",
    "FileStat",
    "LocalStore",
    "S3Store",
    "StoreError",
    "StoreLocationError",
    "StoreLockedError",
    "StoreWriteError",
    "existing_tree",
    "open_store",
    "store_class",
]

STORE_SCHEMES: dict[str, type[DataStore]] = {
    "": LocalStore,
    "file": LocalStore,
    "s3": S3Store,
}


def store_class(uri: str) -> type[DataStore]:
    """The store class for a data_dir: a local path, a ``file://`` or an ``s3://`` URI."""
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    try:
        return STORE_SCHEMES[scheme]
    except KeyError:
        raise StoreLocationError(
            f"data_dir {uri!r}: unsupported scheme {scheme!r} (use a local folder or s3://bucket/prefix)"
        ) from None


def existing_tree(uri: str, settings: BaseSettings, purpose: str) -> DataStore:
    """The store of a tree that must already be there (a command that reads what syncs
    wrote): StoreLocationError for a local folder that does not exist, which opening a local
    store would make."""
    folder = store_class(uri).local_folder(uri)
    if folder is not None and not os.path.isdir(folder):
        raise StoreLocationError(
            f"data_dir {uri} does not exist: nothing to {purpose} (sync first)"
        )
    return open_store(uri, settings)


def open_store(uri: str, settings: BaseSettings) -> DataStore:
    """The store of a data_dir, set up by ``settings`` (an S3 store reads its ``AWS_*``
    settings and ``FLSYNC_LOCK_STALE_AFTER`` there)."""
    return store_class(uri)(uri, settings)
