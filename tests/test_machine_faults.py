"""Faults of the machine rather than of the site: a data_dir that is a dangling symbolic link,
a disk that is full before the sync starts, and one that fills up during it. Each is one line
naming it; before the first request (exit 2) where it can be known, else exit 1 with every
organisation that was already done saved and reported. The small disks are tmpfs mounts (the
tests run as root, as CI does on this machine)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakesite import FakeSite, SiteOptions
from flsync import tree
from tests.conftest import Sync

SMALL = SiteOptions(organisations=2, courses=1, runs=1, rows=3, tricky=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a disk of its own, 1.5 MB."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.fail(f"these tests mount a tmpfs, as root: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_dangling_symlink_as_data_dir_is_one_line_before_anything(tmp_path):
    (tmp_path / "data").symlink_to(tmp_path / "unmounted")
    with FakeSite(SMALL) as site:
        result = Sync(site.base_url, tmp_path)()
        assert site.stats()["requests"] == 0
    assert result.returncode == 2
    [line] = result.error_lines()
    assert line.endswith(
        f"data_dir {tmp_path}/data is a symbolic link to {tmp_path}/unmounted, which does not"
        " exist (mount or create it, or point data_dir elsewhere)"
    )
    assert "Traceback" not in result.output
    assert not (tmp_path / "unmounted").exists()


def test_a_full_disk_is_one_line_before_anything(tmp_path, small_disk):
    filler = small_disk / "filler"
    # dd fails once the disk is full: that is the point.
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False
    )
    with FakeSite(SMALL) as site:
        result = Sync(site.base_url, tmp_path)(data_dir=str(small_disk / "data"))
        assert site.stats()["requests"] == 0
    assert result.returncode == 2
    [line] = result.error_lines()
    assert f"data_dir {small_disk}/data: its disk is full (" in line
    assert line.endswith(" bytes free): free some space, or point data_dir elsewhere")


def test_a_disk_that_fills_up_fails_that_file_once_and_saves_the_rest(tmp_path, small_disk):
    # The first organisation's first run has a 2 MiB file: it cannot fit; the rest does.
    options = SiteOptions(organisations=2, courses=1, runs=1, rows=3, tricky=False, big_file_mb=2)
    data_dir = small_disk / "data"
    with FakeSite(options) as site:
        [first, second] = site.data.organisations
        result = Sync(site.base_url, tmp_path)(data_dir=str(data_dir))
        big_gets = site.stats()["by_kind"]["dataset"]
        listed = sum(len(r.datasets) for o in site.data.organisations for r in o.runs)
    assert result.returncode == 1
    assert "Traceback" not in result.output
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    [line] = errors
    assert "Dataset (failed): " in line and "/step-activity.csv from " in line
    assert line.endswith(": cannot write it to the disk: No space left on device")
    assert big_gets == listed  # asked once: a full disk is not tried again
    assert not list(data_dir.rglob("*.part"))
    # The other organisation is complete; the first is saved and reported as it is.
    assert (data_dir / second.name / tree.UPDATE_FILE).is_file()
    assert json.loads((data_dir / second.name / tree.REPORT_FILE).read_text())["complete"]
    assert not (data_dir / first.name / tree.UPDATE_FILE).exists()
    report = json.loads((data_dir / first.name / tree.REPORT_FILE).read_text())
    assert report["complete"] is False
    assert report["files"]["failed"] == 1
    assert (data_dir / first.name / tree.STATE_FILE).is_file()
