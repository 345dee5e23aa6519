"""Every FLSYNC_* setting read once into SyncOptions: defaults from flsync/settings.py, a bad
value refused in one line naming it, before anything starts."""

from __future__ import annotations

import pytest
from scrapy.settings import Settings

from fakesite import FakeSite, SiteOptions
from flsync import settings as defaults
from flsync.options import LOADED_OPTIONS, SyncOptions, options_of
from tests.conftest import Sync


def test_defaults_come_from_the_projects_settings():
    options = SyncOptions.from_settings(Settings())
    assert options.sign_in_max == defaults.FLSYNC_SIGN_IN_MAX
    assert options.dataset_max_ratio == defaults.FLSYNC_DATASET_MAX_RATIO
    assert options.impersonate == "chrome"
    assert options.extra_origins == frozenset()


def test_full_asks_for_every_run_whatever_frozen_after_days_says():
    values = {"FLSYNC_FROZEN_AFTER_DAYS": 30}
    assert SyncOptions.from_settings(Settings(values)).frozen_after_days == 30
    full = SyncOptions.from_settings(Settings({**values, "FLSYNC_FULL": "1"}))
    assert full.frozen_after_days == 0


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("FLSYNC_SIGN_IN_MAX", 0, "FLSYNC_SIGN_IN_MAX must be 1 or more, not 0"),
        ("FLSYNC_LISTING_MAX_PAGES", -1, "FLSYNC_LISTING_MAX_PAGES must be 1 or more, not -1"),
        ("FLSYNC_SESSION_RETRIES", -1, "FLSYNC_SESSION_RETRIES must be 0 or more, not -1"),
        ("FLSYNC_DATASET_MIN_RATE", -5, "FLSYNC_DATASET_MIN_RATE must be 0 or more, not -5"),
        ("FLSYNC_LOCK_STALE_AFTER", 0, "FLSYNC_LOCK_STALE_AFTER must be above 0, not 0.0"),
    ],
)
def test_a_value_that_cannot_work_is_refused_by_name(name, value, error):
    with pytest.raises(ValueError, match=f"^{error}$"):
        SyncOptions.from_settings(Settings({name: value}))


def test_options_once_read_are_not_read_again():
    read = SyncOptions.from_settings(Settings({"FLSYNC_SIGN_IN_MAX": 7}))
    settings = Settings({"FLSYNC_SIGN_IN_MAX": 0, LOADED_OPTIONS: read})
    assert options_of(settings) is read


def test_a_bad_setting_stops_the_sync_in_one_line_before_any_request(tmp_path):
    with FakeSite(SiteOptions(organisations=1, courses=1, runs=1, tricky=False)) as site:
        result = Sync(site.base_url, tmp_path)("-s", "FLSYNC_SIGN_IN_MAX=0")
        assert site.stats()["requests"] == 0
    assert result.returncode == 2
    [line] = result.error_lines()
    assert line.endswith("FLSYNC_SIGN_IN_MAX must be 1 or more, not 0")
    assert "Traceback" not in result.output
