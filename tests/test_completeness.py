"""A sync says complete only when it has accounted for every listed run and file: against
imitations whose pages, names and dataset lists changed in small, realistic ways, each ends
either with the full tree in distinct folders and exit 0, or with the run named as failed in
one ERROR line, no new update.txt for its organisation, every other organisation complete, and
exit 1. Never a traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fakesite import SUBDIVISIONS, FakeSite, SiteOptions
from flsync import tree
from tests.commands import run_in_process
from tests.conftest import Sync, SyncResult, assert_full_tree, data_files

SMALL = SiteOptions(organisations=2, courses=2, runs=2, rows=4, tricky=False)
EXAMPLETON = "University of Exampleton"
TRICKY = "Institut für Données & “Tests”"


def report(result: SyncResult, folder: str) -> dict:
    return json.loads((result.data_dir / folder / tree.REPORT_FILE).read_text())


def warnings(result: SyncResult) -> list[str]:
    return [line for line in result.output.splitlines() if "] WARNING: " in line]


def run_files(site: FakeSite, result: SyncResult, folders: dict[str, str]) -> None:
    """Each named run folder (course slug -> its folder, under data_dir) holds exactly that
    course's first run's files, byte for byte, and metadata.csv naming it."""
    for slug, folder in folders.items():
        run = site.data.run(slug, 1)
        assert run is not None
        run_folder = result.data_dir / folder / f"1-{run.start_date}-{run.end_date}"
        names = {tree.dataset_file_name(d): d for d in (*run.datasets, SUBDIVISIONS)}
        assert sorted(p.name for p in run_folder.iterdir()) == sorted(
            [*names, tree.METADATA_FILE]
        ), folder
        for name, dataset in names.items():
            assert (run_folder / name).read_bytes() == site.dataset_bytes(slug, 1, dataset)
        metadata = (run_folder / tree.METADATA_FILE).read_text().splitlines()[1]
        assert f",1,{run.start_date},{run.end_date}," in metadata
        assert run.course_title in metadata or '"' in metadata


def assert_clean(result: SyncResult) -> None:
    """No traceback, no page left to Scrapy's own error handling, no temporary file left."""
    assert "Traceback" not in result.output
    assert "Spider error processing" not in result.output
    assert not list(result.data_dir.rglob("*.part"))


# --- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["long_month", "weekday", "month_first", "iso"])
def test_dates_in_another_plausible_form_are_read(tmp_path, form):
    with FakeSite(SMALL) as site:
        site.faults.update({"date_form": form})
        result = Sync(site.base_url, tmp_path)()
        assert result.returncode == 0, result.output
        assert_full_tree(site, result)  # the run folders are named by the dates read
    assert_clean(result)


def test_dates_no_reader_could_tell_fail_each_run_loudly(tmp_path):
    with FakeSite(SMALL) as site:
        site.faults.update({"date_form": "unreadable"})
        base = site.base_url
        result = Sync(base, tmp_path)()
        runs = [r for o in site.data.organisations for r in o.runs if r.started_on(site.data.today)]
    assert result.returncode == 1
    assert_clean(result)
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    assert len(errors) == len(runs)
    for run in runs:
        url = f"{base}/admin/courses/{run.course_slug}/{run.number}"
        [line] = [e for e in errors if f"Run (failed): {url}: " in e]
        day = run.start_date
        assert line.endswith(f": dl.m-metadata dt/dd 'Start date': not a date: '{day:%d/%m/%Y}'"), (
            line
        )
    for organisation in site.data.organisations:
        assert not (result.data_dir / organisation.name / tree.UPDATE_FILE).exists()
        figures = report(result, organisation.name)
        assert figures["complete"] is False
        assert figures["runs_closed"] == 0
        assert figures["runs_expected"] == len(organisation.runs) == figures["runs_listed"]
        assert len(figures["failures"]) == len(organisation.runs)
    assert not any(p.is_dir() for p in (result.data_dir / EXAMPLETON).iterdir())


# --- listings and dashboards ----------------------------------------------------------------


def test_a_run_number_that_is_not_a_number_fails_that_run_alone(tmp_path):
    with FakeSite(SMALL) as site:
        [first, other] = site.data.organisations
        course = first.runs[0].course_slug
        site.faults.update({"bad_run_number": course})
        base = site.base_url
        result = Sync(base, tmp_path)()
    assert result.returncode == 1
    assert_clean(result)
    failed = [r for r in first.runs if r.course_slug == course]
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    assert len(errors) == len(failed)
    for run, line in zip(sorted(failed, key=lambda r: r.number), sorted(errors), strict=True):
        url = f"{base}/admin/courses/{course}/{run.number}"
        assert line.endswith(f"Run (failed): {url}: td.m-run__number: not a run number: 'n/a'")
    assert not (result.data_dir / first.name / tree.UPDATE_FILE).exists()
    assert (result.data_dir / other.name / tree.UPDATE_FILE).exists()
    figures = report(result, first.name)
    assert (figures["complete"], figures["runs_listed"]) == (False, len(first.runs))
    assert figures["runs_closed"] == len(first.runs) - len(failed)
    assert report(result, other.name)["complete"] is True
    # Every other run of the organisation is stored.
    stored = {p.parent.parent.name for p in result.data_dir.glob("*/*/*/metadata.csv")}
    others = {r.course_title for o in site.data.organisations for r in o.runs} - {
        failed[0].course_title
    }
    assert stored == {tree.safe_name(t) for t in others}


def test_a_dataset_entry_without_a_link_is_said_once_and_the_rest_is_complete(tmp_path):
    with FakeSite(SMALL) as site:
        site.faults.update({"unlinked_dataset": True})
        result = Sync(site.base_url, tmp_path)()
        assert result.returncode == 0, result.output
        assert_full_tree(site, result)
    assert_clean(result)
    [line] = [w for w in warnings(result) if "no link to a file" in w]
    assert "lists 'Learner outcomes (coming soon)' with no link to a file" in line


def test_a_dataset_named_metadata_never_replaces_metadata_csv(tmp_path):
    with FakeSite(SMALL) as site:
        site.faults.update({"extra_datasets": ["metadata", "step-activity"]})
        result = Sync(site.base_url, tmp_path)()
        sync_again = Sync(site.base_url, tmp_path)()
        run = site.data.organisations[0].runs[0]
    assert result.returncode == 0, result.output
    assert_clean(result)
    folder = (
        tmp_path
        / "data"
        / tree.run_dir(EXAMPLETON, run.course_title, run.number, run.start_date, run.end_date)
    )
    metadata = (folder / tree.METADATA_FILE).read_text()
    assert metadata.splitlines()[1].startswith(f"{EXAMPLETON},{run.course_title},{run.number},")
    assert "Another University" in (folder / "metadata (metadata).csv").read_text()
    # step_activity is a known dataset: it keeps step-activity.csv whatever the order.
    assert (folder / "step-activity.csv").read_bytes() == site.dataset_bytes(
        run.course_slug, run.number, "step_activity"
    )
    assert (folder / "step-activity (step-activity).csv").read_text().startswith("dataset,")
    said = [w for w in warnings(result) if " is stored as " in w]
    assert any("'metadata (metadata).csv': its own file name is another" in w for w in said)
    # A second sync keeps the same names and changes nothing.
    assert sync_again.returncode == 0, sync_again.output
    assert "0 downloaded" in sync_again.output


# --- names ----------------------------------------------------------------------------------


def test_names_past_255_bytes_are_cut_within_200(tmp_path):
    with FakeSite(SiteOptions(organisations=1, courses=1, runs=1, rows=3, tricky=False,
                              names="long")) as site:  # fmt: skip
        result = Sync(site.base_url, tmp_path)()
        assert result.returncode == 0, result.output
        assert_clean(result)
        assert_full_tree(site, result)
        cjk = "\u5b66" * 66  # 198 bytes
        emoji = "\U0001f393" * 50  # 200 bytes
        folders = {"cjk-course": f"{EXAMPLETON}/{cjk}", "emoji-org": f"{emoji}/{emoji}"}
        run_files(site, result, folders)
        run_files(site, result, {"s" * 300: "Long Slug University/Long Slug University"})
    for path in result.data_dir.rglob("*"):
        assert len(path.name.encode()) <= 200, path.name
    assert report(result, emoji)["complete"] is True


def test_names_equal_once_made_safe_get_distinct_folders(tmp_path):
    options = SiteOptions(organisations=1, courses=1, runs=1, rows=3, tricky=False,
                          names="colliding")  # fmt: skip
    with FakeSite(options) as site:
        first = Sync(site.base_url, tmp_path)()
        second = Sync(site.base_url, tmp_path)()
        assert first.returncode == 0, first.output
        assert_clean(first)
        folders = {
            "backslash-course": "Data-Science",
            "case-course": "DATA-SCIENCE (case-course)",
            "dash-course": "Data-Science (dash-course)",
            "slash-course": "Data-Science (slash-course)",
            "long-course-x": "A" * 120,
            "long-course-y": "A" * 120 + " (long-course-y)",
            "composed-course": "Caf\u00e9 Culture",
            "decomposed-course": "Cafe\u0301 Culture (decomposed-course)",
        }
        run_files(site, first, {slug: f"{EXAMPLETON}/{f}" for slug, f in folders.items()})
        run_files(site, first, {"dot-org": "_/_", "dot-dot-org": "_ (dot-dot-org)/_"})
        assert {p.name for p in first.data_dir.iterdir() if not p.name.startswith(".")} == {
            EXAMPLETON,
            "_",
            "_ (dot-dot-org)",
        }
    moved = [w for w in warnings(first) if " is stored in the folder " in w]
    assert len(moved) == 6, moved  # five courses and one organisation
    # The folders stay their holders': nothing moves, nothing changes.
    assert second.returncode == 0, second.output
    assert "Sync complete: 0 downloaded" in second.output
    assert data_files(second) == data_files(first)


def test_names_of_flsyncs_own_files_are_never_given(tmp_path):
    options = SiteOptions(organisations=1, courses=1, runs=1, rows=3, tricky=False,
                          names="reserved")  # fmt: skip
    with FakeSite(options) as site:
        result = Sync(site.base_url, tmp_path)()
        assert result.returncode == 0, result.output
        assert_clean(result)
        run_files(
            site,
            result,
            {
                "update-course": f"{EXAMPLETON}/update.txt (update-course)",
                "report-course": f"{EXAMPLETON}/sync-report.json (report-course)",
                "hidden-course": f"{EXAMPLETON}/flsync-state.json",
                "measures-course": f"{EXAMPLETON}/Measures.CSV (measures-course)",
                "database-org": "flsync.sqlite3 (database-org)/flsync.sqlite3",
            },
        )
    for organisation in (EXAMPLETON, "flsync.sqlite3 (database-org)"):
        assert (result.data_dir / organisation / tree.UPDATE_FILE).is_file()
        assert report(result, organisation)["complete"] is True


# --- what the report counts -----------------------------------------------------------------


def test_the_report_counts_what_was_listed_and_what_closed(tmp_path):
    with FakeSite(SMALL) as site:
        result = Sync(site.base_url, tmp_path)()
    assert result.returncode == 0, result.output
    for organisation in site.data.organisations:
        started = [r for r in organisation.runs if r.started_on(site.data.today)]
        files = sum(len(r.datasets) + 1 for r in started)
        figures = report(result, organisation.name)
        assert figures["runs_listed"] == len(organisation.runs)
        assert figures["runs_expected"] == figures["runs_closed"] == len(started)
        assert figures["files_expected"] == figures["files_accounted"] == files
        assert figures["failures"] == []
        [line] = [x for x in result.output.splitlines() if f"complete: {organisation.name}:" in x]
        assert (
            f"{len(started)} of {len(started)} runs closed ({len(organisation.runs)} listed)"
            in line
        )
        assert f"{files} of {files} files accounted for" in line


def test_a_store_write_that_raises_fails_its_run(tmp_path):
    with FakeSite(SMALL) as site:
        run = site.data.organisations[0].runs[0]
        folder = (
            tmp_path
            / "data"
            / tree.run_dir(EXAMPLETON, run.course_title, run.number, run.start_date, run.end_date)
        )
        (folder / "comments.csv").mkdir(parents=True)  # a folder where the file goes
        result = Sync(site.base_url, tmp_path)()
    assert result.returncode == 1
    assert_clean(result)
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    [line] = errors
    assert "Dataset (failed): " in line and "/comments.csv from " in line
    assert not (tmp_path / "data" / EXAMPLETON / tree.UPDATE_FILE).exists()
    figures = report(result, EXAMPLETON)
    assert figures["runs_closed"] == figures["runs_expected"] - 1
    [failure] = figures["failures"]  # the run, by its details page, and why
    assert failure["url"].endswith(f"/admin/courses/{run.course_slug}/{run.number}")
    assert "/comments.csv: " in failure["reason"]
    other = site.data.organisations[1].name
    assert (tmp_path / "data" / other / tree.UPDATE_FILE).exists()
    assert not list(Path(folder).glob(".flsync-tmp-*"))


def test_a_listing_never_read_to_its_last_page_leaves_its_organisation_incomplete(tmp_path):
    with FakeSite(SMALL) as site:
        site.faults.update({"pagination_loop": True})  # page 1 links on to page 1 again
        base = site.base_url
        result = Sync(base, tmp_path)()
    assert result.returncode == 1
    assert_clean(result)
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    assert len(errors) == 2  # each organisation's, and nothing else
    for organisation in site.data.organisations:
        url = f"{base}/admin/organisations/{organisation.slug}/runs"
        assert any(
            e.endswith(
                f"Organisation (failed): {organisation.name}: its runs listing was not read"
                f" to its last page ({url})"
            )
            for e in errors
        ), errors
        assert not (result.data_dir / organisation.name / tree.UPDATE_FILE).exists()
        figures = report(result, organisation.name)
        assert figures["complete"] is False
        assert figures["runs_closed"] == figures["runs_expected"] > 0  # its runs are all there


def test_a_listing_past_its_page_bound_fails_its_organisation(tmp_path):
    with FakeSite(SiteOptions(organisations=1, courses=10, runs=3, rows=2, tricky=False)) as site:
        [organisation] = site.data.organisations
        assert organisation.page_count() == 2
        base = site.base_url
        result = Sync(base, tmp_path)("-s", "FLSYNC_LISTING_MAX_PAGES=1")
    assert result.returncode == 1
    assert_clean(result)
    [line] = [e for e in result.error_lines() if "Sync FAILED" not in e]
    assert line.endswith(
        f"Page (failed): {base}/admin/organisations/{organisation.slug}/runs:"
        ' nav.pagination a[rel~="next"]: more than FLSYNC_LISTING_MAX_PAGES (1) pages of runs'
    )
    assert report(result, organisation.name)["complete"] is False


# --- the database load keys runs by what flsync knows ---------------------------------------


def runs_rows(database: Path) -> list[tuple[str, str, int]]:
    """The runs table's keys (none when no run was loaded, and so no table made)."""
    with sqlite3.connect(database) as connection:
        made = connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchall()
        if not made:
            return []
        return connection.execute("SELECT uni_name, course_name, run FROM runs").fetchall()


def test_a_metadata_shaped_dataset_cannot_move_rows_to_another_organisations_run(tmp_path):
    database = tmp_path / "mirror.sqlite3"
    with FakeSite(SMALL) as site:
        site.faults.update({"extra_datasets": ["metadata"]})
        result = Sync(site.base_url, tmp_path)(env={"FLSYNC_DATABASE_URL": f"sqlite:///{database}"})
        runs = {
            (o.name, r.course_title, r.number)
            for o in site.data.organisations
            for r in o.runs
            if r.started_on(site.data.today)
        }
    # The tree is complete; the load refuses each run holding a dataset whose columns are
    # the load's own key, in one line each, and moves no row anywhere.
    assert "Organisation INCOMPLETE" not in result.output
    assert result.returncode == 1
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    assert len(errors) == len(runs)
    assert all(
        "/metadata (metadata).csv, line 1: a column cannot be named 'uni_name': flsync's own;"
        in line
        for line in errors
    )
    assert "Traceback" not in result.output
    assert not any(row[0] == "Another University" for row in runs_rows(database))


def test_a_tree_without_state_whose_metadata_names_another_run_is_refused(tmp_path):
    with FakeSite(SMALL) as site:
        result = Sync(site.base_url, tmp_path)()
    assert result.returncode == 0, result.output
    data_dir = tmp_path / "data"
    for state in data_dir.glob(f"*/{tree.STATE_FILE}"):
        state.unlink()  # a tree from before flsync kept its runs, or copied without dot files
    [poisoned, *_] = sorted(data_dir.glob(f"{EXAMPLETON}/*/*/{tree.METADATA_FILE}"))
    poisoned.write_text(
        "uni_name,course_name,run,start_date,end_date,duration_weeks\n"
        f"{TRICKY},Someone Else's Course,1,2020-01-06,2020-02-03,4\n"
    )
    database = tmp_path / "mirror.sqlite3"
    process = run_in_process(["loaddb", "--database", f"sqlite:///{database}"], tmp_path)
    assert process.returncode == 1
    [line] = [
        x for x in process.stderr.splitlines() if "] ERROR: " in x and "Run (not loaded)" in x
    ]
    assert (
        f'{tree.METADATA_FILE}, line 2: names {TRICKY!r}, "Someone Else\'s Course", run 1,' in line
    )
    assert line.rstrip().endswith("its rows in the database were left as they were")
    assert all(row[0] != TRICKY or row[1] != "Someone Else's Course" for row in runs_rows(database))
    assert len(runs_rows(database)) > 0  # the other runs are loaded
