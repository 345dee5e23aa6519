"""Jobs for some organisations (`-a organisation=`), side by side on one data_dir."""

from __future__ import annotations

import pytest

from fakesite import FakeSite, SiteOptions
from flsync import tree
from flsync.storage import LocalStore
from tests.conftest import Sync

TWO = SiteOptions(organisations=2, courses=2, runs=2, rows=5, tricky=False)


@pytest.fixture
def site():
    with FakeSite(TWO) as site:
        yield site


def synced_organisations(data_dir) -> set[str]:
    return {p.parent.name for p in data_dir.glob(f"*/{tree.UPDATE_FILE}")}


def test_a_job_for_some_organisations(site, tmp_path):
    slug, name = site.data.organisations[1].slug, site.data.organisations[1].name
    result = Sync(site.base_url, tmp_path)("-a", f"organisation={slug}")
    assert result.returncode == 0, result.output
    assert synced_organisations(result.data_dir) == {name}


@pytest.mark.parametrize("form", ["comma", "repeated"])
def test_several_organisations_in_one_job(site, tmp_path, form):
    slugs = [o.slug for o in site.data.organisations]
    if form == "comma":
        args = ["-a", "organisation=" + ",".join(slugs)]
    else:
        args = [arg for slug in slugs for arg in ("-a", f"organisation={slug}")]
    result = Sync(site.base_url, tmp_path)(*args)
    assert result.returncode == 0, result.output
    assert synced_organisations(result.data_dir) == {o.name for o in site.data.organisations}


def test_an_unknown_organisation_lists_those_administered(site, tmp_path):
    result = Sync(site.base_url, tmp_path)("-a", "organisation=nowhere")
    assert result.returncode == 1
    administered = ", ".join(sorted(o.slug for o in site.data.organisations))
    [line, _] = result.error_lines()
    assert line.endswith(
        f"Organisation nowhere is not administered by demo@example.org, which administers:"
        f" {administered} (check 'organisations' in the config, or -a organisation=)"
    )


def test_two_jobs_for_different_organisations_run_side_by_side(site, tmp_path):
    site.faults.update({"latency_ms": 20})  # long enough for the two to overlap
    data_dir = tmp_path / "shared-data"
    first, second = (Sync(site.base_url, tmp_path / name) for name in ("one", "two"))
    for sync in (first, second):
        sync.workdir.mkdir()
    jobs = [
        sync.start("-a", f"organisation={organisation.slug}", data_dir=str(data_dir))
        for sync, organisation in zip((first, second), site.data.organisations, strict=True)
    ]
    results = [sync.wait(job) for sync, job in zip((first, second), jobs, strict=True)]
    assert [r.returncode for r in results] == [0, 0], results[0].output + results[1].output
    assert synced_organisations(data_dir) == {o.name for o in site.data.organisations}


def test_a_job_for_an_organisation_another_job_holds_stops_at_once(site, tmp_path):
    slug = site.data.organisations[0].slug
    (tmp_path / "data").mkdir()
    with LocalStore(str(tmp_path / "data")).lock(slug):
        result = Sync(site.base_url, tmp_path)("-a", f"organisation={slug}")
    assert result.returncode == 2
    [line] = result.error_lines()
    assert line.endswith(
        f"Organisation {slug} is being synced by another job; this one leaves it alone"
        " (wait for the other to finish)"
    )
    assert site.stats()["requests"] == 0


def test_a_sync_of_all_leaves_alone_what_another_job_holds(site, tmp_path):
    held, free = site.data.organisations
    (tmp_path / "data").mkdir()
    with LocalStore(str(tmp_path / "data")).lock(held.slug):
        result = Sync(site.base_url, tmp_path)()
    assert result.returncode == 1  # incomplete: one organisation was not synced
    assert synced_organisations(result.data_dir) == {free.name}
    assert not (result.data_dir / tree.organisation_dir(held.name)).exists()


def test_a_job_for_two_organisations_one_of_them_held_says_so_once(site, tmp_path):
    held, free = site.data.organisations
    (tmp_path / "data").mkdir()
    with LocalStore(str(tmp_path / "data")).lock(held.slug):
        result = Sync(site.base_url, tmp_path)("-a", f"organisation={held.slug},{free.slug}")
    assert result.returncode == 1  # incomplete: one organisation was not synced
    assert synced_organisations(result.data_dir) == {free.name}
    # Asked for before the first request and again once the organisations are listed.
    locked = [line for line in result.error_lines() if "is being synced by another job" in line]
    assert len(locked) == 1, result.output
