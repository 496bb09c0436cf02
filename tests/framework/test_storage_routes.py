"""The ``/storage`` route over real HTTP (uvicorn): safe headers for user content, hidden sidecars, 400 for bad paths.

Browser-level proof that stored HTML and SVG cannot run script on the app's origin is in
``tests/plugins/admin/test_storage_browser.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from framework.storage import LocalStorage, local_objects_dir
from framework.web.app import create_app
from framework.web.storage_routes import INLINE_TYPES, STORAGE_CSP
from tests.fixtures.web import serve

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
