from __future__ import annotations

import inspect
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakesite import ADMIN_EMAIL, ADMIN_PASSWORD, SUBDIVISIONS, FakeSite, SiteOptions
from flsync import tree
from tests.commands import run_in_process, scrapy_process

# How pytest-twisted marks the tests it must run in the reactor.
TWISTED_TEST_MARK = "_pytest_twisted_mark"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A plain test function runs in pytest's own greenlet, not inside the reactor (where
    pytest-twisted runs every test): from there it can wait for the reactor to finish a
    crawl (an in-process sync, tests/commands.py). Tests written for the reactor
    (``pytest_twisted.ensureDeferred``, ``inlineCallbacks``) are left to pytest-twisted."""
    function = pyfuncitem.obj
    if inspect.iscoroutinefunction(function) or hasattr(function, TWISTED_TEST_MARK):
        return None
    parameters = inspect.signature(function).parameters
    function(**{name: pyfuncitem.funcargs[name] for name in parameters})
    return True


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: half as many workers again as there are cores. A third of the suite's
    time is spent waiting (Chromium, processes of their own, timeouts to wait out), which the
    extra worker fills: 156 s instead of 176 s on two cores (four workers: 153 s)."""
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(2, cores * 3 // 2)


class Sites:
    """Imitation FutureLearn sites on 127.0.0.1, one per SiteOptions, each started once."""

    def __init__(self) -> None:
        self._started: dict[SiteOptions, FakeSite] = {}

    def get(self, options: SiteOptions) -> FakeSite:
        """The site of these options, as a new one is: no fault, session or stats."""
        site = self._started.get(options)
        if site is None:
            site = self._started[options] = FakeSite(options).start()
        site.reset()
        return site

    def stop(self) -> None:
        for site in self._started.values():
            site.stop()


@pytest.fixture(scope="session")
def sites() -> Iterator[Sites]:
    """The session's sites (each test's is reset for it)."""
    started = Sites()
    yield started
    started.stop()


@pytest.fixture
def fakesite(request: pytest.FixtureRequest, sites: Sites) -> FakeSite:
    """The imitation site of the test's module: the SiteOptions of its ``SITE``, or the
    default ones. One site per options serves the session, reset before each test; a test
    that needs HTTPS or the bot wall starts its own (``with FakeSite(...) as site:``)."""
    return sites.get(getattr(request.module, "SITE", SiteOptions()))


# Retries wait 10 ms (then 20, 40…) instead of a second, and at most 0.1 s for a Retry-After.
SHORT_WAITS = ("-s", "FLSYNC_RETRY_BACKOFF_BASE=0.01", "-s", "FLSYNC_RETRY_AFTER_MAX=0.1")
# Every sync a test runs starts at full speed: AutoThrottle's first delay (0.1 s between
# requests, until the site's answers set it) is a courtesy to FutureLearn, and made every
# sync of 127.0.0.1 wait about 0.2 s, half of a small sync's time. A test's own -s comes
# after, and wins. tests/test_cron.py runs the cron line with every default.
NO_START_DELAY = ("-s", "AUTOTHROTTLE_START_DELAY=0")


@dataclass
class SyncResult:
    returncode: int
    output: str  # everything the command printed (Scrapy logs to stderr)
    data_dir: Path

    def files(self) -> dict[str, bytes]:
        """Every file under data_dir (relative path -> bytes)."""
        return {
            str(p.relative_to(self.data_dir)): p.read_bytes()
            for p in sorted(self.data_dir.rglob("*"))
            if p.is_file()
        }

    def error_lines(self) -> list[str]:
        """The log lines at level ERROR."""
        return [line for line in self.output.splitlines() if "] ERROR: " in line]


@dataclass
class Sync:
    """Runs `scrapy crawl futurelearn` against a site, into workdir/data: in this process
    (``sync()``), or as a process of its own (``sync.start()``, ``sync.wait()``)."""

    base_url: str
    workdir: Path
    runs: int = 0
    launcher: tuple[str, ...] = ()  # a command the sync's is given to (tests/peak_rss.py)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def __call__(self, *args: str, env: dict[str, str] | None = None, **config: Any) -> SyncResult:
        """Sync to the end, in this process; the command's exit status, output and data
        folder."""
        if self.launcher:
            return self.wait(self.start(*args, env=env, **config))
        self.write_config(**config)
        self.runs += 1
        result = run_in_process(["crawl", "futurelearn", *NO_START_DELAY, *args], self.workdir, env)
        return SyncResult(result.returncode, result.output, self.data_dir)

    def write_config(
        self, username: str = ADMIN_EMAIL, password: str | None = ADMIN_PASSWORD, **config: Any
    ) -> None:
        """workdir/config.json: the site's account and data/, with config over them."""
        document = {"username": username, "base_url": self.base_url, "data_dir": "data"}
        if password is not None:
            document["password"] = password
        document.update(config)
        path = self.workdir / "config.json"
        path.write_text(json.dumps(document))
        path.chmod(0o600)  # it holds a password: for its owner only, as a user's should

    def start(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        **config: Any,
    ) -> subprocess.Popen[str]:
        """Start `scrapy crawl futurelearn` as a process in the background (config in
        workdir/config.json)."""
        self.write_config(**config)
        self.runs += 1
        return scrapy_process(
            ["crawl", "futurelearn", *NO_START_DELAY, *args],
            self.workdir,
            env,
            launcher=self.launcher,
        )

    def wait(self, process: subprocess.Popen[str], timeout: float = 300) -> SyncResult:
        """Wait for a started sync to end (killing it past ``timeout`` seconds)."""
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"the sync did not end within {timeout} s:\n{output}")
        return SyncResult(process.returncode, output, self.data_dir)


def expected_tree(site: FakeSite) -> dict[str, bytes | None]:
    """Every dataset file and metadata.csv the site's started runs should give, by path
    (metadata.csv: None, its content is checked on its own)."""
    files: dict[str, bytes | None] = {}
    for organisation in site.data.organisations:
        for run in organisation.runs:
            if not run.started_on(site.data.today):
                continue
            folder = tree.run_dir(
                organisation.name, run.course_title, run.number, run.start_date, run.end_date
            )
            for dataset in (*run.datasets, SUBDIVISIONS):
                name = tree.dataset_file_name(dataset)
                files[f"{folder}/{name}"] = site.dataset_bytes(run.course_slug, run.number, dataset)
            files[f"{folder}/{tree.METADATA_FILE}"] = None
    return files


def data_files(result: SyncResult) -> dict[str, bytes]:
    """The synced data files, without update.txt, the report, the measures and flsync's own
    (dot) files: state, locks."""
    return {
        path: content
        for path, content in result.files().items()
        if not (path.count("/") == 1 and path.endswith(tree.ORGANISATION_FILES))
        and not any(part.startswith(".") for part in path.split("/"))
    }


def assert_full_tree(site: FakeSite, result: SyncResult) -> None:
    """The sync stored every file the site has, byte for byte, and nothing else."""
    expected = expected_tree(site)
    files = data_files(result)
    assert sorted(files) == sorted(expected)
    for path, content in expected.items():
        if content is not None:
            assert files[path] == content, path


@pytest.fixture
def sync(fakesite: FakeSite, tmp_path: Path) -> Sync:
    """Syncs the `fakesite` site into tmp_path/data (config in tmp_path/config.json)."""
    return Sync(fakesite.base_url, tmp_path)


@dataclass
class DefaultSync:
    site: FakeSite
    result: SyncResult
    stats: dict[str, Any]  # the site's, after the sync


@pytest.fixture(scope="session")
def default_sync(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DefaultSync]:
    """The default imitation site, synced once for the session (measures and dashboards
    included), with its site and the site's stats after it: read them, never change them."""
    workdir = tmp_path_factory.mktemp("synced-site")
    with FakeSite() as site:
        result = Sync(site.base_url, workdir)()
        assert result.returncode == 0, result.output
        yield DefaultSync(site, result, site.stats())


@pytest.fixture(scope="session")
def synced_site(default_sync: DefaultSync) -> SyncResult:
    """What the session's default sync stored and said (``default_sync``): read it only."""
    return default_sync.result
