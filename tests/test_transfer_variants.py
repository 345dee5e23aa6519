"""Syncs against each way the CDN may send a dataset: chunked, weak ETag, gzip, br, together.

The site model allows all of them; whatever the framing or coding, what is stored is the
decoded CSV, byte for byte, and an unchanged site costs no dataset bytes the second time.
"""

from __future__ import annotations

from typing import Any

import pytest

from fakesite import FakeSite, SiteOptions
from tests.conftest import SHORT_WAITS, assert_full_tree, data_files, expected_tree
from tests.test_incremental import file_ids

SMALL = SiteOptions(organisations=1, courses=2, runs=2, rows=5, tricky=False)
VARIANTS = [
    pytest.param({"dataset_transfer": "chunked"}, id="chunked"),
    pytest.param({"weak_etag": True}, id="weak-etag"),
    pytest.param({"compress": "gzip"}, id="gzip"),
    # brotli comes with Scrapy (a dependency of it on CPython): never skipped.
    pytest.param({"compress": "br"}, id="br"),
    pytest.param(
        {"dataset_transfer": "chunked", "compress": "gzip", "weak_etag": True},
        id="chunked-gzip-weak",
    ),
]


# The site of this module's `fakesite` and `sync` (tests/conftest.py).
SITE = SMALL


def dataset_answers(fakesite: FakeSite) -> int:
    return fakesite.stats()["by_kind"]["dataset"] + fakesite.stats()["by_kind"]["subdivisions"]


@pytest.mark.parametrize("knobs", VARIANTS)
def test_sync_and_resync_under_each_variant(fakesite, sync, knobs: dict[str, Any]):
    fakesite.faults.update(knobs)
    first = sync()
    assert first.returncode == 0, first.output
    assert_full_tree(fakesite, first)
    stats = fakesite.stats()
    files = dataset_answers(fakesite)
    assert files == sum(not path.endswith("/metadata.csv") for path in expected_tree(fakesite))
    # flsync accepts what Chrome accepts: a compressed body arrives compressed, and is
    # stored decoded.
    coding = knobs.get("compress", "identity")
    assert stats["dataset_codings"] == {"identity": 0, "gzip": 0, "br": 0, coding: files}
    chunked = "dataset_transfer" in knobs or "compress" in knobs  # compressing, it chunks
    assert stats["dataset_chunked"] == (files if chunked else 0)

    before = file_ids(sync.data_dir)
    fakesite.reset_stats()
    second = sync("--full")
    assert second.returncode == 0, second.output
    stats = fakesite.stats()
    assert stats["dataset_bytes"] == 0
    assert stats["not_modified"] == dataset_answers(fakesite) > 0
    assert file_ids(sync.data_dir) == before
    assert "0 downloaded, 0 unchanged," in second.output


def test_cut_off_chunked_download_keeps_the_good_file(fakesite, sync, tmp_path):
    fakesite.faults.update({"dataset_transfer": "chunked"})
    first = sync()
    assert first.returncode == 0, first.output
    before = data_files(first)
    fakesite.faults.update({"generation": 2, "truncate_next": 10_000})
    fakesite.reset_stats()
    cut = sync("--full", *SHORT_WAITS)
    assert cut.returncode == 1, cut.output
    assert fakesite.stats()["dataset_chunked"] == dataset_answers(fakesite) > 0
    failed = [line for line in cut.error_lines() if "Dataset (failed)" in line]
    assert len(failed) == dataset_answers(fakesite) // 5  # each file tried 5 times (RETRY_TIMES)
    assert all("body cut off after " in line for line in failed), failed
    assert "datasets/failed" in cut.error_lines()[-1]
    assert data_files(cut) == before
    assert not list(tmp_path.rglob("*.part"))
    fakesite.faults.update({"truncate_next": 0})
    again = sync()
    assert again.returncode == 0, again.output
    assert_full_tree(fakesite, again)


def test_a_cdn_change_between_syncs_rewrites_nothing(fakesite, sync):
    first = sync()
    assert first.returncode == 0, first.output
    before = file_ids(sync.data_dir)
    # The CDN starts chunking, compressing and weakening ETags: the strong ETags stored
    # still match weakly, so nothing is sent again.
    fakesite.faults.update({"dataset_transfer": "chunked", "compress": "gzip", "weak_etag": True})
    fakesite.reset_stats()
    second = sync("--full")
    assert second.returncode == 0, second.output
    assert fakesite.stats()["dataset_bytes"] == 0
    assert fakesite.stats()["not_modified"] == dataset_answers(fakesite) > 0
    assert file_ids(sync.data_dir) == before
    # Then every file changes, and the new ones arrive chunked and compressed, over the old
    # ones, and are stored decoded.
    fakesite.faults.update({"generation": 2})
    fakesite.reset_stats()
    third = sync("--full")
    assert third.returncode == 0, third.output
    assert_full_tree(fakesite, third)
    stats = fakesite.stats()
    assert stats["dataset_chunked"] == dataset_answers(fakesite) > 0
    assert stats["dataset_codings"]["gzip"] == dataset_answers(fakesite)
    assert f"Sync complete: {dataset_answers(fakesite)} downloaded, 0 unchanged" in third.output
