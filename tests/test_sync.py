"""The whole sync, end to end: `scrapy crawl futurelearn` against the imitation site."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import date

import pytest

from fakesite import LEARNER_EMAIL, LEARNER_PASSWORD, FakeSite, SiteOptions
from fakesite.control import SESSION_COOKIE_MODES
from flsync import tree
from flsync.measures.dashboard import DASHBOARD_FILE
from flsync.storage import TEMP_SUFFIX
from tests.conftest import (
    SHORT_WAITS,
    Sync,
    assert_full_tree,
    data_files,
    expected_tree,
)

SMALL = SiteOptions(organisations=1, courses=1, runs=2, rows=5, tricky=False)
# Big enough for a dozen sessions of EXPIRE_AFTER requests each (225 requests, no measures).
SESSIONS_SITE = SiteOptions(organisations=2, tricky=False)
EXPIRE_AFTER = 20
IN_FLIGHT = 8  # CONCURRENT_REQUESTS_PER_DOMAIN of the syncs whose sessions expire
UPDATE_LINE = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d\n")


@pytest.fixture
def small_site(sites):
    return sites.get(SMALL)


@pytest.fixture
def small_sync(small_site, tmp_path):
    return Sync(small_site.base_url, tmp_path)


def test_full_tree_byte_for_byte(default_sync):
    fakesite, result = default_sync.site, default_sync.result
    assert_full_tree(fakesite, result)
    for organisation in fakesite.data.organisations:
        assert UPDATE_LINE.fullmatch(result.files()[f"{organisation.name}/update.txt"])
    assert "Sync complete: 471 downloaded, 0 unchanged" in result.output
    assert " WARNING: " not in result.output  # a complete sync says nothing to worry about


def test_metadata_keeps_names_exactly_as_shown(default_sync):
    fakesite, result = default_sync.site, default_sync.result
    run = next(r for r in fakesite.data.runs if r.course_slug == "data-society-ethics")
    folder = tree.run_dir(
        "University of Exampleton", run.course_title, run.number, run.start_date, run.end_date
    )
    metadata = result.files()[f"{folder}/metadata.csv"].decode()
    title = run.course_title.replace('"', '""')
    assert metadata == (
        "uni_name,course_name,run,start_date,end_date,duration_weeks\n"
        f'University of Exampleton,"{title}",{run.number},{run.start_date},{run.end_date},'
        f"{run.duration_weeks}\n"
    )


def test_names_are_made_safe_and_readable(default_sync):
    result = default_sync.result
    folders = {path.split("/")[1] for path in data_files(result)}
    assert 'Data-Society: Ethics & "Open" Data — the “Learner’s” Café ☕ 📊' in folders
    long_title = next(f for f in folders if f.startswith("Understanding the Long-Term"))
    assert len(long_title) == 120
    assert "Institut für Données & “Tests”" in {path.split("/")[0] for path in data_files(result)}


def test_runs_not_started_have_no_folder(default_sync):
    result = default_sync.result
    course = "University of Exampleton/Foundations of Data Science/"
    runs = {
        p.removeprefix(course).split("-")[0] for p in data_files(result) if p.startswith(course)
    }
    assert runs == {str(n) for n in range(1, 21)}  # run 21 is upcoming, run 22 has no start


def test_every_runs_page_is_walked(default_sync):
    fakesite, result = default_sync.site, default_sync.result
    assert len(fakesite.data.organisations[0].runs) > 25
    pages = [path for method, path, status in default_sync.stats["log"] if "/runs" in path]
    assert "/admin/organisations/exampleton/runs?page=2" in pages
    started = [r for r in fakesite.data.organisations[0].runs if r.started_on(date.today())]
    synced = {p.rsplit("/", 1)[0] for p in data_files(result) if p.startswith("University")}
    assert len(synced) == len(started)


def pages_and_files(site: FakeSite) -> int:
    """Requests a sync with no expiry sends: the organisations page, every runs page, the
    details and dashboard of each started run, and each dataset file."""
    started = [r for r in site.data.runs if r.started_on(site.data.today)]
    listing_pages = sum(o.page_count() for o in site.data.organisations)
    datasets = len(expected_tree(site)) - len(started)  # less one metadata.csv per run
    return 1 + listing_pages + 2 * len(started) + datasets


@pytest.mark.parametrize("expiry_cookie", [True, False], ids=["new-cookie", "same-cookie"])
@pytest.mark.parametrize("expiry_answer", ["redirect", "html"])
@pytest.mark.parametrize("session_cookie", SESSION_COOKIE_MODES)
def test_sessions_expiring_every_few_dozen_requests(
    tmp_path, session_cookie, expiry_answer, expiry_cookie
):
    with FakeSite(SESSIONS_SITE) as site:
        site.faults.update(
            {
                "expire_session_after": EXPIRE_AFTER,
                "session_cookie": session_cookie,
                "expiry_answer": expiry_answer,
                "expiry_cookie": expiry_cookie,
            }
        )
        result = Sync(site.base_url, tmp_path)(
            "-s",
            "FLSYNC_SIGN_IN_WAIT=0.05",
            "-s",
            f"CONCURRENT_REQUESTS_PER_DOMAIN={IN_FLIGHT}",
            "-s",
            "FLSYNC_MEASURES=False",  # the files are what this is about
        )
        assert result.returncode == 0, result.output
        assert_full_tree(site, result)
        stats = site.stats()
        needed = pages_and_files(site)
    sign_ins = stats["by_kind"]["sign_in_post"]
    assert needed > 11 * EXPIRE_AFTER
    assert sign_ins >= 10  # one per EXPIRE_AFTER requests: the session expired many times
    # Each expiry costs a sign-in and the requests in flight when it came, no more.
    assert stats["requests"] <= needed + 2 * sign_ins + IN_FLIGHT * sign_ins
    assert stats["requests"] < 1.5 * needed


def test_a_site_that_never_keeps_a_session_stops_the_sync(fakesite, sync):
    fakesite.faults.update({"expire_session_after": 0})
    result = sync()
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert line.endswith(
        "Signed in as demo@example.org, but the site answered the next request as signed out:"
        " signing in again would not help (check that the account can use the admin pages"
        " in a browser)"
    )
    assert "Sync FAILED (flsync_signin_unusable" in summary
    assert result.files() == {}
    assert fakesite.stats()["requests"] <= 4  # the form, the sign-in, one admin page


def test_sign_ins_are_capped(small_site, small_sync):
    fakesite, sync = small_site, small_sync
    fakesite.faults.update({"expire_session_after": 5})  # 30 requests: 6 sign-ins needed
    result = sync("-s", "FLSYNC_SIGN_IN_MAX=3", "-s", "FLSYNC_SIGN_IN_WAIT=0")
    assert result.returncode == 1
    assert result.error_lines()[0].endswith(
        "Signed in as demo@example.org 3 times in this sync (FLSYNC_SIGN_IN_MAX): the site"
        " keeps ending the session; stopping"
    )
    assert fakesite.stats()["by_kind"]["sign_in_post"] == 3
    assert not (sync.data_dir / "University of Exampleton" / tree.UPDATE_FILE).exists()


def test_a_request_that_keeps_meeting_an_expired_session_fails(small_site, small_sync):
    fakesite, sync = small_site, small_sync
    # This one file always answers as for an expired session; the rest of the sync is fine.
    only = r"^/admin/courses/sustainable-fashion/1/stats-dashboard/data/comments$"
    fakesite.faults.update({"fail_with": 302, "fail_next": 50, "fail_path": only})
    result = sync("-s", "FLSYNC_SESSION_RETRIES=1")
    assert result.returncode == 1, result.output
    [line, summary] = [line for line in result.error_lines() if "] ERROR: " in line]
    assert "Dataset (failed): University of Exampleton/Sustainable Fashion/1-" in line
    assert line.endswith("answered as signed out 2 times (FLSYNC_SESSION_RETRIES)")
    assert "Sync FAILED" in summary
    assert "Traceback" not in result.output
    assert fakesite.stats()["by_kind"]["sign_in_post"] == 2  # the first, and one more


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_first_signal_ends_the_sync_promptly_even_while_retrying(fakesite, sync, signum):
    # Every comments file answers 503 asking for a minute's wait, again and again.
    fakesite.faults.update(
        {
            "fail_with": 503,
            "fail_next": 10_000,
            "fail_path": r"/data/comments$",
            "retry_after": "60",
        }
    )
    process = sync.start()
    deadline = time.monotonic() + 60
    while fakesite.stats()["by_status"].get("503", 0) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    result = sync.wait(process, timeout=15)  # far less than the 60 s the site asked for
    assert result.returncode == 1, result.output
    assert "Closing spider (shutdown)" in result.output
    assert "Sync FAILED (shutdown" in result.output
    assert "Traceback" not in result.output
    assert not list(sync.data_dir.rglob(f"*{TEMP_SUFFIX}"))
    assert not list(sync.data_dir.rglob(tree.UPDATE_FILE))
    state = json.loads((sync.data_dir / "University of Exampleton" / tree.STATE_FILE).read_text())
    assert any(path.endswith("/enrolments.csv") for path in state["files"])  # what was fetched


def test_a_request_past_its_retries_fails_in_one_line(small_site, small_sync):
    fakesite, sync = small_site, small_sync
    only = r"^/admin/courses/sustainable-fashion/1/stats-dashboard/data/comments$"
    fakesite.faults.update({"fail_with": 503, "fail_next": 100, "fail_path": only})
    result = sync(*SHORT_WAITS)
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert line.endswith("/data/comments: HTTP 503 (after 5 tries)")
    assert "Sync FAILED (finished; datasets/failed: 1, organisations/incomplete: 1)" in summary
    assert "Gave up retrying" not in result.output
    assert fakesite.stats()["by_status"]["503"] == 5  # RETRY_TIMES = 4


def test_a_redirect_loop_fails_its_page_in_one_line(small_site, small_sync):
    fakesite, sync = small_site, small_sync
    # A run's details page redirects to itself: Scrapy's duplicate filter would drop the
    # second visit without a word, and the sync would call itself complete without the run.
    only = r"^/admin/courses/sustainable-fashion/1$"
    fakesite.faults.update({"fail_with": 307, "fail_next": 100, "fail_path": only})
    result = sync(*SHORT_WAITS)
    assert result.returncode == 1
    [line, summary] = result.error_lines()
    assert line.endswith("/admin/courses/sustainable-fashion/1: max redirections reached")
    assert "Sync FAILED (finished; pages/failed: 1, organisations/incomplete: 1)" in summary
    assert fakesite.stats()["by_status"]["307"] == 6  # REDIRECT_MAX_TIMES = 5
    assert not (sync.data_dir / "University of Exampleton" / tree.UPDATE_FILE).exists()


def test_retries_after_503_and_429(small_site, tmp_path):
    small_site.faults.update({"fail_with": 503, "fail_next": 3, "retry_after": "1"})
    result = Sync(small_site.base_url, tmp_path)(*SHORT_WAITS)
    assert result.returncode == 0, result.output
    assert small_site.stats()["by_status"]["503"] == 3
    small_site.faults.update({"fail_with": 429, "fail_next": 2, "retry_after": None})
    result = Sync(small_site.base_url, tmp_path)("--full", *SHORT_WAITS)
    assert result.returncode == 0, result.output
    assert small_site.stats()["by_status"]["429"] == 2


def test_wrong_password_writes_nothing(sync):
    result = sync(password="not-the-password")
    assert result.returncode == 1
    assert result.error_lines()[0].endswith(
        "Sign-in refused for demo@example.org: Invalid email or password."
    )
    assert result.files() == {}
    assert "not-the-password" not in result.output


def test_account_without_admin_rights_writes_nothing(sync):
    result = sync(username=LEARNER_EMAIL, password=LEARNER_PASSWORD)
    assert result.returncode == 1
    assert "has no admin rights" in result.error_lines()[0]
    assert result.files() == {}


def test_cut_off_download_keeps_the_good_file(small_site, tmp_path):
    sync = Sync(small_site.base_url, tmp_path)
    first = sync()
    assert first.returncode == 0, first.output
    before = first.files()
    small_site.faults.update({"generation": 2, "truncate_next": 10_000})
    cut = sync(*SHORT_WAITS)
    assert cut.returncode == 1
    assert "datasets/failed" in cut.error_lines()[-1]
    # Every file as it was, but the state, the report and the dashboard (which show the sync
    # failed).
    ours = (tree.STATE_FILE, tree.REPORT_FILE, DASHBOARD_FILE)
    unchanged = {p: c for p, c in cut.files().items() if not p.endswith(ours)}
    assert unchanged == {p: c for p, c in before.items() if not p.endswith(ours)}
    assert not list(tmp_path.rglob("*.part"))
    small_site.faults.update({"truncate_next": 0})
    again = sync()  # not --full: the runs that failed are fetched again all the same
    assert again.returncode == 0, again.output
    run = small_site.data.runs[0]
    folder = tree.run_dir(
        small_site.data.organisations[0].name,
        run.course_title,
        run.number,
        run.start_date,
        run.end_date,
    )
    assert again.files()[f"{folder}/comments.csv"] == small_site.dataset_bytes(
        run.course_slug, run.number, "comments", generation=2
    )


def test_no_credential_in_the_log(small_site, small_sync):
    fakesite, sync = small_site, small_sync
    fakesite.faults.update({"expire_session_after": 10})  # 30 requests: 3 sign-ins
    result = sync(
        "-s",
        "LOG_LEVEL=DEBUG",
        "-s",
        "FLSYNC_SIGN_IN_WAIT=0.05",
        password=None,
        env={"FLSYNC_PASSWORD": "demo-password"},
    )
    assert result.returncode == 0, result.output
    assert "Session expired: signing in again" in result.output
    assert "demo-password" not in result.output
    assert "authenticity_token" not in result.output
    assert "_future_learn_session=" not in result.output


def test_no_setting_turns_on_a_remote_console(small_sync):
    sync = small_sync
    result = sync("-s", "TELNETCONSOLE_ENABLED=True", "-s", "REMOTE_CONTROL_ENABLED=True")
    assert result.returncode == 0, result.output
    assert "Enabled extensions" in result.output
    assert "TelnetConsole" not in result.output
    assert "RemoteControl" not in result.output


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"username": ""}, "has no 'username'"),
        ({"organisations": "exampleton"}, "'organisations' in config file"),
        ({"data_dir": "unmounted/data"}, "its parent folder"),
        ({"data_dir": "config.json/data"}, "config.json is not a folder"),
        ({"data_dir": "config.json"}, "is a file, not a folder"),
    ],
)
def test_bad_config_stops_before_any_request(fakesite, sync, config, message):
    result = sync(**config)
    assert result.returncode == 2
    [line] = result.error_lines()
    assert message in line
    assert "Traceback" not in result.output
    assert fakesite.stats()["requests"] == 0
    assert not sync.data_dir.exists()


def test_missing_config_file(tmp_path):
    result = Sync("http://127.0.0.1:9", tmp_path)("-s", f"FLSYNC_CONFIG={tmp_path}/nope.json")
    assert result.returncode == 2
    assert f"config file {tmp_path}/nope.json not found" in result.error_lines()[0]


def test_only_the_configured_organisations(fakesite, sync):
    result = sync(organisations=["tricky-institute"])
    assert result.returncode == 0, result.output
    assert {path.split("/")[0] for path in data_files(result)} == {"Institut für Données & “Tests”"}


def test_unknown_organisation_is_a_failure(sync):
    result = sync(organisations=["tricky-institute", "no-such-org"])
    assert result.returncode == 1
    assert "Organisation no-such-org is not administered by demo@example.org" in result.output


def test_only_the_configured_datasets(sync):
    result = sync(datasets=["comments", "country-subdivisions"])
    assert result.returncode == 0, result.output
    names = {path.rsplit("/", 1)[1] for path in data_files(result)}
    assert names == {"comments.csv", "country-subdivisions.csv", "metadata.csv"}


def test_empty_listing_where_runs_were_is_a_layout_change(tmp_path):
    with FakeSite(SMALL) as site:
        assert Sync(site.base_url, tmp_path)().returncode == 0
    with FakeSite(SiteOptions(organisations=1, courses=0, tricky=False)) as emptied:
        result = Sync(emptied.base_url, tmp_path)()
    assert result.returncode == 1
    assert "page layout has probably changed" in result.error_lines()[0]


def test_unknown_datasets_are_fetched_too(default_sync):
    result = default_sync.result
    assert any(p.endswith("/learner-outcomes-survey-responses.csv") for p in result.files())
