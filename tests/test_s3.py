"""The data tree in an S3 bucket (data_dir = s3://bucket/prefix), against a moto server."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_twisted
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from scrapy.settings import Settings
from twisted.internet import threads
from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from fakesite import FakeSite, SiteOptions
from flsync import tree
from flsync.measures.dashboard import DASHBOARD_FILE
from flsync.measures.record import MEASURES_FILE, RECORD_FILE, STEPS_FILE
from flsync.storage import (
    LOCK_PREFIX,
    S3_PART_SIZE,
    FileStat,
    S3Store,
    StoreLocationError,
    StoreLockedError,
    StoreWriteError,
    store_class,
)
from flsync.storage.s3 import S3_POOL_CONNECTIONS
from tests.commands import REPO, run_in_process
from tests.conftest import Sync, SyncResult, data_files, expected_tree

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# The sync must find its keys in the environment only, never in this host's ~/.aws or an
# instance's metadata service.
ISOLATED = {
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SMALL = SiteOptions(organisations=1, courses=1, runs=2, rows=5, tricky=False)
TWO = SiteOptions(organisations=2, courses=2, runs=2, rows=5, tricky=False)
EXAMPLETON = "University of Exampleton"


# Longest a held request waits for the test to let it through; then it is refused.
HOLD_BOUND = 30.0
# The S3 error XML of a refusal, as AWS sends it.
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)
HELD_TOO_LONG = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<Error><Code>HeldTooLong</Code><Message>the test never let it through</Message></Error>"
)


@dataclasses.dataclass(frozen=True)
class S3Call:
    """One S3 request, as the server saw it (path-style: /bucket/key)."""

    key_id: str  # the access key that signed it
    method: str
    bucket: str
    key: str  # "" for the bucket itself
    query: frozenset[str]  # the names of its query parameters


@dataclasses.dataclass
class Hold:
    """S3 calls that wait for the test (at most HOLD_BOUND seconds) before moto answers."""

    matches: Callable[[S3Call], bool]
    arrived: threading.Event = dataclasses.field(default_factory=threading.Event)
    released: threading.Event = dataclasses.field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


class S3Server:
    """moto (S3 and IAM) on 127.0.0.1, in a thread, behind a layer that logs every S3 call
    and refuses or holds the calls a test names: what a test checks of flsync's S3 calls is
    then S3's contract, not how far moto imitates IAM."""

    def __init__(self) -> None:
        self.calls: list[S3Call] = []
        self.refused: list[Callable[[S3Call], bool]] = []
        self.holds: list[Hold] = []
        moto = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            "127.0.0.1",
            0,
            lambda environ, start_response: self._answer(moto, environ, start_response),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    @contextlib.contextmanager
    def refusing(self, matches: Callable[[S3Call], bool]) -> Iterator[None]:
        """Answer the matching calls AccessDenied, as S3 does to keys not allowed them."""
        self.refused.append(matches)
        try:
            yield
        finally:
            self.refused.remove(matches)

    @contextlib.contextmanager
    def holding(self, matches: Callable[[S3Call], bool]) -> Iterator[Hold]:
        """Hold the matching calls until the test releases them (HeldTooLong after
        HOLD_BOUND seconds); all are let through at the end."""
        hold = Hold(matches)
        self.holds.append(hold)
        try:
            yield hold
        finally:
            hold.release()
            self.holds.remove(hold)

    def _answer(self, moto: Any, environ: dict[str, Any], start_response: Any) -> Any:
        call = _s3_call(Request(environ))
        if call is not None:
            self.calls.append(call)
            if any(matches(call) for matches in self.refused):
                return _error(start_response, "403 Forbidden", ACCESS_DENIED)
            for hold in [h for h in self.holds if h.matches(call)]:
                hold.arrived.set()
                if not hold.released.wait(HOLD_BOUND):
                    return _error(start_response, "400 Bad Request", HELD_TOO_LONG)
        return moto(environ, start_response)


def _s3_call(request: Request) -> S3Call | None:
    """The S3 call ``request`` makes; None for another service's (IAM) or moto's own."""
    signed = re.search(
        r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/", request.headers.get("Authorization", "")
    )
    if signed is None or signed.group(2) != "s3":
        return None
    bucket, _, key = request.path.removeprefix("/").partition("/")
    return S3Call(signed.group(1), request.method, bucket, key, frozenset(request.args))


def _error(start_response: Any, status: str, body: bytes) -> list[bytes]:
    start_response(
        status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
    )
    return [body]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """The S3 server of this module's tests."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def endpoint(s3_server):
    return s3_server.url


def store_settings(endpoint: str, **values: Any) -> Settings:
    """Settings that point a store at ``endpoint``, as ``-s AWS_ENDPOINT_URL=`` does a sync's
    (the FLSYNC_* ones it lacks have their defaults)."""
    return Settings({"AWS_ENDPOINT_URL": endpoint, **values})


@pytest.fixture
def settings(endpoint):
    return store_settings(endpoint)


@pytest.fixture
def s3(endpoint, monkeypatch):
    """A client of the S3 server, with keys of its own in the environment."""
    for name, value in {**KEYS, **ISOLATED}.items():
        monkeypatch.setenv(name, value)
    return boto3.session.Session().client("s3", endpoint_url=endpoint)


@pytest.fixture
def bucket(s3):
    name = f"flsync-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# The site of this module's `fakesite` and `sync` (tests/conftest.py).
SITE = SMALL


def objects(s3, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every object under ``prefix`` (key relative to it -> its listing entry)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {
        item["Key"].removeprefix(prefix): item
        for page in pages
        for item in page.get("Contents", [])
    }


def contents(s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    return {
        key: s3.get_object(Bucket=bucket, Key=prefix + key)["Body"].read()
        for key in objects(s3, bucket, prefix)
    }


def versioning(s3, bucket: str) -> None:
    """Keep every version of every object in ``bucket`` (for ``versions``)."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def versions(s3, bucket: str, prefix: str = "") -> dict[str, list[str]]:
    """The versions of every CSV object of a bucket with ``versioning``: a rewrite, even of
    the same bytes within the same second, adds one."""
    found: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            if item["Key"].endswith(".csv"):
                found.setdefault(item["Key"].removeprefix(prefix), []).append(item["VersionId"])
    return found


def s3_sync(sync: Sync, endpoint: str, data_dir: str, *args: str, **kwargs: Any) -> SyncResult:
    env = {**KEYS, **ISOLATED, **kwargs.pop("env", {})}
    return sync("-s", f"AWS_ENDPOINT_URL={endpoint}", *args, data_dir=data_dir, env=env, **kwargs)


def moto_auth(endpoint: str, on: bool) -> None:
    """Make moto check every request's keys and their IAM policies (or stop checking)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0" if on else b"inf",
        headers={"Content-Type": "text/plain"},  # not a form, which the server would parse
        method="POST",
    )
    urllib.request.urlopen(request).close()


def iam_keys(endpoint: str, statements: list[dict[str, Any]]) -> dict[str, str]:
    """Keys of a new IAM user whose one policy is ``statements``."""
    iam = boto3.session.Session().client("iam", endpoint_url=endpoint)
    user = f"user-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="flsync",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def s3_age(s3, bucket: str, key: str) -> float:
    """Seconds since ``key`` was last written, by S3's clock (its answer's Date against the
    object's LastModified), as flsync reckons a lock's age."""
    head = s3.head_object(Bucket=bucket, Key=key)
    answered = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
    return (answered - head["LastModified"]).total_seconds()


def until_older(s3, bucket: str, key: str, seconds: float) -> None:
    """Wait until ``key`` is older than ``seconds`` by S3's clock (instead of a fixed sleep
    that must allow for S3's whole-second times)."""
    until(lambda: s3_age(s3, bucket, key) > seconds, bound=60)


@pytest.fixture
def authenticated(endpoint, s3, monkeypatch):
    """moto checks keys and policies during the test; the test's own requests (the client
    yielded, and any made from the environment) go with the keys of an IAM user that may do
    anything."""
    admin = iam_keys(endpoint, [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
    for name, value in admin.items():
        monkeypatch.setenv(name, value)
    moto_auth(endpoint, True)
    try:
        yield boto3.session.Session().client("s3", endpoint_url=endpoint)
    finally:
        moto_auth(endpoint, False)


# --- S3Store on its own ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["s3://{b}/mirror", "s3://{b}/mirror/", "s3://{b}/mirror//"])
@pytest_twisted.ensureDeferred
async def test_a_prefix_with_or_without_slash_gives_the_same_keys(s3, bucket, settings, form):
    store = S3Store(form.format(b=bucket), settings)
    await store.persist_file("Org/C/1/a.csv", io.BytesIO(b"1"))
    with store.lock("org"):
        assert sorted(objects(s3, bucket)) == ["mirror/.flsync-lock-org", "mirror/Org/C/1/a.csv"]
    assert store.list_dir("") == ["Org"]
    assert store.list_dir("Org") == ["C"]


@pytest.mark.parametrize("form", ["s3://{b}", "s3://{b}/"])
@pytest_twisted.ensureDeferred
async def test_a_bucket_without_prefix_holds_the_tree_at_its_top(s3, bucket, settings, form):
    store = store_class(form.format(b=bucket))(form.format(b=bucket), settings)
    await store.persist_file("Org/C/1/a.csv", io.BytesIO(b"1"))
    assert sorted(objects(s3, bucket)) == ["Org/C/1/a.csv"]
    assert store.read_file("Org/C/1/a.csv") == b"1"
    assert store.list_dir("") == ["Org"]


@pytest_twisted.ensureDeferred
async def test_reads(s3, bucket, settings):
    store = S3Store(f"s3://{bucket}/m", settings)
    assert store.stat("Org/C/1/a.csv") is None
    await store.persist_file("Org/C/1/a.csv", io.BytesIO(b"12345"))  # its stat now from a HEAD
    last_modified = objects(s3, bucket)["m/Org/C/1/a.csv"]["LastModified"]
    assert store.read_file("Org/C/1/a.csv") == b"12345"
    assert store.read_file("Org/C/1/missing.csv") is None
    assert store.exists("Org/C/1/a.csv")
    assert not store.exists("Org/C/1")
    assert store.list_dir("Org/C") == ["1"]
    assert store.list_dir("Nowhere") == []
    expected = FileStat(size=5, mtime=float(int(last_modified.timestamp())))
    assert store.stat("Org/C/1/a.csv") == expected
    # A new store (the next sync) lists the folder, and must see the very same time.
    assert S3Store(f"s3://{bucket}/m", settings).stat("Org/C/1/a.csv") == expected


@pytest_twisted.ensureDeferred
async def test_stat_lists_each_organisation_once_and_follows_own_writes(s3, bucket, settings):
    store = S3Store(f"s3://{bucket}/m", settings)
    assert store.stat("Org/a.csv") is None
    s3.put_object(Bucket=bucket, Key="m/Org/b.csv", Body=b"behind its back")
    assert store.stat("Org/b.csv") is None  # the listing made above is not made again
    await store.persist_file("Org/a.csv", io.BytesIO(b"123"))
    assert store.stat("Org/a.csv").size == 3
    assert store.stat("Other/b.csv") is None


def test_write_file_writes_before_it_returns(s3, bucket, settings):
    store = S3Store(f"s3://{bucket}/m", settings)
    assert store.stat("Org/a.csv") is None
    store.write_file("Org/a.csv", b"12")  # as a command, or a worker thread, writes
    assert contents(s3, bucket, "m/") == {"Org/a.csv": b"12"}
    head = s3.head_object(Bucket=bucket, Key="m/Org/a.csv")
    assert head["Metadata"] == {"sha256": hashlib.sha256(b"12").hexdigest()}
    assert store.stat("Org/a.csv").size == 2


@pytest_twisted.ensureDeferred
async def test_upload_keeps_the_checksum_and_consumes_the_local_file(s3, bucket, settings):
    store = S3Store(f"s3://{bucket}/m", settings)
    part = store.temp_path("Org/C/1/a.csv")
    assert not os.path.exists(part)  # a name only: the downloader makes the file
    with open(part, "xb") as f:
        f.write(b"a,b\n")
    checksum = hashlib.sha256(b"a,b\n").hexdigest()
    assert await store.persist_local_file("Org/C/1/a.csv", part, checksum) is None
    assert not os.path.exists(part)
    head = s3.head_object(Bucket=bucket, Key="m/Org/C/1/a.csv")
    assert head["Metadata"] == {"sha256": checksum}
    assert contents(s3, bucket, "m/") == {"Org/C/1/a.csv": b"a,b\n"}


@pytest_twisted.ensureDeferred
async def test_stat_file_answers_from_the_checksum_metadata_without_reading(s3, bucket, settings):
    store = S3Store(f"s3://{bucket}/m", settings)
    # The metadata, not the body: it is what the answer shows, so the body was not read.
    s3.put_object(Bucket=bucket, Key="m/Org/a.csv", Body=b"body", Metadata={"sha256": "cafe"})
    s3.put_object(Bucket=bucket, Key="m/Org/b.csv", Body=b"written by another tool")
    assert (await store.stat_file("Org/a.csv"))["checksum"] == "cafe"
    other = await store.stat_file("Org/b.csv")
    assert other["checksum"] == hashlib.sha256(b"written by another tool").hexdigest()
    assert await store.stat_file("Org/missing.csv") == {}


@pytest_twisted.ensureDeferred
async def test_a_write_leaves_the_reactor_free_until_s3_answers(s3_server, s3, bucket, settings):
    store = S3Store(f"s3://{bucket}/m", settings)
    with s3_server.holding(lambda call: call.bucket == bucket and call.method == "PUT") as put:
        written = store.persist_file("Org/a.csv", io.BytesIO(b"123"))
        # S3 has the write and holds its answer: meanwhile the reactor runs this test on.
        await threads.deferToThread(put.arrived.wait, HOLD_BOUND)
        assert put.arrived.is_set()
        assert not written.called
        put.release()
        await written
    assert store.stat("Org/a.csv").size == 3
    assert contents(s3, bucket, "m/") == {"Org/a.csv": b"123"}


@pytest_twisted.ensureDeferred
async def test_a_refused_write_is_one_line_and_leaves_no_object(
    endpoint, bucket, authenticated, settings, tmp_path
):
    # Every call on the objects denied: moto refuses each one, whatever IAM action it maps
    # a call to (5.2.6 names the multipart calls otherwise than AWS and 5.2.5 do).
    keys = iam_keys(
        endpoint,
        [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:*", "Resource": f"arn:aws:s3:::{bucket}/*"},
        ],
    )
    os.environ.update(keys)  # undone by monkeypatch, which set them first
    store = S3Store(f"s3://{bucket}/m", settings)
    with pytest.raises(StoreWriteError) as raised:
        await store.persist_file("Org/a.csv", io.BytesIO(b"x"))
    assert (
        str(raised.value) == f"cannot write s3://{bucket}/m/Org/a.csv: AccessDenied: Access Denied"
    )
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * (20 << 20))  # in parts
    with pytest.raises(StoreWriteError, match=f"^cannot write s3://{bucket}/m/Org/big.csv: "):
        await store.persist_local_file("Org/big.csv", str(big), "00")
    assert not big.exists()
    assert objects(authenticated, bucket) == {}
    assert authenticated.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_sweep_aborts_the_uploads_a_killed_sync_left_in_that_folder(s3, bucket, settings):
    for key in ("m/Org/C/1/big.csv", "m/Other/C/1/big.csv"):
        s3.create_multipart_upload(Bucket=bucket, Key=key)
    store = S3Store(f"s3://{bucket}/m", settings)
    assert store.sweep_temp_files("Org") == ["Org/C/1/big.csv"]
    left = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["Key"] for u in left] == ["m/Other/C/1/big.csv"]
    assert store.sweep_temp_files("Org") == []


def test_a_lock_is_per_organisation_and_deleted_when_released(s3, bucket, settings):
    first, second = S3Store(f"s3://{bucket}/m", settings), S3Store(f"s3://{bucket}/m", settings)
    with first.lock("exampleton"):
        with pytest.raises(StoreLockedError, match="exampleton"), second.lock("exampleton"):
            pass
        with second.lock("tricky-institute"):
            pass
        lock = json.loads(
            s3.get_object(Bucket=bucket, Key="m/.flsync-lock-exampleton")["Body"].read()
        )
        assert lock["pid"] == os.getpid()
        assert set(lock) == {"host", "pid", "started", "refreshed"}
    assert objects(s3, bucket) == {}
    with second.lock("exampleton"):
        pass


def test_a_held_lock_is_refreshed_and_never_taken_over(s3, bucket, endpoint):
    settings = store_settings(endpoint, FLSYNC_LOCK_STALE_AFTER=1.5)
    first, second = S3Store(f"s3://{bucket}/m", settings), S3Store(f"s3://{bucket}/m", settings)
    key = f"m/{LOCK_PREFIX}org"
    with first.lock("org"):
        head = s3.head_object(Bucket=bucket, Key=key)
        etag, taken = head["ETag"], head["LastModified"]

        def held_past_stale_age() -> bool:  # by S3's clock, since the lock was taken
            now = s3.head_object(Bucket=bucket, Key=key)["ResponseMetadata"]["HTTPHeaders"]
            return (parsedate_to_datetime(now["date"]) - taken).total_seconds() > 1.5

        until(held_past_stale_age, bound=60)  # refreshed every 0.5 s meanwhile
        assert s3.head_object(Bucket=bucket, Key=key)["ETag"] != etag
        with pytest.raises(StoreLockedError), second.lock("org"):
            pass
    assert objects(s3, bucket) == {}


def test_a_stale_lock_is_taken_over_by_one_taker_only(s3, bucket, endpoint, caplog):
    settings = store_settings(endpoint, FLSYNC_LOCK_STALE_AFTER=1)
    key = f"m/{LOCK_PREFIX}org"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"pid": 1}')  # a killed sync's
    until_older(s3, bucket, key, 1)
    first, second = S3Store(f"s3://{bucket}/m", settings), S3Store(f"s3://{bucket}/m", settings)
    with first.lock("org"):
        assert (
            json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["pid"] == os.getpid()
        )
        with pytest.raises(StoreLockedError), second.lock("org"):
            pass
    assert f"Took over the lock s3://{bucket}/m/{LOCK_PREFIX}org" in caplog.text
    assert objects(s3, bucket) == {}


def test_a_lock_taken_over_meanwhile_is_not_deleted(s3, bucket, settings):
    key = f"m/{LOCK_PREFIX}org"
    with S3Store(f"s3://{bucket}/m", settings).lock("org"):
        s3.put_object(Bucket=bucket, Key=key, Body=b'{"pid": 2}')  # another sync's now
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b'{"pid": 2}'


def test_each_store_reads_its_own_settings(endpoint):
    default = S3Store("s3://b/m", store_settings(endpoint))
    tuned = S3Store(
        "s3://b/m",
        store_settings(endpoint, AWS_MAX_POOL_CONNECTIONS=7, FLSYNC_LOCK_STALE_AFTER=60),
    )
    assert default.s3_client.meta.config.max_pool_connections == S3_POOL_CONNECTIONS
    assert tuned.s3_client.meta.config.max_pool_connections == 7
    assert (default.lock_stale_after, tuned.lock_stale_after) == (900, 60)
    assert default.s3_client.meta.endpoint_url == endpoint


def test_check_location_refuses_keys_given_as_settings(s3, bucket, settings):
    S3Store.check_location(f"s3://{bucket}/m", settings)
    settings.set("AWS_SESSION_TOKEN", "token-value", priority="project")
    with pytest.raises(StoreLocationError) as raised:
        S3Store.check_location(f"s3://{bucket}/m", settings)
    assert str(raised.value).startswith("AWS_SESSION_TOKEN is a Scrapy setting here")
    assert "token-value" not in str(raised.value)


# --- Syncs into S3 --------------------------------------------------------------------------


# Two organisations and the tricky courses and runs (names S3 keys must carry as they are), with
# one plain course each and few rows: every kind of file and name of the default fakesite, in two
# thirds of its files and a fraction of its bytes.
TRICKY = SiteOptions(organisations=2, courses=1, runs=1, rows=5)


def test_a_sync_into_s3_stores_what_a_local_sync_stores(tmp_path, endpoint, s3, bucket):
    with FakeSite(TRICKY) as fakesite:
        local = Sync(fakesite.base_url, tmp_path / "local")
        remote = Sync(fakesite.base_url, tmp_path / "s3")
        for sync in (local, remote):
            sync.workdir.mkdir()
        local_result = local()
        assert local_result.returncode == 0, local_result.output
        result = s3_sync(remote, endpoint, f"s3://{bucket}/mirror")
        assert result.returncode == 0, result.output
    # Each object's ETag is the MD5 of its bytes (uploaded whole): compared without a GET each.
    stored = objects(s3, bucket, "mirror/")
    local_files = {k: v for k, v in local_result.files().items() if LOCK_PREFIX not in k}
    assert sorted(stored) == sorted(local_files)
    data = {k: v for k, v in data_files(local_result).items()}
    assert data.keys() == {k for k in expected_tree(fakesite)}
    for key, content in data.items():
        assert stored[key]["ETag"] == f'"{hashlib.md5(content).hexdigest()}"', key
    for organisation in fakesite.data.organisations:
        assert f"{organisation.name}/{tree.UPDATE_FILE}" in stored
        assert f"{organisation.name}/{tree.STATE_FILE}" in stored
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not remote.data_dir.exists()  # nothing went to a local folder


def test_a_second_sync_asks_conditionally_and_rewrites_nothing(
    fakesite, sync, endpoint, s3, bucket
):
    data_dir = f"s3://{bucket}"  # no prefix
    versioning(s3, bucket)
    assert s3_sync(sync, endpoint, data_dir).returncode == 0
    before = versions(s3, bucket)
    fakesite.reset_stats()
    result = s3_sync(sync, endpoint, data_dir)
    assert result.returncode == 0, result.output
    datasets = fakesite.stats()["by_kind"]["dataset"] + fakesite.stats()["by_kind"]["subdivisions"]
    assert fakesite.stats()["not_modified"] == datasets > 0
    assert fakesite.stats()["dataset_bytes"] == 0
    assert versions(s3, bucket) == before
    assert "0 downloaded, 0 unchanged," in result.output


def test_a_changed_file_is_uploaded_again(fakesite, sync, endpoint, s3, bucket):
    data_dir = f"s3://{bucket}/mirror/"
    assert s3_sync(sync, endpoint, data_dir).returncode == 0
    fakesite.faults.update({"generation": 2})
    result = s3_sync(sync, endpoint, data_dir)
    assert result.returncode == 0, result.output
    run = fakesite.data.runs[0]
    folder = tree.run_dir(EXAMPLETON, run.course_title, run.number, run.start_date, run.end_date)
    key = f"mirror/{folder}/enrolments.csv"
    new = fakesite.dataset_bytes(run.course_slug, run.number, "enrolments", generation=2)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == new
    metadata = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    assert metadata == {"sha256": hashlib.sha256(new).hexdigest()}


def test_measures_in_s3_are_those_of_a_local_data_dir(fakesite, sync, endpoint, s3, bucket):
    local = Sync(fakesite.base_url, sync.workdir / "local")
    local.workdir.mkdir()
    assert local().returncode == 0
    data_dir = f"s3://{bucket}/mirror"
    first = s3_sync(sync, endpoint, data_dir)
    second = s3_sync(sync, endpoint, data_dir)
    assert first.returncode == second.returncode == 0, first.output
    outputs = [f"{EXAMPLETON}/{name}" for name in (MEASURES_FILE, STEPS_FILE)]
    stored = contents(s3, bucket, "mirror/")
    for key in outputs:
        assert stored[key] == (local.data_dir / key).read_bytes(), key
    assert f"{EXAMPLETON}/{DASHBOARD_FILE}" in stored and f"{EXAMPLETON}/{RECORD_FILE}" in stored
    assert "2 runs, 2 computed (6 files read), 0 unchanged" in first.output
    assert "2 runs, 0 computed (0 files read), 2 unchanged" in second.output
    assert not [key for key in stored if LOCK_PREFIX in key]
    # scrapy measures, on the bucket alone: the same files again.
    for key in [*outputs, f"{EXAMPLETON}/{RECORD_FILE}"]:
        s3.delete_object(Bucket=bucket, Key=f"mirror/{key}")
    (sync.workdir / "config.json").write_text(json.dumps({"data_dir": data_dir}))
    command = run_in_process(
        ["measures", "-s", f"AWS_ENDPOINT_URL={endpoint}"], sync.workdir, {**KEYS, **ISOLATED}
    )
    assert command.returncode == 0, command.stderr
    stored = contents(s3, bucket, "mirror/")
    for key in outputs:
        assert stored[key] == (local.data_dir / key).read_bytes(), key


def test_a_lost_state_means_compared_not_rewritten(fakesite, sync, endpoint, s3, bucket):
    data_dir = f"s3://{bucket}/mirror"
    versioning(s3, bucket)
    assert s3_sync(sync, endpoint, data_dir).returncode == 0
    before = versions(s3, bucket)
    s3.delete_object(Bucket=bucket, Key=f"mirror/{EXAMPLETON}/{tree.STATE_FILE}")
    fakesite.reset_stats()
    result = s3_sync(sync, endpoint, data_dir)
    assert result.returncode == 0, result.output
    assert fakesite.stats()["not_modified"] == 0  # no state: nothing to ask with
    assert fakesite.stats()["dataset_bytes"] > 0
    assert versions(s3, bucket) == before
    assert "0 downloaded," in result.output
    assert f"{EXAMPLETON}/{tree.STATE_FILE}" in objects(s3, bucket, "mirror/")


def until(condition: Callable[[], bool], bound: float = 120) -> None:
    """Wait until ``condition`` holds (polled), at most ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def test_datasets_are_stored_while_s3_holds_the_metadata_writes(
    s3_server, fakesite, sync, endpoint, bucket
):
    """The reactor goes on downloading and uploading while a run's metadata.csv is being
    written: a sync whose writes held the reactor would wait for them, S3 would wait for every
    dataset first, and the writes would be refused (HeldTooLong) after HOLD_BOUND."""
    datasets = {f"m/{path}" for path, content in expected_tree(fakesite).items() if content}
    metadata = f"/{tree.METADATA_FILE}"

    def held(call: S3Call) -> bool:
        return call.bucket == bucket and call.method == "PUT" and call.key.endswith(metadata)

    def datasets_stored() -> bool:
        put = {c.key for c in s3_server.calls if c.bucket == bucket and c.method == "PUT"}
        return datasets <= put

    with s3_server.holding(held) as hold:
        process = sync.start(
            "-s",
            f"AWS_ENDPOINT_URL={endpoint}",
            data_dir=f"s3://{bucket}/m",
            env={**KEYS, **ISOLATED},
        )
        until(lambda: (hold.arrived.is_set() and datasets_stored()) or process.poll() is not None)
        hold.release()
        result = sync.wait(process)
    assert result.returncode == 0, result.output
    assert "HeldTooLong" not in result.output


def peak_rss_mb(process: subprocess.Popen[str]) -> float:
    """Wait for ``process`` to end; its peak RSS in MiB (VmHWM, read while it runs: the
    getrusage of a child counts what this process, with the moto server, held at the fork)."""
    peak = 0
    while process.poll() is None:
        with contextlib.suppress(OSError, IndexError):  # gone, or a zombie without figures
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        time.sleep(0.1)
    return peak / 1024


def test_a_big_file_goes_up_in_parts_with_flat_memory(
    tmp_path, endpoint, s3, bucket, record_property
):
    size_mb = 400
    options = SiteOptions(organisations=1, courses=1, runs=1, rows=5, tricky=False)
    with FakeSite(dataclasses.replace(options, big_file_mb=size_mb)) as fakesite:
        process = Sync(fakesite.base_url, tmp_path).start(
            "-s",
            f"AWS_ENDPOINT_URL={endpoint}",
            # The upload's memory alone: the measures' DuckDB has a limit of its own
            # (FLSYNC_MEASURES_MEMORY_MB, benchmarks/measures.py).
            "-s",
            "FLSYNC_MEASURES=0",
            data_dir=f"s3://{bucket}/mirror",
            env={**KEYS, **ISOLATED},
        )
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.append(process.stdout.read()))
        reader.start()
        peak = peak_rss_mb(process)
        reader.join()
    assert process.returncode == 0, output[0]
    name = tree.dataset_file_name("step_activity")
    [big] = [item for key, item in objects(s3, bucket, "mirror/").items() if key.endswith(name)]
    assert big["Size"] >= size_mb << 20
    parts = -(-big["Size"] // S3_PART_SIZE)
    assert big["ETag"].endswith(f'-{parts}"')  # the ETag of a multipart upload
    record_property("peak_rss_mb", round(peak))
    assert peak < size_mb / 2


BAD_BUCKETS = {
    "unreachable": (
        ("-s", "AWS_ENDPOINT_URL=http://127.0.0.1:9"),
        {},
        "data_dir s3://{b}/m: cannot reach bucket '{b}' at http://127.0.0.1:9",
    ),
    "missing": ((), {}, "data_dir s3://no-such-bucket/m: bucket 'no-such-bucket' at {e} does"),
    "no keys": (
        (),
        {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
        "data_dir s3://{b}/m: no AWS keys found: set AWS_ACCESS_KEY_ID and",
    ),
}


@pytest.mark.parametrize("case", BAD_BUCKETS)
def test_a_bad_bucket_is_one_line_and_nothing_done(fakesite, sync, s3, bucket, case):
    args, env, problem = BAD_BUCKETS[case]
    endpoint = s3.meta.endpoint_url
    name = "no-such-bucket" if case == "missing" else bucket
    result = s3_sync(sync, endpoint, f"s3://{name}/m", *args, env=env)
    assert result.returncode == 2, result.output
    [line] = result.error_lines()
    assert problem.format(b=name, e=endpoint) in line
    assert fakesite.stats()["requests"] == 0
    assert objects(s3, bucket) == {}


def test_keys_given_as_settings_are_refused_unprinted(fakesite, sync, endpoint, s3, bucket):
    secret = "wJalrXUtnFEMI-do-not-print"
    result = s3_sync(sync, endpoint, f"s3://{bucket}/m", "-s", f"AWS_SECRET_ACCESS_KEY={secret}")
    assert result.returncode == 2
    [line] = result.error_lines()
    assert line.endswith(
        "AWS_SECRET_ACCESS_KEY is a Scrapy setting here, and Scrapy logs settings: put the AWS"
        " keys in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)"
        " or in ~/.aws instead"
    )
    assert secret not in result.output
    assert fakesite.stats()["requests"] == 0
    assert objects(s3, bucket) == {}


def test_keys_the_bucket_refuses_are_one_line(fakesite, sync, endpoint, bucket, authenticated):
    keys = iam_keys(endpoint, [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}])
    result = s3_sync(sync, endpoint, f"s3://{bucket}/m", env=keys)
    assert result.returncode == 2, result.output
    [line] = result.error_lines()
    assert line.endswith(
        f"data_dir s3://{bucket}/m: bucket '{bucket}' at {endpoint} refuses these keys (check"
        " them, and that they may list, read and write the bucket: see docs/s3.md)"
    )
    assert keys["AWS_SECRET_ACCESS_KEY"] not in result.output
    assert fakesite.stats()["requests"] == 0


REFUSED = {
    "enrolments.csv": "Dataset (failed): ",
    tree.METADATA_FILE: "Run (failed): ",
    tree.STATE_FILE: f"Organisation (failed): {EXAMPLETON}: cannot write ",
}


@pytest.mark.usefixtures("fakesite")
@pytest.mark.parametrize("refused", REFUSED)
def test_refused_writes_fail_the_sync_and_leave_no_object(
    sync, endpoint, bucket, authenticated, refused
):
    line = REFUSED[refused]
    keys = iam_keys(
        endpoint,
        [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/*/{refused}",
            },
        ],
    )
    result = s3_sync(sync, endpoint, f"s3://{bucket}/m", env=keys)
    assert result.returncode == 1, result.output
    errors = [e for e in result.error_lines() if "Sync FAILED" not in e]
    assert errors and all(line in e and "AccessDenied: Access Denied" in e for e in errors)
    assert "Traceback" not in result.output
    stored = objects(authenticated, bucket, "m/")
    assert not any(key.endswith(refused) for key in stored)
    assert f"{EXAMPLETON}/{tree.UPDATE_FILE}" not in stored
    assert any(key.endswith(".csv") for key in stored)  # the rest is stored


def test_an_endpoint_gone_mid_sync_fails_it_and_leaves_no_partial_object(
    fakesite, sync, s3, bucket
):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fakesite.faults.update({"latency_ms": 100})  # the sync is still under way when S3 goes
    process = sync.start(
        "-s",
        f"AWS_ENDPOINT_URL=http://{host}:{port}",
        data_dir=f"s3://{bucket}/m",
        env={**KEYS, **ISOLATED},
    )
    while not any(key.endswith(".csv") for key in objects(s3, bucket)):
        time.sleep(0.05)
    server.stop()
    result = sync.wait(process)
    assert result.returncode == 1, result.output
    assert any("Dataset (failed): " in line for line in result.error_lines())
    assert "Sync FAILED (finished; datasets/failed: " in result.output
    assert "Traceback" not in result.output
    # The same moto data, through the module's server: what was stored is whole.
    stored = contents(s3, bucket, "m/")
    expected = expected_tree(fakesite)
    # The lock stays, said in a line: the next sync waits until it is stale.
    assert stored.pop(f"{LOCK_PREFIX}exampleton")
    assert f"Could not delete the lock s3://{bucket}/m/{LOCK_PREFIX}exampleton" in result.output
    for key, content in stored.items():
        assert key.endswith(tree.METADATA_FILE) or expected[key] == content, key
    assert f"{EXAMPLETON}/{tree.UPDATE_FILE}" not in stored


# The IAM action AWS asks of each S3 call flsync makes ("Actions, resources, and condition
# keys for Amazon S3", and each operation's "Permissions" in the S3 API reference): by whether
# the call is on the bucket or an object, its method, and the query parameter that names the
# operation ("" for none).
S3_ACTIONS = {
    ("bucket", "HEAD", ""): "s3:ListBucket",  # HeadBucket
    ("bucket", "GET", "list-type"): "s3:ListBucket",  # ListObjectsV2
    ("bucket", "GET", "uploads"): "s3:ListBucketMultipartUploads",  # ListMultipartUploads
    ("object", "HEAD", ""): "s3:GetObject",  # HeadObject
    ("object", "GET", ""): "s3:GetObject",  # GetObject
    ("object", "PUT", ""): "s3:PutObject",  # PutObject
    ("object", "POST", "uploads"): "s3:PutObject",  # CreateMultipartUpload
    ("object", "PUT", "uploadId"): "s3:PutObject",  # UploadPart
    ("object", "POST", "uploadId"): "s3:PutObject",  # CompleteMultipartUpload
    ("object", "DELETE", "uploadId"): "s3:AbortMultipartUpload",  # AbortMultipartUpload
    ("object", "DELETE", ""): "s3:DeleteObject",  # DeleteObject
}
# The query parameters that name an operation; the others (prefix, partNumber...) qualify it.
OPERATION_PARAMETERS = {"list-type", "uploads", "uploadId"}


QUALIFIERS = {"prefix", "delimiter", "continuation-token", "encoding-type", "partNumber"}


def iam_action(call: S3Call) -> str:
    """The IAM action AWS asks of ``call``."""
    named = call.query & OPERATION_PARAMETERS
    operation = ("object" if call.key else "bucket", call.method, "".join(named))
    assert operation in S3_ACTIONS and len(named) <= 1, (
        f"{call}: a call this test does not know: add its IAM action, from AWS's documentation"
    )
    assert call.query <= OPERATION_PARAMETERS | QUALIFIERS, f"{call}: an unknown parameter"
    return S3_ACTIONS[operation]


def readme_policy(bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The statements of the IAM policy docs/s3.md gives, for ``bucket`` and ``prefix``."""
    readme = (REPO / "docs" / "s3.md").read_text()
    section = readme[readme.index("**Permissions**") :]
    block = section[section.index("```json") + len("```json") : section.index("\n```\n")]
    block = block.replace("course-data", bucket).replace("futurelearn", prefix)
    statements: list[dict[str, Any]] = json.loads(block)["Statement"]
    return statements


def allowed(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    return any(
        statement["Effect"] == "Allow"
        and action in statement["Action"]
        and fnmatch.fnmatchcase(resource, statement["Resource"])
        for statement in statements
    )


def test_the_permissions_the_readme_names_suffice(s3_server, tmp_path, endpoint, s3, bucket):
    """Every S3 call of a sync is one the README's policy allows, as AWS authorizes it (see
    S3_ACTIONS), and it names no action the sync does not use."""
    keys = {"AWS_ACCESS_KEY_ID": "readme-policy", "AWS_SECRET_ACCESS_KEY": "unchecked"}
    big = dataclasses.replace(SMALL, big_file_mb=9)  # one upload in parts
    with FakeSite(big) as fakesite:
        sync = Sync(fakesite.base_url, tmp_path)
        s3.create_multipart_upload(Bucket=bucket, Key=f"m/{EXAMPLETON}/C/1/x.csv")  # to sweep
        for _ in range(2):  # the second with the state, conditional requests and listings
            result = s3_sync(sync, endpoint, f"s3://{bucket}/m", env=keys)
            assert result.returncode == 0, result.output
        assert fakesite.stats()["not_modified"] > 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    calls = [c for c in s3_server.calls if c.key_id == keys["AWS_ACCESS_KEY_ID"]]
    asked = {
        (iam_action(call), f"arn:aws:s3:::{call.bucket}" + (f"/{call.key}" if call.key else ""))
        for call in calls
        if call.bucket == bucket
    }
    policy = readme_policy(bucket, "m")
    assert [ask for ask in sorted(asked) if not allowed(policy, *ask)] == []
    assert {action for action, _ in asked} == {a for st in policy for a in st["Action"]}
    assert any(call.query == {"partNumber", "uploadId"} for call in calls)  # in parts


@pytest.mark.usefixtures("fakesite")
def test_a_lock_that_cannot_be_written_is_one_line(sync, endpoint, bucket, authenticated):
    keys = iam_keys(
        endpoint,
        [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{bucket}/m/{LOCK_PREFIX}*",
            },
        ],
    )
    result = s3_sync(sync, endpoint, f"s3://{bucket}/m", env=keys)
    assert result.returncode == 2, result.output
    [line] = result.error_lines()
    assert line.endswith(
        "Organisation exampleton is left alone: its lock cannot be taken: cannot write"
        f" s3://{bucket}/m/{LOCK_PREFIX}exampleton: AccessDenied: Access Denied"
    )
    assert objects(authenticated, bucket) == {}


def test_a_job_for_an_organisation_another_job_holds_stops_at_once(
    fakesite, sync, endpoint, s3, bucket
):
    with S3Store(f"s3://{bucket}/m", store_settings(endpoint)).lock("exampleton"):
        result = s3_sync(sync, endpoint, f"s3://{bucket}/m", "-a", "organisation=exampleton")
    assert result.returncode == 2
    [line] = result.error_lines()
    assert line.endswith(
        "Organisation exampleton is being synced by another job; this one leaves it alone"
        " (wait for the other to finish)"
    )
    assert fakesite.stats()["requests"] == 0
    assert objects(s3, bucket) == {}


def test_a_killed_jobs_lock_is_taken_over(fakesite, sync, endpoint, s3, bucket):
    s3.put_object(Bucket=bucket, Key=f"m/{LOCK_PREFIX}exampleton", Body=b"{}")
    s3.create_multipart_upload(Bucket=bucket, Key=f"m/{EXAMPLETON}/C/1/big.csv")
    until_older(s3, bucket, f"m/{LOCK_PREFIX}exampleton", 1)
    result = s3_sync(sync, endpoint, f"s3://{bucket}/m", "-s", "FLSYNC_LOCK_STALE_AFTER=1")
    assert result.returncode == 0, result.output
    assert f"Took over the lock s3://{bucket}/m/{LOCK_PREFIX}exampleton" in result.output
    assert "Deleted 1 temporary file(s) left by an interrupted sync" in result.output
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert f"{LOCK_PREFIX}exampleton" not in objects(s3, bucket, "m/")
    assert f"{EXAMPLETON}/{tree.UPDATE_FILE}" in objects(s3, bucket, "m/")


def test_two_jobs_for_different_organisations_share_a_bucket(tmp_path, endpoint, s3, bucket):
    with FakeSite(TWO) as fakesite:
        fakesite.faults.update({"latency_ms": 20})  # long enough for the two to overlap
        syncs = [Sync(fakesite.base_url, tmp_path / name) for name in ("one", "two")]
        jobs = []
        for sync, organisation in zip(syncs, fakesite.data.organisations, strict=True):
            sync.workdir.mkdir()
            jobs.append(
                sync.start(
                    "-s",
                    f"AWS_ENDPOINT_URL={endpoint}",
                    "-a",
                    f"organisation={organisation.slug}",
                    data_dir=f"s3://{bucket}/shared",
                    env={**KEYS, **ISOLATED},
                )
            )
        results = [sync.wait(job) for sync, job in zip(syncs, jobs, strict=True)]
        names = [o.name for o in fakesite.data.organisations]
    assert [r.returncode for r in results] == [0, 0], results[0].output + results[1].output
    stored = objects(s3, bucket, "shared/")
    assert {key.split("/")[0] for key in stored} == set(names)
    for name in names:
        assert f"{name}/{tree.UPDATE_FILE}" in stored


def assert_folder_unreadable(result: SyncResult, s3: Any, bucket: str) -> None:
    """One line for the organisation whose folder cannot be read, and nothing stored."""
    assert result.returncode == 1, result.output
    [line, summary] = result.error_lines()
    assert f"Organisation (failed): {EXAMPLETON}: its folder cannot be read: " in line
    assert line.endswith("AccessDenied: Access Denied")
    assert "Traceback" not in result.output
    assert "Sync FAILED" in summary
    assert [key for key in objects(s3, bucket) if not key.startswith("m/.")] == []


@pytest.mark.usefixtures("fakesite")
def test_a_state_that_cannot_be_read_is_one_line(sync, endpoint, bucket, authenticated):
    keys = iam_keys(
        endpoint,
        [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*/{tree.STATE_FILE}",
            },
        ],
    )
    result = s3_sync(sync, endpoint, f"s3://{bucket}/m", env=keys)
    assert_folder_unreadable(result, authenticated, bucket)


@pytest.mark.usefixtures("fakesite")
def test_unfinished_uploads_that_cannot_be_listed_are_one_line(
    s3_server, sync, endpoint, s3, bucket
):
    # Refused by the server itself: moto's IAM names this call otherwise from one version
    # to the next.
    with s3_server.refusing(lambda call: call.bucket == bucket and "uploads" in call.query):
        result = s3_sync(sync, endpoint, f"s3://{bucket}/m")
    assert_folder_unreadable(result, s3, bucket)
