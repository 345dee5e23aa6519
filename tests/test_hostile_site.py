"""A broken or hostile site cannot fill the disk or memory, hang the sync, or read the mirror
and the password (issue 19): syncs against the imitation site's gzip bombs, trickling answers
and a huge dashboard, and the modes of what flsync writes and reads.

Each sync here ran once complete before the site turned: it must end on its own, with one
line naming what was refused and the setting, exit status 1, no traceback, every file stored
before kept as it was, no temporary file left, and its peak memory bounded.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import sys
import threading
from pathlib import Path

import pytest

from fakesite import ADMIN_EMAIL, ADMIN_PASSWORD, FakeSite, Run, SiteOptions
from flsync.bodies import FileBody
from flsync.config import load_config
from flsync.storage.local import LocalStore
from tests.conftest import SHORT_WAITS, Sync, SyncResult, assert_full_tree, data_files

SMALL = SiteOptions(organisations=1, courses=1, runs=2, rows=5, tricky=False)
# Peak memory of a sync of SMALL is about 100 MB (benchmarks: 104 MB for 40 runs); one
# dashboard or dataset held whole, as before the bounds, took 1 GB and more.
PEAK_RSS_MB = 250
# A sync that does not end by then is killed, and the test fails.
SYNC_SECONDS = 120
LAUNCHER = Path(__file__).with_name("peak_rss.py")
# The trickle tests wait out DOWNLOAD_TIMEOUT (a dataset's: under the minimum rate for that
# long): 1 s, curl's shortest window for the rate (whole seconds). Every other request has it
# too; a try that misses it on a busy machine is retried (RETRY_TIMES), not failed.
TIMEOUT_1S = ("-s", "DOWNLOAD_TIMEOUT=1")
# The tests that wait out a timeout on every try make two tries, not five.
TWO_TRIES = ("-s", "RETRY_TIMES=1")


# The site of this module's `fakesite` and `sync` (tests/conftest.py).
SITE = SMALL


@pytest.fixture
def synced(fakesite, sync) -> dict[str, bytes]:
    """The site synced once, completely: the data files it stored."""
    first = sync()
    assert first.returncode == 0, first.output
    assert_full_tree(fakesite, first)
    return data_files(first)


def measured(sync: Sync, *args: str) -> tuple[SyncResult, int]:
    """Sync to the end: its result, and its peak memory (RSS, MB) as tests/peak_rss.py
    measures it. A sync that has not ended within SYNC_SECONDS is stopped, and fails."""
    report = sync.workdir / "peak-rss"
    launcher = (sys.executable, str(LAUNCHER), str(report))
    process = Sync(sync.base_url, sync.workdir, launcher=launcher).start(*args)
    stopped = threading.Event()
    watchdog = threading.Timer(SYNC_SECONDS, lambda: (stopped.set(), process.terminate()))
    watchdog.start()
    try:
        result = sync.wait(process)
    finally:
        watchdog.cancel()
    assert not stopped.is_set(), f"the sync did not end within {SYNC_SECONDS} s:\n{result.output}"
    return result, int(report.read_text()) // 1024


def assert_refused(result: SyncResult, peak_mb: int, before: dict[str, bytes], *lines: str) -> None:
    """Exit 1 with ``lines`` the errors before the summary (one per thing refused), no
    traceback, every file stored before kept, no temporary file left, memory bounded."""
    assert result.returncode == 1, result.output
    *errors, summary = result.error_lines()
    assert sorted(error.split("] ERROR: ", 1)[1] for error in errors) == sorted(lines), (
        result.output
    )
    assert "Sync FAILED (finished; " in summary
    for line in lines:  # said once, not again by another line (Scrapy's "Dropped: ...")
        reason = line.split(": ", 2)[-1]
        assert result.output.count(reason) == sum(other.endswith(reason) for other in lines)
    assert "Traceback" not in result.output
    assert data_files(result) == before
    assert not list(result.data_dir.rglob("*.part"))
    assert peak_mb < PEAK_RSS_MB


def started_runs(fakesite: FakeSite) -> list[Run]:
    return [run for run in fakesite.data.runs if run.started_on(fakesite.data.today)]


def run_path(run: Run) -> str:
    return f"/admin/courses/{run.course_slug}/{run.number}"


def requests_to(fakesite: FakeSite, path: str) -> int:
    return sum(logged == path for _, logged, _ in fakesite.stats()["log"])


def dataset_line(fakesite: FakeSite, stored: dict[str, bytes], run: Run, dataset: str) -> str:
    """The start of the one line for that dataset of that run, failed: up to its reason."""
    name = dataset.replace("_", "-") + ".csv"
    folder = f"{run.number}-{run.start_date}-{run.end_date}"
    [path] = [path for path in stored if path.endswith(f"/{folder}/{name}")]
    url = fakesite.url(f"{run_path(run)}/stats-dashboard/data/{dataset}")
    return f"Dataset (failed): {path} from {url}: "


# Bombs and huge pages: refused once, at their bound


def test_a_gzip_bombed_dataset_is_refused_once_and_the_stored_copy_kept(fakesite, sync, synced):
    run = started_runs(fakesite)[0]
    path = f"{run_path(run)}/stats-dashboard/data/enrolments"
    fakesite.faults.update({"bomb_path": f"^{path}$"})  # 2.1 MB of gzip, 2 GiB decoded
    fakesite.reset_stats()
    result, peak_mb = measured(sync, "--full", *SHORT_WAITS)

    [line] = [line for line in result.error_lines() if "Dataset (failed)" in line]
    refused_after = int(re.findall(r"refused after (\d+) bytes", line)[0])
    assert refused_after < 512 * 1024 * 1024  # of 2 GiB
    assert_refused(
        result,
        peak_mb,
        synced,
        dataset_line(fakesite, synced, run, "enrolments")
        + "decodes to more than FLSYNC_DATASET_MAX_RATIO (100) times the bytes received (a"
        f" compression bomb?): not stored, refused after {refused_after} bytes (raise"
        " FLSYNC_DATASET_MAX_RATIO if such a file is genuine)",
    )
    assert requests_to(fakesite, path) == 1  # not tried again: the same bomb would come


def test_a_gzip_bombed_page_is_refused_once(fakesite, sync, synced):
    dashboard = f"{run_path(started_runs(fakesite)[0])}/stats-dashboard"
    fakesite.faults.update({"bomb_path": f"^{dashboard}$"})
    fakesite.reset_stats()
    result, peak_mb = measured(sync, "--full", *SHORT_WAITS)

    assert_refused(result, peak_mb, synced, too_large(fakesite, dashboard))
    assert requests_to(fakesite, dashboard) == 1


def test_a_huge_dashboard_is_refused_once(fakesite, sync, synced):
    fakesite.faults.update({"dashboard_links": 200_000})  # every dashboard: 25 MB of links
    fakesite.reset_stats()
    result, peak_mb = measured(sync, "--full", *SHORT_WAITS)

    dashboards = sorted(f"{run_path(run)}/stats-dashboard" for run in started_runs(fakesite))
    lines = sorted(too_large(fakesite, dashboard) for dashboard in dashboards)
    assert_refused(result, peak_mb, synced, *lines)
    assert [requests_to(fakesite, dashboard) for dashboard in dashboards] == [1] * len(dashboards)


def too_large(fakesite: FakeSite, path: str) -> str:
    return (
        f"Page (failed): {fakesite.url(path)}: the answer is larger than DOWNLOAD_MAXSIZE"
        " (4194304 bytes): not read further (raise DOWNLOAD_MAXSIZE if such a page is genuine)"
    )


# Trickles: bounded in time, and the lock goes with the sync


def test_a_trickling_page_fails_at_download_timeout_and_the_next_sync_runs(fakesite, sync, synced):
    dashboard = f"{run_path(started_runs(fakesite)[0])}/stats-dashboard"
    fakesite.faults.update({"trickle_path": f"^{dashboard}$", "trickle_rate": 12})
    # Every try waits out DOWNLOAD_TIMEOUT: 1 s, the shortest whole one.
    result, peak_mb = measured(sync, "--full", *TIMEOUT_1S, *TWO_TRIES, *SHORT_WAITS)

    [line] = [line.split("] ERROR: ", 1)[1] for line in result.error_lines()[:-1]]
    assert re.fullmatch(
        rf"Page \(failed\): {re.escape(fakesite.url(dashboard))}: too slow: not complete within"
        r" DOWNLOAD_TIMEOUT \(1 s\), \d+ bytes in \(after 2 tries\)",
        line,
    )
    assert_refused(result, peak_mb, synced, line)
    # It ended, and its lock with it: the next sync takes the organisation as usual.
    fakesite.faults.update({"trickle_path": None})
    again = sync("--full")
    assert again.returncode == 0, again.output
    assert_full_tree(fakesite, again)


def test_a_dataset_under_the_minimum_rate_fails(fakesite, sync, synced):
    run = started_runs(fakesite)[0]
    path = f"{run_path(run)}/stats-dashboard/data/comments"
    # No 304s: every file is sent again (and found unchanged), that one at 12 bytes/s.
    fakesite.faults.update({"trickle_path": f"^{path}$", "trickle_rate": 12, "validators": False})
    result, peak_mb = measured(sync, "--full", *TIMEOUT_1S, *TWO_TRIES, *SHORT_WAITS)

    [line] = [line.split("] ERROR: ", 1)[1] for line in result.error_lines()[:-1]]
    start = dataset_line(fakesite, synced, run, "comments")
    assert line.startswith(start)
    assert re.fullmatch(
        r"too slow: under FLSYNC_DATASET_MIN_RATE \(1024 bytes/s\) for DOWNLOAD_TIMEOUT"
        r" \(1 s\) in a row, \d+ bytes in",
        line.removeprefix(start),
    )
    assert_refused(result, peak_mb, synced, line)


def test_a_dataset_at_a_steady_rate_may_take_longer_than_download_timeout(fakesite, sync, synced):
    run = started_runs(fakesite)[0]
    path = f"{run_path(run)}/stats-dashboard/data/comments"
    fakesite.faults.update({"generation": 2})  # every file changed: comments is sent whole
    size = fakesite.dataset_file(run.course_slug, run.number, "comments").size
    # About 2 s for the file, twice DOWNLOAD_TIMEOUT, and always 8 times the minimum rate.
    fakesite.faults.update({"trickle_path": f"^{path}$", "trickle_rate": size / 2})
    result = sync("--full", *TIMEOUT_1S, "-s", f"FLSYNC_DATASET_MIN_RATE={size // 16}")
    assert result.returncode == 0, result.output
    assert_full_tree(fakesite, result)


# Modes: the mirror keeps the user's umask; a readable password is warned about


def _modes_written_under(umask: int, folder: Path) -> dict[str, int]:
    """The modes of what the local store writes (a dataset, as downloads write it, and a
    small file) in a forked child whose umask is ``umask`` (the umask is the process's)."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's report goes through the pipe
        try:
            os.close(reader)
            os.umask(umask)
            store = LocalStore(str(folder / "data"))
            body = FileBody(store.temp_path("Org/Course/1/enrolments.csv"))
            body.write(b"learner_id\n1\n")
            body.finish()
            store.persist_local_file("Org/Course/1/enrolments.csv", body.path)
            store.persist_file("Org/Course/1/metadata.csv", io.BytesIO(b"uni_name\n"))
            modes = {
                path: stat.S_IMODE(os.stat(folder / "data" / path).st_mode)
                for path in ("", "Org", "Org/Course/1", "Org/Course/1/enrolments.csv",
                             "Org/Course/1/metadata.csv")
            }  # fmt: skip
            os.write(writer, json.dumps(modes).encode())
        finally:
            os._exit(0)  # never back into pytest
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        report = pipe.read()
    os.waitpid(child, 0)
    return json.loads(report)


@pytest.mark.parametrize(
    ("umask", "folder", "file"), [(0o077, 0o700, 0o600), (0o022, 0o755, 0o644)]
)
def test_the_mirror_keeps_the_umask(tmp_path, umask, folder, file):
    modes = _modes_written_under(umask, tmp_path)
    assert modes == {
        "": folder,
        "Org": folder,
        "Org/Course/1": folder,
        "Org/Course/1/enrolments.csv": file,
        "Org/Course/1/metadata.csv": file,
    }


def _config(tmp_path: Path, mode: int, **document: str) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"username": ADMIN_EMAIL, **document}))
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_password_others_may_read_is_warned_about(tmp_path, caplog, mode):
    path = _config(tmp_path, mode, password="s3cret")
    load_config(path, {})
    assert caplog.record_tuples == [
        (
            "flsync.config",
            logging.WARNING,
            f"config file {path} holds a password and can be read or changed by others than its"
            f" owner (mode {mode:04o}): chmod 600 {path} (or leave the password out of it and set"
            " FLSYNC_PASSWORD)",
        )
    ]
    assert "s3cret" not in caplog.text


def test_no_warning_for_a_private_file_or_a_password_from_the_environment(tmp_path, caplog):
    load_config(_config(tmp_path, 0o600, password="s3cret"), {})
    load_config(_config(tmp_path, 0o400, password="s3cret"), {})
    load_config(_config(tmp_path, 0o644), {"FLSYNC_PASSWORD": "s3cret"})
    assert caplog.record_tuples == []
    # A password in the file is there to be read, whatever the environment says.
    load_config(_config(tmp_path, 0o644, password="old"), {"FLSYNC_PASSWORD": "s3cret"})
    assert len(caplog.records) == 1


def test_a_sync_warns_once_about_a_readable_password(fakesite, sync, tmp_path):
    config = tmp_path / "elsewhere" / "config.json"
    config.parent.mkdir()
    config.write_text(
        json.dumps(
            {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "base_url": fakesite.base_url,
             "data_dir": str(sync.data_dir)}
        )
    )  # fmt: skip
    config.chmod(0o644)
    result = sync(env={"FLSYNC_CONFIG": str(config)})
    assert result.returncode == 0, result.output
    warnings = [line for line in result.output.splitlines() if "] WARNING: " in line]
    assert [line.split("] WARNING: ", 1)[1] for line in warnings] == [
        f"config file {config} holds a password and can be read or changed by others than its"
        f" owner (mode 0644): chmod 600 {config} (or leave the password out of it and set"
        " FLSYNC_PASSWORD)"
    ]
