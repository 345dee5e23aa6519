import logging
from datetime import date
from io import BytesIO

from flsync.state import SyncState, load_state, save_state
from flsync.storage import LocalStore

RUN = {"folder": "Org/C/1-2020-01-06-2020-02-03", "end_date": "2020-02-03", "files": ["a.csv"]}


def test_round_trip(tmp_path):
    store = LocalStore(str(tmp_path))
    state = SyncState(
        files={"Org/C/1/a.csv": {"etag": '"x"', "checksum": "abc"}}, runs={"c/1": RUN}
    )
    save_state(store, "Org", state)
    assert load_state(store, "Org") == state


def test_missing_state_is_empty(tmp_path):
    assert load_state(LocalStore(str(tmp_path)), "Org") == SyncState()


def test_corrupt_state_warns_and_is_empty(tmp_path, caplog):
    store = LocalStore(str(tmp_path))
    for garbage in (
        b"{nope",
        b'{"version": 99}',
        b'{"version": 1, "files": {}, "runs": {"c/1": {}}}',
    ):
        store.persist_file("Org/.flsync-state.json", BytesIO(garbage))
        with caplog.at_level(logging.WARNING):
            assert load_state(store, "Org") == SyncState()
        assert "syncing as if it were absent" in caplog.records[-1].getMessage()


def test_frozen_only_when_ended_long_ago_and_every_file_present(tmp_path):
    store = LocalStore(str(tmp_path))
    state = SyncState(runs={"c/1": RUN})
    assert not state.is_frozen("c/1", date(2021, 1, 1), 30, store)  # a.csv missing
    store.persist_file(f"{RUN['folder']}/a.csv", BytesIO(b"x"))
    assert state.is_frozen("c/1", date(2021, 1, 1), 30, store)
    assert not state.is_frozen("c/1", date(2020, 3, 4), 30, store)  # ended 30 days ago
    assert state.is_frozen("c/1", date(2020, 3, 5), 30, store)
    assert not state.is_frozen("c/1", date(2021, 1, 1), 0, store)  # shortcut off
    assert not state.is_frozen("c/2", date(2021, 1, 1), 30, store)  # never stored
