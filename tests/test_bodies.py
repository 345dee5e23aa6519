"""Body sinks: what a transfer's chunks become, in memory or in a file, and their hash."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from flsync.bodies import BodyTooLarge, FileBody, FileLimits, MemoryBody

CHUNK = bytes(range(256)) * 64  # 16 KiB, as curl hands a body over


def chunks(total: int) -> list[bytes]:
    return [CHUNK] * (total // len(CHUNK))


@pytest.mark.parametrize("total", [len(CHUNK), FileBody.BLOCK * 3, FileBody.INLINE_HASH * 3])
def test_a_file_body_is_written_and_hashed_whole(tmp_path, total):
    body = FileBody(str(tmp_path / "body.part"))
    for chunk in chunks(total):
        body.write(chunk)
    body.finish()
    content = b"".join(chunks(total))
    assert (tmp_path / "body.part").read_bytes() == content
    assert body.size == total
    assert body.sha256 == hashlib.sha256(content).hexdigest()


def test_a_big_body_is_hashed_by_a_thread_of_its_own(tmp_path):
    body = FileBody(str(tmp_path / "body.part"))
    before = threading.active_count()
    for chunk in chunks(FileBody.INLINE_HASH * 2):
        body.write(chunk)
    assert threading.active_count() == before + 1  # past INLINE_HASH, alongside the writes
    body.finish()
    assert threading.active_count() == before


def test_the_file_is_made_at_the_first_chunk_and_written_in_blocks(tmp_path):
    path = tmp_path / "body.part"
    body = FileBody(str(path))
    assert not path.exists()
    body.write(CHUNK)
    assert path.exists()
    assert path.stat().st_size == 0  # gathered until a block is full
    for chunk in chunks(FileBody.BLOCK):
        body.write(chunk)
    assert path.stat().st_size >= FileBody.BLOCK
    body.discard()


def test_an_empty_body_makes_an_empty_file(tmp_path):
    body = FileBody(str(tmp_path / "body.part"))
    body.finish()
    assert (tmp_path / "body.part").read_bytes() == b""
    assert body.sha256 == hashlib.sha256(b"").hexdigest()


def test_discard_deletes_the_file_and_stops_hashing(tmp_path):
    body = FileBody(str(tmp_path / "body.part"))
    before = threading.active_count()
    for chunk in chunks(FileBody.INLINE_HASH * 2):
        body.write(chunk)
    body.discard()
    assert os.listdir(tmp_path) == []
    assert threading.active_count() == before


def test_a_file_that_exists_is_never_overwritten(tmp_path):
    (tmp_path / "body.part").write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        FileBody(str(tmp_path / "body.part")).write(CHUNK)
    assert (tmp_path / "body.part").read_bytes() == b"someone else's"


def test_a_memory_body_stops_at_its_limit():
    body = MemoryBody(maxsize=len(CHUNK) * 2)
    body.write(CHUNK)
    body.write(CHUNK)
    with pytest.raises(
        BodyTooLarge, match=r"larger than DOWNLOAD_MAXSIZE \(32768 bytes\)"
    ) as raised:
        body.write(b"x")
    assert raised.value.setting == "DOWNLOAD_MAXSIZE"
    assert body.getvalue() == CHUNK * 2  # the byte past the limit is not kept
    assert MemoryBody(maxsize=0).maxsize == 0  # no limit


def test_file_limits_bound_the_decoded_size():
    limits = FileLimits(maxsize=1000, max_ratio=0)
    limits.check(1000, None)
    with pytest.raises(BodyTooLarge, match=r"^larger than FLSYNC_DATASET_MAXSIZE \(1000 bytes\)"):
        limits.check(1001, None)
    with pytest.raises(BodyTooLarge) as raised:
        limits.check(1001, 1001)  # encoded or not
    assert raised.value.setting == "FLSYNC_DATASET_MAXSIZE"
    FileLimits().check(1 << 40, 1)  # no limits


@pytest.mark.parametrize(
    ("size", "received", "refused"),
    [(9999, 100, False), (10_000, 100, False), (10_001, 100, True), (10**9, None, False)],
)
def test_file_limits_bound_the_decoding_ratio(size, received, refused):
    limits = FileLimits(max_ratio=100)
    if not refused:
        limits.check(size, received)
        return
    with pytest.raises(
        BodyTooLarge, match=r"more than FLSYNC_DATASET_MAX_RATIO \(100\) times"
    ) as raised:
        limits.check(size, received)
    assert raised.value.setting == "FLSYNC_DATASET_MAX_RATIO"
    assert f"refused after {size} bytes" in str(raised.value)
