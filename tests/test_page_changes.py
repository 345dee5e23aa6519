"""Syncs against pages whose markup changed as FutureLearn has changed it: where the page model
has a second source for a fact, the sync stays complete and says once what it used instead;
a dataset whose header is none of its known versions is stored and reported."""

from __future__ import annotations

import json

import pytest

from fakesite import FakeSite, SiteOptions
from flsync import tree
from tests.conftest import Sync, assert_full_tree

SMALL = SiteOptions(organisations=2, courses=2, runs=2, rows=5, tricky=False)
# The edge-case runs (not started, upcoming, unknown datasets, old headers, a second runs
# page), with one plain course and no second organisation.
TRICKY = SiteOptions(organisations=1, courses=1, runs=1, rows=5)


@pytest.fixture
def tricky_site(sites):
    return sites.get(TRICKY)


@pytest.fixture
def tricky_sync(tricky_site, tmp_path):
    return Sync(tricky_site.base_url, tmp_path)


def warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if "] WARNING: " in line]


def test_dataset_links_found_by_their_path_when_the_list_changed_class(tricky_site, tricky_sync):
    fakesite, sync = tricky_site, tricky_sync
    fakesite.faults.update({"markup_change": "datasets_class"})
    result = sync()
    assert result.returncode == 0, result.output
    assert_full_tree(fakesite, result)
    [warning] = [line for line in warnings(result.output) if "Stats dashboard (changed)" in line]
    assert "/stats-dashboard: ul.m-datasets a.m-datasets__link matched nothing; the " in warning
    assert warning.endswith(
        " dataset links found by their /stats-dashboard/data/ path are used instead"
        " (FutureLearn changed this page; flsync/site.py reads it)"
    )


def test_start_dates_from_the_details_pages_when_the_date_cell_changed(tricky_site, tricky_sync):
    fakesite, sync = tricky_site, tricky_sync
    fakesite.faults.update({"markup_change": "date_cell"})
    result = sync()
    assert result.returncode == 0, result.output
    assert_full_tree(fakesite, result)  # the run folders are named by the right start dates
    [warning] = [line for line in warnings(result.output) if "Runs listing (changed)" in line]
    assert "/runs: td.m-run__start[data-order] gave no start date in " in warning
    assert "rows; each run's start date is taken from its details page instead" in warning
    # Not started runs are still left alone (their status says so).
    not_set = [r for o in fakesite.data.organisations for r in o.runs if r.start_date is None]
    assert not_set
    assert not any(f"/{r.number}-" in path for r in not_set for path in result.files())


def test_a_new_column_is_stored_and_reported(tmp_path):
    with FakeSite(SMALL) as site:
        site.faults.update({"extra_column": "comments"})
        result = Sync(site.base_url, tmp_path)()
        assert result.returncode == 0, result.output
        assert_full_tree(site, result)  # stored as served, with the new column
    [warning] = [line for line in warnings(result.output) if "header changed" in line]
    assert "Dataset (header changed): comments in " in warning
    assert "/comments.csv has a header that is none of its known versions: added sentiment;" in (
        warning
    )
    assert " gone none (stored as served;" in warning
    for organisation in site.data.organisations:
        folder = tmp_path / "data" / organisation.name
        report = json.loads((folder / tree.REPORT_FILE).read_text())
        assert report["header_drift"] == {"comments": {"added": ["sentiment"], "gone": []}}
        assert report["complete"] is True
    [line] = [line for line in result.output.splitlines() if "Organisation complete: " in line][:1]
    assert line.endswith("; new header in comments")


def test_known_header_versions_are_no_drift(synced_site):
    result = synced_site  # the default site has runs with the older header versions
    assert result.returncode == 0, result.output
    assert "header changed" not in result.output
    folder = result.data_dir / "University of Exampleton"
    report = json.loads((folder / tree.REPORT_FILE).read_text())
    assert report["header_drift"] == {}
