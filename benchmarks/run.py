"""flsync against the naive baseline and curl, side by side, on the imitation site (127.0.0.1).

Scenario A (speed): flsync's first sync, the naive baseline, then flsync again with nothing
changed. Scenario B (large file): one run whose step_activity dataset is --big-file-mb big,
fetched by flsync, curl and the naive baseline. Every command runs as a child process; its
peak RSS comes from os.wait4. Run from the repo root: ``.venv/bin/python -m benchmarks.run``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import naive

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
SITE_START_TIMEOUT = 60.0
SPEEDUP_TARGET = 6.0
RSS_TARGET_MB = 100.0
CURL_RATIO_TARGET = 1.5
BROWSER_RATIO_TARGET = 3.0
TREE_SAMPLE_S = 0.1
TRICKY_OFF = ["--no-tricky"]  # only the courses and runs the options ask for
COLUMNS = ("scenario", "command", "wall s", "CPU s", "site CPU s", "requests", "dataset MB")
COLUMNS += ("MB/s", "xfer MB/s", "RSS MB", "tree MB", "exit")
NOT_DATA = {"update.txt", "sync-report.json", "dashboard.html"}  # rewritten by every sync
FREEZE = ("-s", "FLSYNC_FROZEN_AFTER_DAYS=30")  # the opt-in: finished runs left alone
# Proxies from the environment would send 127.0.0.1 traffic elsewhere: never use them.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Measured:
    label: str
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    # Its whole process tree (a browser's processes included), proportional set size
    # summed, sampled every TREE_SAMPLE_S (scenario C only): shared pages counted once.
    peak_tree_mb: float = 0.0
    cpu_s: float = 0.0  # user + system time of the command
    site_cpu_s: float = 0.0  # the site's, meanwhile (both share the machine's cores)
    exit_status: int | str = "not run"
    requests: int | None = None
    dataset_bytes: int | None = None
    site_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def kind(self, name: str) -> int:
        return int(self.site_stats.get("by_kind", {}).get(name, 0))

    def mb_per_s(self, size: int | None) -> float | None:
        return size / MB / self.wall_s if self.ok and size and self.wall_s > 0 else None

    def transfer_mb_per_s(self) -> float | None:
        """Dataset bytes over the time the site spent sending them: the rate at which the
        client took them (TCP paces the sender), without start-up, sign-in or pages."""
        seconds = self.site_stats.get("dataset_seconds")
        size = self.dataset_bytes
        return size / MB / seconds if self.ok and size and seconds else None


class FakeSite:
    """The imitation site as a child process; always terminated on exit."""

    def __init__(self, options: list[str], log: Path, env: dict[str, str]) -> None:
        self.options = options
        self.log = log
        self.base_url = ""
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fakesite", "--port", "0", *options],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> FakeSite:
        try:
            deadline = time.monotonic() + SITE_START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                found = re.search(r"serving (http://127\.0\.0\.1:\d+)", self.log.read_text())
                if found:
                    self.base_url = found.group(1)
                    return self
                time.sleep(0.05)
            raise RuntimeError(f"the imitation site did not start; see {self.log}")
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def stats(self) -> dict[str, Any]:
        with LOCAL.open(self.base_url + "/_fakesite/stats", timeout=30) as resp:
            stats = json.load(resp)
        stats.pop("log", None)  # every request: too long to keep
        return stats

    def cpu_s(self) -> float:
        """User + system time the site process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def control(self, knobs: dict[str, Any]) -> None:
        """Set the site's knobs (its /_fakesite/control endpoint)."""
        body = json.dumps(knobs).encode()
        request = urllib.request.Request(self.base_url + "/_fakesite/control", data=body)
        LOCAL.open(request, timeout=30).close()

    def reset_stats(self) -> None:
        request = urllib.request.Request(self.base_url + "/_fakesite/reset-stats", data=b"")
        LOCAL.open(request, timeout=30).close()


class Bench:
    """Runs and measures commands; holds the work folder, the logs and the child environment."""

    def __init__(self, work: Path, logs: Path, timeout: float) -> None:
        self.work = work
        self.logs = logs
        self.timeout = timeout
        # No proxies, and no flsync credentials in the environment overriding the config.
        drop = {"http_proxy", "https_proxy", "all_proxy", "flsync_username", "flsync_password"}
        self.env = {k: v for k, v in os.environ.items() if k.lower() not in drop}
        self.env["NO_PROXY"] = self.env["no_proxy"] = "127.0.0.1,localhost"

    def site(self, name: str, options: list[str]) -> FakeSite:
        return FakeSite(options, self.logs / f"site-{name}.log", self.env)

    def run(self, cmd: list[str], log: Path, *, cwd: Path = ROOT, tree: bool = False) -> Measured:
        """Run cmd to completion (killed after the timeout): wall time, peak RSS, exit status;
        ``tree``: the peak memory of its whole process tree too (sampling reads the memory
        maps of every process, which slows down one that maps and unmaps much)."""
        killed: list[bool] = []
        tree_peak = [0]

        def kill() -> None:
            killed.append(True)
            proc.kill()

        with log.open("wb") as out:
            start = time.monotonic()
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
            timer = threading.Timer(self.timeout, kill)
            timer.start()
            done = threading.Event()
            sampler = threading.Thread(target=sample_tree, args=(proc.pid, done, tree_peak))
            if tree:
                sampler.start()
            try:
                _pid, status, usage = os.wait4(proc.pid, 0)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                timer.cancel()
                done.set()
                if tree:
                    sampler.join()
            wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        code = f"timeout ({self.timeout:.0f} s)" if killed else proc.returncode
        cpu = usage.ru_utime + usage.ru_stime
        rss = usage.ru_maxrss / 1024  # KiB on Linux
        tree = tree_peak[0] / 1024
        return Measured(
            cmd[0], wall_s=wall, peak_rss_mb=rss, peak_tree_mb=tree, cpu_s=cpu, exit_status=code
        )

    def measure(
        self,
        site: FakeSite,
        label: str,
        name: str,
        cmd: list[str],
        *,
        cwd: Path = ROOT,
        tree: bool = False,
    ) -> Measured:
        """cmd run against a site whose counters start at zero; output in logs/{name}.log."""
        site.reset_stats()
        site_cpu = site.cpu_s()
        result = self.run(cmd, self.logs / f"{name}.log", cwd=cwd, tree=tree)
        result.site_cpu_s = site.cpu_s() - site_cpu
        result.label = label
        result.site_stats = site.stats()
        result.requests = result.site_stats.get("requests")
        result.dataset_bytes = result.site_stats.get("dataset_bytes")
        print(f"  {label}: {result.wall_s:.2f} s, exit {result.exit_status}", flush=True)
        return result

    def flsync(
        self,
        site: FakeSite,
        label: str,
        name: str,
        data_dir: Path,
        *extra: str,
        code: Path = ROOT,
        tree: bool = False,
    ) -> Measured:
        """flsync's sync into data_dir; ``code``: a checkout of another revision to run."""
        config = self.work / f"{data_dir.name}.json"
        settings = {
            "username": naive.EMAIL,
            "password": naive.PASSWORD,
            "base_url": site.base_url,
            "data_dir": str(data_dir),
        }
        config.write_text(json.dumps(settings))
        cmd = [sys.executable, "-m", "scrapy", "crawl", "futurelearn"]
        cmd += ["-s", f"FLSYNC_CONFIG={config}", "-s", f"LOG_FILE={self.logs / name}.scrapy.log"]
        cmd += ["-s", "LOG_FILE_APPEND=False", *extra]  # this run's log only
        return self.measure(site, label, name, cmd, cwd=code, tree=tree)

    def naive(self, site: FakeSite, label: str, name: str, out: Path) -> Measured:
        cmd = [sys.executable, "-m", "benchmarks.naive", "--base-url", site.base_url]
        return self.measure(site, label, name, [*cmd, "--out", str(out)])


def sample_tree(pid: int, done: threading.Event, peak: list[int]) -> None:
    """Until ``done``: the largest sum of PSS (KiB) over ``pid`` and its descendants."""
    while not done.wait(TREE_SAMPLE_S):
        peak[0] = max(peak[0], sum(pss_kib(p) for p in tree_pids(pid)))


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except OSError:  # ended meanwhile
                continue
    return pids


def pss_kib(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    found = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
    return int(found.group(1)) if found else 0


def snapshot(data_dir: Path) -> dict[str, tuple[int, int]]:
    """(st_mtime_ns, st_ino) of every data file (hidden files and update.txt left out)."""
    files = {}
    for path in data_dir.rglob("*"):
        rel = path.relative_to(data_dir)
        hidden = any(part.startswith(".") for part in rel.parts)
        if path.is_file() and path.name not in NOT_DATA and not hidden:
            st = path.stat()
            files[rel.as_posix()] = (st.st_mtime_ns, st.st_ino)
    return files


def scenario_a(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    print("Scenario A (speed)", flush=True)
    options = [
        *("--organisations", str(args.organisations), "--courses", str(args.courses)),
        *("--runs", str(args.runs), "--rows", str(args.rows), "--big-file-mb", "0"),
        *("--latency-ms", str(args.latency_ms), *TRICKY_OFF),
    ]
    data_dir, naive_dir = bench.work / "flsync-a", bench.work / "naive-a"
    with bench.site("a", options) as site:
        # The site builds each file once and then serves it from a cache: a first flsync run
        # into a throwaway folder fills that cache, so that neither measured command pays it.
        cold = bench.flsync(site, "flsync (first run, cold site)", "flsync-a0", bench.work / "x")
        shutil.rmtree(bench.work / "x", ignore_errors=True)
        # flsync is CPU-bound and the naive script waits on latency, so other work on a shared
        # machine slows flsync alone: its first run is timed --repeat times, each into a new
        # folder, and the median run stands for it.
        firsts, olds = [], []
        for n in range(args.repeat):
            folder = data_dir if n == 0 else bench.work / f"flsync-a1-{n}"
            label = f"flsync (first run {n + 1} of {args.repeat})"
            firsts.append(bench.flsync(site, label, f"flsync-a1-{n}", folder))
            if n:
                shutil.rmtree(folder, ignore_errors=True)
            if args.baseline_code:  # taking turns, so that both meet the same machine
                label = f"flsync {args.baseline} (first run {n + 1} of {args.repeat})"
                folder = bench.work / f"baseline-a1-{n}"
                olds.append(
                    bench.flsync(site, label, f"baseline-a1-{n}", folder, code=args.baseline_code)
                )
                shutil.rmtree(folder, ignore_errors=True)
        first = median_run(firsts, lambda m: -m.wall_s, "flsync (first run)")
        old = median_run(olds, lambda m: -m.wall_s, f"flsync {args.baseline}") if olds else None
        before = snapshot(data_dir)
        baseline = bench.naive(site, "naive", "naive-a", naive_dir)
        # The default: every run is asked for, every file conditionally (If-None-Match).
        second = bench.flsync(site, "flsync (no-change run)", "flsync-a2", data_dir)
        # The opt-in: runs that ended over 30 days ago are left alone, but for enrolments.
        frozen = bench.flsync(
            site, "flsync (no-change, finished runs left alone)", "flsync-a3", data_dir, *FREEZE
        )
        after = snapshot(data_dir)
    naive_files = sum(1 for p in naive_dir.rglob("*") if p.is_file())
    shutil.rmtree(naive_dir, ignore_errors=True)
    return {
        "site_options": options,
        "flsync_cold_site": cold,
        "flsync_first": first,
        "flsync_first_walls": [m.wall_s for m in firsts],
        "baseline_first": old,
        "baseline_first_walls": [m.wall_s for m in olds],
        "naive": baseline,
        "flsync_no_change": second,
        "flsync_no_change_frozen": frozen,
        "runs_synced": sum(name.endswith("/metadata.csv") for name in before),
        "flsync_files": len(before),
        "naive_files": naive_files,
        "no_change": {
            "files_compared": len(before),
            "rewritten": sorted(p for p in before.keys() & after.keys() if before[p] != after[p]),
            "added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()),
        },
        "speedup": baseline.wall_s / first.wall_s if first.ok and baseline.ok else None,
    }


def transfer_rate(m: Measured) -> float:
    return m.transfer_mb_per_s() or 0.0


def median_run(runs: list[Measured], speed: Callable[[Measured], float], label: str) -> Measured:
    """The run of median speed (of an even count, the slower middle one), labelled so."""
    median = sorted(runs, key=speed)[(len(runs) - 1) // 2]
    median.label = f"{label}, median of {len(runs)}"
    return median


def scenario_c(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    """The speed scenario's site, synced plainly, and with its listings and dashboards built
    by script, read in the browser (FLSYNC_BROWSER): taking turns, --repeat times each."""
    print("Scenario C (pages built by script, read in a browser)", flush=True)
    options = [
        *("--organisations", str(args.organisations), "--courses", str(args.courses)),
        *("--runs", str(args.runs), "--rows", str(args.rows), "--big-file-mb", "0"),
        *("--latency-ms", str(args.latency_ms), *TRICKY_OFF),
        # The page's script starts at its load event, as a real page's does; the imitation's
        # default pause (there so that tests reading at the load event find no rows) would
        # add a third of a second to every page that is not the browser's doing.
        *("--script-delay-ms", "0"),
    ]
    plains, rendereds, olds = [], [], []
    browser = ("-s", "FLSYNC_BROWSER=1")
    with bench.site("c", options) as site:
        bench.flsync(site, "flsync (cold site)", "flsync-c0", bench.work / "c0")
        for n in range(args.repeat):
            site.control({"script_pages": False})
            folder = bench.work / f"c-plain-{n}"
            label = f"flsync, plain ({n + 1} of {args.repeat})"
            plains.append(bench.flsync(site, label, f"flsync-c-plain-{n}", folder, tree=True))
            site.control({"script_pages": True})
            folder = bench.work / f"c-browser-{n}"
            label = f"flsync, FLSYNC_BROWSER=1, pages built by script ({n + 1} of {args.repeat})"
            rendereds.append(
                bench.flsync(site, label, f"flsync-c-browser-{n}", folder, *browser, tree=True)
            )
            if args.baseline_code:  # taking turns, so that both meet the same machine
                label = f"flsync {args.baseline}, FLSYNC_BROWSER=1 ({n + 1} of {args.repeat})"
                folder = bench.work / f"baseline-c-{n}"
                # Its process tree sampled too: the sampling (every Chromium process, every
                # 0.1 s) costs this 2-core machine about a tenth of the browser sync's time.
                olds.append(
                    bench.flsync(
                        site,
                        label,
                        f"baseline-c-{n}",
                        folder,
                        *browser,
                        code=args.baseline_code,
                        tree=True,
                    )
                )
    plain = median_run(plains, lambda m: -m.wall_s, "flsync, plain")
    rendered = median_run(rendereds, lambda m: -m.wall_s, "flsync, FLSYNC_BROWSER=1")
    old = median_run(olds, lambda m: -m.wall_s, f"flsync {args.baseline}") if olds else None
    return {
        "baseline": old,
        "site_options": options,
        "plain": plain,
        "rendered": rendered,
        "plain_walls": [m.wall_s for m in plains],
        "rendered_walls": [m.wall_s for m in rendereds],
        "ratio": rendered.wall_s / plain.wall_s if plain.ok and rendered.ok else None,
    }


# A setting older revisions ignore, so a baseline run takes it too.
NO_MEASURES = ("-s", "FLSYNC_MEASURES=0")


def scenario_b(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    print(f"Scenario B (large file, {args.big_file_mb} MB)", flush=True)
    options = [
        *("--organisations", "1", "--courses", "1", "--runs", "1", "--rows", str(args.rows)),
        *("--big-file-mb", str(args.big_file_mb), "--latency-ms", "0", *TRICKY_OFF),
    ]
    data_dir = bench.work / "flsync-b"
    result: dict[str, Any] = {"site_options": options, "curl": None, "curl_file_bytes": None}
    with bench.site("b", options) as site:
        # As in scenario A: a first run fills the site's cache, so no measured command pays it.
        bench.flsync(site, "flsync (big file, cold site)", "flsync-b0", bench.work / "y")
        shutil.rmtree(bench.work / "y", ignore_errors=True)
        curl = shutil.which("curl")
        if curl:
            # A signed-in session for curl, and the URL of the big file, found as naive finds it.
            opener, jar = naive.sign_in(site.base_url)
            cookie = next(c.value for c in jar if c.name == naive.SESSION_COOKIE)
            run = naive.started_runs(opener, site.base_url)[0]
            urls = naive.dataset_urls(opener, site.base_url, run)
            url = next(u for u in urls if u.endswith("/step_activity"))
            target = bench.work / "curl-step-activity.csv"
            curl_cmd = [curl, "-s", "--noproxy", "*", "--max-time", str(int(bench.timeout))]
            curl_cmd += ["-b", f"{naive.SESSION_COOKIE}={cookie}", "-o", str(target), url]
        # As in scenario A, --repeat times each (flsync and curl taking turns), and the median
        # by transfer rate stands for each: one transfer is at the mercy of the shared machine.
        flsyncs, olds, curls = [], [], []
        for n in range(args.repeat):
            label = f"flsync (big file, {n + 1} of {args.repeat})"
            # The transfer's memory, alone: the measures computed after a sync are bounded by
            # FLSYNC_MEASURES_MEMORY_MB, and scenario E measures them on such a file.
            flsyncs.append(bench.flsync(site, label, f"flsync-b-{n}", data_dir, *NO_MEASURES))
            big = next(data_dir.rglob("step-activity.csv"), None)
            result["flsync_file_bytes"] = big.stat().st_size if big else None
            shutil.rmtree(data_dir, ignore_errors=True)  # free the disk space early
            if args.baseline_code:
                label = f"flsync {args.baseline} (big file, {n + 1} of {args.repeat})"
                old_dir = bench.work / "baseline-b"
                olds.append(
                    bench.flsync(
                        site,
                        label,
                        f"baseline-b-{n}",
                        old_dir,
                        *NO_MEASURES,
                        code=args.baseline_code,
                    )
                )
                shutil.rmtree(old_dir, ignore_errors=True)
            if curl:
                label = f"curl -o file ({n + 1} of {args.repeat})"
                curls.append(bench.measure(site, label, f"curl-b-{n}", curl_cmd))
                result["curl_file_bytes"] = target.stat().st_size if target.exists() else None
                target.unlink(missing_ok=True)
        result["flsync"] = median_run(flsyncs, transfer_rate, "flsync (big file)")
        result["baseline"] = (
            median_run(olds, transfer_rate, f"flsync {args.baseline} (big file)") if olds else None
        )
        result["flsync_transfer_mb_per_s"] = [m.transfer_mb_per_s() for m in flsyncs]
        if curls:
            result["curl"] = median_run(curls, transfer_rate, "curl -o file")
            result["curl_transfer_mb_per_s"] = [m.transfer_mb_per_s() for m in curls]
        result["naive"] = bench.naive(site, "naive (big file)", "naive-b", bench.work / "naive-b")
        shutil.rmtree(bench.work / "naive-b", ignore_errors=True)
    return result


def check_targets(
    a: dict[str, Any], b: dict[str, Any] | None, c: dict[str, Any] | None
) -> list[dict[str, str]]:
    targets: list[dict[str, str]] = []

    def add(name: str, measured: str, required: str, passed: bool | None) -> None:
        status = "SKIPPED" if passed is None else "PASS" if passed else "FAIL"
        targets.append(
            {"target": name, "measured": measured, "required": required, "result": status}
        )

    first, base, second = a["flsync_first"], a["naive"], a["flsync_no_change"]
    fetched = [m.kind("dataset") + m.kind("subdivisions") for m in (first, base)]
    add(
        "A: flsync fetched every dataset naive did",
        f"{fetched[0]} vs {fetched[1]}",
        "flsync >= naive",
        first.ok and base.ok and fetched[0] >= fetched[1] > 0,
    )
    old = a["baseline_first"]
    if old is not None:
        ratio = first.wall_s / old.wall_s if first.ok and old.ok else None
        add(
            f"A: flsync wall / {old.label.split(',')[0]} wall (the path before, same run)",
            f"{ratio:.2f}" if ratio else "n/a",
            "<= 1 (no slower)",
            bool(ratio and ratio <= 1.0),
        )
    speedup = a["speedup"]
    add(
        "A: naive wall / flsync wall",
        f"{speedup:.1f}x" if speedup else "n/a",
        f">= {SPEEDUP_TARGET:.0f}x",
        bool(speedup and speedup >= SPEEDUP_TARGET),
    )
    add(
        "A: no-change run (default: every file asked): 304s, dataset bytes sent",
        f"{second.site_stats.get('not_modified')} x 304, {second.dataset_bytes} bytes",
        "every dataset 304, 0 bytes",
        second.ok
        and second.dataset_bytes == 0
        and second.site_stats.get("not_modified") == fetched[0],
    )
    frozen = a["flsync_no_change_frozen"]
    add(
        "A: no-change run, finished runs left alone (opt-in): requests, dataset bytes sent",
        f"{frozen.requests} requests, {frozen.dataset_bytes} bytes",
        "fewer requests, 0 bytes",
        frozen.ok and frozen.dataset_bytes == 0 and (frozen.requests or 0) < (second.requests or 0),
    )
    nc = a["no_change"]
    changed = len(nc["rewritten"]) + len(nc["added"]) + len(nc["removed"])
    add(
        "A: no-change run, data files rewritten",
        f"{len(nc['rewritten'])} of {nc['files_compared']}"
        + (f" (+{len(nc['added'])} new, -{len(nc['removed'])} gone)" if changed else ""),
        "0",
        second.ok and changed == 0 and nc["files_compared"] > 0,
    )
    if c is not None:
        ratio = c["ratio"]
        add(
            "C: FLSYNC_BROWSER=1 (pages built by script) wall / plain wall",
            f"{ratio:.2f}" if ratio else "n/a",
            f"<= {BROWSER_RATIO_TARGET:g}",
            bool(ratio and ratio <= BROWSER_RATIO_TARGET),
        )
        targets.append(
            {
                "target": "C: (for the record) peak memory of the process tree, browser included",
                "measured": (
                    f"{c['rendered'].peak_tree_mb:.0f} MB (plain: {c['plain'].peak_tree_mb:.0f} MB)"
                ),
                "required": "-",
                "result": "INFO",
            }
        )
        old = c.get("baseline")
        if old is not None:
            add(
                f"C: FLSYNC_BROWSER=1 wall / {old.label.split(',')[0]} wall",
                f"{c['rendered'].wall_s / old.wall_s:.2f}" if old.ok else "n/a",
                "<= 1",
                bool(old.ok and c["rendered"].wall_s <= old.wall_s),
            )
    if b is None:
        return targets
    flsync, curl = b["flsync"], b["curl"]
    if b["baseline"] is not None:
        rates = flsync.transfer_mb_per_s(), b["baseline"].transfer_mb_per_s()
        targets.append(
            {
                "target": f"B: (for the record) {b['baseline'].label.split(',')[0]} xfer MB/s,"
                " peak RSS MB",
                "measured": f"{rates[1] or 0:.0f}, {b['baseline'].peak_rss_mb:.0f}",
                "required": "-",
                "result": "INFO",
            }
        )
    size, curl_size = b["flsync_file_bytes"], b["curl_file_bytes"]
    add(
        "B: flsync stored the whole big file",
        f"{size} bytes",
        f"= {curl_size} (curl's)" if curl else "> 0",
        flsync.ok and bool(size) and (curl is None or size == curl_size),
    )
    add(
        "B: flsync peak RSS",
        f"{flsync.peak_rss_mb:.0f} MB",
        f"< {RSS_TARGET_MB:.0f} MB",
        flsync.ok and flsync.peak_rss_mb < RSS_TARGET_MB,
    )
    if curl is None:
        add("B: curl MB/s / flsync MB/s", "curl not installed", "", None)
    else:
        rates = flsync.transfer_mb_per_s(), curl.transfer_mb_per_s()
        ratio = rates[1] / rates[0] if rates[0] and rates[1] else None
        add(
            "B: curl xfer MB/s / flsync xfer MB/s",
            f"{ratio:.2f}" if ratio else "n/a",
            f"<= {CURL_RATIO_TARGET:g}",
            bool(ratio and ratio <= CURL_RATIO_TARGET),
        )
        walls = flsync.mb_per_s(flsync.dataset_bytes), curl.mb_per_s(curl_size)
        if walls[0] and walls[1]:
            targets.append(
                {
                    "target": "B: (for the record) same ratio on whole-command wall time",
                    "measured": f"{walls[1] / walls[0]:.2f}",
                    "required": "-",
                    "result": "INFO",
                }
            )
    return targets


def print_report(
    a: dict[str, Any], b: dict[str, Any] | None, c: dict[str, Any] | None, targets: list[dict]
) -> None:
    rows = [COLUMNS]
    keys = (
        "flsync_cold_site",
        "flsync_first",
        "naive",
        "flsync_no_change",
        "flsync_no_change_frozen",
    )
    measured = [("A", a[k]) for k in keys]
    if a["baseline_first"]:
        measured.insert(2, ("A", a["baseline_first"]))
    if b:
        measured += [("B", b["flsync"]), ("B", b["curl"]), ("B", b["naive"])]
        if b["baseline"]:
            measured.insert(-2, ("B", b["baseline"]))
    if c:
        measured += [("C", c["plain"]), ("C", c["rendered"])]
        if c.get("baseline"):
            measured.append(("C", c["baseline"]))
    for scenario, m in measured:
        if m is None:
            rows.append((scenario, "curl -o file", *["-"] * 9, "curl not installed"))
            continue
        size = m.dataset_bytes
        rate = m.mb_per_s(size) if scenario == "B" else None
        transfer = m.transfer_mb_per_s() if scenario == "B" else None
        rows.append(
            (
                scenario,
                m.label,
                f"{m.wall_s:.2f}",
                f"{m.cpu_s:.2f}",
                f"{m.site_cpu_s:.2f}",
                str(m.requests),
                "?" if size is None else f"{size / MB:.1f}",
                f"{rate:.0f}" if rate else "-",
                f"{transfer:.0f}" if transfer else "-",
                f"{m.peak_rss_mb:.0f}",
                f"{m.peak_tree_mb:.0f}" if m.peak_tree_mb else "-",
                str(m.exit_status),
            )
        )
    print()
    print_table(rows)
    first = a["flsync_first"]
    print(
        f"\nA: flsync's first run synced {a['runs_synced']} runs ({a['flsync_files']} files,"
        f" {first.kind('dataset') + first.kind('subdivisions')} dataset requests,"
        f" {first.kind('run_details')} run-details pages); naive wrote {a['naive_files']} files."
    )
    walls = ", ".join(f"{w:.2f}" for w in a["flsync_first_walls"])
    print(f"A: flsync's timed first runs took {walls} s; the median one is in the table.")
    if b:
        for name in ("flsync", "curl"):
            rates = ", ".join(
                f"{r:.0f}" if r else "?" for r in b.get(f"{name}_transfer_mb_per_s") or []
            )
            if rates:
                print(f"B: {name}'s transfer rates, MB/s: {rates}; the median one is in the table.")
    print(
        "Requests, dataset MB and xfer MB/s (dataset bytes over the time the site spent"
        " sending them): the site's own counters. CPU s, RSS MB: the command's.\n"
    )
    print_table(
        [("target", "measured", "required", "result")]
        + [(t["target"], t["measured"], t["required"], t["result"]) for t in targets]
    )


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def machine_info() -> dict[str, Any]:
    curl = shutil.which("curl")
    curl_version = None
    if curl:
        cmd = [curl, "--version"]
        out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
        curl_version = out.stdout.split("\n", 1)[0]
    meminfo = Path("/proc/meminfo")
    memory = meminfo.read_text().split("\n", 1)[0] if meminfo.exists() else ""
    return {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "memory": memory.split(":", 1)[-1].strip(),
        "curl": curl_version,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_end": os.getloadavg(),  # other work on the machine skews the figures
    }


def to_json(value: Any) -> Any:
    if isinstance(value, Measured):
        return {**asdict(value), "ok": value.ok}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--organisations", type=int, default=1)
    parser.add_argument("--courses", type=int, default=10, help="per organisation")
    parser.add_argument("--runs", type=int, default=4, help="per course")
    parser.add_argument("--rows", type=int, default=200, help="per dataset")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--big-file-mb", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/latest.json"))
    parser.add_argument("--skip-big", action="store_true", help="skip scenario B (large file)")
    parser.add_argument(
        "--skip-browser", action="store_true", help="skip scenario C (pages built by script)"
    )
    parser.add_argument(
        "--skip-load", action="store_true", help="skip scenario D (loading into the databases)"
    )
    # 256 MB here keeps the whole run's time reasonable; benchmarks.load alone takes 1 GB.
    parser.add_argument("--load-mb", type=float, default=256, help="scenario D's file size")
    parser.add_argument("--timeout", type=float, default=900, help="per command, in seconds")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="times to repeat a measured command (A: flsync's first run; B: flsync, curl)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run flsync as of this git revision (a temporary worktree), side by side",
    )
    args = parser.parse_args(argv)
    from benchmarks import load  # noqa: PLC0415 - it builds on this module

    args.json.parent.mkdir(parents=True, exist_ok=True)
    logs = (args.json.parent / "logs").resolve()  # absolute: a baseline runs elsewhere
    logs.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    print(f"Load average before: {load_before[0]:.2f} (nproc {os.cpu_count()})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="flsync-bench-"))
    args.baseline_code = work / "baseline" if args.baseline else None
    git = ["git", "-C", str(ROOT), "worktree"]
    try:
        if args.baseline_code:
            subprocess.run(
                [*git, "add", "--detach", str(args.baseline_code), args.baseline], check=True
            )
        bench = Bench(work, logs, args.timeout)
        a = scenario_a(args, bench)
        b = None if args.skip_big else scenario_b(args, bench)
        c = None if args.skip_browser else scenario_c(args, bench)
        d = None if args.skip_load else load.scenario_d(args, bench)
    finally:
        if args.baseline_code:
            subprocess.run([*git, "remove", "--force", str(args.baseline_code)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    targets = check_targets(a, b, c)
    print_report(a, b, c, targets)
    if d is not None:
        targets += load.report(d)
    report = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {**machine_info(), "loadavg_before": load_before},
        "scenario_a": a,
        "scenario_b": b,
        "scenario_c": c,
        "scenario_d": d,
        "targets": targets,
    }
    args.json.write_text(json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n")
    print(f"\nAll figures: {args.json} (command output: {logs}/)")
    missed = [t["target"] for t in targets if t["result"] == "FAIL"]
    if missed:
        print("TARGET MISSED: " + "; ".join(missed))
        return 1
    print("All targets met." + (" (Scenario B skipped: --skip-big.)" if args.skip_big else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
