"""The report of each sync, per organisation: a log line and sync-report.json, same figures."""

from __future__ import annotations

import json
from datetime import datetime

from fakesite import FakeSite, SiteOptions
from flsync import tree
from flsync.report import human_bytes
from tests.conftest import Sync, expected_tree

SMALL = SiteOptions(organisations=2, courses=2, runs=2, rows=5, tricky=False)
ORGANISATION = "University of Exampleton"


# The site of this module's `fakesite` and `sync` (tests/conftest.py).
SITE = SMALL


def report(sync: Sync, organisation: str = ORGANISATION) -> dict:
    return json.loads((sync.data_dir / organisation / tree.REPORT_FILE).read_text())


def report_line(output: str, organisation: str = ORGANISATION) -> str:
    [line] = [line for line in output.splitlines() if f": {organisation}: " in line]
    return line


def organisation_files(fakesite: FakeSite, organisation: str = ORGANISATION) -> dict[str, bytes]:
    """The dataset files the site has for one organisation (no metadata.csv)."""
    return {
        path: content
        for path, content in expected_tree(fakesite).items()
        if path.startswith(f"{organisation}/") and content is not None
    }


def started_runs(fakesite: FakeSite, organisation: str = ORGANISATION) -> int:
    [org] = [o for o in fakesite.data.organisations if o.name == organisation]
    return sum(run.started_on(fakesite.data.today) for run in org.runs)


def test_a_first_sync_reports_every_file_new(fakesite, sync):
    result = sync()
    assert result.returncode == 0, result.output
    files = organisation_files(fakesite)
    size = sum(len(content) for content in files.values())
    figures = report(sync)
    assert figures["organisation"] == ORGANISATION
    assert figures["complete"] is True
    assert figures["runs"] == started_runs(fakesite) > 0
    assert figures["files"] == {
        "new": len(files),
        "changed": 0,
        "unchanged": 0,
        "not_modified": 0,
        "failed": 0,
    }
    assert figures["bytes"] == size
    started = datetime.fromisoformat(figures["started"])
    assert datetime.fromisoformat(figures["finished"]) >= started
    assert started.utcoffset() is not None and figures["seconds"] >= 0
    line = report_line(result.output)
    assert "] INFO: Organisation complete: University of Exampleton: " in line
    runs = figures["runs"]
    assert f": {runs} of {runs} runs closed ({figures['runs_listed']} listed), " in line
    assert f" accounted for: {len(files)} new, 0 changed, 0 unchanged," in line
    assert f"0 not modified, 0 failed; {human_bytes(size)} stored in " in line
    # Every organisation has its own report.
    other = fakesite.data.organisations[1].name
    assert report(sync, other)["files"]["new"] == len(organisation_files(fakesite, other)) > 0


def test_a_second_sync_reports_not_modified_then_changed(fakesite, sync):
    assert sync().returncode == 0
    files = organisation_files(fakesite)
    result = sync()
    assert result.returncode == 0, result.output
    assert report(sync)["files"]["not_modified"] == len(files)
    assert report(sync)["bytes"] == 0
    assert f"for: 0 new, 0 changed, 0 unchanged, {len(files)} not modified" in report_line(
        result.output
    )

    fakesite.faults.update({"generation": 2})
    changed = [
        path
        for path, content in organisation_files(fakesite).items()
        if content != files[path]  # expected_tree follows the site's generation
    ]
    assert changed
    result = sync()
    figures = report(sync)
    assert figures["files"]["changed"] == len(changed)
    assert figures["files"]["unchanged"] + figures["files"]["changed"] == len(files)
    assert figures["bytes"] == sum(len(organisation_files(fakesite)[p]) for p in changed)


def test_a_failed_file_makes_the_report_incomplete(fakesite, sync):
    run = fakesite.data.organisations[0].runs[0]
    assert run.started_on(fakesite.data.today)
    only = rf"^/admin/courses/{run.course_slug}/{run.number}/stats-dashboard/data/comments$"
    fakesite.faults.update({"fail_with": 503, "fail_next": 100, "fail_path": only})
    result = sync("-s", "FLSYNC_RETRY_BACKOFF_BASE=0.01", "-s", "RETRY_TIMES=1")
    assert result.returncode == 1
    figures = report(sync)
    assert figures["complete"] is False
    assert figures["files"]["failed"] == 1
    assert figures["files"]["new"] == len(organisation_files(fakesite)) - 1
    line = report_line(result.output)
    assert "] WARNING: Organisation INCOMPLETE: University of Exampleton: " in line
    assert line.endswith("; 1 failed; update.txt left as it was")
    [failure] = figures["failures"]
    assert failure["url"] == f"{fakesite.base_url}/admin/courses/{run.course_slug}/{run.number}"
    assert failure["reason"].endswith("HTTP 503 (after 2 tries)")
    assert figures["runs_closed"] == figures["runs_expected"] - 1
    assert not (sync.data_dir / ORGANISATION / tree.UPDATE_FILE).exists()
    # The other organisation was complete, and says so.
    other = fakesite.data.organisations[1].name
    assert report(sync, other)["complete"] is True
    assert (sync.data_dir / other / tree.UPDATE_FILE).exists()
