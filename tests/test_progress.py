"""The progress line: drawn in a terminal, never in a log (cron, Scrapyd)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from fakesite import FakeSite, SiteOptions
from tests.commands import command_env
from tests.conftest import Sync

CLEAR_LINE = "\r\x1b[K"
PROGRESS = re.compile(
    r"\r\x1b\[KSyncing: (\d+) runs found, files (\d+) of (\d+), [\d.]+ [kM]?B received"
)


SLOW = {"latency_ms": 100}  # a sync of a few seconds: several redraws


@pytest.fixture
def site():
    with FakeSite(SiteOptions(organisations=1, courses=2, runs=2, rows=5, tricky=False)) as site:
        yield site


def sync_in_terminal(sync: Sync, *args: str) -> tuple[int, str]:
    """Run a sync again (same config) with its stdout and stderr on a pseudo-terminal; its
    exit status and all it wrote there."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "scrapy", "crawl", "futurelearn", *args],
        cwd=sync.workdir,
        env=command_env(),
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = bytearray()
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal's other end closed: the process is gone
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(timeout=60), output.decode()


def test_a_terminal_shows_progress_between_log_lines(site, tmp_path):
    sync = Sync(site.base_url, tmp_path)
    # The first sync only fills data/: in this process, at full speed. The one in a terminal
    # is what is looked at.
    assert sync().returncode == 0
    site.faults.update(SLOW)
    status, output = sync_in_terminal(sync, "--full")
    assert status == 0, output
    drawn = PROGRESS.findall(output)
    assert len(drawn) >= 2, output
    runs, done, total = map(int, drawn[-1])
    assert runs > 0 and 0 <= done <= total
    # A log line never follows a progress text on its line: the progress is cleared first.
    for shown in PROGRESS.finditer(output):
        assert output.startswith(CLEAR_LINE, shown.end()), repr(output[shown.end() :][:80])
    files = site.stats()["by_kind"]["dataset"] + site.stats()["by_kind"]["subdivisions"]
    assert output.rstrip().endswith(
        f"Sync complete: 0 downloaded, 0 unchanged, {files // 2} not modified"
    )


def test_no_progress_without_a_terminal_or_when_turned_off(site, tmp_path):
    site.faults.update(SLOW)
    sync = Sync(site.base_url, tmp_path)
    result = sync()
    assert result.returncode == 0
    assert "Syncing:" not in result.output and "\r" not in result.output
    status, output = sync_in_terminal(sync, "-s", "FLSYNC_PROGRESS=0")
    assert status == 0
    assert "Syncing:" not in output
