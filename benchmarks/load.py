"""Scenario D (loading): a --load-mb step-activity file loaded by `scrapy loaddb` into SQLite,
PostgreSQL and MariaDB, beside `psql \\copy` of the same file into a plain text table (and,
where their clients are installed, `sqlite3 .import` and the `mariadb` client's LOAD DATA of
it into a plain text table: each database's own floor here).

The tree is one run whose step-activity.csv is built by the imitation site's generator (the
big file of scenario B), written to disk once. Each command runs as a child process (peak
RSS from os.wait4); each database is a new one, dropped at the end. The servers come from
FLSYNC_TEST_POSTGRES_URL and FLSYNC_TEST_MYSQL_URL (defaults: the local ones). With
``--baseline REV``, flsync as of git revision REV (a temporary worktree) loads the same file
into each database too, taking turns with the current code (``--repeat`` times each; the
median run is reported). Alone: ``.venv/bin/python -m benchmarks.load [--load-mb 1024]
[--baseline REV]``; ``benchmarks.run`` runs it as scenario D unless ``--skip-load``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.run import MB, ROOT, Bench, Measured, median_run, print_table

LOAD_RATIO_TARGET = 3.0
LOAD_RSS_TARGET_MB = 200.0
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"
FOLDER = "Benchmark University/Loading Test/1-2020-01-06-2020-02-03"
COLUMNS = ("learner_id", "step", "week_number", "step_number", "first_visited_at")
COLUMNS += ("last_completed_at",)


def write_tree(data_dir: Path, size_mb: float) -> Path:
    """One run with metadata.csv and a big step-activity.csv; the latter's path."""
    sys.path.insert(0, str(ROOT))
    from fakesite.data import SiteOptions, build_site_data  # noqa: PLC0415
    from fakesite.datasets import DatasetStore  # noqa: PLC0415

    options = SiteOptions(organisations=1, courses=1, runs=1, big_file_mb=size_mb, tricky=False)
    data = build_site_data(options, date.today())
    assert data.big_file is not None
    run = data.run(*data.big_file)
    assert run is not None
    folder = data_dir / FOLDER
    folder.mkdir(parents=True)
    (folder / "metadata.csv").write_text(
        "uni_name,course_name,run,start_date,end_date,duration_weeks\n"
        "Benchmark University,Loading Test,1,2020-01-06,2020-02-03,4\n"
    )
    path = folder / "step-activity.csv"
    with path.open("wb") as out:
        for chunk in DatasetStore(data).get(run, "step_activity", 1).chunks():
            out.write(chunk)
    return path


class Databases:
    """New databases on the servers, dropped at the end."""

    def __init__(self) -> None:
        from sqlalchemy.engine import make_url  # noqa: PLC0415

        self.servers = {
            "postgresql": make_url(os.environ.get("FLSYNC_TEST_POSTGRES_URL") or DEFAULT_POSTGRES),
            "mysql": make_url(os.environ.get("FLSYNC_TEST_MYSQL_URL") or DEFAULT_MYSQL),
        }
        self.made: list[tuple[str, str]] = []

    def new(self, kind: str) -> str:
        name = f"flsync_bench_{uuid.uuid4().hex[:10]}"
        self._admin(kind, f"CREATE DATABASE {name}")
        self.made.append((kind, name))
        return self.servers[kind].set(database=name).render_as_string(hide_password=False)

    def drop(self) -> None:
        for kind, name in self.made:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            self._admin(kind, f"DROP DATABASE IF EXISTS {name}{force}")

    def _admin(self, kind: str, statement: str) -> None:
        from sqlalchemy import create_engine  # noqa: PLC0415

        engine = create_engine(self.servers[kind], isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql(statement)
        engine.dispose()


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psql takes it."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def scenario_d(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    print(f"Scenario D (loading a {args.load_mb} MB step-activity file)", flush=True)
    data_dir = bench.work / "load-tree"
    big = write_tree(data_dir, args.load_mb)
    size = big.stat().st_size
    config = bench.work / "load.json"
    config.write_text(json.dumps({"data_dir": str(data_dir)}))
    databases = Databases()
    result: dict[str, Any] = {"file_bytes": size, "loads": {}}
    try:
        psql = shutil.which("psql")
        if psql:
            url = libpq_url(databases.new("postgresql"))
            plain = ", ".join(f"{c} text" for c in COLUMNS)
            subprocess.run([psql, url, "-qc", f"CREATE TABLE plain ({plain})"], check=True)
            copy = f"\\copy plain FROM '{big}' CSV HEADER"
            measured = bench.run([psql, url, "-c", copy], bench.logs / "psql-copy.log")
            measured.label = "psql \\copy (plain text table)"
            result["psql"] = measured
            print(f"  {measured.label}: {measured.wall_s:.2f} s", flush=True)
        result["own"] = own_plain_loads(bench, databases, big)
        baseline: Path | None = getattr(args, "baseline_code", None)
        result["baseline_loads"] = {}
        for kind in ("sqlite", "postgresql", "mysql"):
            runs: dict[Path, list[Measured]] = {ROOT: [], **({baseline: []} if baseline else {})}
            for n in range(getattr(args, "load_repeat", 1)):
                for code, measured_runs in runs.items():  # taking turns: the same machine
                    name = "loaddb" if code == ROOT else "baseline-loaddb"
                    measured = load_once(
                        bench, databases, kind, config=config, code=code, name=f"{name}-{kind}-{n}"
                    )
                    print(
                        f"  {name} ({kind}): {measured.wall_s:.2f} s, exit {measured.exit_status}"
                    )
                    measured_runs.append(measured)
            result["loads"][kind] = median_run(
                runs[ROOT], lambda m: -m.wall_s, f"scrapy loaddb ({kind})"
            )
            if baseline:
                result["baseline_loads"][kind] = median_run(
                    runs[baseline], lambda m: -m.wall_s, f"loaddb {args.baseline} ({kind})"
                )
    finally:
        databases.drop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def load_once(
    bench: Bench, databases: Databases, kind: str, *, config: Path, code: Path, name: str
) -> Measured:
    """``scrapy loaddb`` of the tree into a new database of ``kind``, run from ``code`` (a
    checkout of flsync)."""
    sqlite = bench.work / "load.sqlite3"
    url = f"sqlite:///{sqlite}" if kind == "sqlite" else databases.new(kind)
    cmd = [sys.executable, "-m", "scrapy", "loaddb", "--database", url]
    cmd += ["-s", f"FLSYNC_CONFIG={config}"]
    try:
        return bench.run(cmd, bench.logs / f"{name}.log", cwd=code)
    finally:
        sqlite.unlink(missing_ok=True)


def own_plain_loads(bench: Bench, databases: Databases, big: Path) -> dict[str, Measured]:
    """Each database's own command-line bulk load of the file into a plain table of text
    columns (no index, no types), where its client is installed: the floor of what a load
    into that database can cost here."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    plain = ", ".join(f"{c} text" for c in COLUMNS)
    measured: dict[str, Measured] = {}
    sqlite3 = shutil.which("sqlite3")
    if sqlite3:
        path = bench.work / "plain.sqlite3"
        subprocess.run([sqlite3, path, f"CREATE TABLE plain ({plain})"], check=True)
        cmd = [sqlite3, str(path), f".import --csv --skip 1 '{big}' plain"]
        measured["sqlite"] = bench.run(cmd, bench.logs / "sqlite3-import.log")
        measured["sqlite"].label = "sqlite3 .import (plain text table)"
        path.unlink()
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client:
        url = make_url(databases.new("mysql"))
        login = [client, "--local-infile=1", f"-h{url.host}", f"-P{url.port or 3306}"]
        login += [f"-u{url.username}", *([f"-p{url.password}"] if url.password else [])]
        login += [str(url.database)]
        subprocess.run([*login, "-e", f"CREATE TABLE plain ({plain})"], check=True)
        load = (
            f"LOAD DATA LOCAL INFILE '{big}' INTO TABLE plain CHARACTER SET utf8mb4"
            " FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY ''"
            " IGNORE 1 LINES"
        )
        measured["mysql"] = bench.run([*login, "-e", load], bench.logs / "mariadb-load.log")
        measured["mysql"].label = "mariadb LOAD DATA (plain text table)"
    for m in measured.values():
        print(f"  {m.label}: {m.wall_s:.2f} s", flush=True)
    return measured


def load_targets(d: dict[str, Any]) -> list[dict[str, str]]:
    targets = []
    psql: Measured | None = d.get("psql")
    for kind, m in d["loads"].items():
        ratio = m.wall_s / psql.wall_s if psql and psql.ok and m.ok else None
        targets.append(
            {
                "target": f"D: loaddb ({kind}) wall / psql \\copy wall",
                "measured": f"{ratio:.2f}" if ratio else "n/a",
                "required": f"<= {LOAD_RATIO_TARGET:g}",
                "result": "PASS" if ratio and ratio <= LOAD_RATIO_TARGET else "FAIL",
            }
        )
        old: Measured | None = d.get("baseline_loads", {}).get(kind)
        if old is not None:
            ratio = m.wall_s / old.wall_s if m.ok and old.ok else None
            targets.append(
                {
                    "target": f"D: loaddb ({kind}) wall / baseline's wall",
                    "measured": f"{ratio:.2f}" if ratio else "n/a",
                    "required": "<= 1",
                    "result": "PASS" if ratio and ratio <= 1 else "FAIL",
                }
            )
        own: Measured | None = d.get("own", {}).get(kind)
        if own and own.ok and m.ok:
            targets.append(
                {
                    "target": f"D: loaddb ({kind}) wall / {own.label.split(' (')[0]} wall",
                    "measured": f"{m.wall_s / own.wall_s:.2f}",
                    "required": "(shown, no target)",
                    "result": "INFO",
                }
            )
        targets.append(
            {
                "target": f"D: loaddb ({kind}) peak RSS",
                "measured": f"{m.peak_rss_mb:.0f} MB",
                "required": f"< {LOAD_RSS_TARGET_MB:.0f} MB",
                "result": "PASS" if m.ok and m.peak_rss_mb < LOAD_RSS_TARGET_MB else "FAIL",
            }
        )
    return targets


def print_load_report(d: dict[str, Any], targets: list[dict[str, str]]) -> None:
    size = d["file_bytes"]
    rows = [("command", "wall s", "CPU s", "MB/s", "RSS MB", "exit")]
    measured = [*([d["psql"]] if d.get("psql") else []), *d.get("own", {}).values()]
    for kind, m in d["loads"].items():
        measured += [
            m,
            *([d["baseline_loads"][kind]] if kind in d.get("baseline_loads", {}) else []),
        ]
    for m in measured:
        rate = m.mb_per_s(size)
        rows.append(
            (
                m.label,
                f"{m.wall_s:.2f}",
                f"{m.cpu_s:.2f}",
                f"{rate:.1f}" if rate else "-",
                f"{m.peak_rss_mb:.0f}",
                str(m.exit_status),
            )
        )
    print(f"\nD: one file of {size / MB:.0f} MB (MB = 2^20 bytes); wall time of each command.")
    print_table(rows)
    print()
    print_table(
        [("target", "measured", "required", "result")]
        + [(t["target"], t["measured"], t["required"], t["result"]) for t in targets]
    )


def report(d: dict[str, Any]) -> list[dict[str, str]]:
    """Print scenario D's table and targets; the targets."""
    targets = load_targets(d)
    print_load_report(d, targets)
    return targets


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import machine_info, to_json  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--load-mb", type=float, default=1024)
    parser.add_argument("--timeout", type=float, default=1800, help="per command, in seconds")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/load.json"))
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also load with flsync as of this git revision (a temporary worktree), taking turns",
    )
    parser.add_argument(
        "--repeat", dest="load_repeat", type=int, default=1, help="loads per database and code"
    )
    args = parser.parse_args(argv)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    logs = (args.json.parent / "logs").resolve()
    logs.mkdir(exist_ok=True)
    print(f"Load average before: {os.getloadavg()[0]:.2f} (nproc {os.cpu_count()})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="flsync-bench-"))
    args.baseline_code = work / "baseline" if args.baseline else None
    git = ["git", "-C", str(ROOT), "worktree"]
    try:
        if args.baseline_code:
            command = [*git, "add", "--detach", str(args.baseline_code), args.baseline]
            subprocess.run(command, check=True)
        d = scenario_d(args, Bench(work, logs, args.timeout))
    finally:
        if args.baseline_code:
            subprocess.run([*git, "remove", "--force", str(args.baseline_code)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    targets = report(d)
    options = {"load_mb": args.load_mb, "baseline": args.baseline, "repeat": args.load_repeat}
    document = {"options": options, "machine": machine_info()}
    document |= {"scenario_d": d, "targets": targets}
    args.json.write_text(json.dumps(to_json(document), indent=2, ensure_ascii=False) + "\n")
    missed = [t["target"] for t in targets if t["result"] == "FAIL"]
    if missed:
        print("TARGET MISSED: " + "; ".join(missed))
        return 1
    print("All targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
