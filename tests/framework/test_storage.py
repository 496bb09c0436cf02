"""The storage service: key rules, the local backend, and the S3 backend against a real SeaweedFS server."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from minio import Minio

from framework.errors import ConfigError, FrameworkError
from framework.settings import Settings, StorageSettings
from framework.storage import (
    InvalidKey,
    InvalidMetadata,
    LocalStorage,
    ObjectNotFound,
    ObjectStream,
    ObjectTooLarge,
    Storage,
    StorageError,
    StorageUnavailable,
    local_objects_dir,
    open_storage,
    validate_key,
    validate_metadata,
    validate_prefix,
)
from framework.storage.base import CHUNK_SIZE, MAX_KEY_BYTES
from framework.storage.local import _LIST_PAGE
from framework.storage.s3 import S3Storage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from tests.fixtures.s3 import S3Server


# -- key rules ------------------------------------------------------------------------------------

VALID_KEYS = [
    "a",
    "uploads/1/original.jpg",
    "with space/été.png",
    "a..b/c",
    ".hidden/x",
    "x/..y/z.",
    "ü" * 512,  # 1024 bytes
]

INVALID_KEYS = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("a//b", "empty segment"),
    ("a/", "empty segment"),
    ("../x", "traversal"),
    ("a/../../b", "traversal"),
    ("./a", "traversal"),
    ("a/.", "traversal"),
    ("a\\b", "backslash"),
    ("a\x00b", "control"),
    ("a\nb", "control"),
    ("\ud800x", "UTF-8"),
    ("x" * 1025, "1025 bytes"),
    ("é" * 513, "1026 bytes"),
]


@pytest.mark.parametrize("key", VALID_KEYS)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(("key", "problem"), INVALID_KEYS)
def test_validate_key_rejects_naming_the_problem(key: str, problem: str) -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key(key)
    assert problem in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, FrameworkError)


def test_validate_key_rejects_non_strings() -> None:
    with pytest.raises(InvalidKey, match="must be a string"):
        validate_key(b"a")  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["", "uploads/", "uploads/ab", "a/b/", ".", "a/..", "a/.h"])
def test_validate_prefix_accepts(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "../", "a//", "a/../", "a\\", "a/b\x00", "../x"])
def test_validate_prefix_rejects(prefix: str) -> None:
    with pytest.raises(InvalidKey, match="invalid list prefix"):
        validate_prefix(prefix)


def test_validate_metadata_lowercases_names() -> None:
    assert validate_metadata({"Upload-ID": "42", "x_y": ""}) == {"upload-id": "42", "x_y": ""}
    assert validate_metadata(None) == {}


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"bad name": "v"}, "invalid metadata name"),
        ({"": "v"}, "invalid metadata name"),
        ({"k": "é"}, "not printable ASCII"),
        ({"k": "a\nb"}, "not printable ASCII"),
        ({"k": "x" * 3000}, "at most 2048"),
    ],
)
def test_validate_metadata_rejects(metadata: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidMetadata, match=problem):
        validate_metadata(metadata)


# -- open_storage ---------------------------------------------------------------------------------


def test_open_storage_defaults_to_local_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    storage = open_storage(settings)
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "storage"
    assert local_objects_dir(settings) == tmp_path / "storage"


def test_open_storage_s3(s3_server: S3Server) -> None:
    storage = open_storage(s3_server.settings("some-bucket"))
    assert isinstance(storage, S3Storage)
    assert (storage.endpoint, storage.bucket) == (s3_server.endpoint, "some-bucket")


def test_open_storage_s3_needs_an_endpoint() -> None:
    with pytest.raises(ConfigError, match=r"storage\.endpoint"):
        open_storage(Settings(storage=StorageSettings(backend="s3")))


def test_open_storage_s3_rejects_a_bad_bucket_name() -> None:
    settings = Settings(storage=StorageSettings(backend="s3", endpoint="127.0.0.1:1", bucket="x"))
    with pytest.raises(ConfigError, match=r"storage\.bucket"):
        open_storage(settings)


def _signed_url(client: Minio) -> str:
    """A presigned URL at a fixed time: endpoint, scheme, access key and region, signed with the secret key."""
    return client.presigned_get_object("env-bucket", "k", request_date=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_s3_credentials_fall_back_to_the_environment() -> None:
    settings = Settings(
        storage=StorageSettings(backend="s3", endpoint="https://s3.example.com:9443", bucket="env-bucket")
    )
    env = {"AWS_ACCESS_KEY_ID": "from-env", "AWS_SECRET_ACCESS_KEY": "secret-env", "AWS_REGION": "eu-west-3"}
    storage = S3Storage.from_settings(settings, environ=env)
    assert storage._region == "eu-west-3"
    assert storage.endpoint == "s3.example.com:9443"  # the URL's scheme chose TLS
    made = {"access_key": "from-env", "secret_key": "secret-env", "region": "eu-west-3", "secure": True}
    url = _signed_url(storage._client)
    assert url.startswith("https://s3.example.com:9443/") and "X-Amz-Credential=from-env" in url
    assert url == _signed_url(Minio("s3.example.com:9443", **made))
    assert url != _signed_url(Minio("s3.example.com:9443", **{**made, "secret_key": "other"}))  # the secret counts
    explicit = Settings(storage=StorageSettings(backend="s3", endpoint="h:1", access_key="a", secret_key="b"))
    url = _signed_url(S3Storage.from_settings(explicit, environ=env)._client)
    assert url == _signed_url(Minio("h:1", access_key="a", secret_key="b", region="eu-west-3", secure=True))


# -- the contract, on both backends ---------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    store: Storage
    if request.param == "local":
        store = LocalStorage(tmp_path / "store", public_url="/files/")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        store = S3Storage(
            endpoint=server.endpoint,
            bucket=bucket,
            access_key=server.access_key,
            secret_key=server.secret_key,
            region=server.region,
            secure=False,
        )
    yield store
    await store.close()


async def test_put_get_stat(storage: Storage) -> None:
    before = time.time() - 5
    info = await storage.put(
        "docs/a.txt", b"hello", content_type="text/plain", metadata={"Origin": "test", "upload-id": "7"}
    )
    assert (info.key, info.size, info.content_type) == ("docs/a.txt", 5, "text/plain")
    assert info.metadata == {"origin": "test", "upload-id": "7"}
    assert await storage.get("docs/a.txt") == b"hello"
    stat = await storage.stat("docs/a.txt")
    assert (stat.key, stat.size, stat.content_type) == ("docs/a.txt", 5, "text/plain")
    assert stat.metadata == {"origin": "test", "upload-id": "7"}
    assert before <= stat.modified <= time.time() + 5


async def test_get_with_a_max_size_refuses_a_larger_object_naming_both_sizes(storage: Storage) -> None:
    """A reader guarding its memory against what another producer stored: refused before the body is read."""
    await storage.put("big/object.bin", b"x" * 1000)
    assert await storage.get("big/object.bin", max_size=1000) == b"x" * 1000  # the limit itself is allowed
    too_large = r"'big/object.bin' is 1000 bytes, more than the 999 bytes allowed"
    with pytest.raises(ObjectTooLarge, match=too_large) as info:
        await storage.get("big/object.bin", max_size=999)
    assert (info.value.size, info.value.max_size) == (1000, 999)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ObjectNotFound):
        await storage.get("big/missing.bin", max_size=10)


async def _read_all(stream: ObjectStream) -> bytes:
    async with stream:
        return b"".join([chunk async for chunk in stream])


async def test_open_streams_an_object_or_a_range_of_it_in_chunks(storage: Storage) -> None:
    payload = random.Random(7).randbytes(CHUNK_SIZE * 3 + 1234)
    await storage.put("media/clip.mp4", payload, content_type="video/mp4", metadata={"owner": "7"})
    stream = await storage.open("media/clip.mp4")
    assert (stream.start, stream.length, stream.info.size) == (0, len(payload), len(payload))
    assert (stream.info.content_type, stream.info.metadata) == ("video/mp4", {"owner": "7"})
    assert stream.info.modified == (await storage.stat("media/clip.mp4")).modified
    chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == payload
    assert len(chunks) > 1 and all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)  # never the object at once
    assert stream.closed  # read to the end: the file or connection is released without a close
    for start, length in ((0, 1), (5, 10), (CHUNK_SIZE - 3, CHUNK_SIZE + 7), (len(payload) - 9, None), (100, 10**9)):
        stream = await storage.open("media/clip.mp4", start=start, length=length)
        end = len(payload) if length is None else start + length
        assert (stream.start, stream.length) == (start, len(payload[start:end]))
        assert await _read_all(stream) == payload[start:end], (start, length)


async def test_open_past_the_end_or_for_nothing_is_an_empty_stream(storage: Storage) -> None:
    await storage.put("s/ten", b"0123456789")
    await storage.put("s/empty", b"")
    for key, start, length in (("s/ten", 10, None), ("s/ten", 50, 5), ("s/ten", 3, 0), ("s/empty", 0, None)):
        stream = await storage.open(key, start=start, length=length)
        assert stream.length == 0 and stream.info.size == (10 if key == "s/ten" else 0)
        assert await _read_all(stream) == b""
    with pytest.raises(ObjectNotFound, match="s/missing"):
        await storage.open("s/missing")
    with pytest.raises(ObjectNotFound):
        await storage.open("s/missing", start=3, length=0)
    for start, length in ((-1, None), (0, -1)):
        with pytest.raises(ValueError, match="byte offsets"):
            await storage.open("s/ten", start=start, length=length)


async def test_a_stream_closed_before_its_end_releases_its_source(storage: Storage) -> None:
    await storage.put("s/big", b"x" * (CHUNK_SIZE * 4))
    stream = await storage.open("s/big")
    assert len(await anext(stream)) > 0
    assert not stream.closed
    await stream.aclose()
    assert stream.closed
    assert [chunk async for chunk in stream] == []  # nothing more after a close
    await stream.aclose()  # twice is harmless
    async with await storage.open("s/big", start=1) as stream:
        assert await anext(stream) == b"x" * CHUNK_SIZE
    assert stream.closed
    assert await storage.get("s/big") == b"x" * (CHUNK_SIZE * 4)  # the store works on


async def test_local_open_reads_the_object_it_opened_while_a_put_replaces_it(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    await store.put("v", b"a" * (CHUNK_SIZE * 2))
    stream = await store.open("v")
    first = await anext(stream)
    await store.put("v", b"b" * 10)
    assert first + await _read_all(stream) == b"a" * (CHUNK_SIZE * 2)


async def test_put_replaces_and_defaults_the_content_type(storage: Storage) -> None:
    await storage.put("k", b"one", content_type="text/plain", metadata={"a": "1"})
    await storage.put("k", b"second")
    assert await storage.get("k") == b"second"
    stat = await storage.stat("k")
    assert (stat.size, stat.content_type, stat.metadata) == (6, "application/octet-stream", {})


async def test_binary_and_empty_objects(storage: Storage) -> None:
    payload = bytes(range(256)) * 1000
    await storage.put("bin/all-bytes", payload)
    await storage.put("bin/empty", b"")
    assert await storage.get("bin/all-bytes") == payload
    assert await storage.get("bin/empty") == b""
    assert (await storage.stat("bin/empty")).size == 0


async def test_missing_objects(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound, match="nope/x"):
        await storage.get("nope/x")
    with pytest.raises(ObjectNotFound):
        await storage.stat("nope/x")
    assert await storage.delete("nope/x") is False
    assert [info async for info in storage.list()] == []


async def test_delete(storage: Storage) -> None:
    await storage.put("d/1", b"1")
    await storage.put("d/2", b"2")
    assert await storage.delete("d/1") is True
    assert await storage.delete("d/1") is False
    with pytest.raises(ObjectNotFound):
        await storage.get("d/1")
    assert await storage.get("d/2") == b"2"


async def test_list_by_prefix_in_key_order(storage: Storage) -> None:
    keys = ["uploads/b/1.webp", "uploads/a/original.jpg", "uploads/ab/x", "other/z", "uploads/a/small.webp", "top"]
    for key in keys:
        await storage.put(key, key.encode())
    everything = [info.key async for info in storage.list()]
    assert everything == sorted(keys)
    assert [info.key async for info in storage.list("uploads/a/")] == ["uploads/a/original.jpg", "uploads/a/small.webp"]
    assert [info.key async for info in storage.list("uploads/a")] == [
        "uploads/a/original.jpg",
        "uploads/a/small.webp",
        "uploads/ab/x",
    ]
    assert [info.key async for info in storage.list("uploads/zzz/")] == []
    infos = [info async for info in storage.list("other/")]
    assert [(info.key, info.size) for info in infos] == [("other/z", 7)]
    assert infos[0].modified > 0


async def test_every_method_validates_the_key(storage: Storage) -> None:
    for bad in ("../x", "/abs", "a//b", ""):
        with pytest.raises(InvalidKey):
            await storage.put(bad, b"x")
        with pytest.raises(InvalidKey):
            await storage.get(bad)
        with pytest.raises(InvalidKey):
            await storage.stat(bad)
        with pytest.raises(InvalidKey):
            await storage.delete(bad)
        with pytest.raises(InvalidKey):
            await storage.url(bad)
    with pytest.raises(InvalidKey):
        [info async for info in storage.list("../")]
    with pytest.raises(InvalidMetadata):
        await storage.put("ok", b"x", metadata={"k": "\u00e9"})


async def test_check(storage: Storage) -> None:
    await storage.check()


async def test_concurrent_puts_of_one_key_leave_one_whole_object(storage: Storage) -> None:
    payloads = [bytes([n]) * 200_000 for n in range(8)]
    await asyncio.gather(*(storage.put("race", p) for p in payloads))
    assert await storage.get("race") in payloads


# -- local backend --------------------------------------------------------------------------------


async def test_local_layout_is_atomic_and_served_as_is(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path, public_url="/storage")
    await store.put("uploads/1/original.jpg", b"jpeg", content_type="image/jpeg", metadata={"a": "b"})
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [".local-storage/meta/uploads/1/original.jpg", "uploads/1/original.jpg"]  # no temp file left
    assert (tmp_path / "uploads/1/original.jpg").read_bytes() == b"jpeg"
    assert oct((tmp_path / "uploads/1/original.jpg").stat().st_mode & 0o777) == oct(0o644)
    assert store.objects_dir == tmp_path


async def test_local_internal_folder_is_reserved_and_not_listed(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    await store.put("a", b"1", metadata={"k": "v"})
    # in any case: on a case-insensitive file system (macOS, Windows) these name the same folder
    for key in (".local-storage/meta/a", ".local-storage", ".Local-Storage/meta/a", ".LOCAL-STORAGE/tmp/x"):
        with pytest.raises(InvalidKey, match="reserved"):
            await store.get(key)
        with pytest.raises(InvalidKey, match="reserved"):
            await store.put(key, b"x")
    assert [info.key async for info in store.list()] == ["a"]
    assert [info.key async for info in store.list(".local-storage/")] == []
    assert [info.key async for info in store.list(".Local-Storage/")] == []
    assert [info.key async for info in store.list(".local")] == []
    await store.put(".local-storage2/x", b"ok")  # only the exact segment is reserved
    assert [info.key async for info in store.list(".")] == [".local-storage2/x"]


async def test_local_list_sorts_a_folder_as_its_keys_sort(tmp_path: Path) -> None:
    """Key order as S3 has it (UTF-8 bytes): ``a-b`` before ``a/b`` and ``a0`` after it, for '-' < '/' < '0'."""
    store = LocalStorage(tmp_path)
    keys = ["x/a0", "x/a/b", "x/a-b", "x/a.c", "x/a/b-c", "x/\u00e9", "x/z", "x/a/a/deep"]
    for key in keys:
        await store.put(key, b"")

    assert [info.key async for info in store.list("x/")] == [
        "x/a-b",
        "x/a.c",
        "x/a/a/deep",
        "x/a/b",
        "x/a/b-c",
        "x/a0",
        "x/z",
        "x/\u00e9",
    ]
    assert [info.key async for info in store.list("x/a/b")] == ["x/a/b", "x/a/b-c"]
    assert [info.key async for info in store.list("x/a/")] == ["x/a/a/deep", "x/a/b", "x/a/b-c"]


async def test_local_list_reads_a_folder_when_the_caller_gets_there(tmp_path: Path) -> None:
    """The listing walked the whole tree before it gave its first object. Now it reads each folder when it
    gets there, a page at a time: a caller that stops early never reads the rest, and an object stored
    meanwhile in a folder not reached yet is listed."""
    store = LocalStorage(tmp_path)
    (tmp_path / "a").mkdir()
    for n in range(2 * _LIST_PAGE):  # two pages before the listing gets to folder b
        (tmp_path / "a" / f"{n:04d}").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "early").write_bytes(b"x")

    listing = store.list()
    first = await anext(listing)
    (tmp_path / "b" / "late").write_bytes(b"x")
    rest = [info.key async for info in listing]

    assert first.key == "a/0000"
    assert len(rest) == 2 * _LIST_PAGE + 1
    assert rest[-2:] == ["b/early", "b/late"]


async def test_local_list_leaves_out_files_that_no_key_names(tmp_path: Path) -> None:
    """A file whose name is not UTF-8 (copied in by hand) made every listing raise UnicodeEncodeError."""
    store = LocalStorage(tmp_path)
    await store.put("tmp/a", b"1")
    await store.put("tmp/c", b"2")
    with open(os.path.join(os.fsencode(tmp_path), b"tmp", b"b-\xff"), "wb") as fh:
        fh.write(b"3")

    assert [info.key async for info in store.list()] == ["tmp/a", "tmp/c"]


async def test_local_symlink_loops_are_no_objects(tmp_path: Path) -> None:
    """A symlink that leads back to itself (made by hand) made every listing of its folder fail with
    StorageUnavailable, which a retry never cures, and its key fail the same way instead of naming no object."""
    store = LocalStorage(tmp_path)
    await store.put("a/x", b"1")
    await store.put("b/y", b"2")
    os.symlink("loop", tmp_path / "a" / "loop")  # a file-or-folder link to itself
    os.symlink("twin", tmp_path / "b" / "ring")
    os.symlink("ring", tmp_path / "b" / "twin")

    assert [info.key async for info in store.list()] == ["a/x", "b/y"]
    assert [info.key async for info in store.list("a/x")] == ["a/x"]
    assert [info.key async for info in store.list("a/loop/")] == []
    for key in ("a/loop", "b/ring", "a/loop/deeper"):
        with pytest.raises(ObjectNotFound, match=key):
            await store.stat(key)
        with pytest.raises(ObjectNotFound, match=key):
            await store.open(key)


async def test_local_paths_that_name_no_object_are_no_object_for_every_call(tmp_path: Path) -> None:
    """``get`` took a symlink loop for an outage (StorageUnavailable, which a retry never cures) and blocked its
    thread for ever on a FIFO; ``delete`` removed such a link and said there had been an object; a ``put`` below
    one gave up as an outage after its retries. ``stat``, ``open`` and ``list`` already said: no object."""
    store = LocalStorage(tmp_path)
    await store.put("a/x", b"1")
    os.symlink("loop", tmp_path / "a" / "loop")
    os.symlink("twin", tmp_path / "a" / "ring")
    os.symlink("ring", tmp_path / "a" / "twin")
    os.symlink("nothing-here", tmp_path / "a" / "broken")
    os.mkfifo(tmp_path / "a" / "fifo")
    os.mkdir(tmp_path / "a" / "folder")
    odd = sorted(os.listdir(tmp_path / "a"))
    for key in ("a/loop", "a/ring", "a/broken", "a/fifo", "a/folder", "a/loop/deeper", "a/broken/deeper"):
        for call in (store.get, functools.partial(store.get, max_size=1), store.stat, store.open):
            with pytest.raises(ObjectNotFound, match=key):
                await asyncio.wait_for(call(key), 10)
        assert await store.delete(key) is False
    assert sorted(os.listdir(tmp_path / "a")) == odd  # delete leaves what is no object alone
    assert [info.key async for info in store.list()] == ["a/x"]
    for key in ("a/loop/deeper", "a/broken/deeper", "a/fifo/deeper"):  # no retry could make a folder there
        with pytest.raises(InvalidKey, match="a prefix of it is an object, or a link that leads nowhere"):
            await store.put(key, b"2")
    for key in ("a/loop", "a/ring", "a/broken", "a/fifo"):  # a put at the key replaces what was there
        await store.put(key, key.encode(), content_type="text/plain")
        assert await store.get(key) == key.encode()
        assert (await store.stat(key)).content_type == "text/plain"
        assert await store.delete(key) is True
        with pytest.raises(ObjectNotFound):
            await store.get(key)
    assert await store.get("a/x", max_size=1) == b"1"


def _make_deep_tree(top: Path, levels: int, segment: str) -> None:
    """Folders ``levels`` deep under ``top``, each named ``segment``, with a file ``f`` in each (relative steps:
    the whole path may be longer than the system accepts)."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir(segment, dir_fd=fd)
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
            inner = os.open(segment, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


async def test_local_list_stops_where_no_key_reaches(tmp_path: Path) -> None:
    """A folder tree deeper than any key (copied in by hand) listed keys longer than MAX_KEY_BYTES, which no other
    call accepts, then made every listing over it raise InvalidKey once its path was too long for the system."""
    store = LocalStorage(tmp_path)
    await store.put("a/first", b"1")
    await store.put("z", b"2")
    _make_deep_tree(tmp_path / "a", 100, "d" * 50)  # 5,100 bytes deep: past PATH_MAX (4,096 bytes)

    keys = [info.key async for info in store.list()]
    deep = [key for key in keys if key.startswith("a/d")]
    assert keys[-3:] == ["a/f", "a/first", "z"]
    assert deep and all(len(key.encode()) <= MAX_KEY_BYTES for key in deep)
    assert len(deep) == (MAX_KEY_BYTES - len("a/f")) // len("d" * 50 + "/")  # every f a key can name
    for key in deep[-1:]:
        assert (await store.stat(key)).size == 0  # what it lists, the other calls accept
    assert [info.key async for info in store.list("a/dd")] == deep


async def test_local_delete_prunes_empty_folders(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    await store.put("a/b/c/d.txt", b"x")
    await store.put("a/keep.txt", b"y")
    assert await store.delete("a/b/c/d.txt")
    assert not (tmp_path / "a" / "b").exists()
    assert (tmp_path / "a" / "keep.txt").exists()
    assert not (tmp_path / ".local-storage" / "meta" / "a" / "b").exists()


async def test_local_key_and_prefix_conflicts_are_reported(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    await store.put("a/b", b"file")
    with pytest.raises(InvalidKey, match="a prefix of it is an object"):
        await store.put("a/b/c", b"x")
    await store.put("x/y/z", b"file")
    with pytest.raises(InvalidKey, match="also the prefix of other objects"):
        await store.put("x/y", b"x")
    with pytest.raises(ObjectNotFound):
        await store.get("x/y")


async def test_local_stat_without_sidecar_guesses_the_type(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    (tmp_path / "pics").mkdir(parents=True)
    (tmp_path / "pics" / "p.png").write_bytes(b"png")
    info = await store.stat("pics/p.png")
    assert (info.size, info.content_type, info.metadata) == (3, "image/png", {})


async def test_local_url_is_the_public_url_and_percent_encoded(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path, public_url="https://cdn.example.com/media/")
    assert await store.url("a b/é.png") == "https://cdn.example.com/media/a%20b/%C3%A9.png"


async def test_local_root_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    store = LocalStorage(tmp_path / "file")
    with pytest.raises(StorageUnavailable, match="local storage"):
        await store.put("a", b"x")
    with pytest.raises(StorageUnavailable):
        await store.check()


# -- S3 backend -----------------------------------------------------------------------------------


def _s3(server: S3Server, bucket: str, **kwargs: object) -> S3Storage:
    options: dict[str, object] = {
        "endpoint": server.endpoint,
        "bucket": bucket,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
        "secure": False,
    }
    options.update(kwargs)
    return S3Storage(**options)  # type: ignore[arg-type]


def _fetch(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


async def test_s3_creates_the_bucket_on_first_write(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    assert not client.bucket_exists(s3_bucket)
    store = _s3(s3_server, s3_bucket)
    assert [info async for info in store.list()] == []  # a missing bucket lists as empty
    with pytest.raises(ObjectNotFound, match="bucket does not exist"):
        await store.get("a")
    await store.put("a", b"1")
    assert client.bucket_exists(s3_bucket)
    assert await store.get("a") == b"1"
    await store.close()


async def test_s3_without_bucket_creation(s3_server: S3Server, s3_bucket: str) -> None:
    store = _s3(s3_server, s3_bucket, create_bucket=False)
    with pytest.raises(ObjectNotFound, match="bucket does not exist"):
        await store.put("a", b"1")
    await store.close()


async def test_s3_presigned_url_downloads_over_http(s3_server: S3Server, s3_bucket: str) -> None:
    store = _s3(s3_server, s3_bucket)
    await store.put("pics/p.webp", b"RIFF-webp-bytes", content_type="image/webp")
    url = await store.url("pics/p.webp", expires=120)
    assert url.startswith(f"http://{s3_server.endpoint}/{s3_bucket}/pics/p.webp?")
    assert "X-Amz-Expires=120" in url
    status, body, content_type = await asyncio.to_thread(_fetch, url)
    assert (status, body, content_type) == (200, b"RIFF-webp-bytes", "image/webp")
    tampered = url.replace("pics/p.webp", "pics/other.webp")
    assert (await asyncio.to_thread(_fetch, tampered))[0] == 403
    with pytest.raises(ValueError, match="7 days"):
        await store.url("pics/p.webp", expires=8 * 24 * 3600)
    await store.close()


async def test_s3_many_objects_list_in_pages(s3_server: S3Server, s3_bucket: str) -> None:
    store = _s3(s3_server, s3_bucket)
    keys = [f"many/{n:04d}" for n in range(1005)]
    await asyncio.gather(*(store.put(key, b"") for key in keys))
    assert [info.key async for info in store.list("many/")] == keys
    await store.close()


async def test_s3_wrong_secret_is_a_storage_error_not_unavailable(s3_server: S3Server, s3_bucket: str) -> None:
    store = _s3(s3_server, s3_bucket, secret_key="wrong-secret")
    with pytest.raises(StorageError, match="SignatureDoesNotMatch") as info:
        await store.put("a", b"1")
    assert not isinstance(info.value, StorageUnavailable)
    await store.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_s3_unreachable_server_is_unavailable_quickly(s3_bucket: str) -> None:
    store = S3Storage(endpoint=f"127.0.0.1:{_closed_port()}", bucket=s3_bucket, secure=False, region="us-east-1")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="failed"):
        await store.get("a")
    with pytest.raises(StorageUnavailable):
        await store.put("a", b"1")
    with pytest.raises(StorageUnavailable):
        await store.check()
    with pytest.raises(StorageUnavailable):
        [info async for info in store.list()]
    assert time.monotonic() - started < 10
    await store.close()


class _StalledS3:
    """A TCP server on a free loopback port that accepts connections and then stalls: it answers nothing, or
    (with ``answer``) sends the head of an answer and the first bytes of its body, and nothing more."""

    def __init__(self, answer: bytes = b"") -> None:
        self.answer = answer
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.endpoint = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._open.append(conn)
            if self.answer:
                conn.settimeout(5)
                conn.recv(65536)  # the request (its head, at least)
                conn.sendall(self.answer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in (*self._open, self._listener):
            sock.close()


@pytest.fixture
def stalled_s3() -> Iterator[_StalledS3]:
    server = _StalledS3()
    yield server
    server.close()


_HEAD_THEN_STALL = (
    b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\nETag: "e"\r\n'
    b"Last-Modified: Mon, 07 Dec 2026 10:00:00 GMT\r\n\r\n" + b"x" * 10
)


def _stalled_store(endpoint: str, *, connect_timeout: float = 5.0, read_timeout: float = 60.0) -> S3Storage:
    return S3Storage(
        endpoint=endpoint,
        bucket="some-bucket",
        secure=False,
        region="us-east-1",
        access_key="k",
        secret_key="s",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


async def test_s3_a_server_that_never_answers_times_out_each_call_once(stalled_s3: _StalledS3) -> None:
    """The pool's default 60 s read timeout could not be changed from the settings, and urllib3 retried a timed-out
    request twice, so a call to a stalled server took three read timeouts. Now one, named in the error."""
    settings = Settings(
        storage=StorageSettings(
            backend="s3",
            endpoint=stalled_s3.endpoint,
            bucket="some-bucket",
            region="us-east-1",
            secure=False,
            access_key="k",
            secret_key="s",
            read_timeout=0.4,
        )
    )
    store = open_storage(settings)
    calls = {
        "get": lambda: store.get("a/b"),
        "stat": lambda: store.stat("a/b"),
        "put": lambda: store.put("a/b", b"x"),
        "open": lambda: store.open("a/b", start=3),
        "delete": lambda: store.delete("a/b"),
        "check": store.check,
    }
    for op, call in calls.items():
        pattern = rf"S3 {op} of .* at {stalled_s3.endpoint} timed out: the server sent nothing for 0\.4 s \(setting "
        with pytest.raises(StorageUnavailable, match=pattern + r"storage\.read_timeout\)"):
            await asyncio.wait_for(call(), 30)
    with pytest.raises(StorageUnavailable, match=rf"S3 list of '' at {stalled_s3.endpoint} timed out"):
        await asyncio.wait_for(anext(aiter(store.list())), 30)
    assert stalled_s3.accepted == len(calls) + 1  # one request each: a timeout is not retried
    await store.close()


async def test_s3_a_body_that_stops_coming_times_out_the_read(stalled_s3: _StalledS3) -> None:
    stalled_s3.answer = _HEAD_THEN_STALL
    store = _stalled_store(stalled_s3.endpoint, read_timeout=0.4)
    with pytest.raises(StorageUnavailable, match=rf"S3 get of 'a/b' at {stalled_s3.endpoint} timed out"):
        await asyncio.wait_for(store.get("a/b"), 30)
    stream = await asyncio.wait_for(store.open("a/b"), 30)  # the head came: the object is open
    assert (stream.length, stream.info.etag) == (1000, "e")
    with pytest.raises(StorageUnavailable, match=r"S3 read of 'a/b' at .* timed out: the server sent nothing for 0\.4"):
        await asyncio.wait_for(_read_all(stream), 30)
    assert stream.closed  # the connection is released, not left to the stalled server
    assert stalled_s3.accepted == 2
    await store.close()


async def test_s3_a_connection_never_made_times_out() -> None:
    """A listener whose backlog is full: the kernel drops the SYNs, so the connection is never made."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        fillers = [socket.socket() for _ in range(4)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(listener.getsockname())
            store = _stalled_store(f"127.0.0.1:{listener.getsockname()[1]}", connect_timeout=0.3)
            pattern = (
                r"S3 stat of 'a' at .* timed out: no connection within 0\.3 s \(setting storage\.connect_timeout\)"
            )
            with pytest.raises(StorageUnavailable, match=pattern):
                await asyncio.wait_for(store.stat("a"), 30)
            await store.close()
        finally:
            for filler in fillers:
                filler.close()


def test_s3_timeouts_are_settings() -> None:
    assert (StorageSettings().connect_timeout, StorageSettings().read_timeout) == (5.0, 60.0)
    with pytest.raises(
        ConfigError, match=r"setting storage\.read_timeout=0 is invalid: must be a number of seconds > 0"
    ):
        Settings(storage=StorageSettings(read_timeout=0))
    with pytest.raises(ConfigError, match=r"storage\.connect_timeout=inf is invalid"):
        Settings(storage=StorageSettings(connect_timeout=float("inf")))


class _Always5xx(BaseHTTPRequestHandler):
    status = 503
    hits = 0

    def _answer(self) -> None:
        type(self).hits += 1
        body = b"<?xml version='1.0'?><Error><Code>ServiceUnavailable</Code><Message>busy</Message></Error>"
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def failing_s3() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Always5xx)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Always5xx.hits = 0
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("pool_retries", [True, False])
async def test_s3_server_errors_are_unavailable(failing_s3: str, pool_retries: bool) -> None:
    store = S3Storage(
        endpoint=failing_s3, bucket="some-bucket", secure=False, region="us-east-1", access_key="k", secret_key="s"
    )
    if not pool_retries:  # the 5xx answer then reaches minio, which raises S3Error instead of urllib3's MaxRetryError
        store._http.connection_pool_kw["retries"] = 0
    with pytest.raises(StorageUnavailable, match=r"ServiceUnavailable|too many 503"):
        await store.get("a")
    with pytest.raises(StorageUnavailable):
        await store.put("a", b"x")
    assert _Always5xx.hits == (6 if pool_retries else 2)
    await store.close()
