"""Run flsync's ``scrapy`` commands the way the tests need them: in this process, in the
reactor pytest-twisted runs, or as a real ``python -m scrapy`` process.

In-process saves the ~1.5 s each ``scrapy`` process spends importing Scrapy, Twisted,
curl_cffi and DuckDB (about 170 syncs and commands in the suite). It goes through the same
steps as ``scrapy.cmdline.execute``: the project's settings, the command's own options,
``process_options``, ``run`` and its ``exitcode``; what a process adds on top (signal handlers,
the interpreter's exit) is proved by the tests that start one (``Sync.start``, tests/test_cron.py,
tests/test_sync.py's end-to-end runs).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_twisted
from scrapy.cmdline import ScrapyArgumentParser
from scrapy.commands import ScrapyCommand, ScrapyHelpFormatter
from scrapy.crawler import AsyncCrawlerRunner
from scrapy.exceptions import UsageError
from scrapy.settings import Settings
from scrapy.utils.log import DEFAULT_LOGGING
from scrapy.utils.project import get_project_settings
from twisted.internet.defer import Deferred
from twisted.python import log as twisted_log

REPO = Path(__file__).resolve().parents[1]
SETTINGS_MODULE = "flsync.settings"


@dataclass
class CommandResult:
    returncode: int
    stdout: str  # what the command printed
    stderr: str  # what it logged (Scrapy logs to stderr)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def command_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``scrapy`` command run from a test's own folder."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SCRAPY_SETTINGS_MODULE": SETTINGS_MODULE,
        **(env or {}),
    }


def scrapy_process(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, launcher: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    """Start ``python -m scrapy ARGS`` in cwd (output: stdout and stderr together)."""
    return subprocess.Popen(
        [*launcher, sys.executable, "-m", "scrapy", *args],
        cwd=cwd,
        env=command_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_in_process(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> CommandResult:
    """``scrapy ARGS`` run in cwd, in this process: its exit status and output."""
    printed, logged = io.StringIO(), io.StringIO()
    with (
        _environment(cwd, command_env(env)),
        contextlib.redirect_stdout(printed),
        contextlib.redirect_stderr(logged),
    ):
        returncode = _execute(args, logged)
    return CommandResult(returncode, printed.getvalue(), logged.getvalue())


def _execute(args: list[str], log: io.StringIO) -> int:
    """What ``scrapy.cmdline.execute`` does for one of flsync's commands."""
    # The settings module reads the environment (FLSYNC_CONFIG) as it is imported.
    importlib.reload(importlib.import_module(SETTINGS_MODULE))
    settings = get_project_settings()
    name, *rest = args
    command = _command(name)
    parser = ScrapyArgumentParser(
        formatter_class=ScrapyHelpFormatter,
        usage=f"scrapy {name} {command.syntax()}",
        conflict_handler="resolve",
        description=command.long_desc(),
    )
    settings.setdict(command.default_settings, priority="command")
    command.settings = settings
    command.add_options(parser)
    try:
        opts, positional = parser.parse_known_args(args=rest)
        command.process_options(positional, opts)
        with _log_to(log, settings):
            if command.requires_crawler_process:
                command.crawler_process = _RunnerInReactor(settings)
            try:
                command.run(positional, opts)
            finally:
                gc.unfreeze()  # `scrapy crawl` freezes what start-up made, for one process
    except UsageError as exc:
        log.write(f"Usage\n=====\n  scrapy {name} {command.syntax()}\n\n{exc}\n")
        return 2
    except SystemExit as exc:  # argparse: -h (0), or a bad option (2)
        return 0 if exc.code is None else int(exc.code)
    return command.exitcode


def _command(name: str) -> ScrapyCommand:
    """flsync's command of that name (COMMANDS_MODULE), else Scrapy's own."""
    for package in ("flsync.commands", "scrapy.commands"):
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            command: ScrapyCommand = importlib.import_module(f"{package}.{name}").Command()
            return command
    raise UsageError(f"Unknown command: {name}")


class _RunnerInReactor(AsyncCrawlerRunner):
    """The crawler process a command gets, for the reactor pytest-twisted already runs:
    ``start()`` waits there for the crawls instead of running a reactor of its own."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.tasks: list[Any] = []

    def crawl(self, *args: Any, **kwargs: Any) -> Any:
        task = super().crawl(*args, **kwargs)
        self.tasks.append(task)
        return task

    def start(self, stop_after_crawl: bool = True, install_signal_handlers: bool = True) -> None:
        for task in self.tasks:
            try:
                pytest_twisted.blockon(Deferred.fromFuture(task))
            except Exception:
                # A process would have asyncio print it at exit; bootstrap_failed says so.
                logging.getLogger("asyncio").exception("Task exception was never retrieved")


@contextlib.contextmanager
def _environment(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """The command's working folder and environment, for as long as it runs."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    os.environ.clear()
    os.environ.update(env)
    time.tzset()  # a process started with TZ in its environment would have it from the start
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        time.tzset()


@contextlib.contextmanager
def _log_to(output: io.StringIO, settings: Settings) -> Iterator[None]:
    """The command's log, as Scrapy's root handler would write it, into output (or into
    LOG_FILE when set); the loggers' levels as configure_logging sets them. Both are put back
    after: the tests that follow see the logging they always had."""
    # The handler is this one, not Scrapy's: Scrapy keeps its own for the process, and would
    # put it back (and the root logger's level down) for every later test that makes a Crawler.
    settings.set("LOG_INSTALL_ROOT_HANDLER", False, priority="cmdline")
    levels = {"": settings["LOG_LEVEL"]} | {
        name: config["level"] for name, config in DEFAULT_LOGGING["loggers"].items()
    }
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    handler = _handler(output, settings)
    logging.getLogger().addHandler(handler)
    twisted_errors = twisted_log.PythonLoggingObserver("twisted")  # unhandled Deferred errors
    twisted_errors.start()
    try:
        yield
    finally:
        twisted_errors.stop()
        logging.getLogger().removeHandler(handler)
        handler.close()
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _handler(output: io.StringIO, settings: Settings) -> logging.Handler:
    handler: logging.Handler
    if settings.get("LOG_FILE"):
        mode = "a" if settings.getbool("LOG_FILE_APPEND") else "w"
        handler = logging.FileHandler(settings["LOG_FILE"], mode, settings["LOG_ENCODING"])
    else:
        handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter(settings["LOG_FORMAT"], settings["LOG_DATEFORMAT"]))
    handler.setLevel(settings["LOG_LEVEL"])
    return handler
