import os
from io import BytesIO

import pytest

from flsync.storage import LocalStore, StoreLockedError, open_store


class BrokenBuffer(BytesIO):
    def getvalue(self):
        raise OSError("disk full")


def test_persist_file_creates_folders_and_leaves_no_temp_file(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/Course/1-2020-01-01-2020-02-01/comments.csv", BytesIO(b"a,b\n"))
    folder = tmp_path / "Org/Course/1-2020-01-01-2020-02-01"
    assert (folder / "comments.csv").read_bytes() == b"a,b\n"
    assert os.listdir(folder) == ["comments.csv"]


def test_failed_write_keeps_the_old_file(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/x.csv", BytesIO(b"good\n"))
    with pytest.raises(OSError, match="disk full"):
        store.persist_file("Org/x.csv", BrokenBuffer())
    assert (tmp_path / "Org/x.csv").read_bytes() == b"good\n"
    assert os.listdir(tmp_path / "Org") == ["x.csv"]


def test_persist_local_file_moves_a_finished_download_into_place(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/x.csv", BytesIO(b"old\n"))
    part = os.path.join(store.temp_dir("Org/x.csv"), ".flsync-1.part")
    with open(part, "wb") as f:
        f.write(b"new\n")
    store.persist_local_file("Org/x.csv", part)
    assert (tmp_path / "Org/x.csv").read_bytes() == b"new\n"
    assert not os.path.exists(part)


def test_reads(tmp_path):
    store = LocalStore(str(tmp_path))
    store.persist_file("Org/C/1/a.csv", BytesIO(b"1"))
    assert store.read_file("Org/C/1/a.csv") == b"1"
    assert store.read_file("Org/C/1/missing.csv") is None
    assert store.exists("Org/C/1/a.csv")
    assert not store.exists("Org/C/1")
    assert store.list_dir("Org") == ["C"]
    assert store.list_dir("Nowhere") == []


def test_second_lock_on_the_same_folder_is_refused(tmp_path):
    first, second = LocalStore(str(tmp_path)), LocalStore(str(tmp_path))
    with first.lock(), pytest.raises(StoreLockedError), second.lock():
        pass
    with second.lock():
        pass


def test_open_store(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(f"file://{tmp_path}").basedir == str(tmp_path)
    with pytest.raises(ValueError, match="unsupported scheme 'gopher'"):
        open_store("gopher://x/y")
