"""flsync on a real Scrapyd: deployed with `scrapyd-deploy`, scheduled through Scrapyd's API.

One Scrapyd for the module, on 127.0.0.1, in a temporary folder of its own (its scrapyd.conf,
eggs, logs, items, databases), started as a Scrapyd host would be: the config file's path
(``FLSYNC_CONFIG``) and the password (``FLSYNC_PASSWORD``) in its environment, the config file
without the password. The project is deployed from this checkout by the real `scrapyd-deploy`
(to a `[deploy:test]` target given in a user-level scrapy.cfg, so the checkout's own is used
as it is); Scrapyd's jobs can import flsync from that egg only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fakesite import ADMIN_EMAIL, ADMIN_PASSWORD, FakeSite, SiteOptions
from flsync.storage import LocalStore
from tests.commands import REPO
from tests.conftest import Sync, SyncResult, assert_full_tree

# Two organisations, small: every job here is a whole sync in a process of its own. The
# edge-case courses and runs (tricky) are the in-process syncs' to prove; what Scrapyd adds
# (the egg, its environment, its logs and feeds, its processes) does not depend on them.
OPTIONS = SiteOptions(organisations=2, courses=1, runs=2, rows=5, tricky=False)
JOB_TIMEOUT = 120.0
BIN = Path(sys.executable).parent


@dataclass
class Scrapyd:
    url: str
    home: Path  # its working directory: scrapyd.conf, eggs/, logs/, items/, dbs/
    output: Path  # what it printed (its own log)
    config: Path  # FLSYNC_CONFIG in its environment

    def get(self, endpoint: str, **params: str) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{endpoint}{query}", timeout=30) as answer:
            return json.load(answer)

    def page(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as answer:
            return str(answer.read().decode())

    def schedule(self, *settings: str, **args: str) -> str:
        """Schedule `futurelearn` (``settings``: "NAME=VALUE"; ``args``: spider arguments)."""
        fields = [("project", "flsync"), ("spider", "futurelearn")]
        fields += [("setting", s) for s in settings] + list(args.items())
        request = urllib.request.Request(
            f"{self.url}schedule.json", data=urllib.parse.urlencode(fields).encode()
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            reply = json.load(answer)
        assert reply["status"] == "ok", reply
        return str(reply["jobid"])

    def wait(self, *jobs: str) -> dict[str, dict[str, Any]]:
        """Wait for the jobs to finish; their entries in listjobs.json's "finished"."""
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            finished = {j["id"]: j for j in self.get("listjobs.json", project="flsync")["finished"]}
            if all(job in finished for job in jobs):
                return {job: finished[job] for job in jobs}
            if time.monotonic() > deadline:
                pytest.fail(f"jobs {jobs} not finished in {JOB_TIMEOUT} s:\n{self.own_log()}")
            time.sleep(0.2)

    def log(self, job: str) -> str:
        return (self.home / "logs" / "flsync" / "futurelearn" / f"{job}.log").read_text()

    def items(self, job: str) -> str:
        return (self.home / "items" / "flsync" / "futurelearn" / f"{job}.jl").read_text()

    def own_log(self) -> str:
        return self.output.read_text()

    def exit_line(self, job: str) -> str:
        """Scrapyd's own line on the job's process: "Process finished" or "Process died"."""
        for line in self.own_log().splitlines():
            if f"job='{job}'" in line and ("Process finished" in line or "Process died" in line):
                return line.split("] ", 1)[1]
        pytest.fail(f"no line on the end of job {job} in Scrapyd's log")


def error_lines(log: str) -> list[str]:
    """The ERROR lines of a log, without their date and time."""
    return [line.split(" ", 2)[2] for line in log.splitlines() if "] ERROR: " in line]


def last_line(log: str) -> str:
    return log.rstrip().splitlines()[-1].split(" ", 2)[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def site() -> Iterator[FakeSite]:
    with FakeSite(OPTIONS) as site:
        yield site


@pytest.fixture(scope="module")
def scrapyd(site: FakeSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrapyd]:
    root = tmp_path_factory.mktemp("scrapyd")
    home = root / "scrapyd"
    home.mkdir()
    port = free_port()
    (home / "scrapyd.conf").write_text(
        "[scrapyd]\n"
        "bind_address = 127.0.0.1\n"
        f"http_port = {port}\n"
        f"eggs_dir = {home / 'eggs'}\n"
        f"logs_dir = {home / 'logs'}\n"
        f"items_dir = {home / 'items'}\n"
        f"dbs_dir = {home / 'dbs'}\n"
        "max_proc = 2\n"
        "poll_interval = 0.2\n"
    )
    # No password in the config file: it comes from the environment. data_dir "data" is in
    # Scrapyd's working directory, a job's too.
    config = root / "config.json"
    config.write_text(
        json.dumps({"username": ADMIN_EMAIL, "base_url": site.base_url, "data_dir": "data"})
    )
    # Scrapyd's environment, as a Scrapyd host's service would have it. Nothing from this
    # checkout on its Python path, and HOME its own (no ~/.scrapyd.conf from the user).
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FLSYNC_", "SCRAPY", "PYTHONPATH"))
    }
    environment.update(
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        FLSYNC_CONFIG=str(config),
        FLSYNC_PASSWORD=ADMIN_PASSWORD,
    )
    # A job can import flsync from the deployed egg only.
    no_flsync = subprocess.run(
        [sys.executable, "-c", "import flsync"],
        check=False,
        cwd=home,
        env=environment,
        capture_output=True,
    )
    assert no_flsync.returncode != 0, "flsync importable without the egg: the test proves less"
    output = root / "scrapyd.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scrapyd"],
            cwd=home,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Scrapyd(f"http://127.0.0.1:{port}/", home, output, config)
    try:
        deadline = time.monotonic() + 30
        # Until it answers, and it is ours (the port was free a moment ago).
        while f"Site starting on {port}\n" not in server.own_log():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Scrapyd did not start:\n{server.own_log()}")
            time.sleep(0.1)
        assert server.get("daemonstatus.json")["status"] == "ok"
        deploy(server)
        listed = server.get("listspiders.json", project="flsync")["spiders"]
        assert sorted(listed) == ["doctor", "futurelearn"]
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


def deploy(server: Scrapyd) -> None:
    """`scrapyd-deploy test` from the checkout, to a target in a user-level scrapy.cfg."""
    user_config = server.home.parent / "xdg"
    user_config.mkdir()
    (user_config / "scrapy.cfg").write_text(f"[deploy:test]\nurl = {server.url}\n")
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SCRAPY", "XDG_CONFIG_HOME"))
    }
    environment.update(XDG_CONFIG_HOME=str(user_config), HOME=str(server.home.parent))
    before = _build_leftovers()
    result = subprocess.run(
        [str(BIN / "scrapyd-deploy"), "test"],
        check=False,
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["status"] == "ok", result.stdout
    # The build's scratch stays out of the checkout.
    assert _build_leftovers() == before


def _build_leftovers() -> set[str]:
    return {
        str(p.relative_to(REPO))
        for pattern in ("build", "dist", "*.egg-info", "*.egg", "setup.py")
        for p in REPO.glob(pattern)
    }


def write_config(folder: Path, site: FakeSite, **values: Any) -> Path:
    """A config file for one job (passed with setting=FLSYNC_CONFIG=...; no password)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    document = {"username": ADMIN_EMAIL, "base_url": site.base_url, "data_dir": "data"}
    path.write_text(json.dumps({**document, **values}))
    return path


def test_a_scheduled_sync_mirrors_the_site_and_shows_no_password(site, scrapyd):
    job = scrapyd.schedule()
    listed = scrapyd.wait(job)[job]
    log = scrapyd.log(job)
    assert last_line(log).startswith("[flsync.commands.crawl] INFO: Sync complete: "), log
    assert error_lines(log) == []
    assert scrapyd.exit_line(job).startswith("Process finished: ")
    assert_full_tree(site, SyncResult(0, log, scrapyd.home / "data"))
    items = scrapyd.items(job)
    assert len(items.splitlines()) > 10
    # The password is in Scrapyd's environment only: in none of what Scrapyd shows or keeps.
    everything = {
        "job log": log,
        "items feed": items,
        "Scrapyd's log": scrapyd.own_log(),
        "listjobs.json": json.dumps(scrapyd.get("listjobs.json")),
        "job's log page": scrapyd.page(listed["log_url"]),
    }
    for name, text in everything.items():
        assert ADMIN_PASSWORD not in text, name


def test_a_job_whose_config_file_is_missing_fails_with_the_command_lines_error(
    site, scrapyd, tmp_path
):
    missing = tmp_path / "nowhere" / "config.json"
    job = scrapyd.schedule(f"FLSYNC_CONFIG={missing}")
    scrapyd.wait(job)
    log = scrapyd.log(job)
    command_line = Sync(site.base_url, tmp_path)(env={"FLSYNC_CONFIG": str(missing)})
    assert command_line.returncode == 2
    [line] = error_lines(command_line.output)
    assert line == (
        f"[flsync.commands.crawl] ERROR: config file {missing} not found: copy"
        " config.json.template there and fill it in, or set the environment variable"
        " FLSYNC_CONFIG (or -s FLSYNC_CONFIG=) to the path of yours"
    )
    assert error_lines(log) == [line]
    assert last_line(log) == line
    assert "Traceback" not in log
    # Scrapyd keeps no exit status in listjobs.json; its own log has it.
    assert scrapyd.exit_line(job).startswith("Process died: exitstatus=2 project='flsync'")


@pytest.mark.parametrize("failure", ["sign-in refused", "dataset failed"])
def test_a_failed_sync_fails_in_its_job_log_as_on_the_command_line(
    site, scrapyd, tmp_path, failure
):
    username = "nobody@example.org" if failure == "sign-in refused" else ADMIN_EMAIL
    # Retries quickly (plain settings, no secret in them).
    settings = ("FLSYNC_RETRY_BACKOFF_BASE=0.01", "FLSYNC_RETRY_AFTER_MAX=0.1")
    run = next(r for r in site.data.runs if "comments" in r.datasets)
    comments = f"^/admin/courses/{run.course_slug}/{run.number}/stats-dashboard/data/comments$"

    def arm() -> None:
        if failure == "dataset failed":
            site.faults.update({"fail_with": 503, "fail_next": 5, "fail_path": comments})

    try:
        arm()
        config = write_config(
            tmp_path / "job", site, username=username, data_dir=str(tmp_path / "job" / "data")
        )
        job = scrapyd.schedule(f"FLSYNC_CONFIG={config}", *settings)
        scrapyd.wait(job)
        arm()
        command_line = Sync(site.base_url, tmp_path / "command-line")
        (tmp_path / "command-line").mkdir()
        args = [arg for setting in settings for arg in ("-s", setting)]
        result = command_line(
            *args, username=username, password=None, env={"FLSYNC_PASSWORD": ADMIN_PASSWORD}
        )
    finally:
        site.faults.update({"fail_next": 0})
    log = scrapyd.log(job)
    assert result.returncode == 1, result.output
    expected = error_lines(result.output)
    if failure == "sign-in refused":
        assert expected[0].endswith(
            "Sign-in refused for nobody@example.org: Invalid email or password."
        )
    else:
        assert expected[0].endswith("/data/comments: HTTP 503 (after 5 tries)")
    assert expected[-1].startswith("[flsync.commands.crawl] ERROR: Sync FAILED (")
    assert error_lines(log) == expected
    assert last_line(log) == expected[-1]
    assert scrapyd.exit_line(job).startswith("Process died: exitstatus=1 project='flsync'")
    assert ADMIN_PASSWORD not in log


def test_two_organisation_jobs_run_side_by_side_on_one_data_dir(site, scrapyd, tmp_path):
    config = write_config(tmp_path, site, data_dir=str(tmp_path / "shared-data"))
    first, second = site.data.organisations
    site.faults.update({"latency_ms": 50})  # long enough for the two jobs to overlap
    try:
        jobs = [
            scrapyd.schedule(f"FLSYNC_CONFIG={config}", organisation=o.slug)
            for o in (first, second)
        ]
        listed = scrapyd.wait(*jobs)
    finally:
        site.faults.update({"latency_ms": 0})
    for job in jobs:
        assert last_line(scrapyd.log(job)).startswith(
            "[flsync.commands.crawl] INFO: Sync complete: "
        ), scrapyd.log(job)
    (start_1, end_1), (start_2, end_2) = (
        (
            datetime.fromisoformat(listed[job]["start_time"]),
            datetime.fromisoformat(listed[job]["end_time"]),
        )
        for job in jobs
    )
    assert start_1 < end_2 and start_2 < end_1  # they overlapped
    # Together they wrote the whole tree.
    assert_full_tree(site, SyncResult(0, "", tmp_path / "shared-data"))

    # A job for an organisation that another job holds leaves it alone, in one line.
    with LocalStore(str(tmp_path / "shared-data")).lock(first.slug):
        job = scrapyd.schedule(f"FLSYNC_CONFIG={config}", organisation=first.slug)
        scrapyd.wait(job)
    log = scrapyd.log(job)
    assert error_lines(log) == [
        f"[flsync.mirror] ERROR: Organisation {first.slug} is being synced by another job;"
        " this one leaves it alone (wait for the other to finish)"
    ]
    assert scrapyd.exit_line(job).startswith("Process died: exitstatus=2 project='flsync'")
