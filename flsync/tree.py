"""Where things go in the data tree, and the rules that make a page's name a safe file name that
no other name can take.

    {data_dir}/{organisation}/{course}/{run}-{start}-{end}/{dataset}.csv + metadata.csv
    {data_dir}/{organisation}/update.txt
    {data_dir}/{organisation}/sync-report.json
    {data_dir}/{organisation}/.flsync-state.json

Paths here are relative to ``data_dir``, with ``/`` as separator (what Scrapy's file stores take).

A name from a page is made safe (:func:`safe_name`); then, in its folder, it must not equal
another name held there (:func:`name_key`: compared as case-insensitive file systems compare,
macOS, Windows and SMB shares alike) nor a reserved one. :func:`unique_name` gives the
newcomer its slug appended, ``Data Science (data-science-2)``; who holds a name is kept in
each organisation's state (see flsync.mirror), so a folder once given stays its holder's.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection, Container, Iterator, Mapping, Sequence
    from datetime import date

    from flsync.storage import DataStore

MAX_NAME_LENGTH = 120  # characters: what existing mirrors were cut to, and keep
MAX_NAME_BYTES = 200  # of UTF-8: file systems count bytes (255 at most), with room for a suffix
METADATA_FILE = "metadata.csv"
UPDATE_FILE = "update.txt"
REPORT_FILE = "sync-report.json"
STATE_FILE = ".flsync-state.json"
MEASURES_FILE = "measures.csv"
STEPS_FILE = "step-completion.csv"
DASHBOARD_FILE = "dashboard.html"
# What flsync writes at the top of an organisation's folder: no course folder may take these
# names (nor any name starting with a dot, flsync's own hidden files).
ORGANISATION_FILES = (UPDATE_FILE, REPORT_FILE, MEASURES_FILE, STEPS_FILE, DASHBOARD_FILE)
# What flsync writes at the top of data_dir besides organisation folders (scrapy loaddb's
# SQLite database and its side files).
DATABASE_FILE = "flsync.sqlite3"
DATA_DIR_FILES = tuple(DATABASE_FILE + end for end in ("", "-journal", "-wal", "-shm"))
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_SPACES = re.compile(r"\s+")
# A slug as the site model has them (lowercase ASCII with dashes), short enough to show.
_PLAIN_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


# A run's folder: {run}-{start}-{end}, the dates as YYYY-MM-DD.
RUN_FOLDER = re.compile(r"([0-9]+)-([0-9]{4}-[0-9]{2}-[0-9]{2})-([0-9]{4}-[0-9]{2}-[0-9]{2})")


class ChooseError(Exception):
    """A folder asked for by name is not in the tree (the message lists those that are)."""


class NameTakenError(Exception):
    """No name is left for a newcomer in its folder (every form of it is held)."""


def safe_name(name: str) -> str:
    """A readable file-system name: `/`, `\\` and control characters become `-`, white space
    is folded, leading/trailing spaces and dots go, at most 120 characters and 200 bytes of
    UTF-8 (cut at whole characters), never empty."""
    name = _SPACES.sub(" ", _UNSAFE.sub("-", name)).strip(" .")
    return _cut(name[:MAX_NAME_LENGTH].strip(" ."), MAX_NAME_BYTES) or "_"


def name_key(name: str) -> str:
    """What two names must not share in one folder: equal after Unicode NFC normalisation
    and case folding, as case-insensitive file systems compare names."""
    return unicodedata.normalize("NFC", name).casefold()


def name_candidates(name: str, slug: str) -> list[str]:
    """The names a newcomer may take in its folder, in order: ``name`` made safe, then the
    same with `` (slug)`` appended (a slug too long or odd to show: a hash of it), then with a
    hash of the slug."""
    base = safe_name(name)
    digest = hashlib.sha256(slug.encode()).hexdigest()[:12]
    shown = slug if _PLAIN_SLUG.fullmatch(slug) else digest
    return list(dict.fromkeys((base, _suffixed(base, shown), _suffixed(base, digest))))


def is_reserved(name: str, reserved: Collection[str] = ()) -> bool:
    """A name no page's name may take: flsync's own hidden files, or one of ``reserved``."""
    return name.startswith(".") or name_key(name) in {name_key(r) for r in reserved}


def unique_name(name: str, slug: str, taken: Container[str], reserved: Collection[str] = ()) -> str:
    """The first of :func:`name_candidates` whose key (see :func:`name_key`) is not in
    ``taken`` and that is not reserved; NameTakenError when every one is."""
    for candidate in name_candidates(name, slug):
        if name_key(candidate) not in taken and not is_reserved(candidate, reserved):
            return candidate
    raise NameTakenError(f"every name for {name!r} ({slug}) is held by another in its folder")


def dataset_file_names(
    names: Sequence[str], held: Mapping[str, str], known: Collection[str]
) -> dict[str, str]:
    """The file name of each dataset of a run: `step_activity` is stored as
    `step-activity.csv`. No two get the same file name (see :func:`name_key`) and none gets
    ``metadata.csv``: a dataset keeps the file it ``held`` before; then a ``known`` dataset
    is placed before an unknown one that would take its name, and the later of two gets its
    own name appended, ``step-activity (step-activity).csv``."""
    order = sorted(
        range(len(names)),
        key=lambda i: (names[i] not in held, names[i] not in known, i),
    )
    files: dict[str, str] = {}
    taken = {name_key(METADATA_FILE)}
    for index in order:
        name = names[index]
        stem = safe_name(name.replace("_", "-"))
        wanted = held.get(name) or f"{stem}.csv"
        if name_key(wanted) in taken:
            wanted = _suffixed(stem, safe_name(name)) + ".csv"
        if name_key(wanted) in taken:
            raise NameTakenError(f"every file name for dataset {name!r} is held by another")
        files[name] = wanted
        taken.add(name_key(wanted))
    return files


def dataset_file_name(dataset: str) -> str:
    """`step_activity` is stored as `step-activity.csv` (a dataset whose name no other takes)."""
    return safe_name(dataset.replace("_", "-")) + ".csv"


def lock_name(slug: str) -> str:
    """The name of an organisation's lock: its slug when that is a plain one, else a hash of
    it (a site's slug is untrusted text, and a lock is a file name)."""
    if _PLAIN_SLUG.fullmatch(slug):
        return slug
    return "_" + hashlib.sha256(slug.encode()).hexdigest()[:16]  # `_`: no slug has one


def run_folder_name(run: int, start: date, end: date) -> str:
    return f"{run}-{start:%Y-%m-%d}-{end:%Y-%m-%d}"


def run_dir(organisation: str, course: str, run: int, start: date, end: date) -> str:
    """The run's folder when neither its organisation's nor its course's name is held by
    another (the usual case; see :func:`unique_name`)."""
    return f"{safe_name(organisation)}/{safe_name(course)}/{run_folder_name(run, start, end)}"


def organisation_dir(organisation: str) -> str:
    """The organisation's folder when its name is held by no other (see :func:`run_dir`)."""
    return safe_name(organisation)


def _suffixed(base: str, tag: str) -> str:
    suffix = f" ({tag})"
    return _cut(base, MAX_NAME_BYTES - len(suffix.encode())).rstrip(" .") + suffix


def _cut(name: str, max_bytes: int) -> str:
    """``name`` cut to whole characters within ``max_bytes`` of UTF-8."""
    encoded = name.encode()
    if len(encoded) <= max_bytes:
        return name
    return encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip(" .")


# Reading the tree (the commands that read what syncs wrote: loaddb, measures, export).


def organisation_folders(store: DataStore) -> list[str]:
    """The organisation folders at the top of the tree (not flsync's own files)."""
    return [
        name
        for name in store.list_dir("")
        if not name.startswith(".") and name not in DATA_DIR_FILES and not store.exists(name)
    ]


def course_folders(store: DataStore, organisation: str) -> list[str]:
    """The course folders of an organisation folder."""
    return [
        name
        for name in store.list_dir(organisation)
        if not name.startswith(".") and not store.exists(f"{organisation}/{name}")
    ]


def run_folders(store: DataStore, organisation: str) -> Iterator[tuple[str, str]]:
    """(course folder, run folder) of each run folder of an organisation folder."""
    for course in course_folders(store, organisation):
        for run in store.list_dir(f"{organisation}/{course}"):
            if RUN_FOLDER.fullmatch(run):
                yield course, run


def folder_slug(name: str) -> str:
    """A folder's name as a slug: lowercase ASCII, words joined by "-" (how a command's
    ``-a organisation=`` may name it)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")


def choose_folders(found: Sequence[str], wanted: Sequence[str], what: str, where: str) -> list[str]:
    """The folders of ``found`` that ``wanted`` names (each a name, made safe, or a slug),
    all of them if ``wanted`` is empty; ChooseError for a name none is."""
    if not wanted:
        return list(found)
    chosen: list[str] = []
    for name in wanted:
        match = [f for f in found if f == safe_name(name) or folder_slug(f) == name]
        if not match:
            listed = "; ".join(f"{f} ({folder_slug(f)})" for f in found[:20]) or "none"
            more = f" and {len(found) - 20} more" if len(found) > 20 else ""
            raise ChooseError(
                f"{what} {name!r} is not in {where}, which holds: {listed}{more} (give a"
                " folder's name or its slug)"
            )
        chosen += [f for f in match if f not in chosen]
    return chosen


def choose_organisations(store: DataStore, wanted: Sequence[str]) -> list[str]:
    """The organisation folders ``wanted`` names; all when it names none."""
    return choose_folders(organisation_folders(store), wanted, "organisation", "the data tree")
