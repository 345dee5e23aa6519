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
    # The first run has a 2 MiB file: it cannot fit; the rest does, but for a file written
    # while the big one's part file holds the disk (which, if any, is up to timing).
    options = SiteOptions(organisations=1, courses=1, runs=2, rows=3, tricky=False, big_file_mb=2)
    data_dir = small_disk / "data"
    with FakeSite(options) as site:
        [organisation] = site.data.organisations
        result = Sync(site.base_url, tmp_path)(data_dir=str(data_dir))
        big_gets = site.stats()["by_kind"]["dataset"]
        listed = sum(len(r.datasets) for r in organisation.runs)
    assert result.returncode == 1
    assert "Traceback" not in result.output
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    assert any("Dataset (failed): " in e and "/step-activity.csv from " in e for e in errors)
    assert all(
        "Dataset (failed): " in e
        and e.endswith(": cannot write it to the disk: No space left on device")
        for e in errors
    )
    assert big_gets == listed  # asked once each: a full disk is not tried again
    assert not list(data_dir.rglob("*.part"))
    # Every other file is saved, and the organisation reported as it is.
    folder = data_dir / organisation.name
    saved = [p for p in folder.glob("*/*/*.csv") if p.name != tree.METADATA_FILE]
    assert len(saved) + len(errors) == listed + 2  # with each run's country-subdivisions
    assert len(saved) >= listed // 2
    assert not (folder / tree.UPDATE_FILE).exists()
    report = json.loads((folder / tree.REPORT_FILE).read_text())
    assert report["complete"] is False
    assert report["files"]["failed"] == len(errors)
    assert (folder / tree.STATE_FILE).is_file()
