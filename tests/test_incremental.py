"""Incremental sync: conditional requests, unchanged files kept, frozen runs, the state cache."""

from __future__ import annotations

import os
import re
from datetime import date, timedelta

import pytest

from fakesite import FakeSite, SiteOptions
from flsync import tree
from flsync.storage import TEMP_PREFIX, TEMP_SUFFIX

UPDATE_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d\n")
SMALL = SiteOptions(organisations=1, courses=2, runs=2, rows=5, tricky=False)
FROZEN_SINCE = date(2017, 6, 1)  # between the small site's runs' ends


# The site of this module's `fakesite` and `sync` (tests/conftest.py).
SITE = SMALL


def file_ids(data_dir) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every data file: a rewrite by rename changes both."""
    return {
        str(p.relative_to(data_dir)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in data_dir.rglob("*.csv")
    }


def dataset_count(fakesite: FakeSite) -> int:
    return fakesite.stats()["by_kind"]["dataset"] + fakesite.stats()["by_kind"]["subdivisions"]


def test_no_change_sync_transfers_and_rewrites_nothing(fakesite, sync):
    assert sync().returncode == 0
    before = file_ids(sync.data_dir)
    fakesite.reset_stats()
    result = sync("--full")
    assert result.returncode == 0, result.output
    stats = fakesite.stats()
    assert stats["dataset_bytes"] == 0
    assert stats["not_modified"] == dataset_count(fakesite) > 0
    assert file_ids(sync.data_dir) == before
    assert "0 downloaded, 0 unchanged," in result.output


@pytest.mark.parametrize("validator", ["etag", "last_modified"])
def test_each_validator_alone_gives_304(fakesite, sync, validator):
    assert sync().returncode == 0
    state_file = sync.data_dir / "University of Exampleton" / tree.STATE_FILE
    other = "last_modified" if validator == "etag" else "etag"
    state_file.write_text(state_file.read_text().replace(f'"{other}"', f'"unused_{other}"'))
    fakesite.reset_stats()
    assert sync("--full").returncode == 0
    assert fakesite.stats()["not_modified"] == dataset_count(fakesite) > 0


def test_unchanged_content_without_validators_is_not_rewritten(fakesite, sync):
    fakesite.faults.update({"validators": False})
    assert sync().returncode == 0
    before = file_ids(sync.data_dir)
    fakesite.reset_stats()
    result = sync("--full")
    assert result.returncode == 0, result.output
    assert fakesite.stats()["dataset_bytes"] > 0  # the server gave no way to ask
    assert fakesite.stats()["not_modified"] == 0
    assert file_ids(sync.data_dir) == before
    assert "0 downloaded," in result.output


def test_changed_content_replaces_the_file(fakesite, sync):
    assert sync().returncode == 0
    fakesite.faults.update({"generation": 2})
    result = sync("--full")
    assert result.returncode == 0, result.output
    run = fakesite.data.runs[0]
    folder = tree.run_dir(
        "University of Exampleton", run.course_title, run.number, run.start_date, run.end_date
    )
    stored = (sync.data_dir / folder / "enrolments.csv").read_bytes()
    assert stored == fakesite.dataset_bytes(run.course_slug, run.number, "enrolments", generation=2)


def run_folder(fakesite: FakeSite, run) -> str:
    organisation = fakesite.data.organisation(run.organisation_slug)
    return tree.run_dir(
        organisation.name, run.course_title, run.number, run.start_date, run.end_date
    )


def test_by_default_every_run_is_asked_and_old_changes_arrive(fakesite, sync):
    assert sync().returncode == 0
    started = [r for r in fakesite.data.runs if r.started_on(date.today())]
    old = min(started, key=lambda r: r.end_date)
    assert old.end_date < date.today() - timedelta(days=365)
    fakesite.faults.update({"generation": 2})  # every file changes, old runs' included
    fakesite.reset_stats()
    result = sync()
    assert result.returncode == 0, result.output
    assert fakesite.stats()["by_kind"]["run_details"] == len(started) > 1
    stored = sync.data_dir / run_folder(fakesite, old) / "comments.csv"
    assert stored.read_bytes() == fakesite.dataset_bytes(
        old.course_slug, old.number, "comments", generation=2
    )
    assert "not asked" not in result.output
    update = (sync.data_dir / "University of Exampleton" / tree.UPDATE_FILE).read_text()
    assert UPDATE_LINE.fullmatch(update)


def test_leaving_finished_runs_alone_is_opt_in_and_said(fakesite, sync):
    # The small site's runs ended in 2016-2018: those that ended before FROZEN_SINCE are left
    # alone (the sustainable-fashion runs ended after it, the forensic-psychology ones before).
    days = (date.today() - FROZEN_SINCE).days
    freeze = ("-s", f"FLSYNC_FROZEN_AFTER_DAYS={days}")
    started = [r for r in fakesite.data.runs if r.started_on(date.today())]
    recent = [r for r in started if r.end_date >= FROZEN_SINCE]
    frozen = [r for r in started if r.end_date < FROZEN_SINCE]
    assert recent and len(frozen) > 1
    assert all(r.course_slug == "forensic-psychology" for r in frozen)
    assert sync(*freeze).returncode == 0
    fakesite.faults.update({"generation": 2})
    fakesite.reset_stats()
    result = sync(*freeze)
    assert result.returncode == 0, result.output
    stats = fakesite.stats()
    assert stats["by_kind"]["run_details"] == len(recent)
    assert f"{len(frozen)} finished runs not asked but for enrolments" in result.output
    # The frozen runs' enrolments are still asked for, and only those.
    frozen_requests = [
        path for _, path, _ in stats["log"] if "/data/" in path and "/forensic-psychology/" in path
    ]
    old = frozen[0]
    folder = sync.data_dir / run_folder(fakesite, old)
    assert (folder / "enrolments.csv").read_bytes() == fakesite.dataset_bytes(
        old.course_slug, old.number, "enrolments", generation=2
    )
    assert (folder / "comments.csv").read_bytes() == fakesite.dataset_bytes(
        old.course_slug, old.number, "comments", generation=1
    )
    assert any(p.endswith("/data/enrolments") for p in frozen_requests)
    update = (sync.data_dir / "University of Exampleton" / tree.UPDATE_FILE).read_text()
    first, second = update.splitlines()
    assert UPDATE_LINE.fullmatch(first + "\n")
    assert second.startswith(f"{len(frozen)} runs that ended more than {days} days ago were not")
    fakesite.reset_stats()
    assert sync(*freeze, "--full").returncode == 0
    assert fakesite.stats()["by_kind"]["run_details"] == len(started)


def test_a_deleted_file_makes_its_frozen_run_fetched_again(fakesite, sync):
    freeze = ("-s", "FLSYNC_FROZEN_AFTER_DAYS=30")
    assert sync(*freeze).returncode == 0
    victim = next(sync.data_dir.rglob("comments.csv"))
    content = victim.read_bytes()
    victim.unlink()
    fakesite.reset_stats()
    assert sync(*freeze).returncode == 0
    assert victim.read_bytes() == content
    assert fakesite.stats()["by_kind"]["run_details"] == 1


def test_a_deleted_state_file_means_a_full_sync_without_rewrites(fakesite, sync):
    assert sync().returncode == 0
    before = file_ids(sync.data_dir)
    (sync.data_dir / "University of Exampleton" / tree.STATE_FILE).unlink()
    fakesite.reset_stats()
    result = sync()
    assert result.returncode == 0, result.output
    assert fakesite.stats()["by_kind"]["run_details"] == len(fakesite.data.runs)
    assert fakesite.stats()["not_modified"] == 0
    assert file_ids(sync.data_dir) == before
    assert (sync.data_dir / "University of Exampleton" / tree.STATE_FILE).exists()


def test_a_corrupt_state_file_warns_and_syncs_fully(fakesite, sync):
    assert sync().returncode == 0
    state_file = sync.data_dir / "University of Exampleton" / tree.STATE_FILE
    state_file.write_text('{"version": 1, "files": ')
    fakesite.reset_stats()
    result = sync()
    assert result.returncode == 0, result.output
    assert f"State file University of Exampleton/{tree.STATE_FILE} is unreadable" in result.output
    assert fakesite.stats()["by_kind"]["run_details"] == len(fakesite.data.runs)


def forget_reads(data_dir) -> None:
    """Set every data file's access time to 0: a read (relatime) moves it past the mtime."""
    for path in data_dir.rglob("*.csv"):
        os.utime(path, ns=(0, path.stat().st_mtime_ns))


def read_datasets(data_dir) -> list[str]:
    """The dataset files read since forget_reads() (metadata.csv, a few bytes compared to
    decide whether to rewrite it, does not count)."""
    return sorted(
        str(p.relative_to(data_dir))
        for p in data_dir.rglob("*.csv")
        if p.stat().st_atime and p.name != tree.METADATA_FILE
    )


@pytest.mark.parametrize("validators", [True, False], ids=["304s", "200s"])
def test_a_no_change_sync_reads_no_stored_file(fakesite, sync, validators):
    fakesite.faults.update({"validators": validators})
    assert sync().returncode == 0
    forget_reads(sync.data_dir)
    before = file_ids(sync.data_dir)
    result = sync()
    assert result.returncode == 0, result.output
    assert read_datasets(sync.data_dir) == []  # the state said what each stored file holds
    assert file_ids(sync.data_dir) == before


def test_a_stored_file_the_state_does_not_describe_is_read(fakesite, sync):
    fakesite.faults.update({"validators": False})
    assert sync().returncode == 0
    forget_reads(sync.data_dir)
    touched = next(sync.data_dir.rglob("comments.csv"))
    os.utime(touched, ns=(0, touched.stat().st_mtime_ns + 10**9))  # another time: not vouched for
    # The measures would read that run's files too (tests/test_measures.py): the sync alone.
    result = sync("-s", "STATS_DUMP=1", "-s", "FLSYNC_MEASURES=0")
    assert result.returncode == 0, result.output
    assert read_datasets(sync.data_dir) == [str(touched.relative_to(sync.data_dir))]
    assert "'flsync/datasets/hashed': 1," in result.output
    assert "0 downloaded, " in result.output  # read, found the same: not rewritten


def test_temporary_files_of_a_killed_sync_are_deleted_at_start(fakesite, sync):
    assert sync().returncode == 0
    folder = next(sync.data_dir.rglob("comments.csv")).parent
    leftover = folder / f"{TEMP_PREFIX}killed{TEMP_SUFFIX}"
    leftover.write_bytes(b"learner_id,enrol")
    result = sync()
    assert result.returncode == 0, result.output
    assert not leftover.exists()
    assert "Deleted 1 temporary file(s) left by an interrupted sync" in result.output
    assert (sync.data_dir / "University of Exampleton" / tree.STATE_FILE).exists()
