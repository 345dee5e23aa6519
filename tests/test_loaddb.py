"""`scrapy loaddb` and FLSYNC_DATABASE_URL: the synced tree into SQLite, MariaDB, PostgreSQL.

The servers' URLs come from FLSYNC_TEST_POSTGRES_URL and FLSYNC_TEST_MYSQL_URL (scripts/test
sets both); each test gets a database of its own, dropped at its end. Every load runs with
TZ=Asia/Tokyo (and PGTZ), so that a timestamp read in the machine's zone would show.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from fakesite import FakeSite, SiteOptions
from flsync.sql.csvfiles import (
    CsvFile,
    DataFiles,
    Kind,
    MalformedFile,
    RowChecker,
    column_kind,
    scan,
    value_kind,
)
from flsync.sql.loader import Loader, open_database
from flsync.storage import LocalStore, S3Store
from tests.commands import run_in_process
from tests.conftest import Sync
from tests.test_s3 import bucket, endpoint, s3, s3_server, store_settings  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from collections.abc import Iterator

DATABASES = ["sqlite", "postgresql", "mysql"]
TOKYO = {"TZ": "Asia/Tokyo", "PGTZ": "Asia/Tokyo"}
OWN_TABLES = {"flsync_loads"}


# The databases.


def _server_url(kind: str) -> str:
    name = {"postgresql": "FLSYNC_TEST_POSTGRES_URL", "mysql": "FLSYNC_TEST_MYSQL_URL"}[kind]
    url = os.environ.get(name)
    if not url:
        pytest.fail(f"{name} is not set (scripts/test sets it)")
    return url


@contextlib.contextmanager
def new_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database of ``kind`` (one of DATABASES), dropped at the end."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    server = make_url(_server_url(kind))
    name = f"flsync_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


@pytest.fixture(params=DATABASES)
def database(request, tmp_path) -> Iterator[str]:
    """The URL of a new, empty database of each kind."""
    with new_database(request.param, tmp_path) as url:
        yield url


def tables(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows (but flsync's own), as dicts, sorted."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            result = {}
            for name in inspect(connection).get_table_names():
                if name in OWN_TABLES:
                    continue
                table = Table(name, MetaData(), autoload_with=connection)
                rows = [dict(row) for row in connection.execute(select(table)).mappings()]
                result[name] = sorted(rows, key=lambda r: json.dumps(r, default=str))
            return result
    finally:
        engine.dispose()


def column_types(url: str, table: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                c["name"]: type(c["type"]).__name__.upper()
                for c in inspect(connection).get_columns(table)
            }
    finally:
        engine.dispose()


def as_text(value: Any) -> str:
    """A database value written as the CSV files write it ("" for NULL)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo else value
        return f"{utc:%Y-%m-%d %H:%M:%S} UTC"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# The tree, parsed independently.


def expected_tables(data_dir: Path) -> dict[str, list[dict[str, str]]]:
    """Each table's rows as the CSV files of the tree hold them (csv module, as text)."""
    result: dict[str, list[dict[str, str]]] = {}
    for metadata in sorted(data_dir.glob("*/*/*/metadata.csv")):
        header, row = list(csv.reader(io.StringIO(metadata.read_text(encoding="utf-8"))))
        lead = dict(zip(header, row, strict=True))
        result.setdefault("runs", []).append(lead)
        key = {name: lead[name] for name in ("uni_name", "course_name", "run")}
        for file in sorted(metadata.parent.glob("*.csv")):
            if file.name == "metadata.csv":
                continue
            with file.open(encoding="utf-8", newline="") as f:
                reader = csv.reader(f)
                header = next(reader)
                table = result.setdefault(file.stem.replace("-", "_"), [])
                table += [{**key, **dict(zip(header, r, strict=True))} for r in reader]
    return result


def assert_tables_match_tree(url: str, data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every table holds exactly the rows of the tree's files, value for value; empty fields
    are NULL (never an empty string)."""
    loaded = tables(url)
    expected = expected_tables(data_dir)
    assert sorted(loaded) == sorted(expected)
    for name, rows in loaded.items():
        columns = list(rows[0]) if rows else []
        assert all(value != "" for row in rows for value in row.values()), name
        got = sorted(tuple(as_text(row[c]) for c in columns) for row in rows)
        want = sorted(tuple(row.get(c, "") for c in columns) for row in expected[name])
        assert got == want, name
    return loaded


# Running the command.


def loaddb(workdir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`scrapy loaddb` in workdir (its config.json): exit status and output."""
    result = run_in_process(["loaddb", *args], workdir, {**TOKYO, **(env or {})})
    return result.returncode, result.output


def errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if "] ERROR: " in line]


# A sync that loads as it ends (FLSYNC_DATABASE_URL): the loads themselves, on the tricky
# tree, are the other tests'.
SMALL = SiteOptions(organisations=1, courses=2, runs=2, rows=5, tricky=False)


# The site the `sync` fixture syncs (tests/conftest.py).
SITE = SMALL


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> Path:
    """The imitation site (tricky courses, old header versions, an unknown dataset, a survey
    with no rows) synced once; each test works on a copy."""
    workdir = tmp_path_factory.mktemp("synced")
    # One plain course and run an organisation: the tricky ones are most of the tree.
    with FakeSite(SiteOptions(organisations=2, courses=1, runs=1, rows=12)) as site:
        result = Sync(site.base_url, workdir)()
    assert result.returncode == 0, result.output
    return workdir


@pytest.fixture
def workdir(synced, tmp_path) -> Path:
    shutil.copytree(synced, tmp_path / "w")
    return tmp_path / "w"


def run_folders(data_dir: Path) -> list[Path]:
    return sorted(p.parent for p in data_dir.glob("*/*/*/metadata.csv"))


def read(path: Path) -> str:
    return path.read_bytes().decode()


def rewrite(path: Path, content: str) -> None:
    """Give a file new content, and a new modification time whatever the clock's grain."""
    stat = path.stat()
    path.write_text(content, encoding="utf-8", newline="")
    os.utime(path, (stat.st_atime, stat.st_mtime + 10))


# The tests.


def test_a_load_holds_every_file_exactly_and_loading_again_changes_nothing(workdir, database):
    code, output = loaddb(workdir, "--database", database)
    assert code == 0, output
    runs = len(run_folders(workdir / "data"))
    assert f"Database load complete: {runs} runs loaded" in output
    first = assert_tables_match_tree(database, workdir / "data")
    # Header versions of one dataset share its table: the old runs' missing columns are NULL.
    assert {"week_number", "step_number"} <= set(first["comments"][0])
    old = [r for r in first["comments"] if r["course_name"] == "Foundations of Data Science"]
    assert any(r["run"] in (1, 2) and r["week_number"] is None for r in old)
    # Types: numbers only where no text is lost; timestamps and dates as such.
    types = column_types(database, "comments")
    assert "INT" in types["likes"] and "INT" in types["week_number"]
    assert "TEXT" in types["step"] and "TEXT" in types["text"]
    assert any(word in types["timestamp"] for word in ("TIMESTAMP", "DATETIME"))
    assert "DATE" in column_types(database, "runs")["start_date"]
    steps = {r["step"] for r in first["step_activity"]}
    assert {"1.1", "1.10"} <= steps
    # Free text survives: quotes, commas, line breaks (\r\n too), emoji, formulas, spaces.
    texts = {r["text"] for r in first["comments"]}
    assert "Typed on Windows,\r\nso this line ends differently" in texts
    assert 'A backslash \\ and a "quoted, comma" inside' in texts
    assert " leading and trailing spaces " in texts
    assert "😀😃😄" in texts
    assert "=cmd|' /C calc'!A0" in texts
    assert "NULL" in texts  # the word, not a NULL
    if database.startswith("sqlite"):
        engine = create_engine(database)
        with engine.connect() as connection:
            # Stored in a form SQLite's date functions read.
            assert (
                connection.execute(
                    text("SELECT count(*) FROM comments WHERE datetime(timestamp) IS NULL")
                ).scalar()
                == 0
            )
        engine.dispose()

    code, output = loaddb(workdir, "--database", database)
    assert code == 0, output
    assert f"0 runs loaded (0 rows, 0.0 MB), {runs} unchanged" in output
    assert tables(database) == first


def test_a_changed_file_reloads_its_run_alone_with_new_and_widened_columns(workdir, database):
    assert loaddb(workdir, "--database", database)[0] == 0
    folders = run_folders(workdir / "data")
    comments = next(f / "comments.csv" for f in folders if (f / "comments.csv").exists())
    with comments.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    # A new column, and a value that an integer column cannot hold.
    rows[0].append("sentiment")
    for row in rows[1:]:
        row.append("positive")
    rows[1][rows[0].index("likes")] = "n/a"
    rows[2][rows[0].index("timestamp")] = "yesterday"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    rewrite(comments, out.getvalue())

    code, output = loaddb(workdir, "--database", database)
    assert code == 0, output
    assert "1 runs loaded" in output
    assert f"{len(folders) - 1} unchanged" in output
    assert "Column comments.sentiment added" in output
    assert "widened from integer to text" in output
    assert "widened from timestamp to text" in output
    # Every run's rows, the others' widened values included, are still exactly the files'.
    assert_tables_match_tree(database, workdir / "data")


def test_a_malformed_file_fails_its_run_alone_with_the_line_and_reason(workdir, database):
    assert loaddb(workdir, "--database", database)[0] == 0
    before = tables(database)
    data = workdir / "data"
    bad_count, bad_utf8, good = [
        f
        for f in run_folders(data)
        if (f / "comments.csv").exists() and (f / "enrolments.csv").exists()
    ][:3]
    # Lines as the file counts them, line breaks inside quoted fields included.
    wrong_line = _record_start_lines(bad_count / "comments.csv")[-1]
    rewrite(bad_count / "comments.csv", read(bad_count / "comments.csv") + "1,2,3\n")
    content = (bad_utf8 / "enrolments.csv").read_bytes().split(b"\n")
    content[3] = content[3] + b"\xff\xfe"
    (bad_utf8 / "enrolments.csv").write_bytes(b"\n".join(content))
    os.utime(bad_utf8 / "enrolments.csv", None)
    team = good / "country-subdivisions.csv"
    rewrite(team, read(team).replace("England", "Angleterre"))

    code, output = loaddb(workdir, "--database", database)
    assert code == 1, output
    lines_out = errors(output)
    assert any(
        f"comments.csv, line {wrong_line}: 3 fields where the header has" in line
        for line in lines_out
    ), lines_out
    assert any("enrolments.csv, line 4: not UTF-8" in line for line in lines_out), lines_out
    assert "2 failed" in lines_out[-1]
    after = tables(database)
    for name in before:
        keep = [r for r in before[name] if _folder_of(r) in (bad_count, bad_utf8)]
        assert [r for r in after[name] if _folder_of(r) in (bad_count, bad_utf8)] == keep
    assert any(r["subdivision_first"] == "Angleterre" for r in after["country_subdivisions"])
    # The failed runs are tried again by the next load (and fail again, unchanged).
    assert "2 failed" in loaddb(workdir, "--database", database)[1]


def _record_start_lines(path: Path) -> list[int]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        starts, last = [], 0
        for _ in reader:
            starts.append(last + 1)
            last = reader.line_num
        return [*starts, last + 1]


def _folder_of(row: dict[str, Any]) -> Path:
    """Only for the comparisons above: runs are told apart by their key."""
    return Path(row["uni_name"], row["course_name"], str(row["run"]))


_REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE INSERT ON country_subdivisions"
        " WHEN NEW.subdivision_first = 'Refuse me' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.subdivision_first = 'Refuse me' THEN RAISE EXCEPTION 'refused'; END IF;"
        " RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON country_subdivisions"
        " FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
    "mysql": [
        "CREATE TRIGGER refuse BEFORE INSERT ON country_subdivisions FOR EACH ROW"
        " IF NEW.subdivision_first = 'Refuse me' THEN"
        " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'; END IF"
    ],
}


def test_a_failure_in_the_middle_of_a_run_leaves_its_previous_rows(workdir, database):
    """The database refuses a row of a run's last file, after its other files' rows were
    inserted in the same transaction: the run keeps its previous rows, others load."""
    assert loaddb(workdir, "--database", database)[0] == 0
    before = tables(database)
    engine = create_engine(database)
    with engine.begin() as connection:
        for statement in _REFUSE[make_url(database).get_backend_name()]:
            connection.exec_driver_sql(statement)
    engine.dispose()
    data = workdir / "data"
    refused, other = run_folders(data)[:2]
    for folder in (refused, other):
        for file in folder.glob("*.csv"):  # every file changed, so every table is rewritten
            rewrite(file, read(file))
    subdivisions = refused / "country-subdivisions.csv"
    rows = read(subdivisions).rstrip("\n").split("\n")
    rows[-1] = rows[-1].replace(rows[-1].split(",")[0], "Refuse me", 1)
    rewrite(subdivisions, "\n".join(rows) + "\n")

    code, output = loaddb(workdir, "--database", database)
    assert code == 1, output
    failed = errors(output)
    where = str(refused.relative_to(data))
    assert any(where in line and "refused" in line for line in failed), output
    assert "1 failed" in failed[-1]
    after = tables(database)
    key = _folder_of(next(r for r in before["runs"] if _is(r, refused)))
    for name in before:
        assert [r for r in after[name] if _folder_of(r) == key] == [
            r for r in before[name] if _folder_of(r) == key
        ], name


def _is(row: dict[str, Any], folder: Path) -> bool:
    header, values = list(csv.reader(io.StringIO((folder / "metadata.csv").read_text())))
    lead = dict(zip(header, values, strict=True))
    return (row["uni_name"], row["course_name"], str(row["run"])) == (
        lead["uni_name"],
        lead["course_name"],
        lead["run"],
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://flsync:topsecret@127.0.0.1:1/nowhere",
        "mysql+pymysql://flsync:topsecret@127.0.0.1:1/nowhere",
        "nosuchdb://flsync:topsecret@127.0.0.1/x",
        "not a url, topsecret",
    ],
)
def test_a_bad_or_unreachable_database_is_one_line_without_the_password(workdir, url):
    code, output = loaddb(workdir, "--database", url)
    assert code == 2, output
    assert "topsecret" not in output
    assert len(errors(output)) == 1, output
    assert "Traceback" not in output


def test_the_url_from_the_environment_and_its_password_masked(workdir):
    url = "postgresql://flsync:topsecret@127.0.0.1:1/nowhere"
    code, output = loaddb(workdir, env={"FLSYNC_DATABASE_URL": url})
    assert code == 2
    assert "postgresql://flsync:***@127.0.0.1:1/nowhere" in errors(output)[0]


def test_sqlite_by_default_beside_the_tree_and_one_organisation(workdir):
    code, output = loaddb(workdir, "--organisation", "exampleton-nothing")
    assert code == 2
    assert "organisation 'exampleton-nothing' is not in the data tree" in errors(output)[0]
    assert "university-of-exampleton" in errors(output)[0]
    code, output = loaddb(workdir, "--organisation", "university-of-exampleton")
    assert code == 0, output
    url = f"sqlite:///{workdir / 'data' / 'flsync.sqlite3'}"
    assert {r["uni_name"] for r in tables(url)["runs"]} == {"University of Exampleton"}
    code, output = loaddb(workdir, "--organisation", "Institut für Données & “Tests”")
    assert code == 0, output
    assert len({r["uni_name"] for r in tables(url)["runs"]}) == 2


def test_an_s3_data_dir_needs_a_database_url(workdir):
    config = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(json.dumps({**config, "data_dir": "s3://bucket/x"}))
    code, output = loaddb(workdir)
    assert code == 2
    assert "give the database with --database URL (or FLSYNC_DATABASE_URL)" in errors(output)[0]


def test_a_run_gone_from_the_tree_is_removed(workdir, database):
    assert loaddb(workdir, "--database", database)[0] == 0
    gone = run_folders(workdir / "data")[0]
    shutil.rmtree(gone)
    code, output = loaddb(workdir, "--database", database)
    assert code == 0, output
    assert "1 removed" in output
    assert_tables_match_tree(database, workdir / "data")


def test_a_crawl_with_flsync_database_url_loads_what_changed(sync, tmp_path):
    url = f"sqlite:///{tmp_path / 'crawl.sqlite3'}"
    result = sync(env={"FLSYNC_DATABASE_URL": url, **TOKYO})
    assert result.returncode == 0, result.output
    assert "Database load complete" in result.output
    assert_tables_match_tree(url, result.data_dir)
    result = sync(env={"FLSYNC_DATABASE_URL": url})
    assert result.returncode == 0
    assert "0 runs loaded" in result.output
    result = sync(env={"FLSYNC_DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert "topsecret" not in result.output
    assert result.error_lines()[-1].endswith("not modified")
    assert "database/failed: 1" in result.error_lines()[-1]


def test_a_tree_in_s3_is_read_through_the_store(s3, bucket, endpoint, tmp_path):  # noqa: F811
    folder = "Org/Course/1-2020-01-06-2020-02-03"
    s3.put_object(
        Bucket=bucket,
        Key=f"t/{folder}/metadata.csv",
        Body=b"uni_name,course_name,run,start_date,end_date,duration_weeks\n"
        b"Org,Course,1,2020-01-06,2020-02-03,4\n",
    )
    body = "id,text\n" + "".join(f'{n},"line {n}\nnext, ""q"""\n' for n in range(20000))
    s3.put_object(Bucket=bucket, Key=f"t/{folder}/comments.csv", Body=body.encode())
    engine = open_database(f"sqlite:///{tmp_path / 's3.sqlite3'}")
    store = S3Store(f"s3://{bucket}/t", store_settings(endpoint))
    result = Loader(engine, store).load(["Org"])
    assert result.ok and result.loaded == 1 and result.rows == 20000
    with engine.connect() as connection:
        assert connection.execute(text("SELECT text FROM comments WHERE id = 19999")).scalar() == (
            'line 19999\nnext, "q"'
        )
    engine.dispose()


# Reading and typing the files.


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["1", "2", "", "-7", "0"], Kind.INTEGER),
        (["1.1", "1.10"], Kind.TEXT),  # step codes: never numbers
        (["007"], Kind.TEXT),
        (["+5"], Kind.TEXT),
        (["-0"], Kind.TEXT),
        (["9" * 19], Kind.TEXT),  # beyond 64 bits
        (["2016-05-09 10:23:11 UTC", ""], Kind.TIMESTAMP),
        (["2016-05-09 10:23:11"], Kind.TEXT),  # no zone: not taken for UTC
        (["2019-02-30 10:00:00 UTC"], Kind.TEXT),
        (["2016-05-09", "2024-02-29", "2000-02-29"], Kind.DATE),
        (["2017-02-29"], Kind.TEXT),  # not a leap year
        (["1900-02-29"], Kind.TEXT),  # nor is 1900
        (["0000-01-01"], Kind.TEXT),  # no year 0 in the databases
        (["2016-05-09", "2016-05-09 10:23:11 UTC"], Kind.TEXT),
        (["1", "2\n3"], Kind.TEXT),
        (["", ""], Kind.EMPTY),
        (["t", "f"], Kind.TEXT),
    ],
)
def test_column_kind(values, kind):
    assert column_kind(values) is kind
    assert column_kind(values, Kind.TEXT) is Kind.TEXT


def test_value_kind():
    assert value_kind("") is Kind.EMPTY
    assert value_kind("12") is Kind.INTEGER
    assert value_kind("=cmd|' /C calc'!A0") is Kind.TEXT


def _scan(tmp_path: Path, content: bytes) -> tuple[list[str], list[Kind]]:
    (tmp_path / "f.csv").write_bytes(content)
    with CsvFile(DataFiles(LocalStore(str(tmp_path))), "f.csv") as file:
        return file.header, scan(file)


def test_scan_types_each_column_over_blocks(tmp_path):
    rows = "".join(f"{n},1.{n},2016-05-09 10:23:{n % 60:02d} UTC,\n" for n in range(10000))
    header, kinds = _scan(tmp_path, b"\xef\xbb\xbfa,step,at,never\n" + rows.encode() + b"x,1.1,,\n")
    assert header == ["a", "step", "at", "never"]  # the byte-order mark dropped
    assert kinds == [Kind.TEXT, Kind.TEXT, Kind.TIMESTAMP, Kind.EMPTY]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'a,b\n1,"two\nlines"\n3,4,5\n', "f.csv, line 4: 3 fields where the header has 2"),
        (b"a,b\n1,2\n\n3,4\n", "f.csv, line 3: 0 fields where the header has 2"),
        (b"a,b\n1,2\n3,\xe9t\xe9\n", "f.csv, line 3: not UTF-8 text (byte 10 of the file)"),
        (b'a,b\n1,"x"y\n', "f.csv, line 2: bad CSV"),
        (b"a,a\n1,2\n", "f.csv, line 1: column 'a' appears twice in the header"),
        (b"", "f.csv: empty file (no header line)"),
    ],
)
def test_a_malformed_file_names_its_line_and_reason(tmp_path, content, message):
    with pytest.raises(MalformedFile) as raised:
        _scan(tmp_path, content)
    assert str(raised.value).startswith(message)


def _one_run(tmp_path: Path) -> Path:
    """A tree of one run with its metadata.csv; the run's folder."""
    folder = tmp_path / "data" / "Org" / "Course" / "1-2020-01-06-2020-02-03"
    folder.mkdir(parents=True)
    (folder / "metadata.csv").write_text(
        "uni_name,course_name,run,start_date,end_date,duration_weeks\n"
        "Org,Course,1,2020-01-06,2020-02-03,4\n"
    )
    return folder


def _load(tmp_path: Path, database: str) -> None:
    engine = open_database(database)
    try:
        result = Loader(engine, LocalStore(str(tmp_path / "data"))).load(["Org"])
    finally:
        engine.dispose()
    assert result.ok, result.failed


@pytest.mark.parametrize(
    ("kinds", "content", "fits"),
    [
        ("IT", b"n,at\n1,2016-05-09 10:23:11 UTC\n,\n-7,\n", True),
        ("IT", b"\xef\xbb\xbfn,at\r\n1,2016-05-09 10:23:11 UTC\r\n", True),  # BOM, CRLF
        ("I", b"n\n1\n2", True),  # no line break at the end
        ("XI", b'note,n\n"a, ""b""\nc",1\nplain,2\n', True),  # quoted text, line break
        ("I", b"n\n007\n", False),
        ("I", b"n\n1.10\n", False),
        ("I", b'n\n"5"\n', False),  # quoted: the exact path decides
        ("I", b"n\nNULL\n", False),
        ("T", b"at\n2016-05-09 24:00:00 UTC\n", False),
        ("T", b"at\n2019-02-30 10:00:00 UTC\n", False),
        ("E", b"e\n,\n", False),  # a field too many
        ("EE", b"e,f\n,\n,\n", True),
        ("EE", b"e,f\n,\n5,\n", False),
        ("X", b"e\n\n", False),  # a blank line: no field, as the csv module reads it
        ("X", b'e\n""\n', True),  # one empty field
        ("X", b"e\n\\.\n", False),  # PostgreSQL's end of data, unless quoted
        ("X", b'e\n"\\."\nx\n', True),
        ("XX", b'e,f\n"\n\\.\n",x\n', True),  # inside quotes, it is text
        ("XI", b"e,n\n\x00,1\n", False),  # NUL: PostgreSQL's text has none
        ("XI", b"e,n\r\nx,1\r\n", True),
        ("XI", b"e,n\nx,1\r\ny,2\n", False),  # a line end other than the header's
        ("XI", b"e,n\r\nx,1\ny,2\r\n", False),
        ("XI", b"e,n\nx,1\ry,2\n", False),
        ("XX", b"a,b\n1,2,3\n", False),  # a field too many
        ("XX", b"a,b\n1\n", False),  # one too few
        ("X", b'a\n"never closed\n', False),
        ("X", b'a\nx"y\n', False),  # a stray quote: the exact path says where
        ("X", b"", False),
    ],
)
def test_the_row_checker_passes_only_values_their_column_holds(kinds, content, fits):
    by_letter = {"I": Kind.INTEGER, "T": Kind.TIMESTAMP, "X": Kind.TEXT, "E": Kind.EMPTY}
    column_kinds = [by_letter[letter] for letter in kinds]
    line_end = b"\r\n" if b"\r\n" in content else b"\n"
    whole = RowChecker(column_kinds, line_end)
    passed = [whole.feed(content), whole.close()]
    assert (None not in passed) is fits
    if fits:  # the bytes passed on are the file's (the last line end added if it lacks one)
        assert b"".join(passed) in (content, content + line_end)
    # Chunks end anywhere: inside a field, a quoted line break or a CRLF.
    bytewise = RowChecker(column_kinds, line_end)
    passed = [bytewise.feed(content[i : i + 1]) for i in range(len(content))]
    passed.append(bytewise.close())
    assert (None not in passed) is fits
    if fits:
        assert b"".join(passed) in (content, content + line_end)


def test_a_record_longer_than_the_limit_does_not_fit():
    checker = RowChecker([Kind.TEXT], b"\n", 100)
    assert checker.feed(b'a\n"' + b"x" * 99) == b"a\n"
    assert checker.feed(b"x") is None  # still open after 100 bytes: memory stays bounded
    assert checker.close() is None


def test_a_run_whose_values_fit_goes_straight_into_its_tables(tmp_path, database, caplog):
    folder = _one_run(tmp_path)
    rows = [["n", "at", "day", "note"]]
    rows += [
        [str(i), f"2016-05-09 10:23:{i % 60:02d} UTC", "2016-05-09", f"row {i}"]
        for i in range(9000)
    ]
    rows += [
        ["", "", "", ""],
        ["-7", "", "2024-02-29", "NULL"],
        ["0", "", "", 'a "quoted, comma"\nand a line'],
    ]
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    (folder / "fits.csv").write_text(out.getvalue(), encoding="utf-8", newline="")
    caplog.set_level("INFO", logger="flsync.sql.loader")

    _load(tmp_path, database)

    assert "staging" not in caplog.text
    assert_tables_match_tree(database, tmp_path / "data")
    types = column_types(database, "fits")
    assert "INT" in types["n"] and "DATE" in types["day"] and "TEXT" in types["note"]
    # The index a run's rows are replaced by; on PostgreSQL a block-range one.
    engine = create_engine(database)
    with engine.connect() as connection:
        (index,) = inspect(connection).get_indexes("fits")
    engine.dispose()
    assert index["column_names"] == ["uni_name", "course_name", "run"]
    if database.startswith("postgresql"):
        assert index["dialect_options"]["postgresql_using"] == "brin"
    assert any(word in types["at"] for word in ("TIMESTAMP", "DATETIME"))
    # The next load of the run (changed) goes straight in too, into the tables as they are;
    # on PostgreSQL, into a table made without the leading columns' defaults (an earlier
    # version's), which are set.
    if database.startswith("postgresql"):
        engine = create_engine(database)
        with engine.begin() as connection:
            for column in ("uni_name", "course_name", "run"):
                connection.exec_driver_sql(f"ALTER TABLE fits ALTER COLUMN {column} DROP DEFAULT")
        engine.dispose()
    os.utime(folder / "fits.csv", (1, 1))
    caplog.clear()
    _load(tmp_path, database)
    assert "staging" not in caplog.text
    assert_tables_match_tree(database, tmp_path / "data")


def test_each_database_types_a_column_as_the_csv_module_would(tmp_path, database, caplog):
    """The servers test the kinds in their own way (first rows, then casts or regular
    expressions): the same kinds as flsync.sql.csvfiles, values the first rows do not show
    included."""
    folder = _one_run(tmp_path)
    columns = {
        "number": ("1", "-7", "0", Kind.INTEGER),
        "leading_zero": ("1", "1", "007", Kind.TEXT),
        "minus_zero": ("1", "1", "-0", Kind.TEXT),
        "nineteen_digits": ("1", "1", "1000000000000000000", Kind.TEXT),
        "no_such_day": ("2016-05-09 10:23:11 UTC", "", "2019-02-30 10:00:00 UTC", Kind.TEXT),
        "iso_t": ("2016-05-09 10:23:11 UTC", "", "2016-05-09T10:23:11 UTC", Kind.TEXT),
        "leap_day": ("2016-05-09", "", "2024-02-29", Kind.DATE),
        "late_number": ("", "", "5", Kind.INTEGER),
        "late_text": ("1", "2", "x", Kind.TEXT),
        "late_stamp": ("", "", "2016-05-09 10:23:11 UTC", Kind.TIMESTAMP),
        "null_word": ("1", "2", "NULL", Kind.TEXT),
        "not_leap": ("2016-05-09 10:23:11 UTC", "", "2017-02-29 10:00:00 UTC", Kind.TEXT),
        "hour_24": ("2016-05-09 10:23:11 UTC", "", "2016-05-09 24:00:00 UTC", Kind.TEXT),
    }
    rows = [[first for first, _, _, _ in columns.values()]]
    rows += [[middle for _, middle, _, _ in columns.values()]] * 5000
    rows += [[last for _, _, last, _ in columns.values()]]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([list(columns), *rows])
    (folder / "typing.csv").write_text(out.getvalue(), encoding="utf-8")
    caplog.set_level("INFO", logger="flsync.sql.loader")

    _load(tmp_path, database)

    # The first rows did not tell: the run was loaded again, through staging tables.
    assert "typing.csv does not fit its table as it is" in caplog.text
    assert "widened" not in caplog.text  # the guessed table was undone, not widened
    assert_tables_match_tree(database, tmp_path / "data")
    types = column_types(database, "typing")
    for name, (_, _, _, kind) in columns.items():
        word = {Kind.INTEGER: "INT", Kind.TEXT: "TEXT", Kind.DATE: "DATE"}.get(kind, "TIME")
        assert word in types[name], (name, types[name])
