"""Syncs that need a real browser (FLSYNC_BROWSER, headless Chromium through scrapy-playwright):
pages built by script, and the bot protection's script challenge."""

from __future__ import annotations

import re
import signal
import time

import pytest

from fakesite import FakeSite, SiteOptions
from flsync import tree
from tests.conftest import Sync, assert_full_tree, data_files

SMALL = SiteOptions(organisations=2, courses=2, runs=2, rows=5, tricky=False)
# Two organisations (one can fail while the other completes) of two runs each: six pages built
# by script, more than the browser's four pages, and half the files of SMALL to sync.
TINY = SiteOptions(organisations=2, courses=1, runs=2, rows=5, tricky=False)
BROWSER = ("-s", "FLSYNC_BROWSER=1")


@pytest.fixture
def script_site():
    """The tiny site with its runs listings and dashboards built by script."""
    with FakeSite(TINY) as site:
        site.faults.update({"script_pages": True})
        yield site


def test_without_the_browser_a_page_built_by_script_stops_the_sync(script_site, tmp_path):
    result = Sync(script_site.base_url, tmp_path)()
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert "is built by script in the browser (it came with its list empty and marked" in line
    assert line.endswith("reading it needs FLSYNC_BROWSER on (-s FLSYNC_BROWSER=1, with Chromium"
                         " installed; see docs/network.md)")  # fmt: skip
    assert "Sync FAILED (flsync_needs_browser" in summary
    assert not [p for p in data_files(result) if p.endswith(".csv")]
    assert not list(tmp_path.rglob(tree.UPDATE_FILE))


def test_a_site_built_by_script_is_synced_in_the_browser_and_a_failed_page_again(
    script_site, tmp_path
):
    # A page whose script fails once is rendered again (one sync for both: each browser sync
    # costs seconds of CPU to start Playwright and Chromium).
    script_site.faults.update({"script_error_next": 1})
    result = Sync(script_site.base_url, tmp_path)(*BROWSER, "-s", "STATS_DUMP=1")
    assert result.returncode == 0, result.output
    assert_full_tree(script_site, result)
    assert "'retry/reason_count/script_failed': 1" in result.output
    assert " WARNING: " not in result.output  # tried again, and fine: nothing to worry about
    # Pages are used again: never more of them than FLSYNC_BROWSER_PAGES (4), for all of these.
    rendered = script_site.stats()["by_kind"]["dashboard"] + script_site.stats()["by_kind"]["runs"]
    opened = int(re.search(r"'playwright/page_count': (\d+)", result.output).group(1))
    assert opened <= 4 < rendered
    # One browser, and one Playwright driver, for the crawl: not one per scheme's handler.
    assert result.output.count("[scrapy-playwright] INFO: Starting download handler") == 1


def test_a_page_whose_script_fails_fails_its_organisation_only(script_site, tmp_path):
    sync = Sync(script_site.base_url, tmp_path)
    script_site.faults.update({"script_error_next": 1})
    result = sync(*BROWSER, "-s", "RETRY_TIMES=0")  # no second try: the first failure stays
    assert result.returncode == 1
    failed = [line for line in result.error_lines() if "its script failed to build it" in line]
    assert len(failed) == 1
    organisations = {o.name for o in script_site.data.organisations}
    written = {p.split("/")[0] for p in result.files() if p.endswith(tree.UPDATE_FILE)}
    assert len(written) == len(organisations) - 1  # the other organisation is complete


def test_a_page_that_never_completes_fails_with_one_clear_line(script_site, tmp_path):
    script_site.faults.update({"script_never_next": 1})
    result = Sync(script_site.base_url, tmp_path)(*BROWSER, "-s", "FLSYNC_BROWSER_TIMEOUT=2")
    assert result.returncode == 1
    [line] = [line for line in result.error_lines() if "Page (failed)" in line]
    assert line.endswith(
        "the page did not finish building itself within 2 s (FLSYNC_BROWSER_TIMEOUT)"
    )
    assert "Traceback" not in result.output
    organisations = {o.name for o in script_site.data.organisations}
    written = {p.split("/")[0] for p in result.files() if p.endswith(tree.UPDATE_FILE)}
    assert len(written) == len(organisations) - 1  # the other organisation is complete


def test_sessions_expire_and_are_renewed_while_the_browser_is_in_use(script_site, tmp_path):
    script_site.faults.update({"expire_session_after": 12})  # ~70 requests: 5 or 6 sessions
    result = Sync(script_site.base_url, tmp_path)(*BROWSER, "-s", "FLSYNC_SIGN_IN_WAIT=0.05")
    assert result.returncode == 0, result.output
    assert_full_tree(script_site, result)
    assert script_site.stats()["by_kind"]["sign_in_post"] >= 3


PASS_SECONDS = 3.0


def test_behind_the_script_challenge_with_lapses(tmp_path):
    with FakeSite(SMALL, https=True, bot_wall=True) as site:
        # A pass of 3 s: on a busy machine flsync's next request may come more than a second
        # after the browser's visit, and a pass that lapsed by then looks like one that does
        # not hold (1.5 s failed so at a load average of 15). Each answer waits 0.15 s, so that
        # the sync still outlasts a pass on an idle machine (waiting, not CPU).
        site.faults.update(
            {
                "script_pages": True,
                "script_challenge": True,
                "challenge_pass_seconds": PASS_SECONDS,
                "latency_ms": 150,
            }
        )
        started = time.monotonic()
        result = Sync(site.base_url, tmp_path)(
            *BROWSER,
            "-s",
            f"FLSYNC_CA_BUNDLE={site.ca_file}",
            "-s",
            "FLSYNC_SIGN_IN_WAIT=0.05",
            "-s",
            "AUTOTHROTTLE_START_DELAY=0.05",
            "-s",
            "STATS_DUMP=1",
        )
        lapses = (time.monotonic() - started) / PASS_SECONDS
        assert result.returncode == 0, result.output
        assert_full_tree(site, result)
        stats = site.stats()
    assert stats["passes"] >= 2  # the pass lapsed during the sync, and was won again
    # flsync's own visits (the site's passes count those won inside rendered pages too): one
    # per lapse, however many requests met it, and one more for a lapse during a visit.
    visits = int(re.search(r"'flsync/challenge/passed': (\d+)", result.output)[1])
    assert 1 <= visits <= 2 + lapses


def test_a_pass_that_does_not_hold_stops_the_sync_with_one_error(tmp_path):
    with FakeSite(SMALL) as site:
        # The pass holds for the browser's own reload, and not for flsync's next request.
        site.faults.update({"script_challenge": True, "challenge_pass_requests": 1})
        result = Sync(site.base_url, tmp_path)(*BROWSER, "-s", "FLSYNC_SIGN_IN_WAIT=0.05")
        stats = site.stats()
    assert result.returncode == 1
    [line, _] = result.error_lines()
    assert "The browser passed the bot challenge of 127.0.0.1:" in line
    assert line.endswith(
        "but the next request was challenged again: its pass does not hold (is the browser's"
        " User-Agent or address different from flsync's?)"
    )
    assert stats["passes"] == 1  # no second visit: passing again would not help
    assert result.files() == {}


def test_without_the_browser_the_script_challenge_stops_the_sync(tmp_path):
    with FakeSite(SMALL) as site:
        site.faults.update({"script_challenge": True})
        result = Sync(site.base_url, tmp_path)()
    assert result.returncode == 1
    [line, _] = result.error_lines()
    assert "The site's bot protection refused" in line
    assert line.endswith("or FLSYNC_BROWSER=1 to pass its challenge in a real browser")
    assert result.files() == {}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/opt/no-such-browser", "FLSYNC_BROWSER_PATH=/opt/no-such-browser is not an executable"),
        ("/bin/false", "The browser /bin/false (FLSYNC_BROWSER_PATH) failed to start"),
    ],
    ids=["missing", "fails-to-start"],
)
def test_a_browser_that_cannot_run_is_exit_2(script_site, tmp_path, path, message):
    result = Sync(script_site.base_url, tmp_path)(*BROWSER, "-s", f"FLSYNC_BROWSER_PATH={path}")
    assert result.returncode == 2
    [line] = result.error_lines()
    assert message in line
    assert not [p for p in result.files() if p.endswith(".csv")]


def test_a_first_signal_ends_a_sync_in_the_browser_promptly(script_site, tmp_path):
    # Every page never finishes building itself, and the browser would wait a minute for it.
    script_site.faults.update({"script_never_next": 1000})
    sync = Sync(script_site.base_url, tmp_path)
    process = sync.start(*BROWSER, "-s", "FLSYNC_BROWSER_TIMEOUT=60")
    deadline = time.monotonic() + 60
    while script_site.stats()["by_kind"]["runs"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    result = sync.wait(process, timeout=15)  # far less than the minute a page may take
    assert result.returncode == 1, result.output
    assert "Sync FAILED (shutdown" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.rglob(tree.UPDATE_FILE))
