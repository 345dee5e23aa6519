"""The measures (flsync.measures): each definition on small hand-made runs, every kind of bad
input, the record that spares unchanged runs, and the whole path on the imitation site, checked
against a computation of this module's own."""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from fakesite import FakeSite, SiteOptions
from flsync import tree
from flsync.measures.compute import (
    BATCH_BYTES,
    BATCH_RUNS,
    CURRENT_HEADERS,
    MEASURES,
    MeasuresEngine,
    StepCompletion,
    batches,
)
from flsync.measures.dashboard import DASHBOARD_FILE
from flsync.measures.record import MEASURES_FILE, RECORD_FILE, STEPS_FILE, load_record
from flsync.measures.runs import COMMENTS, ENROLMENTS, STEP_ACTIVITY, RunFolder, run_folders
from flsync.measures.update import lock_name, update_organisation
from flsync.storage import FileStat, LocalStore, StoreLockedError
from tests.commands import CommandResult, run_in_process
from tests.conftest import Sync

ORG = "Org"
RUN = "Org/A Course/1-2021-01-04-2021-02-01"
EN, SA, CO = (",".join(CURRENT_HEADERS[name]) for name in (ENROLMENTS, STEP_ACTIVITY, COMMENTS))
T = "2021-01-05 10:00:00 UTC"
SMALL = SiteOptions(organisations=1, courses=1, runs=2, rows=12, tricky=False)


def enrolment(
    learner: str, role: str = "learner", left: str = "", full: str = "", bought: str = ""
) -> str:
    demographics = "Unknown,GB,Unknown,Unknown,Unknown,Unknown,GB,f,"
    return f"{learner},{T},{left},{role},{full},{bought},{demographics}"


def visit(learner: str, step: str, completed: bool = True) -> str:
    week, number = step.split(".")
    return f"{learner},{step},{week},{number},{T},{T if completed else ''}"


def comment(number: int, author: str) -> str:
    return f'{number},{author},,1.1,1,1,"A comment, with ""quotes""",{T},,0'


def csv_text(header: str, *rows: str) -> str:
    return "\n".join((header, *rows)) + "\n"


# One run that holds every case a definition turns on: a returning learner (a), one active in
# one week only (b), a leaver who visits without completing (c), a joiner who never visits
# but comments and fully participated (d), one enrolled twice, once left (e), staff (s) who does
# everything, and someone never enrolled (x) who visits and comments.
ENROLMENTS_CSV = csv_text(
    EN,
    enrolment("a", full=T, bought=T),
    enrolment("b"),
    enrolment("c", left=T),
    enrolment("d", full=T),
    enrolment("e", left=T),
    enrolment("e"),
    enrolment("s", role="organisation_admin", full=T, bought=T),
)
ACTIVITY_CSV = csv_text(
    SA,
    visit("a", "1.1"),
    visit("a", "2.1"),
    visit("b", "1.1"),
    visit("b", "1.2"),
    visit("c", "1.1", completed=False),
    visit("s", "4.1"),
    visit("x", "1.10"),
)
COMMENTS_CSV = csv_text(
    CO, comment(1, "a"), comment(2, "a"), comment(3, "d"), comment(4, "s"), comment(5, "x")
)
# The same run in the older header versions: enrolments of 13 columns, step activity of 4 (the
# week is the step's part before the dot), comments of 8.
OLDER_ENROLMENTS_CSV = csv_text(*(line.rsplit(",", 2)[0] for line in ENROLMENTS_CSV.splitlines()))
OLDER_ACTIVITY_CSV = csv_text(
    "learner_id,step,first_visited_at,last_completed_at",
    *(",".join(row[:2] + row[4:]) for row in csv.reader(ACTIVITY_CSV.splitlines()[1:])),
)
OLDER_COMMENTS_CSV = csv_text(
    "id,author_id,parent_id,step,text,timestamp,moderated,likes",
    *(f'{i},{a},,1.1,"Hi, all",{T},,0' for i, a in enumerate("aadsx")),
)
EXPECTED = {
    "joiners": 5,
    "leavers": 2,
    "learners": 3,
    "active_learners": 2,
    "returning_learners": 1,
    "social_learners": 1,
    "fully_participating_learners": 2,
    "statements_sold": 1,
}
EXPECTED_STEPS = (
    StepCompletion("1.1", "1", "1", 3, 2),
    StepCompletion("1.2", "1", "2", 1, 1),
    StepCompletion("1.10", "1", "10", 0, 0),  # visited by someone never enrolled only
    StepCompletion("2.1", "2", "1", 1, 1),
    StepCompletion("4.1", "4", "1", 0, 0),  # visited by staff only
)


def make_run(root: Path, folder: str = RUN, title: str = "A Course", **files: str | bytes) -> Path:
    """A run folder with metadata.csv and ``files`` (enrolments=..., step_activity=...)."""
    path = root / folder
    path.mkdir(parents=True)
    number, start, end = re.fullmatch(
        r".*/(\d+)-(\d{4}-\d\d-\d\d)-(\d{4}-\d\d-\d\d)", folder
    ).groups()
    metadata = io.StringIO()
    csv.writer(metadata, lineterminator="\n").writerows(
        [tree_header(), ["Org", title, number, start, end, "4"]]
    )
    (path / tree.METADATA_FILE).write_text(metadata.getvalue())
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (path / tree.dataset_file_name(name)).write_bytes(data)
    return path


def tree_header() -> list[str]:
    return ["uni_name", "course_name", "run", "start_date", "end_date", "duration_weeks"]


def compute(root: Path):
    store = LocalStore(str(root))
    [run] = run_folders(store, ORG)
    with MeasuresEngine(store, 256) as engine:
        return engine.compute(run)


def update(root: Path, memory_mb: int = 256, **kwargs):
    return update_organisation(LocalStore(str(root)), ORG, memory_mb=memory_mb, **kwargs)


# The definitions.


def test_each_measure_by_its_definition(tmp_path):
    make_run(tmp_path, enrolments=ENROLMENTS_CSV, step_activity=ACTIVITY_CSV, comments=COMMENTS_CSV)
    result = compute(tmp_path)
    assert result.values == EXPECTED
    assert result.steps == EXPECTED_STEPS
    assert result.problem is None


def test_older_header_versions_give_the_same_measures(tmp_path):
    # The versions FutureLearn's older runs have.
    make_run(tmp_path, enrolments=OLDER_ENROLMENTS_CSV, step_activity=OLDER_ACTIVITY_CSV,
             comments=OLDER_COMMENTS_CSV)  # fmt: skip
    result = compute(tmp_path)
    assert OLDER_ENROLMENTS_CSV.splitlines()[0].count(",") == 12
    assert result.values == EXPECTED
    assert result.steps == EXPECTED_STEPS


def test_a_run_without_enrolments_has_every_measure_empty(tmp_path):
    make_run(tmp_path, step_activity=ACTIVITY_CSV, comments=COMMENTS_CSV)
    result = compute(tmp_path)
    assert result.values == dict.fromkeys(MEASURES)
    assert result.steps == ()


def test_a_measure_whose_file_is_missing_is_empty_not_zero(tmp_path):
    make_run(tmp_path, enrolments=ENROLMENTS_CSV, step_activity=ACTIVITY_CSV)
    assert compute(tmp_path).values == {**EXPECTED, "social_learners": None}
    shutil.rmtree(tmp_path / ORG)
    make_run(tmp_path, enrolments=ENROLMENTS_CSV, comments=COMMENTS_CSV)
    result = compute(tmp_path)
    unknown = ("learners", "active_learners", "returning_learners", "social_learners")
    assert result.values == {**EXPECTED, **dict.fromkeys(unknown)}
    assert result.steps == ()


def test_empty_files_count_nothing(tmp_path):
    # A header alone, or no bytes at all (taken as the current header with no rows).
    make_run(tmp_path, enrolments=ENROLMENTS_CSV, step_activity=b"", comments=CO + "\n")
    result = compute(tmp_path)
    assert result.values == {**EXPECTED, "learners": 0, "active_learners": 0,
                             "returning_learners": 0, "social_learners": 0}  # fmt: skip
    assert result.steps == ()
    shutil.rmtree(tmp_path / ORG)
    make_run(tmp_path, enrolments=EN + "\n", step_activity=ACTIVITY_CSV)
    result = compute(tmp_path)
    assert result.values == {**dict.fromkeys(MEASURES, 0), "social_learners": None}
    assert {s.step: (s.visited, s.completed) for s in result.steps} == {
        s.step: (0, 0) for s in EXPECTED_STEPS
    }


def test_enrolments_without_a_role_column_count_every_row(tmp_path):
    enrolments = csv_text("learner_id,enrolled_at,unenrolled_at", f"a,{T},", f"s,{T},{T}")
    make_run(tmp_path, enrolments=enrolments, step_activity=ACTIVITY_CSV)
    values = compute(tmp_path).values
    assert values["joiners"] == 2  # s too: nothing says it is staff
    assert values["leavers"] == 1
    assert values["learners"] == 2  # a and s visited
    assert values["fully_participating_learners"] is None  # no such column
    assert values["statements_sold"] is None


def test_empty_fields_are_empty_quoted_or_not(tmp_path):
    enrolments = csv_text(EN, enrolment("a").replace(f"{T},,learner", f'{T},"",learner'))
    activity = csv_text(SA, f'a,1.1,1,1,{T},""', 'a,2.1,"",1,"",""')
    make_run(tmp_path, enrolments=enrolments, step_activity=activity)
    result = compute(tmp_path)
    assert (result.values["leavers"], result.values["learners"]) == (0, 1)
    assert (result.values["active_learners"], result.values["returning_learners"]) == (0, 0)
    # An empty week_number is the step's part before the dot.
    assert [(s.step, s.week_number, s.visited) for s in result.steps] == [
        ("1.1", "1", 1),
        ("2.1", "2", 0),
    ]


# Bad input.


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("comments", csv_text(CO, comment(1, "a"), "2,b,,1.1,1"),
         "comments.csv, line 3: 5 fields where the header has 10"),
        ("step_activity", csv_text(SA, visit("a", "1.1"), visit("b", "1.1") + ",extra"),
         "step-activity.csv, line 3: 7 fields where the header has 6"),
        ("enrolments", ENROLMENTS_CSV.encode() + b"\xff,learner\n",
         "enrolments.csv, line 9: not UTF-8 text"),
        ("enrolments", csv_text("enrolled_at,role", f"{T},learner"),
         "enrolments.csv, line 1: the header has no learner_id column"),
    ],
    ids=["too-few-fields", "too-many-fields", "not-utf8", "no-learner-id"],
)  # fmt: skip
def test_a_malformed_file_leaves_the_run_empty_with_one_warning(
    tmp_path, caplog, name, content, where
):
    files = {"enrolments": ENROLMENTS_CSV, "step_activity": ACTIVITY_CSV, "comments": COMMENTS_CSV}
    make_run(tmp_path, **{**files, name: content})
    caplog.set_level(logging.INFO)
    result = update(tmp_path)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].getMessage().startswith(f"Measures (left empty): {RUN}: {RUN}/{where}")
    assert result.empty == [RUN] and not result.ok
    measures = (tmp_path / ORG / MEASURES_FILE).read_text().splitlines()
    assert measures[1] == "A Course,1,2021-01-04,2021-02-01" + "," * len(MEASURES)
    assert (tmp_path / ORG / STEPS_FILE).read_text().count("\n") == 1  # the header
    # Recorded: the same files are not read (nor warned about) again.
    caplog.clear()
    again = update(tmp_path)
    assert (again.computed, again.files_read) == (0, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_sync_s_exit_status_is_not_about_the_measures(tmp_path):
    # A run folder the site no longer lists, whose comments have a record of 2 fields.
    broken = "data/University of Exampleton/Old Course/1-2015-01-05-2015-02-02"
    make_run(tmp_path, broken, enrolments=ENROLMENTS_CSV, step_activity=ACTIVITY_CSV,
             comments=COMMENTS_CSV + "6,a\n")  # fmt: skip
    with FakeSite(SiteOptions(organisations=1, courses=1, runs=1, rows=5, tricky=False)) as site:
        result = Sync(site.base_url, tmp_path)()
    assert result.returncode == 0, result.output
    [warning] = [line for line in result.output.splitlines() if "] WARNING: " in line]
    assert warning.endswith(
        f"Measures (left empty): {broken[5:]}: {broken[5:]}/comments.csv, line 7: 2 fields"
        " where the header has 10"
    )
    assert "Sync complete" in result.output.splitlines()[-1]


def test_a_run_that_cannot_be_computed_now_is_said_and_tried_again(tmp_path, caplog):
    make_run(tmp_path, enrolments=ENROLMENTS_CSV, step_activity=ACTIVITY_CSV)
    failed = update(tmp_path, memory_mb=1)  # DuckDB cannot even read the enrolments in 1 MB
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith(f"Measures (failed): {RUN}: {RUN}/enrolments.csv: Out of Memory")
    assert warning.endswith("; tried again at the next computation")
    assert failed.failed and (failed.computed, failed.empty) == (0, [])
    assert (tmp_path / ORG / MEASURES_FILE).read_text().splitlines()[1].endswith(",,,,,,,,")
    again = update(tmp_path)
    assert (again.computed, again.files_read, again.failed) == (1, 2, [])


def test_measures_held_by_another_job_are_left_to_it(tmp_path):
    make_run(tmp_path, enrolments=ENROLMENTS_CSV)
    store = LocalStore(str(tmp_path))
    with store.lock(lock_name(ORG)), pytest.raises(StoreLockedError):
        update(tmp_path)
    assert not (tmp_path / ORG / MEASURES_FILE).exists()
    assert update(tmp_path).computed == 1


def test_the_sync_gives_duckdb_the_memory_of_its_setting(tmp_path):
    with FakeSite(SiteOptions(organisations=1, courses=1, runs=2, rows=5, tricky=False)) as site:
        result = Sync(site.base_url, tmp_path)("-s", "FLSYNC_MEASURES_MEMORY_MB=1")
    assert result.returncode == 0, result.output
    warnings = [line for line in result.output.splitlines() if "] WARNING: " in line]
    assert len(warnings) == 2 and all("Measures (failed): " in w for w in warnings)
    assert all("Out of Memory Error" in w for w in warnings)
    assert "0 computed (2 files read), 0 unchanged, 0 gone, 0 left empty, 2 failed" in result.output


# Runs computed together.


def test_runs_computed_together_get_the_measures_each_gets_alone(tmp_path, caplog):
    # One batch: runs of both header versions, runs without a file, an empty file, and two
    # malformed files that fail a query they share with other runs' files.
    files = {"enrolments": ENROLMENTS_CSV, "step_activity": ACTIVITY_CSV, "comments": COMMENTS_CSV}
    bad_comments = csv_text(CO, comment(1, "a"), "2,b,,1.1,1")
    bad_activity = csv_text(SA, visit("a", "1.1"), visit("b", "1.1") + ",extra")
    runs = [
        files,
        {"enrolments": OLDER_ENROLMENTS_CSV, "step_activity": OLDER_ACTIVITY_CSV,
         "comments": OLDER_COMMENTS_CSV},
        {**files, "comments": bad_comments},
        {**files, "step_activity": bad_activity},
        {"step_activity": ACTIVITY_CSV, "comments": COMMENTS_CSV},
        {"enrolments": csv_text("learner_id,enrolled_at,unenrolled_at", f"a,{T},", f"s,{T},{T}"),
         "step_activity": b""},
        {"enrolments": ENROLMENTS_CSV, "comments": COMMENTS_CSV},
        {**files, "enrolments": ENROLMENTS_CSV + enrolment("x") + "\n"},
    ]  # fmt: skip
    for number, run_files in enumerate(runs, 1):
        make_run(tmp_path, f"Org/A Course/{number}-2021-01-04-2021-02-01", **run_files)
    store = LocalStore(str(tmp_path))
    folders = run_folders(store, ORG)
    assert len(list(batches(folders))) == 1
    caplog.set_level(logging.INFO)
    result = update(tmp_path)
    together = load_record(store, ORG)
    for run in folders:
        with MeasuresEngine(store, 256) as engine:
            assert together[run.key].measures == engine.compute(run), run.key
    assert together["A Course/1-2021-01-04-2021-02-01"].measures.values == EXPECTED
    assert together["A Course/2-2021-01-04-2021-02-01"].measures.values == EXPECTED
    assert together["A Course/8-2021-01-04-2021-02-01"].measures.values["learners"] == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sorted(warnings) == [
        f"Measures (left empty): Org/A Course/{n}-2021-01-04-2021-02-01:"
        f" Org/A Course/{n}-2021-01-04-2021-02-01/{where}"
        for n, where in [
            (3, "comments.csv, line 3: 5 fields where the header has 10"),
            (4, "step-activity.csv, line 3: 7 fields where the header has 6"),
        ]
    ]
    assert (result.computed, len(result.empty), result.failed) == (8, 2, [])


def test_runs_are_batched_from_the_smallest_within_the_bounds():
    def run(number: int, size: int) -> RunFolder:
        # metadata.csv is not DuckDB's to read: its size does not count.
        stats = {ENROLMENTS: FileStat(size, 0.0), tree.METADATA_FILE: FileStat(BATCH_BYTES, 0.0)}
        return RunFolder(ORG, "A Course", f"{number}-2021-01-04-2021-02-01", stats)

    half = BATCH_BYTES // 2
    sizes = {1: BATCH_BYTES + 1, 2: half, 3: 2, 4: half, 5: 1}
    found = batches([run(number, size) for number, size in sizes.items()])
    assert [[r.numbers()[0] for r in batch] for batch in found] == [[5, 3, 2], [4], [1]]
    many = batches([run(number, 1) for number in range(BATCH_RUNS + 1)])
    assert [len(batch) for batch in many] == [BATCH_RUNS, 1]


# The record: only what changed is read.


def test_only_changed_runs_are_computed_again_and_gone_runs_leave(tmp_path):
    files = {"enrolments": ENROLMENTS_CSV, "step_activity": ACTIVITY_CSV, "comments": COMMENTS_CSV}
    make_run(tmp_path, **files)
    other = make_run(tmp_path, "Org/A Course/2-2021-06-07-2021-07-05", **files)
    first = update(tmp_path)
    assert (first.computed, first.files_read, first.unchanged) == (2, 6, 0)
    outputs = {
        name: (tmp_path / ORG / name).stat().st_mtime_ns for name in (MEASURES_FILE, STEPS_FILE)
    }
    second = update(tmp_path)
    assert (second.computed, second.files_read, second.unchanged) == (0, 0, 2)
    assert {name: (tmp_path / ORG / name).stat().st_mtime_ns for name in outputs} == outputs
    (other / "comments.csv").write_text(csv_text(CO, comment(1, "b")))
    third = update(tmp_path)
    assert (third.computed, third.files_read, third.unchanged) == (1, 3, 1)
    rows = list(csv.DictReader(io.StringIO((tmp_path / ORG / MEASURES_FILE).read_text())))
    assert [(r["run"], r["social_learners"]) for r in rows] == [("1", "1"), ("2", "1")]
    shutil.rmtree(other)
    fourth = update(tmp_path)
    assert (fourth.removed, fourth.files_read) == (1, 0)
    assert [r.split(",")[1] for r in (tmp_path / ORG / MEASURES_FILE).read_text().splitlines()] == [
        "run",
        "1",
    ]


def test_an_unreadable_record_means_every_run_is_computed_again(tmp_path, caplog):
    make_run(tmp_path, enrolments=ENROLMENTS_CSV)
    update(tmp_path)
    (tmp_path / ORG / RECORD_FILE).write_text('{"version": 1, "runs": ')
    result = update(tmp_path)
    assert (result.computed, result.files_read) == (1, 1)
    assert f"Measures record {ORG}/{RECORD_FILE} is unreadable" in caplog.text


def test_measures_csv_and_step_completion_csv(tmp_path):
    make_run(tmp_path, title='Data/Society: "Open" Data, ☕',
             enrolments=ENROLMENTS_CSV, step_activity=ACTIVITY_CSV,
             comments=COMMENTS_CSV)  # fmt: skip
    update(tmp_path)
    course = '"Data/Society: ""Open"" Data, ☕"'
    assert (tmp_path / ORG / MEASURES_FILE).read_text() == (
        "course,run,start_date,end_date,joiners,leavers,learners,active_learners,"
        "returning_learners,social_learners,fully_participating_learners,statements_sold\n"
        f"{course},1,2021-01-04,2021-02-01,5,2,3,2,1,1,2,1\n"
    )
    assert (tmp_path / ORG / STEPS_FILE).read_text() == (
        "course,run,step,week_number,step_number,visited,completed\n"
        f"{course},1,1.1,1,1,3,2\n{course},1,1.2,1,2,1,1\n{course},1,1.10,1,10,0,0\n"
        f"{course},1,2.1,2,1,1,1\n{course},1,4.1,4,1,0,0\n"
    )
    assert not [
        p
        for p in (tmp_path / RUN).iterdir()
        if p.name not in ("metadata.csv", "enrolments.csv", "step-activity.csv", "comments.csv")
    ]


# The imitation site, end to end.


def independent(run: Path) -> tuple[list[str], list[list[str]]]:
    """The run's measures (as measures.csv writes them) and its steps, by the definitions in
    docs/measures.md, read with the csv module: nothing shared with flsync.measures."""

    def rows(name: str) -> list[dict[str, str]] | None:
        path = run / name
        if not path.exists():
            return None
        return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))

    enrolments, activity, comments = (
        rows("enrolments.csv"),
        rows("step-activity.csv"),
        rows("comments.csv"),
    )
    values: dict[str, int | None] = dict.fromkeys(MEASURES)
    steps: list[list[str]] = []
    if enrolments is None:
        return ["" for _ in MEASURES], steps
    staff = {r["learner_id"] for r in enrolments if r.get("role", "learner") != "learner"}
    joiners = {r["learner_id"] for r in enrolments if r["learner_id"]} - staff

    def joiners_with(column: str) -> int:
        return len(
            {r["learner_id"] for r in enrolments if r["learner_id"] in joiners and r[column]}
        )

    values["joiners"] = len(joiners)
    values["leavers"] = joiners_with("unenrolled_at")
    values["fully_participating_learners"] = joiners_with("fully_participated_at")
    values["statements_sold"] = joiners_with("purchased_statement_at")
    if activity is not None:
        learners = {
            r["learner_id"]
            for r in activity
            if r["learner_id"] in joiners and r["first_visited_at"]
        }
        weeks: dict[str, set[str]] = {}
        for r in activity:
            if r["learner_id"] in learners and r["last_completed_at"]:
                weeks.setdefault(r["learner_id"], set()).add(
                    r.get("week_number") or r["step"].split(".")[0]
                )
        values["learners"] = len(learners)
        values["active_learners"] = len(weeks)
        values["returning_learners"] = sum(len(w) >= 2 for w in weeks.values())
        if comments is not None:
            values["social_learners"] = len({r["author_id"] for r in comments} & learners)
        for step in {r["step"] for r in activity if r["step"]}:
            of_step = [r for r in activity if r["step"] == step]
            week = next(
                (r["week_number"] for r in of_step if r.get("week_number")), step.split(".")[0]
            )
            number = next(
                (r["step_number"] for r in of_step if r.get("step_number")), step.split(".")[1]
            )
            visited = len(
                {
                    r["learner_id"]
                    for r in of_step
                    if r["learner_id"] in learners and r["first_visited_at"]
                }
            )
            completed = len(
                {
                    r["learner_id"]
                    for r in of_step
                    if r["learner_id"] in learners and r["last_completed_at"]
                }
            )
            steps.append([step, week, number, str(visited), str(completed)])
        steps.sort(key=lambda s: (int(s[1]), int(s[2])))
    return ["" if v is None else str(v) for v in values.values()], steps


def test_the_measures_match_an_independent_computation_on_every_run(synced_site):
    checked = 0
    for organisation in [p for p in synced_site.data_dir.iterdir() if p.is_dir()]:
        measures = list(csv.reader((organisation / MEASURES_FILE).open(newline="")))[1:]
        steps = list(csv.reader((organisation / STEPS_FILE).open(newline="")))[1:]
        for run in sorted(organisation.glob("*/*-*-*")):
            metadata = next(csv.DictReader((run / "metadata.csv").open(newline="")))
            key = [
                metadata["course_name"],
                metadata["run"],
                metadata["start_date"],
                metadata["end_date"],
            ]
            values, run_steps = independent(run)
            assert [row for row in measures if row[:4] == key] == [key + values], run
            assert [row[2:] for row in steps if row[:2] == key[:2]] == run_steps, run
            checked += 1
    assert checked == sum(1 for _ in synced_site.data_dir.glob("*/*/*/metadata.csv")) == 43


def test_the_imitation_site_s_runs_hold_every_case(synced_site):
    """The independent check means something only if the data has the cases: staff among
    joiners and in the step activity, strangers, leavers, joiners who never visit, learners
    who return, older header versions."""
    old = new = 0
    for run in synced_site.data_dir.glob("*/*/*-*-*"):
        enrolments = list(csv.DictReader((run / "enrolments.csv").open(newline="")))
        activity = list(csv.DictReader((run / "step-activity.csv").open(newline="")))
        ids = {r["learner_id"] for r in enrolments}
        staff = {r["learner_id"] for r in enrolments if r["role"] != "learner"}
        visitors = {r["learner_id"] for r in activity}
        assert staff & visitors and visitors - ids, run
        assert any(r["unenrolled_at"] for r in enrolments if r["role"] == "learner"), run
        assert ids - staff - visitors, run  # joiners who never visit
        old += "week_number" not in activity[0]
        new += "week_number" in activity[0]
    assert old == 2 and new == 41
    measures = list(
        csv.DictReader(
            (synced_site.data_dir / "University of Exampleton" / MEASURES_FILE).open(newline="")
        )
    )
    assert all(int(r["returning_learners"]) >= 1 for r in measures)


def test_a_no_change_sync_computes_and_rewrites_nothing(tmp_path):
    organisation = tmp_path / "data" / "University of Exampleton"

    def outputs() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in organisation.glob("*.csv")}

    with FakeSite(SMALL) as site:
        sync = Sync(site.base_url, tmp_path)
        first = sync()
        before = outputs()
        second = sync()
        after = outputs()
        # A run whose comments.csv has another time (the sync finds its content the same).
        [run] = organisation.glob("*/2-*")
        os.utime(run / "comments.csv", ns=(0, (run / "comments.csv").stat().st_mtime_ns + 10**9))
        third = sync()
    assert all(r.returncode == 0 for r in (first, second, third))
    summary = (
        "Measures of University of Exampleton: 2 runs, {} computed ({} files read), {} unchanged"
    )
    assert summary.format(2, 6, 0) in first.output
    assert summary.format(0, 0, 2) in second.output
    assert after == before and {MEASURES_FILE, STEPS_FILE} <= before.keys()
    assert summary.format(1, 3, 1) in third.output


def test_measures_can_be_turned_off(tmp_path):
    with FakeSite(SMALL) as site:
        result = Sync(site.base_url, tmp_path)("-s", "FLSYNC_MEASURES=0")
    assert result.returncode == 0
    assert "Measures:" not in result.output
    organisation = tmp_path / "data" / "University of Exampleton"
    assert not [
        p.name
        for p in organisation.iterdir()
        if p.name in (MEASURES_FILE, STEPS_FILE, DASHBOARD_FILE, RECORD_FILE)
    ]


def measures_command(workdir: Path, data_dir: str, *args: str) -> CommandResult:
    (workdir / "config.json").write_text(f'{{"data_dir": "{data_dir}"}}')
    return run_in_process(["measures", *args], workdir)


def test_the_command_computes_a_copied_tree_from_its_files_alone(synced_site, tmp_path):
    # Copied to another machine: the data, without any of flsync's own (dot) files.
    copy = tmp_path / "copy"
    shutil.copytree(synced_site.data_dir, copy, ignore=shutil.ignore_patterns(".*", "*.csv.part"))
    for organisation in copy.iterdir():
        for name in (MEASURES_FILE, STEPS_FILE, DASHBOARD_FILE):
            (organisation / name).unlink()
    result = measures_command(tmp_path, "copy", "-a", "organisation=university-of-exampleton")
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"INFO: Measures complete for University of Exampleton: 34 runs, 34 computed"
        r" \(102 files read\)",
        result.stderr,
    )
    for name in (MEASURES_FILE, STEPS_FILE):
        assert (copy / "University of Exampleton" / name).read_bytes() == (
            synced_site.data_dir / "University of Exampleton" / name
        ).read_bytes()
    assert (copy / "University of Exampleton" / DASHBOARD_FILE).exists()
    assert not (copy / "Institut für Données & “Tests”" / MEASURES_FILE).exists()  # not asked for


def test_the_command_s_bad_input(tmp_path):
    make_run(tmp_path / "data", enrolments=ENROLMENTS_CSV, step_activity=ACTIVITY_CSV,
             comments=csv_text(CO, "1,a"))  # fmt: skip
    unknown = measures_command(tmp_path, "data", "-a", "organisation=nowhere")
    assert unknown.returncode == 2
    assert (
        "ERROR: Measures FAILED: organisation 'nowhere' is not in the data tree, which holds:"
        " Org (org)" in unknown.stderr
    )
    wrong = measures_command(tmp_path, "data", "-a", "course=x")
    assert wrong.returncode == 2 and "only -a organisation=NAME is understood" in wrong.stderr
    malformed = measures_command(tmp_path, "data")
    assert malformed.returncode == 1
    assert (
        f"WARNING: Measures (left empty): {RUN}: {RUN}/comments.csv, line 2: 2 fields where"
        " the header has 10" in malformed.stderr
    )
    assert (
        "ERROR: Measures INCOMPLETE for Org: 1 runs, 1 computed (4 files read), 0 unchanged,"
        " 0 gone, 1 left empty, 0 failed" in malformed.stderr
    )
    missing = measures_command(tmp_path, "nothing-here")
    assert missing.returncode == 2 and "data_dir nothing-here does not exist" in missing.stderr
