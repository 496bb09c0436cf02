"""The ``/storage`` route over real HTTP (uvicorn): safe headers for user content, hidden sidecars, 400 for bad paths,
and objects streamed whole or in byte ranges from the local and the S3 backend (SeaweedFS).

Browser-level proof that stored HTML and SVG cannot run script on the app's origin is in
``tests/plugins/admin/test_storage_browser.py``.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx
import pytest
from litestar import Litestar

from framework.storage import LocalStorage, ObjectInfo, ObjectStream, Storage, local_objects_dir
from framework.storage.s3 import S3Storage
from framework.web.app import create_app
from framework.web.storage_routes import INLINE_TYPES, RETRY_AFTER_SECONDS, STORAGE_CSP, storage_router
from tests.fixtures.web import serve

if TYPE_CHECKING:
    from tests.fixtures.s3 import S3Server

HTML = b"<script>alert(document.domain)</script>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'


@pytest.fixture
async def served(settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, LocalStorage]]:
    """The app (no plugins) served by uvicorn, and the local store behind its ``/storage``."""
    settings = settings.replace(load_plugins=[])
    store = LocalStorage(local_objects_dir(settings))
    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base) as http:
        yield http, store


async def _raw_get(http: httpx.AsyncClient, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (httpx would resolve ``..`` itself); returns the status and body."""
    url = http.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {url.host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _assert_safe_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == STORAGE_CSP
    csp = STORAGE_CSP.split("; ")
    assert "default-src 'none'" in csp and "sandbox" in csp


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("userfiles/evil.html", "text/html"),
        ("userfiles/evil.svg", "image/svg+xml"),
        ("userfiles/evil.xml", "application/xhtml+xml"),
        ("userfiles/notes.txt", "text/plain; charset=utf-8"),
        ("userfiles/doc.pdf", "application/pdf"),
        ("userfiles/blob", "application/octet-stream"),
    ],
)
async def test_anything_but_a_safe_image_is_a_download_of_its_stored_type(
    served: tuple[httpx.AsyncClient, LocalStorage], key: str, content_type: str
) -> None:
    http, store = served
    await store.put(key, HTML, content_type=content_type)
    response = await http.get(f"/storage/{key}")
    assert response.status_code == 200 and response.content == HTML
    assert response.headers["content-type"] == content_type  # the stored type, nothing appended or guessed
    assert response.headers["content-disposition"] == f'attachment; filename="{key.rsplit("/", 1)[-1]}"'
    _assert_safe_headers(response)


@pytest.mark.parametrize("content_type", sorted(INLINE_TYPES))
async def test_safe_image_types_are_shown_inline(
    served: tuple[httpx.AsyncClient, LocalStorage], content_type: str
) -> None:
    http, store = served
    await store.put("pics/a", SVG, content_type=content_type)  # bytes that are not that type change nothing
    response = await http.get("/storage/pics/a")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["content-disposition"] == 'inline; filename="a"'
    _assert_safe_headers(response)


async def test_a_broken_stored_type_cannot_inject_headers(served: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    http, store = served
    await store.put("x/weird", HTML, content_type="text/html\r\nSet-Cookie: owned=1")
    await store.put("x/image-ish", HTML, content_type="image/png; x=\x7f")
    for key in ("x/weird", "x/image-ish"):
        response = await http.get(f"/storage/{key}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-disposition"].startswith("attachment")
        assert "set-cookie" not in response.headers


async def test_a_file_without_a_sidecar_is_judged_by_its_name(served: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    http, store = served
    (store.objects_dir / "dropped").mkdir(parents=True)
    (store.objects_dir / "dropped" / "page.html").write_bytes(HTML)
    response = await http.get("/storage/dropped/page.html")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html"
    assert response.headers["content-disposition"] == 'attachment; filename="page.html"'


async def test_head_and_file_names_that_need_encoding(served: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    http, store = served
    await store.put('files/r\u00e9sum\u00e9 "v2".html', HTML, content_type="text/html")
    url = "/storage/files/r%C3%A9sum%C3%A9%20%22v2%22.html"
    got, head = await http.get(url), await http.head(url)
    assert got.status_code == head.status_code == 200 and head.content == b""
    assert got.headers["content-disposition"] == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20%22v2%22.html"
    for name in ("content-type", "content-disposition", "x-content-type-options", "content-security-policy"):
        assert head.headers[name] == got.headers[name], name


async def test_metadata_sidecars_are_never_served(served: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    http, store = served
    await store.put("userfiles/evil.html", HTML, content_type="text/html", metadata={"owner": "mallory"})
    sidecar = store.objects_dir / ".local-storage" / "meta" / "userfiles" / "evil.html"
    assert b"mallory" in sidecar.read_bytes()  # it exists on disk ...
    for path in (
        "/storage/.local-storage/meta/userfiles/evil.html",  # ... but the route does not serve it
        "/storage/.local-storage/meta/userfiles",
        "/storage/.local-storage/tmp/x",
        "/storage/%2Elocal-storage/meta/userfiles/evil.html",
    ):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert b"mallory" not in response.content
    assert (await http.get("/storage/userfiles/nope.html")).status_code == 404
    assert (await http.get("/storage/userfiles")).status_code == 404  # a folder is not an object


async def test_a_symlink_loop_is_a_404_naming_no_server_path(served: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    """A link leading back to itself in the folder (made by hand) answered 500: the store took it for an outage."""
    http, store = served
    await store.put("media/ok.txt", b"fine", content_type="text/plain")
    os.symlink("loop", store.objects_dir / "media" / "loop")
    for method in ("GET", "HEAD"):
        for path in ("/storage/media/loop", "/storage/media/loop/inside"):
            answer = await http.request(method, path, headers={"Range": "bytes=0-1"})
            assert answer.status_code == 404, (method, path)
            assert str(store.objects_dir).encode() not in answer.content
    assert (await http.get("/storage/media/ok.txt")).content == b"fine"


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("/storage/%00", "control characters"),
        ("/storage/a%00.html", "control characters"),
        ("/storage/a/%0d%0aSet-Cookie:x", "control characters"),
        ("/storage/../../etc/passwd", "path traversal"),
        ("/storage/a/../../etc/passwd", "path traversal"),
        ("/storage/a/%2e%2e/%2e%2e/etc/passwd", "path traversal"),
        ("/storage/a/./b", "path traversal"),
        ("/storage//etc/passwd", "absolute paths"),
        ("/storage/%2Fetc/passwd", "absolute paths"),
        ("/storage/a%5C..%5C..%5Cetc", "backslashes"),
        ("/storage/a\\b", "backslashes"),
        ("/storage/a//b", "empty segments"),
        ("/storage/userfiles/", "empty segments"),
    ],
)
async def test_bad_paths_are_a_400_saying_why(
    served: tuple[httpx.AsyncClient, LocalStorage], target: str, problem: str
) -> None:
    http, store = served
    await store.put("userfiles/ok.txt", b"fine", content_type="text/plain")
    status, body = await _raw_get(http, target)
    assert status == 400, (target, body)
    assert b"invalid object key" in body and problem.encode() in body, body


async def test_a_copy_revalidated_with_the_objects_validators_is_a_304(
    served: tuple[httpx.AsyncClient, LocalStorage],
) -> None:
    """The route sent ``ETag`` and ``Last-Modified`` but ignored them coming back: every revalidation was a 200."""
    http, store = served
    await store.put("pics/a.png", b"first", content_type="image/png")
    first = await http.get("/storage/pics/a.png")
    tag, date = first.headers["etag"], first.headers["last-modified"]
    for validators in (
        {"If-None-Match": tag},
        {"If-None-Match": f'"other", W/{tag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": date},
    ):
        for method in ("GET", "HEAD"):
            answer = await http.request(method, "/storage/pics/a.png", headers=validators)
            assert (answer.status_code, answer.content) == (304, b""), (method, validators)
            assert (answer.headers["etag"], answer.headers["last-modified"]) == (tag, date)
            _assert_safe_headers(answer)
    for validators in (
        {"If-None-Match": '"other"'},
        {"If-None-Match": '"other"', "If-Modified-Since": date},  # If-None-Match decides when present
        {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
        {"If-Modified-Since": "yesterday"},
    ):
        answer = await http.get("/storage/pics/a.png", headers=validators)
        assert (answer.status_code, answer.content) == (200, b"first"), validators
    await asyncio.sleep(0.01)
    await store.put("pics/a.png", b"second", content_type="image/png")
    again = await http.get("/storage/pics/a.png", headers={"If-None-Match": tag})
    assert (again.status_code, again.content) == (200, b"second")  # a new object, a new tag
    assert again.headers["etag"] != tag
    assert (await http.get("/storage/pics/nope.png", headers={"If-None-Match": "*"})).status_code == 404


# -- streaming and byte ranges, on both backends --------------------------------------------------


class _Tracked:
    """A store that keeps every stream it opens, to check that each one is closed."""

    def __init__(self, store: Storage) -> None:
        self.store = store
        self.streams: list[ObjectStream] = []
        self.stats = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def stat(self, key: str) -> ObjectInfo:
        self.stats += 1
        return await self.store.stat(key)

    async def open(self, key: str, *, start: int = 0, length: int | None = None) -> ObjectStream:
        stream = await self.store.open(key, start=start, length=length)
        self.streams.append(stream)
        return stream


@pytest.fixture(params=["local", "s3"])
async def ranged(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, _Tracked]]:
    """The route over one backend, served by uvicorn, and that backend (tracking the streams it opens)."""
    store: Storage
    if request.param == "local":
        store = LocalStorage(tmp_path / "store")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = S3Storage(
            endpoint=server.endpoint,
            bucket=request.getfixturevalue("s3_bucket"),
            access_key=server.access_key,
            secret_key=server.secret_key,
            region=server.region,
            secure=False,
        )
    tracked = _Tracked(store)
    app = Litestar(route_handlers=[storage_router(cast("Storage", tracked), "/storage")])
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        yield http, tracked
    await store.close()


async def _all_closed(store: _Tracked) -> None:
    """Wait until every stream the store opened is closed (the server notices a client gone when it next writes)."""
    for _ in range(500):
        if all(stream.closed for stream in store.streams):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{sum(not s.closed for s in store.streams)} of {len(store.streams)} streams left open")


DIGITS = b"0123456789abcdefghij"  # 20 bytes


@pytest.mark.parametrize(
    ("asked", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=2-5", 2, 5),
        ("bytes=5-", 5, 19),
        ("bytes=0-", 0, 19),
        ("bytes=-4", 16, 19),
        ("bytes=-1", 19, 19),
        ("bytes=-20", 0, 19),
        ("bytes=-1000", 0, 19),  # a suffix longer than the object is all of it
        ("bytes=15-1000", 15, 19),  # a last byte past the end stops at the end
        ("bytes=19-19", 19, 19),
        ("BYTES=3-4", 3, 4),  # the unit is case-insensitive
    ],
)
async def test_one_range_is_a_206_with_only_those_bytes(
    ranged: tuple[httpx.AsyncClient, _Tracked], asked: str, first: int, last: int
) -> None:
    http, store = ranged
    await store.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    whole = await http.get("/storage/media/clip.mp4")
    answer = await http.get("/storage/media/clip.mp4", headers={"Range": asked})
    assert answer.status_code == 206, answer.text
    assert answer.content == DIGITS[first : last + 1]
    assert answer.headers["content-range"] == f"bytes {first}-{last}/20"
    assert answer.headers["content-length"] == str(last + 1 - first)
    assert answer.headers["accept-ranges"] == "bytes"
    for name in ("content-type", "content-disposition", "etag", "last-modified"):
        assert answer.headers[name] == whole.headers[name], name
    _assert_safe_headers(answer)
    await _all_closed(store)


@pytest.mark.parametrize("asked", ["bytes=20-", "bytes=20-25", "bytes=1000-2000", "bytes=-0"])
async def test_a_range_that_cannot_be_satisfied_is_a_416_naming_the_size(
    ranged: tuple[httpx.AsyncClient, _Tracked], asked: str
) -> None:
    http, store = ranged
    await store.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    answer = await http.get("/storage/media/clip.mp4", headers={"Range": asked})
    assert answer.status_code == 416
    assert answer.headers["content-range"] == "bytes */20"
    assert DIGITS not in answer.content
    _assert_safe_headers(answer)


async def test_any_range_of_an_empty_object_is_a_416(ranged: tuple[httpx.AsyncClient, _Tracked]) -> None:
    http, store = ranged
    await store.put("empty.txt", b"", content_type="text/plain")
    for asked in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        answer = await http.get("/storage/empty.txt", headers={"Range": asked})
        assert (answer.status_code, answer.headers["content-range"]) == (416, "bytes */0"), asked
    whole = await http.get("/storage/empty.txt")
    assert (whole.status_code, whole.content, whole.headers["content-length"]) == (200, b"", "0")


@pytest.mark.parametrize(
    "asked",
    [
        "bytes=abc",
        "bytes=5-2",  # last before first
        "bytes=--1",
        "bytes=1-2-3",
        "bytes=",
        "bytes=-",
        "bytes 0-4",
        "bytes=0-4,",
        "bytes=0-1,5-6",  # several ranges: all of it rather than a multipart answer
        "bytes=0-1, 3-",
        "items=0-4",  # not a byte range
        "=0-4",
        "bytes=0x1-4",
        "bytes=" + "1" * 40 + "-",
    ],
)
async def test_a_malformed_or_multiple_range_is_ignored_and_the_whole_object_sent(
    ranged: tuple[httpx.AsyncClient, _Tracked], asked: str
) -> None:
    http, store = ranged
    await store.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    answer = await http.get("/storage/media/clip.mp4", headers={"Range": asked})
    assert (answer.status_code, answer.content) == (200, DIGITS), asked
    assert "content-range" not in answer.headers
    assert (answer.headers["content-length"], answer.headers["accept-ranges"]) == ("20", "bytes")
    _assert_safe_headers(answer)


async def test_if_range_serves_the_range_only_while_its_validator_is_current(
    ranged: tuple[httpx.AsyncClient, _Tracked],
) -> None:
    http, store = ranged
    await store.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    first = await http.get("/storage/media/clip.mp4")
    tag, date = first.headers["etag"], first.headers["last-modified"]
    answer = await http.get("/storage/media/clip.mp4", headers={"Range": "bytes=2-3", "If-Range": tag})
    assert (answer.status_code, answer.content) == (206, b"23")
    for validator in ('"other"', f"W/{tag}", "Thu, 01 Jan 1970 00:00:00 GMT", "not a date", tag.strip('"')):
        answer = await http.get("/storage/media/clip.mp4", headers={"Range": "bytes=2-3", "If-Range": validator})
        assert (answer.status_code, answer.content) == (200, DIGITS), validator
        assert "content-range" not in answer.headers
    await asyncio.sleep(1.1)  # a date is a strong validator once it is a second old
    answer = await http.get("/storage/media/clip.mp4", headers={"Range": "bytes=2-3", "If-Range": date})
    assert (answer.status_code, answer.content) == (206, b"23")
    await store.put("media/clip.mp4", DIGITS[::-1], content_type="video/mp4")  # same size, a later second
    for validator in (tag, date):  # the client's partial copy is of the old object: it gets the new one whole
        answer = await http.get("/storage/media/clip.mp4", headers={"Range": "bytes=2-3", "If-Range": validator})
        assert (answer.status_code, answer.content) == (200, DIGITS[::-1]), validator
    answer = await http.get("/storage/media/clip.mp4", headers={"If-Range": tag})  # If-Range alone: no range
    assert (answer.status_code, answer.content) == (200, DIGITS[::-1])


async def test_revalidation_and_head_together_with_ranges(ranged: tuple[httpx.AsyncClient, _Tracked]) -> None:
    http, store = ranged
    await store.put("pics/a.png", DIGITS, content_type="image/png")
    first = await http.get("/storage/pics/a.png")
    assert (first.headers["accept-ranges"], first.headers["content-length"]) == ("bytes", "20")
    tag, date = first.headers["etag"], first.headers["last-modified"]
    for validators in ({"If-None-Match": tag}, {"If-Modified-Since": date}):
        for method in ("GET", "HEAD"):  # a current copy is a 304 before any range is looked at
            answer = await http.request(method, "/storage/pics/a.png", headers={**validators, "Range": "bytes=0-1"})
            assert (answer.status_code, answer.content) == (304, b""), (method, validators)
            assert answer.headers["etag"] == tag
            _assert_safe_headers(answer)
    for headers in ({}, {"Range": "bytes=0-1"}, {"Range": "bytes=50-"}):  # HEAD ignores Range
        head = await http.head("/storage/pics/a.png", headers=headers)
        assert (head.status_code, head.content) == (200, b""), headers
        assert "content-range" not in head.headers
        for name in ("content-type", "content-disposition", "content-length", "accept-ranges", "etag"):
            assert head.headers[name] == first.headers[name], name
        _assert_safe_headers(head)
    assert store.streams and all(stream.closed for stream in store.streams)  # HEAD and 304 open nothing
    assert len(store.streams) == 1
    missing = await http.get("/storage/pics/none.png", headers={"Range": "bytes=0-1"})
    assert missing.status_code == 404


async def test_a_large_object_is_streamed_whole_and_in_ranges(ranged: tuple[httpx.AsyncClient, _Tracked]) -> None:
    http, store = ranged
    payload = random.Random(3).randbytes(5 * 1024 * 1024 + 123)
    await store.put("videos/big.mp4", payload, content_type="video/mp4")
    async with http.stream("GET", "/storage/videos/big.mp4") as answer:
        assert answer.status_code == 200 and answer.headers["content-length"] == str(len(payload))
        assert "chunked" not in answer.headers.get("transfer-encoding", "")
        pieces = [piece async for piece in answer.aiter_raw()]
    assert b"".join(pieces) == payload
    for first, last in ((0, 999_999), (262_143, 3_000_000), (len(payload) - 70_000, len(payload) - 1)):
        answer = await http.get("/storage/videos/big.mp4", headers={"Range": f"bytes={first}-{last}"})
        assert answer.status_code == 206
        assert answer.headers["content-range"] == f"bytes {first}-{last}/{len(payload)}"
        assert answer.content == payload[first : last + 1]
    answer = await http.get("/storage/videos/big.mp4", headers={"Range": "bytes=-100000"})
    assert answer.content == payload[-100_000:]
    await _all_closed(store)


async def _read_part_and_hang_up(http: httpx.AsyncClient, target: str, headers: str = "") -> bytes:
    """Send a GET over a raw socket, read the head and the first bytes of the body, then reset the connection."""
    url = http.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {url.host}\r\n{headers}\r\n".encode("latin-1"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(64 * 1024)
    finally:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a clean close
        writer.close()
    return head


async def test_a_client_hanging_up_mid_download_releases_the_object(
    ranged: tuple[httpx.AsyncClient, _Tracked],
) -> None:
    """Each abandoned download closes its file or S3 response; later downloads, whole or in ranges, still work."""
    http, store = ranged
    payload = random.Random(5).randbytes(8 * 1024 * 1024)
    await store.put("videos/big.mp4", payload, content_type="video/mp4")
    for attempt in range(20):  # more than the S3 client's pool holds
        extra = "Range: bytes=1000-\r\n" if attempt % 2 else ""
        head = await _read_part_and_hang_up(http, "/storage/videos/big.mp4", extra)
        assert head.startswith(b"HTTP/1.1 206" if extra else b"HTTP/1.1 200"), head
    await _all_closed(store)
    assert len(store.streams) == 20
    if isinstance(store.store, LocalStorage) and Path("/proc/self/fd").is_dir():
        target = str(store.store.objects_dir / "videos" / "big.mp4")
        assert not [fd for fd in Path("/proc/self/fd").iterdir() if _points_to(fd, target)]
    whole = await http.get("/storage/videos/big.mp4")
    assert (whole.status_code, whole.content == payload) == (200, True)
    part = await http.get("/storage/videos/big.mp4", headers={"Range": "bytes=4000000-4000009"})
    assert (part.status_code, part.content) == (206, payload[4_000_000:4_000_010])
    await _all_closed(store)


async def test_a_client_that_stops_reading_is_given_up_and_the_object_released(
    ranged: tuple[httpx.AsyncClient, _Tracked],
) -> None:
    """A client that asked for a large object and never read it, keeping its connection open, held the file (or
    the S3 connection) for as long as it liked: the server's send waited for it for ever."""
    _, store = ranged
    payload = random.Random(7).randbytes(16 * 1024 * 1024)  # more than the socket buffers on both ends hold
    await store.put("videos/big.mp4", payload, content_type="video/mp4")
    app = Litestar(route_handlers=[storage_router(cast("Storage", store), "/storage", send_timeout=0.5)])
    loop = asyncio.get_running_loop()
    async with serve(app) as base:
        url = httpx.URL(base)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's sends block
            sock.setblocking(False)
            await loop.sock_connect(sock, (url.host, url.port))
            request = f"GET /storage/videos/big.mp4 HTTP/1.1\r\nHost: {url.host}\r\n\r\n"
            await loop.sock_sendall(sock, request.encode("latin-1"))
            while not store.streams:  # the download started ...
                await asyncio.sleep(0.02)
            await _all_closed(store)  # ... and was given up while the client still holds its connection
            if isinstance(store.store, LocalStorage):
                target = str(store.store.objects_dir / "videos" / "big.mp4")
                assert not [fd for fd in Path("/proc/self/fd").iterdir() if _points_to(fd, target)]
            received = bytearray()
            async with asyncio.timeout(60):  # the server closes the connection once the client takes what was sent
                while data := await loop.sock_recv(sock, 1024 * 1024):
                    received += data
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and f"content-length: {len(payload)}".encode() in head.lower()
    assert 0 < len(body) < len(payload) and payload.startswith(body)  # cut short: the client can tell
    assert len(store.streams) == 1


async def test_a_plain_download_looks_at_the_store_once(ranged: tuple[httpx.AsyncClient, _Tracked]) -> None:
    """A GET stat'ed the object, then opened it (two stats and two sidecar reads locally, a HEAD then a GET on
    S3). Without a Range or validators it now only opens it, and takes its headers from what it opened."""
    http, store = ranged
    await store.put("pics/a.png", DIGITS, content_type="image/png", metadata={"owner": "ann"})
    head = await http.head("/storage/pics/a.png")  # HEAD stats only
    assert (store.stats, len(store.streams)) == (1, 0)
    whole = await http.get("/storage/pics/a.png")
    assert (whole.status_code, whole.content) == (200, DIGITS)
    assert (store.stats, len(store.streams)) == (1, 1)
    for name in ("content-type", "content-disposition", "content-length", "accept-ranges", "etag", "last-modified"):
        assert whole.headers[name] == head.headers[name], name
    _assert_safe_headers(whole)
    part = await http.get("/storage/pics/a.png", headers={"Range": "bytes=1-2"})  # a range: stat, then open
    assert (part.status_code, part.content, part.headers["etag"]) == (206, b"12", whole.headers["etag"])
    assert (store.stats, len(store.streams)) == (2, 2)
    await store.put("empty", b"", content_type="text/plain")
    empty = await http.get("/storage/empty")
    assert (empty.status_code, empty.content, empty.headers["content-length"]) == (200, b"", "0")
    assert (await http.get("/storage/pics/none.png")).status_code == 404
    await _all_closed(store)


def _points_to(fd: Path, target: str) -> bool:
    try:
        return os.readlink(fd) == target
    except OSError:  # closed meanwhile
        return False


async def test_an_object_replaced_between_its_stat_and_its_open_is_served_as_the_new_one(
    ranged: tuple[httpx.AsyncClient, _Tracked],
) -> None:
    """Headers and bytes always describe one version: a put landing after the stat makes the route look again."""
    http, store = ranged
    await store.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    real_open = store.open
    replaced: list[object] = []

    async def open_after_a_put(key: str, *, start: int = 0, length: int | None = None) -> ObjectStream:
        if not replaced:
            replaced.append(await store.store.put(key, b"new!" * 3, content_type="video/webm"))
        return await real_open(key, start=start, length=length)

    store.open = open_after_a_put  # type: ignore[method-assign]
    answer = await http.get("/storage/media/clip.mp4", headers={"Range": "bytes=2-"})
    assert (answer.status_code, answer.content) == (206, b"w!new!new!")
    assert (answer.headers["content-range"], answer.headers["content-type"]) == ("bytes 2-11/12", "video/webm")
    assert len(store.streams) == 2
    await _all_closed(store)  # the stream of the stat'ed-but-replaced version was closed too


async def test_the_apps_local_storage_route_serves_ranges(served: tuple[httpx.AsyncClient, LocalStorage]) -> None:
    http, store = served
    await store.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    answer = await http.get("/storage/media/clip.mp4", headers={"Range": "bytes=-3"})
    assert (answer.status_code, answer.content, answer.headers["content-range"]) == (206, b"hij", "bytes 17-19/20")
    assert answer.headers["accept-ranges"] == "bytes"
    _assert_safe_headers(answer)


# -- a store that fails ----------------------------------------------------------------------------------


def _assert_says_nothing_of(answer: httpx.Response, *internals: str) -> None:
    """The answer's body and headers name none of the server's internals (paths, endpoints, buckets)."""
    shown = answer.content.decode("utf-8", errors="replace") + str(answer.headers)
    for internal in internals:
        assert internal not in shown, internal
    assert "Traceback" not in shown and "Errno" not in shown


def _assert_retry_later(answer: httpx.Response, method: str = "GET") -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:300])
    assert answer.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    _assert_safe_headers(answer)
    if method == "GET":
        assert answer.json() == {"status_code": 503, "detail": "storage is unavailable for now; try again later"}


async def test_a_local_store_failing_is_a_503_to_retry_naming_no_server_path(
    served: tuple[httpx.AsyncClient, LocalStorage],
) -> None:
    """A folder where an object's content-type record should be: reading it fails with an I/O error (was 500)."""
    http, store = served
    await store.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    sidecar = store.objects_dir / ".local-storage" / "meta" / "media" / "clip.mp4"
    sidecar.unlink()
    sidecar.mkdir()
    for method in ("GET", "HEAD"):
        for headers in ({}, {"Range": "bytes=2-5"}):
            answer = await http.request(method, "/storage/media/clip.mp4", headers=headers)
            _assert_retry_later(answer, method)
            _assert_says_nothing_of(answer, str(store.objects_dir), ".local-storage")
    sidecar.rmdir()  # the fault goes away: the same request now succeeds
    answer = await http.get("/storage/media/clip.mp4")
    assert (answer.status_code, answer.content) == (200, DIGITS)


class _CuttingProxy:
    """A TCP proxy in front of the S3 server that forwards connections, or cuts them as soon as they come."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.cut: tuple[bytes, ...] = ()  # request methods whose connections are cut (b"" cuts all)
        self.endpoint = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.endpoint = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, writer, check=True), self._pipe(up_reader, writer, up_writer)
        )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        *,
        check: bool = False,
    ) -> None:
        """Copy ``reader`` to ``writer``; a request (from the client) of a method being cut closes both ends."""
        try:
            while data := await reader.read(65536):
                if check and any(data.startswith(method) for method in self.cut):
                    break  # the connection closes without an answer
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            other.close()


def _s3_store(server: S3Server, bucket: str, endpoint: str, secret_key: str | None = None) -> S3Storage:
    return S3Storage(
        endpoint=endpoint,
        bucket=bucket,
        access_key=server.access_key,
        secret_key=server.secret_key if secret_key is None else secret_key,
        region=server.region,
        secure=False,
    )


async def test_an_s3_store_cut_off_is_a_503_to_retry_naming_no_endpoint(s3_server: S3Server, s3_bucket: str) -> None:
    """The connection to S3 closes with no answer, on every request or on the download only (was 500)."""
    direct = _s3_store(s3_server, s3_bucket, s3_server.endpoint)
    await direct.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    async with _CuttingProxy(s3_server.endpoint) as proxy:
        store = _s3_store(s3_server, s3_bucket, proxy.endpoint)
        app = Litestar(route_handlers=[storage_router(store, "/storage")])
        async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/storage/media/clip.mp4")).content == DIGITS  # through the proxy
            for cut in ((b"",), (b"GET",)):  # everything, or the GET of the bytes after a HEAD that worked
                proxy.cut = cut
                for method in ("GET", "HEAD") if cut == (b"",) else ("GET",):
                    answer = await http.request(method, "/storage/media/clip.mp4", headers={"Range": "bytes=2-5"})
                    _assert_retry_later(answer, method)
                    _assert_says_nothing_of(answer, proxy.endpoint, s3_server.endpoint, s3_bucket)
            proxy.cut = ()  # S3 is back: the same request succeeds
            answer = await http.get("/storage/media/clip.mp4", headers={"Range": "bytes=2-5"})
            assert (answer.status_code, answer.content) == (206, b"2345")
        await store.close()
    await direct.close()


async def test_an_s3_store_refusing_for_good_is_a_500_naming_no_endpoint(s3_server: S3Server, s3_bucket: str) -> None:
    """Wrong credentials: no retry helps, so no 503 and no Retry-After; the answer says nothing of the store."""
    direct = _s3_store(s3_server, s3_bucket, s3_server.endpoint)
    await direct.put("media/clip.mp4", DIGITS, content_type="video/mp4")
    store = _s3_store(s3_server, s3_bucket, s3_server.endpoint, secret_key="not-the-secret-key")
    app = Litestar(route_handlers=[storage_router(store, "/storage")])
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        for method in ("GET", "HEAD"):
            answer = await http.request(method, "/storage/media/clip.mp4")
            assert answer.status_code == 500, (answer.status_code, answer.text[:300])
            assert "retry-after" not in answer.headers
            _assert_safe_headers(answer)
            _assert_says_nothing_of(answer, s3_server.endpoint, s3_bucket, s3_server.access_key)
            if method == "GET":
                assert answer.json() == {"status_code": 500, "detail": "storage refused to serve this object"}
    await store.close()
    await direct.close()
