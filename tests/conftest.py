from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakesite import ADMIN_EMAIL, ADMIN_PASSWORD, SUBDIVISIONS, FakeSite
from flsync import tree


@pytest.fixture
def fakesite() -> Iterator[FakeSite]:
    """A fresh imitation FutureLearn site with default options, on 127.0.0.1."""
    with FakeSite() as site:
        yield site


REPO = Path(__file__).resolve().parents[1]


# Retries wait 10 ms (then 20, 40…) instead of a second, and at most 0.1 s for a Retry-After.
SHORT_WAITS = ("-s", "FLSYNC_RETRY_BACKOFF_BASE=0.01", "-s", "FLSYNC_RETRY_AFTER_MAX=0.1")


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
    """Runs `scrapy crawl futurelearn` in a subprocess against a site, into tmp_path/data."""

    base_url: str
    workdir: Path
    runs: int = 0
    launcher: tuple[str, ...] = ()  # a command the sync's is given to (tests/peak_rss.py)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def __call__(self, *args: str, **kwargs: Any) -> SyncResult:
        """Sync to the end; the command's exit status, output and data folder."""
        return self.wait(self.start(*args, **kwargs))

    def start(
        self,
        *args: str,
        username: str = ADMIN_EMAIL,
        password: str | None = ADMIN_PASSWORD,
        env: dict[str, str] | None = None,
        **config: Any,
    ) -> subprocess.Popen[str]:
        """Start a sync in the background (config in workdir/config.json)."""
        document = {"username": username, "base_url": self.base_url, "data_dir": "data"}
        if password is not None:
            document["password"] = password
        document.update(config)
        config = self.workdir / "config.json"
        config.write_text(json.dumps(document))
        config.chmod(0o600)  # it holds a password: for its owner only, as a user's should
        self.runs += 1
        return subprocess.Popen(
            [*self.launcher, sys.executable, "-m", "scrapy", "crawl", "futurelearn", *args],
            cwd=self.workdir,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO),
                "SCRAPY_SETTINGS_MODULE": "flsync.settings",
                **(env or {}),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
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


@pytest.fixture(scope="session")
def synced_site(tmp_path_factory: pytest.TempPathFactory) -> SyncResult:
    """The default imitation site, synced once for the session (measures and dashboards
    included): read it, never change it."""
    workdir = tmp_path_factory.mktemp("synced-site")
    with FakeSite() as site:
        result = Sync(site.base_url, workdir)()
    assert result.returncode == 0, result.output
    return result
