import errno
import os
import tempfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest
from scrapy.settings import Settings

from flsync.storage import (
    TEMP_PREFIX,
    FileStat,
    LocalStore,
    StoreLocationError,
    StoreLockedError,
    StoreWriteError,
    open_store,
    store_class,
)


class BrokenBuffer(BytesIO):
    def getvalue(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_persist_file_creates_folders_and_leaves_no_temp_file(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/Course/1-2020-01-01-2020-02-01/comments.csv", BytesIO(b"a,b\n"))
    folder = tmp_path / "Org/Course/1-2020-01-01-2020-02-01"
    assert (folder / "comments.csv").read_bytes() == b"a,b\n"
    assert os.listdir(folder) == ["comments.csv"]


def test_failed_write_keeps_the_old_file(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/x.csv", BytesIO(b"good\n"))
    with pytest.raises(
        StoreWriteError, match=r"^cannot write Org/x\.csv: No space left on device$"
    ):
        store.persist_file("Org/x.csv", BrokenBuffer())
    assert (tmp_path / "Org/x.csv").read_bytes() == b"good\n"
    assert os.listdir(tmp_path / "Org") == ["x.csv"]


def test_persist_local_file_moves_a_finished_download_into_place(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/x.csv", BytesIO(b"old\n"))
    part = store.temp_path("Org/x.csv")
    assert os.path.dirname(part) == str(tmp_path / "Org")
    assert os.path.basename(part).startswith(TEMP_PREFIX)
    assert not os.path.exists(part)  # a name only: the downloader makes the file
    with open(part, "xb") as f:
        f.write(b"new\n")
    store.persist_local_file("Org/x.csv", part)
    assert (tmp_path / "Org/x.csv").read_bytes() == b"new\n"
    assert not os.path.exists(part)


def test_reads(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/C/1/a.csv", BytesIO(b"1"))
    assert store.read_file("Org/C/1/a.csv") == b"1"
    store.write_file("Org/C/1/b.csv", b"2")  # bytes, as a command writes
    assert store.read_file("Org/C/1/b.csv") == b"2"
    assert store.read_file("Org/C/1/missing.csv") is None
    assert store.exists("Org/C/1/a.csv")
    assert not store.exists("Org/C/1")
    assert store.list_dir("Org") == ["C"]
    assert store.list_dir("Nowhere") == []


def test_a_lock_is_per_organisation(tmp_path):
    first, second = LocalStore(str(tmp_path)), LocalStore(str(tmp_path))
    with first.lock("exampleton"):
        with pytest.raises(StoreLockedError, match="exampleton"), second.lock("exampleton"):
            pass
        with second.lock("tricky-institute"):  # another organisation: no wait
            pass
    with second.lock("exampleton"):
        pass
    # hidden files beside the organisations, no folder
    assert sorted(os.listdir(tmp_path)) == [
        ".flsync-lock-exampleton",
        ".flsync-lock-tricky-institute",
    ]


def test_store_class_by_scheme(tmp_path):
    assert store_class(str(tmp_path)) is LocalStore
    assert open_store(f"file://{tmp_path}", Settings()).basedir == str(tmp_path)
    with pytest.raises(
        StoreLocationError, match=r"unsupported scheme 'gopher' \(use a local folder or s3://"
    ):
        store_class("gopher://x/y")


def test_stat_is_size_and_time_without_reading(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/a.csv", BytesIO(b"12345"))
    mtime = (tmp_path / "Org/a.csv").stat().st_mtime
    assert store.stat("Org/a.csv") == FileStat(size=5, mtime=mtime)
    assert store.stat("Org/b.csv") is None


def test_sweep_deletes_only_temporary_files(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/.flsync-state.json", BytesIO(b"{}"))
    store.persist_file("Org/C/1/a.csv", BytesIO(b"a"))
    left = [store.temp_path("Org/C/1/a.csv"), store.temp_path("Org/b.csv")]
    for path in left:
        with open(path, "xb") as f:
            f.write(b"partial")
    swept = store.sweep_temp_files("Org")
    assert swept == sorted(os.path.relpath(p, tmp_path) for p in left)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        ".flsync-state.json",
        "a.csv",
    ]


def test_check_location_makes_no_parent(tmp_path):
    # The folder itself may be missing.
    LocalStore.check_location(str(tmp_path / "data"), Settings())
    assert not (tmp_path / "data").exists()
    with pytest.raises(StoreLocationError, match=r"its parent folder .*/unmounted does not"):
        LocalStore.check_location(str(tmp_path / "unmounted" / "data"), Settings())
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreLocationError, match="is a file, not a folder"):
        LocalStore.check_location(str(tmp_path / "file"), Settings())
    with pytest.raises(StoreLocationError, match="file is not a folder"):
        LocalStore.check_location(str(tmp_path / "file" / "data"), Settings())


def test_check_location_refuses_a_read_only_parent():
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        read_only = Path(top, "ro")
        read_only.mkdir(mode=0o555)
        read_only.chmod(0o555)
        refused = _as_ordinary_user(
            lambda: LocalStore.check_location(str(read_only / "data"), Settings())
        )
    assert refused.startswith("StoreLocationError: ")
    assert refused.endswith(f"{read_only} is not writable by this user")


def _as_ordinary_user(check: Callable[[], None]) -> str:
    """Run ``check`` in a forked child that, when the tests run as root (who may write
    anywhere), first becomes user nobody; what it raised, as "Type: message" ("" if
    nothing). Forked, not started afresh: the child needs no access to the checkout, which
    may sit in a folder only its owner can read."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's report goes through the pipe
        try:
            os.close(reader)
            outcome = ""
            try:
                if os.getuid() == 0:
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                check()
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            os.write(writer, outcome.encode())
        finally:
            os._exit(0)  # never back into pytest
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        outcome = pipe.read().decode()
    os.waitpid(child, 0)
    return outcome
