"""Scenario E (measures): one run's measures computed by flsync, beside DuckDB's own read_csv
and GROUP BY computing the same figures, on the same files.

The run is written once: enrolments of --learners people (1% staff, 15% leavers), a
step-activity.csv of --mb MB (each learner visits the course's steps in order, 6 weeks of 17
steps, until the size is reached; a third of the rows not completed; rows of people who never
enrolled), and comments. Then, taking turns --repeat times, each in a child process (peak RSS
from os.wait4): flsync's MeasuresEngine on the run (FLSYNC_MEASURES_MEMORY_MB), and the plain
DuckDB queries below at DuckDB's defaults (all the machine's memory and cores), which read each
file with read_csv (dialect detected, every column text, as 1.1 and 1.10 are different steps)
and count with COUNT(DISTINCT ...). Each child reports the seconds of its computation alone
(after its imports) and its figures, which must agree. flsync is also run once on a run of
1/8 the size: its peak RSS must not grow with the file. Alone:
``.venv/bin/python -m benchmarks.measures [--mb 1024] [--json benchmarks/results/measures.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.run import ROOT, Bench, Measured, machine_info, print_table, to_json

RATIO_TARGET = 2.0
RSS_ABOVE_LIMIT_MB = 200.0  # peak RSS at most FLSYNC_MEASURES_MEMORY_MB plus this
ORGANISATION = "Benchmark University"
FOLDER = f"{ORGANISATION}/Measures Test/1-2021-01-04-2021-02-15"
T = "2021-01-05 10:11:12 UTC"
STEPS = [(week, number) for week in range(1, 7) for number in range(1, 18)]

BASELINE = """
CREATE TABLE joiners AS
SELECT learner_id, bool_or(unenrolled_at IS NOT NULL) AS leaver,
    bool_or(fully_participated_at IS NOT NULL) AS fully,
    bool_or(purchased_statement_at IS NOT NULL) AS bought
FROM read_csv('{run}/enrolments.csv', all_varchar = true)
GROUP BY learner_id HAVING bool_and(coalesce(role, '') = 'learner');

CREATE TABLE learners AS
SELECT learner_id, bool_or(last_completed_at IS NOT NULL) AS active,
    count(DISTINCT week_number) FILTER (WHERE last_completed_at IS NOT NULL) AS weeks
FROM read_csv('{run}/step-activity.csv', all_varchar = true)
WHERE learner_id IN (SELECT learner_id FROM joiners)
GROUP BY learner_id HAVING bool_or(first_visited_at IS NOT NULL);
"""
BASELINE_STEPS = """
SELECT step,
    count(DISTINCT learner_id) FILTER (WHERE first_visited_at IS NOT NULL),
    count(DISTINCT learner_id) FILTER (WHERE last_completed_at IS NOT NULL)
FROM read_csv('{run}/step-activity.csv', all_varchar = true)
WHERE learner_id IN (SELECT learner_id FROM learners)
GROUP BY step
"""
BASELINE_MEASURES = """
SELECT (SELECT count(*) FROM joiners), (SELECT count(*) FILTER (WHERE leaver) FROM joiners),
    (SELECT count(*) FROM learners), (SELECT count(*) FILTER (WHERE active) FROM learners),
    (SELECT count(*) FILTER (WHERE weeks >= 2) FROM learners),
    (SELECT count(DISTINCT author_id) FROM read_csv('{run}/comments.csv', all_varchar = true)
        WHERE author_id IN (SELECT learner_id FROM learners)),
    (SELECT count(*) FILTER (WHERE fully) FROM joiners),
    (SELECT count(*) FILTER (WHERE bought) FROM joiners)
"""


def write_run(data_dir: Path, size_mb: float, learners: int) -> Path:
    """The run's folder: metadata.csv, enrolments.csv, step-activity.csv, comments.csv."""
    rng = random.Random(1)
    people = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(learners)]
    strangers = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(100)]
    run = data_dir / FOLDER
    run.mkdir(parents=True)
    (run / "metadata.csv").write_text(
        "uni_name,course_name,run,start_date,end_date,duration_weeks\n"
        f"{ORGANISATION},Measures Test,1,2021-01-04,2021-02-15,6\n"
    )
    with (run / "enrolments.csv").open("w") as out:
        out.write("learner_id,enrolled_at,unenrolled_at,role,fully_participated_at,")
        out.write("purchased_statement_at\n")
        for i, person in enumerate(people):
            role = "organisation_admin" if i % 100 == 0 else "learner"
            left = T if i % 7 == 1 else ""
            out.write(
                f"{person},{T},{left},{role},{T if i % 5 == 2 else ''},{T if i % 9 == 4 else ''}\n"
            )
    target = int(size_mb * (1 << 20))
    written = 0
    with (run / "step-activity.csv").open("w") as out:
        out.write("learner_id,step,week_number,step_number,first_visited_at,last_completed_at\n")
        turn = 0
        while written < target:
            # Learners go through the course a few steps at a time; some never start.
            person = people[turn % len(people)] if turn % 13 else strangers[turn % 100]
            reach = 1 + (turn * 7919) % len(STEPS)
            lines = "".join(
                f"{person},{w}.{n},{w},{n},{T},{T if (turn + n) % 3 else ''}\n"
                for w, n in STEPS[:reach]
            )
            out.write(lines)
            written += len(lines)
            turn += 1
    with (run / "comments.csv").open("w") as out:
        out.write(
            "id,author_id,parent_id,step,week_number,step_number,text,timestamp,moderated,likes\n"
        )
        for i in range(learners // 2):
            out.write(f'{i},{people[(i * 31) % len(people)]},,1.1,1,1,"Hello, all",{T},,0\n')
    return run


def child_flsync(data_dir: Path, memory_mb: int) -> dict[str, Any]:
    from flsync.measures.compute import MeasuresEngine  # noqa: PLC0415
    from flsync.measures.runs import run_folders  # noqa: PLC0415
    from flsync.storage import LocalStore  # noqa: PLC0415

    store = LocalStore(str(data_dir))
    [run] = run_folders(store, ORGANISATION)
    started = time.monotonic()
    with MeasuresEngine(store, memory_mb) as engine:
        result = engine.compute(run)
    seconds = time.monotonic() - started
    steps = {s.step: [s.visited, s.completed] for s in result.steps if s.visited or s.completed}
    return {"seconds": seconds, "measures": list(result.values.values()), "steps": steps}


def child_duckdb(data_dir: Path) -> dict[str, Any]:
    import duckdb  # noqa: PLC0415

    run = data_dir / FOLDER
    started = time.monotonic()
    db = duckdb.connect()
    db.execute(BASELINE.format(run=run))
    steps = db.execute(BASELINE_STEPS.format(run=run)).fetchall()
    measures = list(db.execute(BASELINE_MEASURES.format(run=run)).fetchall()[0])
    seconds = time.monotonic() - started
    return {"seconds": seconds, "measures": measures, "steps": {s: [v, c] for s, v, c in steps}}


def measure(
    bench: Bench, kind: str, data_dir: Path, memory_mb: int, name: str
) -> tuple[Measured, dict[str, Any]]:
    out = bench.work / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.measures", "--child", kind, "--tree", str(data_dir)]
    cmd += ["--memory-mb", str(memory_mb), "--out", str(out)]
    measured = bench.run(cmd, bench.logs / f"{name}.log")
    if measured.exit_status != 0:
        raise SystemExit(f"{name} failed ({measured.exit_status}): see {bench.logs / name}.log")
    figures = json.loads(out.read_text())
    measured.label = kind
    print(f"  {name}: {figures['seconds']:.2f} s computing, {measured.wall_s:.2f} s in all,"
          f" peak RSS {measured.peak_rss_mb:.0f} MB", flush=True)  # fmt: skip
    return measured, figures


def scenario_e(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    print(f"Scenario E (measures of a run with a {args.mb} MB step-activity file)", flush=True)
    big = bench.work / "big"
    write_run(big, args.mb, args.learners)
    small = bench.work / "small"
    write_run(small, args.mb / 8, args.learners)
    size = (big / FOLDER / "step-activity.csv").stat().st_size
    runs: dict[str, list[tuple[Measured, dict[str, Any]]]] = {"flsync": [], "duckdb": []}
    for i in range(args.repeat):
        for kind in ("duckdb", "flsync") if i % 2 else ("flsync", "duckdb"):
            runs[kind].append(measure(bench, kind, big, args.memory_mb, f"measures-{kind}-{i}"))
    small_run, _ = measure(bench, "flsync", small, args.memory_mb, "measures-flsync-eighth")
    figures = {kind: [f for _, f in results] for kind, results in runs.items()}
    reference = figures["duckdb"][0]
    agree = all(
        (f["measures"], f["steps"]) == (reference["measures"], reference["steps"])
        for f in [*figures["flsync"], *figures["duckdb"]]
    )
    median = {kind: statistics.median(f["seconds"] for f in figures[kind]) for kind in runs}
    peak = {kind: max(m.peak_rss_mb for m, _ in results) for kind, results in runs.items()}
    return {
        "step_activity_bytes": size,
        "learners": args.learners,
        "memory_mb": args.memory_mb,
        "seconds": {kind: [f["seconds"] for f in figures[kind]] for kind in runs},
        "median_s": median,
        "ratio": median["flsync"] / median["duckdb"],
        "peak_rss_mb": peak,
        "peak_rss_mb_eighth": small_run.peak_rss_mb,
        "wall_s": {kind: [m.wall_s for m, _ in results] for kind, results in runs.items()},
        "agree": agree,
        "measures": figures["flsync"][0]["measures"],
    }


def report(e: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [("command", "compute s (median)", "each run s", "peak RSS MB")]
    for kind, label in (
        ("flsync", "flsync MeasuresEngine"),
        ("duckdb", "DuckDB read_csv + GROUP BY"),
    ):
        each = ", ".join(f"{s:.2f}" for s in e["seconds"][kind])
        rows.append((label, f"{e['median_s'][kind]:.2f}", each, f"{e['peak_rss_mb'][kind]:.0f}"))
    rows.append(("flsync, 1/8 of the file", "", "", f"{e['peak_rss_mb_eighth']:.0f}"))
    print_table(rows)
    limit = e["memory_mb"] + RSS_ABOVE_LIMIT_MB
    targets = [
        {"target": "same figures as DuckDB's", "result": "met" if e["agree"] else "FAIL"},
        {
            "target": f"time within {RATIO_TARGET}x of DuckDB's (ratio {e['ratio']:.2f})",
            "result": "met" if e["ratio"] <= RATIO_TARGET else "FAIL",
        },
        {
            "target": f"peak RSS under {limit:.0f} MB at 1/8 and all of the file"
            f" ({e['peak_rss_mb_eighth']:.0f} and {e['peak_rss_mb']['flsync']:.0f} MB)",
            "result": "met"
            if max(e["peak_rss_mb_eighth"], e["peak_rss_mb"]["flsync"]) <= limit
            else "FAIL",
        },
    ]
    for target in targets:
        print(f"{target['result']:>4}  {target['target']}")
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=float, default=64, help="size of step-activity.csv")
    parser.add_argument("--learners", type=int, default=150_000)
    parser.add_argument("--memory-mb", type=int, default=512, help="FLSYNC_MEASURES_MEMORY_MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800, help="per command, in seconds")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/measures.json"))
    parser.add_argument("--child", choices=("flsync", "duckdb"), help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        figures = (
            child_flsync(args.tree, args.memory_mb)
            if args.child == "flsync"
            else child_duckdb(args.tree)
        )
        args.out.write_text(json.dumps(figures))
        return 0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    logs = (args.json.parent / "logs").resolve()
    logs.mkdir(exist_ok=True)
    print(f"Load average before: {os.getloadavg()[0]:.2f} (nproc {os.cpu_count()})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="flsync-bench-"))
    try:
        e = scenario_e(args, Bench(work, logs, args.timeout))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    targets = report(e)
    document = {"options": vars(args) | {"json": str(args.json)}, "machine": machine_info()}
    document |= {"scenario_e": e, "targets": targets}
    args.json.write_text(json.dumps(to_json(document), indent=2, ensure_ascii=False) + "\n")
    missed = [t["target"] for t in targets if t["result"] == "FAIL"]
    if missed:
        print("TARGET MISSED: " + "; ".join(missed))
        return 1
    print("All targets met.")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
