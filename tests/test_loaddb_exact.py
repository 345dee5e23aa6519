"""The database load is exact whatever the bytes: each database (SQLite, PostgreSQL, MariaDB)
ends with exactly the rows and values the csv module reads from the files, or the run is
refused in one line; never a traceback.

Line ends of every kind, names each database cuts or changes, a dataset named like a
staging table, a ``%`` in a name, files whose columns hold no value, a record longer than
memory should hold, a database server that asks for files flsync does not send, and a load
that fails after a sync. The databases are reached as in tests/test_loaddb.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from flsync.sql.loader import Loader, open_database
from flsync.storage import LocalStore
from tests.commands import command_env, run_in_process
from tests.test_loaddb import (
    DATABASES,
    SMALL,
    TOKYO,
    assert_tables_match_tree,
    column_types,
    errors,
    new_database,
    tables,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(params=DATABASES)
def database(request, tmp_path) -> Iterator[str]:
    """The URL of a new, empty database of each kind."""
    with new_database(request.param, tmp_path) as url:
        yield url


# The site the `sync` fixture syncs (tests/conftest.py): a load after a sync fails the same
# whatever the tree holds.
SITE = SMALL


@pytest.fixture
def mariadb(tmp_path) -> Iterator[str]:
    """The URL of a new, empty MariaDB database."""
    with new_database("mysql", tmp_path) as url:
        yield url


METADATA = (
    "uni_name,course_name,run,start_date,end_date,duration_weeks\n"
    "Org,Course,{run},2020-01-06,2020-02-03,4\n"
)


def run_folder(data: Path, run: int = 1) -> Path:
    """A run's folder in the tree ``data``, with its metadata.csv."""
    folder = data / "Org" / "Course" / f"{run}-2020-01-06-2020-02-03"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.csv").write_text(METADATA.format(run=run))
    return folder


def write(path: Path, content: bytes) -> None:
    """Give a file new content, and a new modification time whatever the clock's grain."""
    existed = path.exists()
    mtime = path.stat().st_mtime if existed else 0
    path.write_bytes(content)
    if existed:
        os.utime(path, (mtime + 10, mtime + 10))


def load(data: Path, url: str) -> list[str]:
    """Load the tree into the database; the lines of the runs not loaded."""
    engine = open_database(url)
    try:
        return Loader(engine, LocalStore(str(data))).load(["Org"]).failed
    finally:
        engine.dispose()


def loaddb(workdir: Path, url: str, *args: str) -> tuple[int, str]:
    """`scrapy loaddb` of workdir/data into ``url``: exit status and output."""
    (workdir / "config.json").write_text('{"data_dir": "data"}')
    result = run_in_process(["loaddb", "--database", url, *args], workdir, TOKYO)
    return result.returncode, result.output


def kind_of(url: str, table: str, column: str) -> str:
    """A column's type as a word: INT, TIMESTAMP, DATE, TEXT or EMPTY (no value yet)."""
    name = column_types(url, table)[column]
    for word in ("INT", "TIMESTAMP", "DATETIME", "DATE"):
        if word in name:
            return {"DATETIME": "TIMESTAMP"}.get(word, word)
    return "EMPTY" if name in ("VARCHAR", "TINYTEXT") else "TEXT"


# Line ends.


LINE_ENDS = {
    "cr": b'n,note\r1,plain\r2,"a\rb"\r',
    "crlf": b'n,note\r\n1,plain\r\n2,"a\r\nb"\r\n',
    "lf header, crlf rows": b"n,note\n5,plain\r\n6,x\r\n",
    "crlf header, lf rows": b"n,note\r\n5,plain\n6,x\n",
    "cr header, lf rows": b"n,note\r5,plain\n6,x\n",
    "mixed, quoted line ends": b'n,note\n1,"a\r\nb"\r2,"c\rd\ne"\r\n3,last',
    "no line end at the end": b"n,note\r\n1,plain\r\n2,last",
}


@pytest.mark.parametrize("content", LINE_ENDS.values(), ids=LINE_ENDS.keys())
def test_every_line_end_loads_as_the_csv_module_reads_it(tmp_path, database, content):
    """CR, LF and CRLF, alone or mixed: each database holds the csv module's rows (numbers
    as numbers: no "5\\r" turned text), once staged if need be."""
    data = tmp_path / "data"
    write(run_folder(data) / "notes.csv", content)

    assert load(data, database) == []

    assert_tables_match_tree(database, data)
    assert kind_of(database, "notes", "n") == "INT"


def test_a_line_postgresql_reads_as_its_end_of_data_is_a_value(tmp_path, database):
    """A lone "\\." ends PostgreSQL's COPY of CSV: the rows after it are loaded too."""
    data = tmp_path / "data"
    write(run_folder(data) / "codes.csv", b'code\nA\n\\.\nB\n"\\."\nC\n')

    assert load(data, database) == []

    assert [row["code"] for row in tables(database)["codes"]] == ["A", "B", "C", "\\.", "\\."]


def test_a_blank_line_in_a_file_of_one_column_is_refused_as_the_csv_module_does(tmp_path, database):
    data = tmp_path / "data"
    write(run_folder(data) / "codes.csv", b"code\nA\n\nB\n")

    (failed,) = load(data, database)

    assert "codes.csv, line 3: 0 fields where the header has 1" in failed


def test_the_character_nul_is_text_or_refused_in_one_line(tmp_path, database):
    """PostgreSQL's text cannot hold NUL: there the run is refused, naming the line; the
    others hold the value as it is."""
    data = tmp_path / "data"
    write(run_folder(data) / "notes.csv", b"n,note\n1,plain\n2,a\x00b\n")

    failed = load(data, database)

    if database.startswith("postgresql"):
        (line,) = failed
        assert "notes.csv, line 3: invalid byte sequence for encoding" in line
    else:
        assert failed == []
        assert_tables_match_tree(database, data)


# Names.


NAMES = {
    "percent": ("pct-100%.csv", "a%b", "a%%b"),
    "forty e-acute": ("accents.csv", "é" * 40, "x"),
    "mariadb's 64 characters": ("accents.csv", "é" * 64, "x"),
    "an emoji": ("emoji.csv", "mood 😀", "x"),
}


@pytest.mark.parametrize(("file", "first", "second"), NAMES.values(), ids=NAMES.keys())
def test_names_are_taken_exactly_or_refused_in_one_line(tmp_path, database, file, first, second):
    """A name is the database's exactly as the header has it, on every load (a "%" too),
    also when a column must widen (the staged path); or, where the database would cut or
    change it, the run is refused in one line, on every load (no KeyError)."""
    workdir = tmp_path
    folder = run_folder(workdir / "data")
    write(folder / file, f"{first},{second}\n1,x\n2,y\n".encode())
    kind = make_url(database).get_backend_name()
    refused = {
        "postgresql": len(first.encode()) > 63,
        "mysql": len(first) > 64 or "😀" in first,
        "sqlite": False,
    }[kind]

    for content in (f"{first},{second}\n1,x\n", f"{first},{second}\n1,x\nn/a,z\n"):
        write(folder / file, content.encode())
        code, output = loaddb(workdir, database)

        assert "Traceback" not in output
        if refused:
            assert code == 1, output
            (line, _summary) = errors(output)
            assert f"{file}, line 1: a column cannot be named {first!r}: " in line
            assert ("63 bytes" if kind == "postgresql" else "MariaDB/MySQL") in line
        else:
            assert code == 0, output
            assert_tables_match_tree(database, workdir / "data")
            table = file.removesuffix(".csv").replace("-", "_")
            assert set(column_types(database, table)) >= {first, second}


def test_a_dataset_named_like_a_staging_table_keeps_its_rows(tmp_path, database):
    """Staging tables are named as no dataset's table can be: a dataset named as they once
    were, or as a table's run index once was, loads, and keeps its rows through the staged
    loads of other runs."""
    data = tmp_path / "data"
    first = run_folder(data, 1)
    for name in ("flsync-staging-0", "flsync-stage-0", "ix-comments-run", "comments"):
        write(first / f"{name}.csv", b"id,note\n1,kept\n")
    assert load(data, database) == []
    second = run_folder(data, 2)
    # The first rows say number, a later one not: the run is staged.
    write(second / "comments.csv", b"id,note\n" + b"1,x\n" * 5000 + b"n/a,y\n")

    assert load(data, database) == []

    loaded = assert_tables_match_tree(database, data)
    assert [row["note"] for row in loaded["flsync_staging_0"]] == ["kept"]
    assert kind_of(database, "comments", "id") == "TEXT"


# Types.


LEAVING = b"id,learner_id,left_at,leaving_reason,last_completed_step_at,last_completed_step\n"
LEAVING_ROWS = (
    b"7,a1b2,2016-05-09 10:23:11 UTC,I don't have enough time,2016-05-02 09:00:00 UTC,1.10\n"
    b"8,c3d4,2016-05-10 08:00:00 UTC,,,\n"
)


@pytest.mark.parametrize("order", ["empty file first", "values first", "together"])
def test_column_types_do_not_depend_on_the_order_files_are_loaded_in(tmp_path, database, order):
    """A survey file with a header and no rows (as real 2016-17 exports have) says nothing
    about its columns' types: loaded first, later, or with the others, its table's columns
    take the types of the values of all its files."""
    data = tmp_path / "data"
    files = {1: LEAVING, 2: LEAVING + LEAVING_ROWS}
    runs = {"empty file first": [[1], [2]], "values first": [[2], [1]], "together": [[1, 2]]}
    for batch in runs[order]:
        for run in batch:
            write(run_folder(data, run) / "leaving-survey-responses.csv", files[run])
        assert load(data, database) == []

    assert_tables_match_tree(database, data)
    expected = {
        "id": "INT",
        "learner_id": "TEXT",
        "left_at": "TIMESTAMP",
        "leaving_reason": "TEXT",
        "last_completed_step_at": "TIMESTAMP",
        "last_completed_step": "TEXT",
    }
    assert {c: kind_of(database, "leaving_survey_responses", c) for c in expected} == expected


def test_a_column_with_no_value_yet_takes_the_type_of_the_values_that_come(tmp_path, database):
    """Empty in every row so far (no value in the first rows either, which the direct path
    reads): typed by the values that come later, in the same file or another run's."""
    data = tmp_path / "data"
    rows = b"n,later\n" + b"1,\n" * 5000 + b"2,2016-05-09 10:23:11 UTC\n"
    write(run_folder(data, 1) / "late.csv", b"n,later,never\n1,,\n")
    assert load(data, database) == []
    assert kind_of(database, "late", "later") == "EMPTY"
    write(run_folder(data, 2) / "late.csv", rows)

    assert load(data, database) == []

    assert_tables_match_tree(database, data)
    assert kind_of(database, "late", "later") == "TIMESTAMP"
    assert kind_of(database, "late", "never") == "EMPTY"
    write(run_folder(data, 3) / "late.csv", b"n,never\n3,some text\n")
    assert load(data, database) == []
    assert kind_of(database, "late", "never") == "TEXT"
    assert_tables_match_tree(database, data)


def test_a_column_added_before_one_widened_in_the_same_file_is_kept(tmp_path, database):
    """SQLite makes a table again to widen a column: with the column just added too."""
    data = tmp_path / "data"
    write(run_folder(data, 1) / "notes.csv", b"n,note\n1,x\n")
    assert load(data, database) == []
    write(run_folder(data, 2) / "notes.csv", b"added,n,note\nnew,n/a,y\n")

    assert load(data, database) == []

    assert_tables_match_tree(database, data)
    assert kind_of(database, "notes", "n") == "TEXT"


# Memory.


# Started from this (large) process, a child's peak RSS would count this process's pages
# too (the kernel carries them over through the child's exec): a small launcher starts the
# command and reports its peak, in KiB, on the last line.
LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:], stdout=sys.stdout, stderr=subprocess.STDOUT)\n"
    "_pid, status, usage = os.wait4(child.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, flush=True)\n"
)


def test_a_record_longer_than_the_limit_is_refused_in_flat_memory(tmp_path, database):
    """A 256 MiB line: one line naming the file and the line, and the command's peak memory
    stays far below the line's size (it held at most FLSYNC_DATABASE_RECORD_MB of it)."""
    folder = run_folder(tmp_path / "data")
    with (folder / "long.csv").open("wb") as out:
        out.write(b"a,b\n1,2\n")
        for _ in range(256):
            out.write(b"x" * (1 << 20))
        out.write(b",y\n3,4\n")
    write(folder / "short.csv", b"a,b\n1,2\n")
    (tmp_path / "config.json").write_text('{"data_dir": "data"}')
    command = [sys.executable, "-m", "scrapy", "loaddb", "--database", database]
    process = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *command],
        cwd=tmp_path,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )

    *lines, last = process.stdout.splitlines()
    output = "\n".join(lines)
    code, peak_kib = map(int, last.split())
    assert code == 1, output
    assert "Traceback" not in output
    line, _summary = errors(output)
    assert "long.csv, line 3: a record longer than 8 MB (FLSYNC_DATABASE_RECORD_MB)" in line
    assert peak_kib < 200 * 1024, peak_kib


def test_the_record_limit_is_a_setting(tmp_path, database):
    folder = run_folder(tmp_path / "data")
    write(folder / "long.csv", b"a,b\n1," + b"x" * (2 << 20) + b"\n3,4\n")

    code, output = loaddb(tmp_path, database, "-s", "FLSYNC_DATABASE_RECORD_MB=1")
    assert code == 1, output
    assert "long.csv, line 2: a record longer than 1 MB" in errors(output)[0]

    code, output = loaddb(tmp_path, database)
    assert code == 0, output
    assert_tables_match_tree(database, tmp_path / "data")

    code, output = loaddb(tmp_path, database, "-s", "FLSYNC_DATABASE_RECORD_MB=0")
    assert code == 2, output
    assert "FLSYNC_DATABASE_RECORD_MB must be a whole number of MiB, at least 1" in output


# A hostile database server.


def _packets(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """MySQL protocol packets (sequence number, payload) until the socket closes."""

    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            part = sock.recv(size - len(data))
            if not part:
                raise EOFError
            data += part
        return data

    try:
        while True:
            header = exactly(4)
            yield header[3], exactly(int.from_bytes(header[:3], "little"))
    except (EOFError, OSError):
        return


def _packet(sequence: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence]) + payload


class HostileProxy:
    """A proxy in front of the test MariaDB server that turns hostile: it asks the client
    for the local file ``secret``, in place of the one flsync's LOAD DATA names ("swap"), or
    in reply to the query that reads flsync_loads, which the server never sees ("hijack").
    What the client sends back is kept in ``sent``."""

    def __init__(self, upstream: tuple[str, int], secret: Path, mode: str) -> None:
        self.upstream = upstream
        self.secret = str(secret).encode()
        self.mode = mode
        self.asked = 0  # requests for the secret made
        self.sent = b""  # the client's bytes answering them
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        reply = threading.Event()  # the next packet from the server starts its reply
        answering = threading.Event()  # the client is sending the file asked for
        threading.Thread(
            target=self._from_server, args=(server, client, reply, answering), daemon=True
        ).start()
        hijacked = False
        for sequence, payload in _packets(client):
            if answering.is_set():
                self.sent += payload
                if not payload:
                    answering.clear()
                    if self.mode == "hijack":  # the server never saw the query: its reply
                        client.sendall(_packet(sequence + 1, b"\xff\x51\x04#HY000hijacked"))
                        continue
            elif self.mode == "hijack" and not hijacked and b"FROM flsync_loads" in payload:
                hijacked = True
                self.asked += 1
                answering.set()
                client.sendall(_packet(sequence + 1, b"\xfb" + self.secret))
                continue
            elif payload[:1] == b"\x03":  # a query: the server's next packet begins its reply
                reply.set()
            server.sendall(_packet(sequence, payload))
        server.close()
        client.close()

    def _from_server(
        self,
        server: socket.socket,
        client: socket.socket,
        reply: threading.Event,
        answering: threading.Event,
    ) -> None:
        for sequence, payload in _packets(server):
            sent = payload
            if reply.is_set():
                reply.clear()
                if self.mode == "swap" and payload[:1] == b"\xfb":  # LOAD DATA LOCAL's request
                    sent = b"\xfb" + self.secret
                    self.asked += 1
                    answering.set()
            try:
                client.sendall(_packet(sequence, sent))
            except OSError:
                break
        client.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("mode", ["swap", "hijack"])
def test_a_hostile_database_server_gets_no_file_but_the_one_flsync_sends(tmp_path, mariadb, mode):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    write(run_folder(tmp_path / "data") / "comments.csv", b"id,note\n1,x\n")
    url = make_url(mariadb)
    proxy = HostileProxy((url.host or "127.0.0.1", url.port or 3306), secret, mode)
    try:
        hostile = url.set(host="127.0.0.1", port=proxy.port)
        code, output = loaddb(tmp_path, hostile.render_as_string(hide_password=False))
    finally:
        proxy.close()

    assert proxy.asked >= 1
    assert b"the secret" not in proxy.sent
    assert proxy.sent == b""  # an empty file: the protocol's refusal
    assert code == 1, output
    assert "Traceback" not in output
    refusal = f"the server asked for the local file {str(secret)!r}, which flsync does not send"
    assert refusal in errors(output)[0]


# A load after a sync.


def test_a_load_that_fails_after_a_sync_is_error_lines_and_exit_status_1(sync, database):
    """A load that fails after a sync says why in ERROR lines (one per run not loaded, or
    one for the load), and the sync's exit status is 1: no traceback, no "Sync complete"."""
    engine = create_engine(database)
    with engine.begin() as connection:  # flsync's own table, as something else made it
        connection.exec_driver_sql("CREATE TABLE flsync_loads (folder INTEGER)")
    engine.dispose()

    result = sync(env={"FLSYNC_DATABASE_URL": database, **TOKYO})

    assert result.returncode == 1, result.output
    load_errors = [line for line in result.error_lines() if "[flsync.sql" in line]
    assert len(load_errors) == 1, result.output
    assert "Database load FAILED: " in load_errors[0]
    assert "Traceback" not in result.output
    assert "Error caught on signal handler" not in result.output
    assert "Sync complete" not in result.output
    assert "database/failed: 1" in result.error_lines()[-1]


def test_a_bad_record_limit_fails_the_sync_in_one_line(sync, tmp_path):
    """The sync goes on (the tree needs no database), and its exit status is 1."""
    url = f"sqlite:///{tmp_path / 'unused.sqlite3'}"

    result = sync("-s", "FLSYNC_DATABASE_RECORD_MB=0", env={"FLSYNC_DATABASE_URL": url})

    assert result.returncode == 1, result.output
    (line,) = [line for line in result.error_lines() if "[flsync.sql" in line]
    assert "FLSYNC_DATABASE_RECORD_MB must be a whole number of MiB, at least 1" in line
    assert "Traceback" not in result.output
    assert "database/failed: 1" in result.error_lines()[-1]
    assert not (tmp_path / "unused.sqlite3").exists()


def test_runs_not_loaded_after_a_sync_are_one_error_line_each(sync, tmp_path):
    url = f"sqlite:///{tmp_path / 'after.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as connection:  # every enrolment refused
        connection.exec_driver_sql(
            "CREATE TABLE enrolments (uni_name TEXT, course_name TEXT, run BIGINT)"
        )
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON enrolments BEGIN"
            " SELECT RAISE(ABORT, 'refused'); END"
        )
    engine.dispose()

    result = sync(env={"FLSYNC_DATABASE_URL": url, **TOKYO})

    assert result.returncode == 1, result.output
    runs = [line for line in result.error_lines() if "Run (not loaded)" in line]
    assert runs and all("refused" in line for line in runs)
    assert len([line for line in result.error_lines() if "[flsync.sql" in line]) == len(runs)
    assert "Traceback" not in result.output
    assert "Sync complete" not in result.output
