"""``scrapy export DEST [-a organisation=NAME] [-a course=NAME] [-a free_text=keep]``: a
pseudonymised copy of the data tree, the same shape, in a folder or an ``s3://`` prefix;
``scrapy export --new-key FILE``: a new export key.

The key is the file named by ``FLSYNC_EXPORT_KEY_FILE`` (a setting, else the environment):
never the key itself on a command line. The tree is the config's data_dir (the config needs
no credentials for this). What an export does: flsync.export.exporter; docs/export.md.

Exit status: 0 when every file was exported (or left out by the rules, with a warning); 1 when
a file could not be (each said in one line; the others exported), DEST refused a write, or
the export was stopped (SIGTERM, Ctrl-C); 2 when nothing was done (no usable key, config or
DEST, an unknown organisation or course, another export writing to DEST).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from scrapy.commands import ScrapyCommand
from scrapy.utils.log import configure_logging

from flsync import tree
from flsync.commands.crawl import EXIT_FAILED, EXIT_USAGE
from flsync.config import ConfigError, load_data_dir
from flsync.export.exporter import LOCK_NAME, Exporter, choose, open_manifest
from flsync.export.manifest import DestinationError
from flsync.export.pseudonyms import KeyFileError, fingerprint, load_key, new_key
from flsync.options import options_of
from flsync.storage import (
    StoreError,
    StoreLocationError,
    StoreLockedError,
    existing_tree,
    open_store,
    store_class,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from types import FrameType

    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

KEY_FILE_SETTING = "FLSYNC_EXPORT_KEY_FILE"
_CHOICES = ("organisation", "course", "free_text")
_FREE_TEXT = ("drop", "keep")


class UsageProblem(Exception):
    """The command line cannot be followed; one line for the user."""


class Stopped(BaseException):
    """SIGTERM arrived: the export stops where it is (as Ctrl-C does)."""


@dataclass(frozen=True)
class ExportRequest:
    dest: str
    organisations: tuple[str, ...]
    courses: tuple[str, ...]
    keep_free_text: bool


class Command(ScrapyCommand):
    requires_project = True
    requires_crawler_process = False

    def syntax(self) -> str:
        return "DEST [-a organisation=NAME] [-a course=NAME] [-a free_text=keep] | --new-key FILE"

    def short_desc(self) -> str:
        return "Write a pseudonymised copy of the data tree to a folder or an s3:// prefix"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "-a",
            dest="choices",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="organisation=NAME or course=NAME (a folder's name or its slug; repeatable,"
            " or comma-separated), free_text=keep (free text kept, e-mails and URLs masked)",
        )
        parser.add_argument(
            "--new-key",
            metavar="FILE",
            help="write a new random export key to FILE (mode 600; never overwrites) and stop",
        )

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        configure_logging(self.settings)
        try:
            if opts.new_key:
                if args or opts.choices:
                    raise UsageProblem("--new-key FILE takes no DEST nor -a")
                key = new_key(opts.new_key)
                logger.info(
                    "New export key in %(file)s (fingerprint %(fingerprint)s): keep it secret"
                    " and backed up, and give its path as %(setting)s",
                    {
                        "file": opts.new_key,
                        "fingerprint": fingerprint(key),
                        "setting": KEY_FILE_SETTING,
                    },
                )
                return
            self.exitcode = self._export(_request(args, opts.choices))
        except (
            UsageProblem,
            KeyFileError,
            ConfigError,
            StoreLocationError,
            tree.ChooseError,
            DestinationError,
        ) as exc:
            logger.error("Export FAILED: %(error)s", {"error": exc})
            self.exitcode = EXIT_USAGE

    def _export(self, request: ExportRequest) -> int:
        assert self.settings is not None
        started = time.monotonic()
        key = load_key(_key_file(self.settings))
        data_dir = load_data_dir(options_of(self.settings).config_path)
        _check_apart(request.dest, data_dir)
        try:
            source = existing_tree(data_dir, self.settings, "export")
            organisations, courses = choose(source, request.organisations, request.courses)
            dest = open_store(request.dest, self.settings)
            open_manifest(dest, request.dest, fingerprint(key), request.keep_free_text)
        except StoreError as exc:
            raise StoreLocationError(str(exc)) from None
        try:
            with dest.lock(LOCK_NAME), _stopped_by_sigterm():
                exporter = Exporter(
                    source,
                    dest,
                    key=key,
                    keep_free_text=request.keep_free_text,
                    where=request.dest,
                )
                return _report(exporter, organisations, courses, request.dest, started)
        except StoreLockedError:
            raise DestinationError(
                f"another export is writing to {request.dest}: wait for it to finish"
            ) from None


def _key_file(settings: BaseSettings) -> str:
    """The key file's path: the setting, else the environment; KeyFileError for none."""
    path = settings.get(KEY_FILE_SETTING) or os.environ.get(KEY_FILE_SETTING)
    if not path:
        raise KeyFileError(
            f"no export key: set {KEY_FILE_SETTING} (in the environment, or -s) to the path of"
            " the institution's key file; make one with: scrapy export --new-key FILE"
        )
    return str(path)


def _report(
    exporter: Exporter, organisations: list[str], courses: list[str], dest: str, started: float
) -> int:
    """Run the export; log how it ended, and return its exit status."""
    figures = {"dest": dest, "key": exporter.fingerprint}
    try:
        outcome = exporter.export(organisations, courses)
    except (Stopped, KeyboardInterrupt) as exc:
        logger.error(
            "Export STOPPED (%(signal)s): %(summary)s so far; no file in %(dest)s is partial:"
            " run it again to finish",
            {
                **figures,
                "signal": exc.args[0] if exc.args else "SIGINT",
                "summary": exporter.outcome.summary(),
            },
        )
        return EXIT_FAILED
    except StoreError as exc:
        logger.error(
            "Export FAILED: %(error)s; %(summary)s before it",
            {"error": exc, "summary": exporter.outcome.summary()},
        )
        return EXIT_FAILED
    figures.update(summary=outcome.summary(), seconds=f"{time.monotonic() - started:.1f}")
    if outcome.failed:
        logger.error(
            "Export FAILED (%(failed)d files not exported): %(summary)s; key %(key)s, into"
            " %(dest)s, in %(seconds)s s",
            {**figures, "failed": len(outcome.failed)},
        )
        return EXIT_FAILED
    logger.info(
        "Export complete: %(summary)s; key %(key)s, into %(dest)s, in %(seconds)s s", figures
    )
    return 0


def _request(args: list[str], choices: list[str]) -> ExportRequest:
    if len(args) != 1:
        raise UsageProblem(
            "give one DEST (a folder, or s3://bucket/prefix): scrapy export DEST"
            " [-a organisation=NAME] [-a course=NAME] [-a free_text=keep]"
        )
    values: dict[str, list[str]] = {name: [] for name in _CHOICES}
    for choice in choices:
        name, equals, value = choice.partition("=")
        if name not in values or not equals or not value:
            raise UsageProblem(
                f"-a {choice}: give organisation=NAME, course=NAME or free_text=keep"
            )
        values[name] += [v.strip() for v in value.split(",") if v.strip()]
    free_text = values["free_text"][-1] if values["free_text"] else "drop"
    if free_text not in _FREE_TEXT:
        raise UsageProblem(f"-a free_text={free_text}: give free_text=keep or free_text=drop")
    return ExportRequest(
        args[0],
        tuple(values["organisation"]),
        tuple(values["course"]),
        free_text == "keep",
    )


def _check_apart(dest: str, data_dir: str) -> None:
    """UsageProblem unless DEST and data_dir are apart: neither inside the other (nor the
    same), and a local DEST's parent folder exists (never made: it may be a disk not
    mounted)."""
    dest_folder = store_class(dest).local_folder(dest)
    if dest_folder is not None:
        folder = os.path.abspath(dest_folder)
        parent = os.path.dirname(folder)
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UsageProblem(f"DEST {dest} is a file, not a folder")
        if not os.path.isdir(parent):
            raise UsageProblem(f"DEST {dest}: its parent folder {parent} does not exist")
    if (dest_folder is None) != (store_class(data_dir).local_folder(data_dir) is None):
        return
    here, there = _place(dest), _place(data_dir)
    if here == there or _inside(here, there) or _inside(there, here):
        raise UsageProblem(
            f"DEST {dest} and data_dir {data_dir} overlap: the export goes to a folder (or"
            " prefix) apart from the mirror, never into it"
        )


def _place(uri: str) -> str:
    """Where ``uri`` points, comparable with another's: a local folder's real path, or
    scheme://bucket/prefix/."""
    folder = store_class(uri).local_folder(uri)
    if folder is not None:
        return os.path.realpath(folder).rstrip("/") + "/"
    parts = urlsplit(uri)
    path = parts.path.strip("/")
    return (
        f"{parts.scheme}://{parts.netloc}/{path}/" if path else f"{parts.scheme}://{parts.netloc}/"
    )


def _inside(inner: str, outer: str) -> bool:
    return inner.startswith(outer)


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM raises Stopped, as Ctrl-C raises KeyboardInterrupt: what is being written is
    left unfinished and its temporary file deleted, never put in place."""

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        raise Stopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
