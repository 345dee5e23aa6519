"""An export: the mirror's tree, pseudonymised, into another store (DEST), the same shape.

From each organisation folder of data_dir: its ``update.txt`` as it is, and each run folder's
files as their rules say (flsync.export.rules); nothing else (flsync's own files: the report,
the measures, the state, locks, temporary files; the SQL database). Every file is written to a
temporary file, then put in place by the store (a rename, or an upload that exists only once
complete): DEST never holds part of a file. The manifest (flsync.export.manifest) keeps what
each source file was when exported, so that an export with no change rewrites nothing.

Every file met is counted one way: written, unchanged, left out (no rule, with one WARNING per
dataset), or failed (one ERROR line each: a file that is not valid CSV, or cannot be read).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from flsync import tree
from flsync.export.csvcopy import MalformedCsv, copy_csv
from flsync.export.manifest import MANIFEST_FILE, DestinationError, Manifest
from flsync.export.masking import EMAIL, URL
from flsync.export.pseudonyms import Pseudonyms, fingerprint
from flsync.export.readme import README_FILE, readme_text
from flsync.export.rules import rule_for_file, rules_fingerprint
from flsync.storage import StoreError, StoreWriteError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flsync.export.rules import Rule
    from flsync.storage import DataStore

logger = logging.getLogger(__name__)

# The lock DEST is held by while an export writes to it (`.flsync-lock-export`).
LOCK_NAME = "export"
# A digest of everything that decides an exported file's content besides its source and the
# key: a change of it rewrites every file.
RULES_DIGEST = rules_fingerprint(EMAIL.pattern, URL.pattern)
_SUFFIXED = re.compile(r".* \((?P<dataset>[^()/]+)\)\.csv")
# A temporary file's disk that is full or refuses writes: no later file would fare better, so
# the export stops (one line) rather than failing every file in turn.
_DISK_REFUSES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass
class Outcome:
    """What an export did, file by file."""

    written: int = 0
    unchanged: int = 0
    failed: list[str] = field(default_factory=list)
    no_rule: Counter[str] = field(default_factory=Counter)  # dataset -> files left out
    unknown_columns: Counter[tuple[str, str]] = field(default_factory=Counter)
    others: Counter[str] = field(default_factory=Counter)  # file names that are no dataset

    @property
    def left_out(self) -> int:
        return self.no_rule.total() + self.others.total()

    @property
    def files(self) -> int:
        return self.written + self.unchanged + self.left_out + len(self.failed)

    def summary(self) -> str:
        text = (
            f"{self.files} files: {self.written} written, {self.unchanged} unchanged,"
            f" {self.left_out} left out, {len(self.failed)} failed"
        )
        if self.no_rule:
            text += f" (no export rule: {', '.join(sorted(self.no_rule))})"
        return text


class Exporter:
    """Exports chosen organisations of ``source`` into ``dest`` with one key."""

    def __init__(
        self,
        source: DataStore,
        dest: DataStore,
        *,
        key: bytes,
        keep_free_text: bool,
        where: str,
    ) -> None:
        self.source = source
        self.dest = dest
        self.pseudonyms = Pseudonyms(key)
        self.keep_free_text = keep_free_text
        self.where = where  # DEST as the user gave it, for messages
        self.fingerprint = fingerprint(key)
        self.manifest = open_manifest(dest, where, self.fingerprint, keep_free_text)
        self.saved = dest.read_file(MANIFEST_FILE)  # the manifest as DEST has it
        self.outcome = Outcome()

    def export(self, organisations: Sequence[str], courses: Sequence[str]) -> Outcome:
        """Export ``organisations`` (folders of the tree), only ``courses`` of them (course
        folders) if any are given. StoreWriteError (nothing more written) when DEST refuses a
        write; the manifest then keeps what was written before it."""
        self._save_manifest()  # from now on, DEST is known as an export
        try:
            for organisation in organisations:
                self.dest.sweep_temp_files(organisation)
                self._organisation(organisation, courses)
        finally:
            self._save_manifest()
        readme = readme_text(self.fingerprint, self.keep_free_text, RULES_DIGEST).encode()
        if self.dest.read_file(README_FILE) != readme:
            self.dest.write_file(README_FILE, readme)
        self._warn_left_out()
        return self.outcome

    def _organisation(self, organisation: str, courses: Sequence[str]) -> None:
        for name in self.source.list_dir(organisation):
            path = f"{organisation}/{name}"
            if name == tree.UPDATE_FILE:
                self._file(path, None)
            elif name.startswith(".") or name in tree.ORGANISATION_FILES:
                continue  # flsync's own: state, locks, the report, the measures
            elif self.source.exists(path):
                self.outcome.others[name] += 1
            elif not courses or name in courses:
                self._course(path)

    def _course(self, course: str) -> None:
        for run in self.source.list_dir(course):
            path = f"{course}/{run}"
            if run.startswith("."):
                continue
            if not tree.RUN_FOLDER.fullmatch(run) or self.source.exists(path):
                self.outcome.others[run] += 1
                continue
            for name in self.source.list_dir(path):
                if name.startswith("."):
                    continue
                rule = rule_for_file(name)
                if rule is not None:
                    self._file(f"{path}/{name}", rule)
                elif name.endswith(".csv"):
                    self.outcome.no_rule[_dataset_of(name)] += 1
                else:
                    self.outcome.others[name] += 1

    def _file(self, path: str, rule: Rule | None) -> None:
        """Export one file (``rule`` None: copied as it is), unless unchanged since."""
        try:
            stat = self.source.stat(path)
        except StoreError as exc:
            self._failed(path, str(exc))
            return
        if stat is None:
            self._failed(path, "gone from the mirror while the export ran")
            return
        entry = (stat.size, stat.mtime, RULES_DIGEST)
        if self.manifest.files.get(path) == entry and self.dest.exists(path):
            self.outcome.unchanged += 1
            return
        self.manifest.files.pop(path, None)
        temp = self.dest.temp_path(path)
        try:
            with self.source.open_read(path) as source, open(temp, "xb") as target:
                self._copy(source, target, path, rule)
            self.dest.place_file(path, temp)
        except StoreWriteError:
            raise
        except OSError as exc:
            if exc.errno in _DISK_REFUSES:
                raise StoreWriteError(f"cannot write {path}: {exc.strerror}") from None
            self._failed(path, exc.strerror or str(exc))
            return
        except (MalformedCsv, StoreError) as exc:
            self._failed(path, str(exc))
            return
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        self.manifest.files[path] = entry
        self.outcome.written += 1

    def _copy(self, source: IO[bytes], target: IO[bytes], path: str, rule: Rule | None) -> None:
        if rule is None:
            shutil.copyfileobj(source, target)
            return
        copied = copy_csv(source, target, rule, self.keep_free_text, self.pseudonyms.of)
        for column in copied.plan.unknown:
            self.outcome.unknown_columns[path.rsplit("/", 1)[-1], column] += 1

    def _failed(self, path: str, reason: str) -> None:
        logger.error(
            "File (not exported): %(path)s: %(reason)s; its earlier copy in the export, if"
            " any, is left as it was",
            {"path": path, "reason": reason},
        )
        self.outcome.failed.append(path)

    def _save_manifest(self) -> None:
        content = self.manifest.dump()
        if content != self.saved:
            self.dest.write_file(MANIFEST_FILE, content)
            self.saved = content

    def _warn_left_out(self) -> None:
        for dataset, files in sorted(self.outcome.no_rule.items()):
            logger.warning(
                "Dataset (not exported): %(dataset)s: no export rule, %(files)d files left"
                " out (a dataset is exported only once its columns are reviewed: see"
                " docs/export.md)",
                {"dataset": dataset, "files": files},
            )
        for (file, column), files in sorted(self.outcome.unknown_columns.items()):
            logger.warning(
                "Column (not exported): %(column)s of %(file)s: not in the export rules,"
                " dropped from %(files)d files (see docs/export.md)",
                {"column": column, "file": file, "files": files},
            )
        if self.outcome.others:
            logger.warning(
                "Files (not exported): %(files)d files that are no dataset: %(names)s",
                {
                    "files": self.outcome.others.total(),
                    "names": ", ".join(sorted(self.outcome.others)),
                },
            )


def open_manifest(
    dest: DataStore, where: str, key_fingerprint: str, keep_free_text: bool
) -> Manifest:
    """DEST's manifest (a new one for a new export); DestinationError when DEST holds another
    export (another key or free-text choice: a mix would not join, and its README could not
    say what it holds) or other files."""
    free_text = "keep" if keep_free_text else "drop"
    manifest = Manifest.load(dest, where)
    if manifest is None:
        if any(not name.startswith(".flsync-") for name in dest.list_dir("")):
            raise DestinationError(
                f"{where} is not empty and holds no export ({MANIFEST_FILE}): export into a"
                " new or empty folder"
            )
        return Manifest(key_fingerprint, free_text)
    if manifest.key != key_fingerprint:
        raise DestinationError(
            f"{where} holds an export made with another key (fingerprint {manifest.key}; this"
            f" key's is {key_fingerprint}): pseudonyms of two keys never join, so export into"
            " a new folder"
        )
    if manifest.free_text != free_text:
        raise DestinationError(
            f"{where} holds an export made with free_text={manifest.free_text}: export with"
            f" free_text={free_text} into a new folder"
        )
    return manifest


def _dataset_of(file_name: str) -> str:
    """The dataset a file holds, as its name tells: `x (dataset).csv` or `dataset.csv`."""
    match = _SUFFIXED.fullmatch(file_name)
    return match["dataset"] if match else file_name.removesuffix(".csv")


def choose(
    store: DataStore, organisations: Sequence[str], courses: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The organisation folders named by ``organisations`` (a folder's name or its slug; all
    if none) and, in them, the course folders named by ``courses`` (likewise; all if none).
    tree.ChooseError for a name that is not in the tree."""
    chosen = tree.choose_organisations(store, organisations)
    if not courses:
        return chosen, []
    found = sorted({c for organisation in chosen for c in tree.course_folders(store, organisation)})
    where = "the organisations chosen" if organisations else "the data tree"
    return chosen, tree.choose_folders(found, courses, "course", where)
