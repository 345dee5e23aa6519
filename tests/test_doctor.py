"""``scrapy doctor`` against the imitation site: as it is, and with its markup changed the ways
FutureLearn has changed it."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fakesite import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LEARNER_EMAIL,
    LEARNER_PASSWORD,
    FakeSite,
    SiteOptions,
)
from tests.commands import run_in_process
from tests.conftest import NO_START_DELAY, SHORT_WAITS

PARTS = [
    "sign-in",
    "organisations",
    "runs listing",
    "later runs page",
    "run details",
    "stats dashboard",
    "dataset header",
]
ALL_OK = dict.fromkeys(PARTS, "OK")


@dataclass
class Doctor:
    returncode: int
    stdout: str
    stderr: str  # the log

    def statuses(self) -> dict[str, str]:
        """Part -> status, read from the printed lines."""
        found = {}
        for line in self.stdout.splitlines():
            status = "NOT CHECKED" if line.startswith("NOT CHECKED") else line.split()[0]
            part = line.removeprefix(status).strip().split(":")[0]
            found[part] = status
        return found

    def line(self, part: str) -> str:
        [line] = [line for line in self.stdout.splitlines() if f"  {part}: " in line]
        return line

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "] ERROR: " in line]


def doctor(
    base_url: str,
    workdir: Path,
    *args: str,
    username: str = ADMIN_EMAIL,
    password: str = ADMIN_PASSWORD,
    **config: Any,
) -> Doctor:
    """Run `scrapy doctor` (config in workdir/config.json)."""
    document = {"username": username, "password": password, "base_url": base_url, **config}
    (workdir / "config.json").write_text(json.dumps(document))
    result = run_in_process(["doctor", *NO_START_DELAY, *args], workdir)
    return Doctor(result.returncode, result.stdout, result.stderr)


def test_the_site_as_it_is_is_all_ok(fakesite, tmp_path):
    result = doctor(fakesite.base_url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.statuses() == ALL_OK
    base = fakesite.base_url
    assert result.stdout.splitlines() == [
        f"OK      sign-in: signed in as {ADMIN_EMAIL} ({base}/sign-in)",
        f"OK      organisations: 2 organisations: exampleton, tricky-institute"
        f" ({base}/admin/organisations)",
        f"OK      runs listing: 25 runs, next page link, dates parsed"
        f" ({base}/admin/organisations/exampleton/runs)",
        f"OK      later runs page: 11 runs, no next page link, dates parsed"
        f" ({base}/admin/organisations/exampleton/runs?page=2)",
        result.line("run details"),
        "OK      stats dashboard: 11 datasets"
        f" ({base}/admin/courses/climate-now/1/stats-dashboard)",
        "OK      dataset header: enrolments: 15 columns, the current version"
        f" ({base}/admin/courses/climate-now/1/stats-dashboard/data/enrolments)",
    ]
    assert result.line("run details").startswith("OK      run details: start ")
    # A few requests, one dataset's, and nothing written (no data folder, no lock).
    stats = fakesite.stats()
    assert stats["requests"] <= 12
    assert stats["by_kind"]["dataset"] == 1
    assert stats["by_kind"]["subdivisions"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_no_dataset_body_is_fetched_whole(tmp_path):
    # One run whose step_activity is 64 MiB: the doctor reads its header and no more.
    options = SiteOptions(organisations=1, courses=1, runs=1, tricky=False, big_file_mb=64)
    with FakeSite(options) as site:
        result = doctor(site.base_url, tmp_path, datasets=["step_activity"])
        stats = site.stats()
    assert result.returncode == 0, result.stderr
    assert result.line("dataset header").startswith(
        "OK      dataset header: step_activity: 6 columns, the current version"
    )
    assert result.statuses()["later runs page"] == "NOT CHECKED"
    assert result.line("later runs page").endswith("the organisation has one page of runs")
    assert stats["by_kind"]["dataset"] == 1
    assert stats["dataset_bytes"] < 16 * 1024 * 1024  # of 64 MiB, left unsent


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "organisations_class",
            (
                ["organisations"],
                PARTS[2:],
                "/admin/organisations: no organisations (ul.m-organisation-list li a matched"
                " nothing)",
            ),
        ),
        (
            "runs_class",
            (
                ["runs listing", "later runs page"],
                PARTS[4:],
                "/admin/organisations/exampleton/runs: no runs (table.m-table--runs tr.m-run"
                " matched nothing)",
            ),
        ),
        (
            "date_cell",
            (
                ["runs listing", "later runs page"],
                [],
                "/admin/organisations/exampleton/runs: 25 runs, but no start date in 24 of them"
                " (td.m-run__start[data-order] missing or not YYYY-MM-DD); a sync takes those from"
                " the runs' details pages",
            ),
        ),
        (
            "datasets_class",
            (
                ["stats dashboard"],
                [],
                "/admin/courses/climate-now/1/stats-dashboard: no dataset links (ul.m-datasets"
                " a.m-datasets__link matched nothing); 11 links found by their"
                " /stats-dashboard/data/ path",
            ),
        ),
    ],
)
def test_a_changed_page_fails_its_part(fakesite, tmp_path, change, expected):
    failed, not_checked, detail = expected
    fakesite.faults.update({"markup_change": change})
    result = doctor(fakesite.base_url, tmp_path)
    assert result.returncode == 1
    assert result.statuses() == {
        part: "FAILED" if part in failed else "NOT CHECKED" if part in not_checked else "OK"
        for part in PARTS
    }
    assert result.line(failed[0]) == f"FAILED  {failed[0]}: {fakesite.base_url}{detail}"
    for part in not_checked:
        assert result.line(part).startswith(f"NOT CHECKED  {part}: needs the ")


def test_a_new_column_fails_the_header_part(fakesite, tmp_path):
    fakesite.faults.update({"extra_column": "enrolments"})
    result = doctor(fakesite.base_url, tmp_path)
    assert result.returncode == 1
    assert result.statuses() == {**ALL_OK, "dataset header": "FAILED"}
    assert result.line("dataset header").endswith(
        "/data/enrolments: enrolments: the header is none of its known versions:"
        " added sentiment; gone none"
    )


def test_json_says_the_same(fakesite, tmp_path):
    fakesite.faults.update({"markup_change": "datasets_class"})
    text = doctor(fakesite.base_url, tmp_path)
    result = doctor(fakesite.base_url, tmp_path, "--json")
    assert result.returncode == 1
    checks = json.loads(result.stdout)
    assert [c["part"] for c in checks] == PARTS
    assert {c["part"]: c["status"] for c in checks} == text.statuses()
    [dashboard] = [c for c in checks if c["part"] == "stats dashboard"]
    assert dashboard["url"] == fakesite.url("/admin/courses/climate-now/1/stats-dashboard")
    assert (
        text.line("stats dashboard")
        == f"FAILED  stats dashboard: {dashboard['url']}: " + (dashboard["detail"])
    )


def test_a_refused_sign_in_is_the_syncs_one_line(fakesite, tmp_path):
    result = doctor(fakesite.base_url, tmp_path, password="not-the-password")
    assert result.returncode == 1
    [error] = result.error_lines()
    assert error.endswith("Sign-in refused for demo@example.org: Invalid email or password.")
    assert result.line("sign-in") == (
        f"FAILED  sign-in: {fakesite.base_url}/sign-in: Sign-in refused for demo@example.org:"
        " Invalid email or password."
    )
    assert result.statuses() == {"sign-in": "FAILED", **dict.fromkeys(PARTS[1:], "NOT CHECKED")}
    assert "not-the-password" not in result.stdout + result.stderr


def test_an_account_without_admin_rights(fakesite, tmp_path):
    result = doctor(fakesite.base_url, tmp_path, username=LEARNER_EMAIL, password=LEARNER_PASSWORD)
    assert result.returncode == 1
    [error] = result.error_lines()
    assert error.endswith(
        f"Signed in as {LEARNER_EMAIL}, but the account has no admin rights (403 on"
        " /admin/organisations): use a partner account that administers the organisations"
    )
    assert result.statuses() == {
        "sign-in": "OK",
        "organisations": "FAILED",
        **dict.fromkeys(PARTS[2:], "NOT CHECKED"),
    }


def test_a_bad_config_is_the_crawls_one_line(fakesite, tmp_path):
    result = doctor(fakesite.base_url, tmp_path, organisations="exampleton")
    assert result.returncode == 2
    [error] = result.error_lines()
    assert error.endswith(
        "'organisations' in config file config.json must be a list of names ([] means all)"
    )
    assert result.stdout == ""
    assert fakesite.stats()["requests"] == 0


def test_in_the_browser_pages_built_by_script_are_all_ok(fakesite, tmp_path):
    fakesite.faults.update({"script_pages": True})
    result = doctor(fakesite.base_url, tmp_path, "-s", "FLSYNC_BROWSER=1")
    assert result.returncode == 0, result.stderr
    assert result.statuses() == ALL_OK
    assert fakesite.stats()["by_kind"]["api"] == 3  # two runs pages and a dashboard, rendered


def test_an_unreachable_site_is_the_syncs_one_line(tmp_path):
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{free.getsockname()[1]}"
    result = doctor(base_url, tmp_path, *SHORT_WAITS)
    assert result.returncode == 1
    [error] = result.error_lines()
    reason = f"Sign-in as demo@example.org failed: Failed to connect to {base_url[7:]}"
    assert reason in error
    assert error.endswith("Could not connect to server")
    assert result.line("sign-in").startswith(f"FAILED  sign-in: {base_url}/sign-in: {reason}")
    assert result.statuses() == {"sign-in": "FAILED", **dict.fromkeys(PARTS[1:], "NOT CHECKED")}


def test_a_page_flsync_cannot_read_is_said_as_the_sync_says_it(fakesite, tmp_path):
    fakesite.faults.update({"date_form": "unreadable"})
    result = doctor(fakesite.base_url, tmp_path)
    assert result.returncode == 1
    assert result.statuses() == {**ALL_OK, "run details": "FAILED"}
    line = result.line("run details")
    assert line.startswith(f"FAILED  run details: {fakesite.base_url}/admin/courses/")
    assert re.search(r": dl\.m-metadata dt/dd 'Start date': not a date: '\d\d/\d\d/\d{4}'$", line)
