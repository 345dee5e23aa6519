"""`scrapy export`, run as a command on the imitation site's synced tree and checked from the
outside: every identifier, name and e-mail address of the mirror looked for in every byte of
the copy; joins on pseudonyms; every other value exact; incremental, atomic and interrupted
exports; bad keys, DESTs and files; S3 as DEST and as source.

What is an identifier is this file's own knowledge (the ``id`` and ``*_id`` columns, the team's
names), not the export's rules table: a column the table forgot is caught here.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from fakesite import FakeSite, SiteOptions
from flsync import tree
from flsync.export.pseudonyms import new_key
from flsync.storage import TEMP_PREFIX, TEMP_SUFFIX
from tests.commands import REPO, command_env, run_in_process
from tests.conftest import Sync
from tests.test_s3 import (  # noqa: F401 - fixtures
    ISOLATED,
    KEYS,
    authenticated,
    bucket,
    contents,
    endpoint,
    iam_keys,
    s3,
    s3_server,
    versioning,
    versions,
)

SITE = SiteOptions(organisations=2, courses=2, runs=2, rows=12)
EXAMPLETON = "University of Exampleton"
MANIFEST = ".flsync-export.json"
ID_COLUMN = re.compile(r"(^|_)id$")
NAME_COLUMNS = {"first_name", "last_name"}
DROPPED = {
    "text",
    "cloze_response",
    "guideline_one_feedback",
    "guideline_two_feedback",
    "guideline_three_feedback",
    "leaving_reason",
    "reason",
    *NAME_COLUMNS,
}
# Files with no identifier, name or free text: copied as they are.
UNCHANGED = ("metadata.csv", "video-stats.csv", "country-subdivisions.csv")
PERSON_COLUMNS = {"learner_id", "author_id", "reviewer_id"}
PSEUDONYM = re.compile(r"(?<![\w-])([a-z]+(?:-[a-z]+)*)-([0-9a-f]{20})(?!\w)")
EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
UNKNOWN_DATASET = "learner-outcomes-survey-responses"
# Rows with addresses in free text, added to some comments files (the imitation has none).
ADDRESSES = (
    "Write to jane.doe+fl@uni.example.ac.uk, or see https://www.futurelearn.com/profiles/4821",
    "Mon adresse : zoë.müller@exämple.fr (ou linkedin.com/in/zoe-muller).",
    "<Tom.O'Brien@Example.COM> wrote: www.example.org/~tom",
)


# Running the command.


@dataclasses.dataclass
class Run:
    returncode: int
    output: str

    def lines(self, level: str) -> list[str]:
        return [line for line in self.output.splitlines() if f"] {level}: " in line]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "scrapy", "export", *args]


def environment(key: Path | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The key file named by the environment (``key`` None: none, whatever this shell has)."""
    return {"FLSYNC_EXPORT_KEY_FILE": str(key) if key else "", **(env or {})}


def export(workdir: Path, *args: str, key: Path | None = None, env=None) -> Run:
    """`scrapy export ARGS` in workdir (its config.json), in this process: exit status and
    output."""
    result = run_in_process(["export", *args], workdir, environment(key, env))
    return Run(result.returncode, result.output)


def start_export(workdir: Path, *args: str, key: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(*args),
        cwd=workdir,
        env=command_env(environment(key)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.01)


# Reading trees.


def files(root: Path, hidden: bool = True) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes); hidden ones only if ``hidden``."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and (hidden or not any(s.startswith(".") for s in p.relative_to(root).parts))
    }


def dataset_files(root: Path) -> dict[str, list[list[str]]]:
    """Every CSV file of every run folder, parsed."""
    return {
        p.relative_to(root).as_posix(): list(csv.reader(io.StringIO(p.read_text(), newline="")))
        for p in sorted(root.glob("*/*/*/*.csv"))
    }


def file_ids(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file, hidden ones too: a rewrite by rename changes both."""
    return {
        path: ((root / path).stat().st_ino, (root / path).stat().st_mtime_ns)
        for path in files(root)
    }


def pseudonyms(root: Path) -> set[str]:
    return {
        m.group() for content in files(root).values() for m in PSEUDONYM.finditer(content.decode())
    }


def secrets_and_innocent_text(data_dir: Path) -> tuple[set[str], str]:
    """Every identifier, name and e-mail address of the mirror's files, and the text of all
    their other cells and headers, and the tree's paths (what the copy may hold)."""
    secrets, innocent = set(), [*files(data_dir)]
    for rows in dataset_files(data_dir).values():
        header, *body = rows
        innocent += header
        for row in body:
            for name, value in zip(header, row, strict=True):
                if ID_COLUMN.search(name) or name in NAME_COLUMNS:
                    secrets.add(value)
                else:
                    secrets.update(EMAIL.findall(value))
                    innocent.append(EMAIL.sub(" ", value))
    secrets.discard("")
    return secrets, "\n".join(innocent)


def holds(text: str, value: str) -> bool:
    """Whether ``text`` holds ``value`` as a whole token, not part of a longer word or number
    (a pseudonym's hex digits may happen to hold a short number)."""
    return value in text and bool(re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text))


def add_addresses(data_dir: Path) -> list[Path]:
    """Comments with e-mail addresses and URLs in their text, in three runs' comments.csv."""
    changed = sorted(data_dir.glob("*/*/*/comments.csv"))[:3]
    for number, path in enumerate(changed):
        rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
        header = rows[0]
        author = rows[1][header.index("author_id")]
        row = dict.fromkeys(header, "")
        row.update(id=str(9_000_000 + number), author_id=author, text=ADDRESSES[number])
        with path.open("a", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow([row[name] for name in header])
    return changed


# Fixtures.


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> Path:
    """The imitation site (tricky courses, old header versions, an unknown dataset, a survey
    with no rows) synced once; tests export it, and change only copies of it."""
    workdir = tmp_path_factory.mktemp("synced")
    with FakeSite(SITE) as site:
        result = Sync(site.base_url, workdir)()
    assert result.returncode == 0, result.output
    return workdir


@pytest.fixture
def workdir(synced, tmp_path) -> Path:
    shutil.copytree(synced, tmp_path / "w")
    return tmp_path / "w"


@pytest.fixture
def key(tmp_path) -> Path:
    path = tmp_path / "export.key"
    new_key(str(path))
    return path


@pytest.fixture(scope="module")
def module_key(tmp_path_factory) -> Path:
    """A key of the module's own, alone in its folder, for the shared export."""
    path = tmp_path_factory.mktemp("key") / "export.key"
    new_key(str(path))
    return path


@dataclasses.dataclass
class Exported:
    dest: Path
    result: Run


@pytest.fixture(scope="module")
def exported(synced, module_key, tmp_path_factory) -> Exported:
    """`synced` exported once with ``module_key`` and the default choices: tests that only
    read such a copy (or compare another with it) share it, and never change it."""
    dest = tmp_path_factory.mktemp("exported") / "copy"
    result = export(synced, str(dest), key=module_key)
    assert result.returncode == 0, result.output
    return Exported(dest, result)


@pytest.fixture
def other_key(tmp_path) -> Path:
    path = tmp_path / "other.key"
    new_key(str(path))
    return path


# The copy holds no way back.


@pytest.mark.parametrize("free_text", ["drop", "keep"])
def test_the_copy_holds_no_identifier_name_or_address_of_the_mirror(
    workdir, key, tmp_path, free_text
):
    add_addresses(workdir / "data")
    dest = tmp_path / "copy"
    result = export(workdir, str(dest), "-a", f"free_text={free_text}", key=key)
    assert result.returncode == 0, result.output
    secrets, innocent = secrets_and_innocent_text(workdir / "data")
    # A value that the mirror also holds as something else (a survey's row number "3" is a
    # week number too; "Zoë" is in a video's title) may rightly be in the copy.
    scanned = {s for s in secrets if not holds(innocent, s)}
    assert len(scanned) > 500
    assert {s for s in secrets - scanned if not s.isdigit()} <= {"Zoë"}
    copy = "\n".join([*files(dest)] + [c.decode() for c in files(dest).values()])
    assert [s for s in sorted(scanned) if holds(copy, s)] == []
    assert len(EMAIL.findall("\n".join(ADDRESSES))) == 3
    assert not EMAIL.search(copy)
    key_text = key.read_text().strip()
    assert key_text not in copy
    if free_text == "keep":
        data = "".join(c.decode() for path, c in files(dest).items() if path.endswith(".csv"))
        assert data.count("[email]") == 3
        assert data.count("[url]") == 3


def test_no_mapping_is_written_anywhere(synced, exported, module_key):
    secrets, _ = secrets_and_innocent_text(synced / "data")
    learners = {s for s in secrets if len(s) == 36}  # the learners' UUIDs
    manifest = (exported.dest / MANIFEST).read_text()
    assert not any(s in manifest for s in learners)
    # and nothing was written beside the mirror or the key
    assert sorted(p.name for p in synced.iterdir()) == ["config.json", "data"]
    assert sorted(p.name for p in module_key.parent.iterdir() if p.is_file()) == ["export.key"]


# The copy still works.


def space(path: str, column: str) -> str:
    """The values an identifier column holds: a person, or the rows of one dataset."""
    dataset = path.rsplit("/", 1)[1].removesuffix(".csv")
    if column in PERSON_COLUMNS or dataset == "team-members":
        return "person"
    return {"parent_id": "comments", "assignment_id": "peer-review-assignments"}.get(
        column, dataset
    )


def joins(tree_: dict[str, list[list[str]]], run: str) -> tuple[int, int]:
    """A run's comments whose author is enrolled, and step visits of enrolled learners."""
    enrolled = {row[0] for row in tree_[f"{run}/enrolments.csv"][1:]}
    header, *comments = tree_[f"{run}/comments.csv"]
    authors = [row[header.index("author_id")] for row in comments]
    visits = [row[0] for row in tree_[f"{run}/step-activity.csv"][1:]]
    return sum(a in enrolled for a in authors), sum(v in enrolled for v in visits)


def test_pseudonyms_join_across_files_runs_and_courses(synced, exported):
    source, copy = dataset_files(synced / "data"), dataset_files(exported.dest)
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path, (header, *rows) in copy.items():
        source_header, *source_rows = source[path]
        assert len(rows) == len(source_rows), path
        for name in filter(ID_COLUMN.search, header):
            column, source_column = header.index(name), source_header.index(name)
            for row, source_row in zip(rows, source_rows, strict=True):
                original, pseudonym = source_row[source_column], row[column]
                assert (original == "") == (pseudonym == ""), (path, name)
                if original:
                    seen[space(path, name)][original].add(pseudonym)
    for values, mapping in seen.items():
        assert all(len(p) == 1 for p in mapping.values()), values  # one pseudonym each
        assert len(set.union(*mapping.values())) == len(mapping), values  # all distinct
    assert len(seen["person"]) > 100
    assert {p.split("-")[0] for p in set.union(*seen["person"].values())} == {"person"}
    # the same learner's enrolment, steps and comments line up, run by run
    runs = [path.rsplit("/", 1)[0] for path in copy if path.endswith("/comments.csv")]
    assert [joins(copy, run) for run in runs] == [joins(source, run) for run in runs]
    assert sum(joins(copy, run)[0] for run in runs) > 50


def test_every_other_value_is_the_mirrors_byte_for_byte(synced, exported, module_key):
    dest, result, key = exported.dest, exported.result, module_key
    data = synced / "data"
    mirror = files(data, hidden=False)
    copy = files(dest, hidden=False)
    # flsync's own files (the report, the measures, the dashboard) are not exported
    own = tuple(f"/{name}" for name in tree.ORGANISATION_FILES if name != tree.UPDATE_FILE)
    exported = {path for path in mirror if not path.endswith((*own, f"/{UNKNOWN_DATASET}.csv"))}
    assert sorted(copy) == sorted({*exported, "README.txt"})
    for path in sorted(exported):
        if not path.endswith(".csv") or path.endswith(
            ("metadata.csv", "video-stats.csv", "country-subdivisions.csv")
        ):
            assert copy[path] == mirror[path], path
            continue
        rows = list(csv.reader(io.StringIO(mirror[path].decode(), newline="")))
        copied = list(csv.reader(io.StringIO(copy[path].decode(), newline="")))
        kept = [i for i, name in enumerate(rows[0]) if name not in DROPPED]
        expected = []
        for row, copied_row in zip(rows, copied, strict=True):
            values = [row[i] for i in kept]
            if row is not rows[0]:
                for position, i in enumerate(kept):
                    if ID_COLUMN.search(rows[0][i]) and row[i]:
                        assert PSEUDONYM.fullmatch(copied_row[position]), path
                        values[position] = copied_row[position]
            expected.append(values)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(expected)
        # the imitation writes its files with the csv module: kept cells written by it again
        # are the mirror's own bytes
        assert copy[path] == out.getvalue().encode(), path
    [warning] = result.lines("WARNING")
    assert f"Dataset (not exported): {UNKNOWN_DATASET}: no export rule, 2 files left out" in warning
    readme = copy["README.txt"].decode()
    assert "This is still personal data" in readme
    assert key.read_text().strip() not in readme


def test_team_members_keep_their_roles_not_their_names(synced, key, tmp_path):
    dest = tmp_path / "copy"
    assert export(synced, str(dest), "-a", "free_text=keep", key=key).returncode == 0
    teams = {p: rows for p, rows in dataset_files(dest).items() if p.endswith("team-members.csv")}
    assert teams
    for rows in teams.values():
        assert rows[0] == ["id", "team_role", "user_role"]
        assert all(PSEUDONYM.fullmatch(row[0]) for row in rows[1:])


# One key, one copy.


def test_the_same_key_gives_the_same_copy_and_another_key_shares_no_pseudonym(
    synced, exported, module_key, other_key, tmp_path
):
    one, two, other = exported.dest, tmp_path / "two", tmp_path / "other"
    # The same key again, given as a setting this time (FLSYNC_EXPORT_KEY_FILE unset).
    setting = export(synced, str(two), "-s", f"FLSYNC_EXPORT_KEY_FILE={module_key}")
    assert setting.returncode == 0, setting.output
    assert export(synced, str(other), key=other_key).returncode == 0
    assert files(one) == files(two)
    assert len(pseudonyms(one)) == len(pseudonyms(other)) > 500
    assert pseudonyms(one).isdisjoint(pseudonyms(other))


def test_another_key_or_free_text_choice_into_the_same_copy_is_refused(
    synced, exported, module_key, other_key, tmp_path
):
    key, dest = module_key, tmp_path / "copy"
    shutil.copytree(exported.dest, dest)  # an export made with module_key, free_text=drop
    before = files(dest)
    for args, with_key, problem in (
        ((), other_key, "holds an export made with another key (fingerprint "),
        (("-a", "free_text=keep"), key, "holds an export made with free_text=drop: export with"),
    ):
        result = export(synced, str(dest), *args, key=with_key)
        assert result.returncode == 2
        [line] = result.output.splitlines()
        assert problem in line
        assert files(dest) == before


# Incremental and atomic.


def test_a_second_export_rewrites_nothing_and_a_change_only_its_file(workdir, key, tmp_path):
    dest = tmp_path / "copy"
    assert export(workdir, str(dest), key=key).returncode == 0
    before = file_ids(dest)
    again = export(workdir, str(dest), key=key)
    assert again.returncode == 0
    assert " 0 written, 404 unchanged, 2 left out, 0 failed" in again.output
    assert file_ids(dest) == before
    changed = sorted((workdir / "data").glob("*/*/*/step-activity.csv"))[0]
    with changed.open("a") as f:
        f.write(f"{'0' * 8}-0000-4000-8000-{'0' * 12},1.1,1,1,2016-01-01 00:00:00 UTC,\n")
    gone = sorted(dest.glob("*/*/*/enrolments.csv"))[0]
    gone.unlink()
    third = export(workdir, str(dest), key=key)
    assert third.returncode == 0
    after = file_ids(dest)
    rewritten = sorted(path for path in after if after[path] != before.get(path))
    expected = [
        changed.relative_to(workdir / "data").as_posix(),
        gone.relative_to(dest).as_posix(),
        MANIFEST,
    ]
    assert rewritten == sorted(expected)
    assert " 2 written, 402 unchanged," in third.output


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A synced tree whose first run has a 64 MiB step-activity.csv."""
    workdir = tmp_path_factory.mktemp("big")
    options = SiteOptions(organisations=1, courses=1, runs=1, rows=5, tricky=False, big_file_mb=64)
    with FakeSite(options) as site:
        result = Sync(site.base_url, workdir)()
    assert result.returncode == 0, result.output
    return workdir


def temp_files(dest: Path) -> list[Path]:
    return list(dest.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))


def writing_big_file(dest: Path) -> bool:
    """A temporary file in ``dest`` holds over 1 MiB (one put in place meanwhile does not)."""
    for path in temp_files(dest):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > 1 << 20:
                return True
    return False


def test_a_stopped_export_leaves_no_partial_file(big, key, tmp_path):
    dest = tmp_path / "copy"
    process = start_export(big, str(dest), key=key)
    wait_for(lambda: writing_big_file(dest), "the big file being written")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    assert "] ERROR: Export STOPPED (SIGTERM): " in output
    assert temp_files(dest) == []
    assert not list(dest.rglob("step-activity.csv"))


@dataclasses.dataclass
class BigCopy:
    dest: Path
    peak_mb: float


@pytest.fixture(scope="module")
def big_copy(big, module_key, tmp_path_factory) -> BigCopy:
    """`big` exported once with ``module_key``, its peak memory measured: what an export in
    flat memory gives, and what an interrupted one must give once finished."""
    folder = tmp_path_factory.mktemp("big-copy")
    report = folder / "rss"
    process = subprocess.run(
        [sys.executable, str(REPO / "tests" / "peak_rss.py"), str(report),
         *command(str(folder / "copy"))],
        cwd=big,
        env=command_env(environment(module_key)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    return BigCopy(folder / "copy", int(report.read_text()) / 1024)


def test_a_killed_export_leaves_no_partial_file_and_the_next_one_finishes(
    big, module_key, big_copy, tmp_path
):
    key, dest = module_key, tmp_path / "copy"
    process = start_export(big, str(dest), key=key)
    wait_for(lambda: writing_big_file(dest), "the big file being written")
    process.kill()
    process.communicate(timeout=60)
    assert temp_files(dest)  # hidden, and swept by the next export
    assert not list(dest.rglob("step-activity.csv"))
    result = export(big, str(dest), key=key)
    assert result.returncode == 0, result.output
    assert temp_files(dest) == []
    assert files(dest, hidden=False) == files(big_copy.dest, hidden=False)


def test_a_big_file_is_exported_in_flat_memory(big_copy, record_property):
    record_property("peak_rss_mb", round(big_copy.peak_mb))
    assert big_copy.peak_mb < 100
    [big_file] = big_copy.dest.rglob("step-activity.csv")
    assert big_file.stat().st_size > 48 << 20


# Bad input.


def test_a_file_that_is_not_valid_csv_is_left_out_with_one_error(workdir, key, tmp_path):
    data = workdir / "data"
    unclosed = sorted(data.glob("*/*/*/comments.csv"))[0]
    unclosed.write_bytes(unclosed.read_bytes() + b'1,2,,1.1,1,1,"never closed,t,,0\n')
    not_utf8 = sorted(data.glob("*/*/*/enrolments.csv"))[1]
    not_utf8.write_bytes(not_utf8.read_bytes().replace(b"Unknown", b"Unk\xffnown", 1))
    dest = tmp_path / "copy"
    result = export(workdir, str(dest), key=key)
    assert result.returncode == 1
    first, second, last = result.lines("ERROR")
    for line, path in ((first, unclosed), (second, not_utf8)):
        name = path.relative_to(data).as_posix()
        assert f"] ERROR: File (not exported): {name}: line " in line
        assert not (dest / name).exists()
    assert ": a quoted field never closed;" in first
    assert ": not UTF-8 (invalid start byte);" in second
    assert "Export FAILED (2 files not exported): 406 files: 402 written," in last
    assert len(files(dest, hidden=False)) == 402 + 1  # and README.txt


def test_a_new_column_or_a_file_that_is_no_dataset_is_left_out_with_one_warning(
    workdir, key, tmp_path
):
    data = workdir / "data"
    widened = sorted(data.glob("*/*/*/comments.csv"))
    for path in widened:
        header, *rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
        with path.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerows([[*header, "sentiment"], *([*row, "positive"] for row in rows)])
    (widened[0].parent / "notes.txt").write_text("not a dataset")
    (data / EXAMPLETON / "minutes.pdf").write_bytes(b"%PDF")
    dest = tmp_path / "copy"
    result = export(workdir, str(dest), key=key)
    assert result.returncode == 0, result.output
    _, column, others = result.lines("WARNING")
    assert (
        "Column (not exported): sentiment of comments.csv: not in the export rules, dropped"
        f" from {len(widened)} files" in column
    )
    assert "Files (not exported): 2 files that are no dataset: minutes.pdf, notes.txt" in others
    comments = [rows for p, rows in dataset_files(dest).items() if p.endswith("/comments.csv")]
    assert len(comments) == len(widened)
    assert all("sentiment" not in rows[0] for rows in comments)
    assert all("positive" not in row for rows in comments for row in rows)
    assert not list(dest.rglob("notes.txt"))
    assert not list(dest.rglob("minutes.pdf"))


def test_an_export_into_a_dest_another_export_is_writing_stops_at_once(big, key, tmp_path):
    dest = tmp_path / "copy"
    first = start_export(big, str(dest), key=key)
    try:
        wait_for(lambda: writing_big_file(dest), "the big file being written")
        second = export(big, str(dest), key=key)
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert second.returncode == 2
    [line] = second.output.splitlines()
    assert f"another export is writing to {dest}: wait for it to finish" in line


def test_no_key_a_missing_short_or_open_key_is_one_line_and_nothing_written(synced, tmp_path):
    short, open_key = tmp_path / "short.key", tmp_path / "open.key"
    short.write_bytes(b"s" * 31)
    short.chmod(0o600)
    new_key(str(open_key))
    open_key.chmod(0o644)
    dest = tmp_path / "copy"
    for key, problem in (
        (None, "no export key: set FLSYNC_EXPORT_KEY_FILE"),
        (tmp_path / "missing.key", "missing.key does not exist (make one with: scrapy export"),
        (short, "short.key holds 31 bytes: a key needs at least 32"),
        (open_key, "open.key is open to others (mode 0644): make it its owner's only (chmod 600"),
    ):
        result = export(synced, str(dest), key=key)
        assert result.returncode == 2
        [line] = result.output.splitlines()
        assert "] ERROR: Export FAILED: " in line
        assert problem in line
        assert not dest.exists()


@pytest.mark.parametrize(
    ("dest", "problem"),
    [
        ("data", "overlap"),
        ("data/University of Exampleton/copy", "overlap"),
        ("linked/copy", "overlap"),  # a symbolic link to data
        ("FILE_URL", "overlap"),
        (".", "overlap"),  # data_dir would be inside DEST
        ("not-empty", "is not empty and holds no export (.flsync-export.json)"),
        ("no/such/parent", "its parent folder"),
    ],
)
def test_a_dest_in_or_around_the_mirror_or_holding_other_files_is_refused(
    workdir, key, dest, problem
):
    (workdir / "linked").symlink_to("data")
    (workdir / "not-empty").mkdir()
    (workdir / "not-empty" / "notes.txt").write_text("mine")
    if dest == "FILE_URL":
        dest = f"file://{workdir / 'data'}/"
    before = files(workdir)
    result = export(workdir, dest, key=key)
    assert result.returncode == 2
    [line] = result.output.splitlines()
    assert problem in line
    assert files(workdir) == before


def test_an_s3_dest_in_an_s3_mirror_is_refused_before_any_request(synced, key, tmp_path):
    workdir = tmp_path / "w"  # a config.json alone: the mirror is in S3
    workdir.mkdir()
    config = json.loads((synced / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**config, "data_dir": "s3://b/mirror/"}))
    for dest, refused in (
        ("s3://b/mirror/copy", True),
        ("s3://b/mirror", True),
        ("s3://b", True),
        ("s3://b/mirrored", False),
        ("s3://other/mirror", False),
    ):
        env = {**ISOLATED, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
        result = export(
            workdir, dest, "-s", "AWS_ENDPOINT_URL=http://127.0.0.1:9", key=key, env=env
        )
        assert result.returncode == 2
        [line] = result.output.splitlines()
        assert ("overlap" in line) is refused, line


def test_an_unknown_organisation_or_course_is_one_line(synced, key, tmp_path):
    for args, problem in (
        (
            ("-a", "organisation=nowhere"),
            "organisation 'nowhere' is not in the data tree, which holds",
        ),
        (("-a", "course=nothing"), "course 'nothing' is not in the data tree"),
        (
            ("-a", "colour=blue"),
            "-a colour=blue: give organisation=NAME, course=NAME or free_text=keep",
        ),
        (("-a", "free_text=maybe"), "give free_text=keep or free_text=drop"),
    ):
        result = export(synced, str(tmp_path / "copy"), *args, key=key)
        assert result.returncode == 2
        [line] = result.output.splitlines()
        assert problem in line
        assert not (tmp_path / "copy").exists()


def test_organisations_and_courses_can_be_chosen(synced, key, tmp_path):
    dest = tmp_path / "copy"
    args = ("-a", "organisation=university-of-exampleton", "-a", "course=forensic-psychology")
    assert export(synced, str(dest), *args, key=key).returncode == 0
    courses = {path.split("/")[:2][1] for path in files(dest, hidden=False) if "/" in path}
    assert courses == {"Forensic Psychology", "update.txt"}
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        "README.txt",
        EXAMPLETON,
    ]


def test_a_new_key_is_made_by_the_command_and_never_overwritten(synced, tmp_path):
    path = tmp_path / "new.key"
    made = export(synced, "--new-key", str(path))
    assert made.returncode == 0, made.output
    assert "New export key in " in made.output
    assert path.stat().st_mode & 0o777 == 0o600
    content = path.read_bytes()
    assert content.decode().strip() not in made.output
    again = export(synced, "--new-key", str(path))
    assert again.returncode == 2
    assert "is never overwritten" in again.output
    assert path.read_bytes() == content


# S3.


@dataclasses.dataclass
class Bucket:
    endpoint: str
    client: Any
    name: str

    def export(self, workdir: Path, *args: str, key: Path) -> Run:
        env = {**KEYS, **ISOLATED}
        return export(workdir, *args, "-s", f"AWS_ENDPOINT_URL={self.endpoint}", key=key, env=env)


@pytest.fixture
def aws(endpoint, s3, bucket) -> Bucket:  # noqa: F811
    return Bucket(endpoint, s3, bucket)


def odd_course(synced: Path) -> str:
    """The course folder with the oddest name (the tricky course's: non-ASCII, quotes, an
    ampersand): the exports to and from S3 take this course alone, as moto spends two
    requests on each file."""
    [course] = [p.name for p in (synced / "data" / EXAMPLETON).iterdir() if not p.name.isascii()]
    return course


def of_course(tree_files: dict[str, bytes], course: str) -> dict[str, bytes]:
    """What an export of ``course`` alone holds of a whole export: its README, the
    organisations' update.txt and the course's folder."""
    return {
        path: content
        for path, content in tree_files.items()
        if (path.count("/") <= 1 and not path.endswith(".csv")) or path.split("/")[1] == course
    }


def test_an_export_to_s3_is_the_same_copy_and_is_incremental(synced, exported, module_key, aws):
    course, key = odd_course(synced), module_key
    expected = of_course(files(exported.dest, hidden=False), course)
    dest = f"s3://{aws.name}/export"
    versioning(aws.client, aws.name)
    result = aws.export(synced, dest, "-a", f"course={course}", key=key)
    assert result.returncode == 0, result.output
    uploaded = contents(aws.client, aws.name, "export/")
    assert {k: v for k, v in uploaded.items() if k[0] != "."} == expected
    before = versions(aws.client, aws.name, "export/")
    again = aws.export(synced, dest, "-a", f"course={course}", key=key)
    assert again.returncode == 0, again.output
    assert f" 0 written, {len(expected) - 1} unchanged," in again.output  # all but the README
    assert versions(aws.client, aws.name, "export/") == before


def test_a_dest_that_refuses_writes_stops_the_export_in_one_line(
    synced,
    key,
    aws,
    authenticated,  # noqa: F811
):
    keys = iam_keys(
        aws.endpoint,
        [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{aws.name}/export/*.csv",
            },
        ],
    )
    result = export(
        synced,
        f"s3://{aws.name}/export",
        "-s",
        f"AWS_ENDPOINT_URL={aws.endpoint}",
        key=key,
        env={**ISOLATED, **keys},
    )
    assert result.returncode == 1, result.output
    [line] = result.lines("ERROR")
    assert "] ERROR: Export FAILED: cannot write s3://" in line
    assert ": AccessDenied: Access Denied; 0 files: 0 written," in line
    assert "Traceback" not in result.output
    stored = contents(authenticated, aws.name, "export/")
    assert not [k for k in stored if k.endswith(".csv")]
    assert MANIFEST in stored


def test_an_s3_mirror_exports_as_a_local_one_does(synced, exported, module_key, tmp_path, aws):
    course = odd_course(synced)
    for path, content in of_course(files(synced / "data"), course).items():
        aws.client.put_object(Bucket=aws.name, Key=f"mirror/{path}", Body=content)
    workdir = tmp_path / "w"
    workdir.mkdir()
    config = json.loads((synced / "config.json").read_text())
    mirror = f"s3://{aws.name}/mirror"
    (workdir / "config.json").write_text(json.dumps({**config, "data_dir": mirror}))
    result = aws.export(workdir, "copy", "-a", f"course={course}", key=module_key)
    assert result.returncode == 0, result.output
    copy = files(workdir / "copy", hidden=False)
    assert copy == of_course(files(exported.dest, hidden=False), course)
    assert len(copy) > 10
