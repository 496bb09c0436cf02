"""The ``image:process`` handler on real storage (local and SeaweedFS), and the uploads route feeding it.

The handler is called directly with a minimal context; the route runs in a bare Litestar app whose
``services`` dependency carries the storage and a recording client (the worker is not involved).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import structlog
from framework_images import hooks
from framework_images.config import ImagesConfig, load_config
from framework_images.routes import upload_router
from framework_images.storage import (
    check_upload_id,
    original_key,
    read_record,
    record_key,
    thumbnail_key,
    upload_prefix,
    write_record,
)
from framework_images.tasks import (
    PROCESS_IMAGE,
    ProcessImage,
    handle_process_image,
    process_image,
    process_image_task,
)
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.testing import AsyncTestClient
from PIL import ExifTags, Image, ImageDraw

from framework.context import TaskContext
from framework.errors import ConfigError, RedisUnavailable, SkipRetry
from framework.services import Services
from framework.settings import Settings
from framework.storage import LocalStorage, ObjectNotFound, Storage, StorageUnavailable
from framework.storage.s3 import S3Storage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from redis.asyncio import Redis

    from framework import Client
    from framework.protocol.keys import Schema
    from tests.fixtures.s3 import S3Server


RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def quadrants(width: int, height: int) -> Image.Image:
    im = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(im)
    hw, hh = width // 2, height // 2
    draw.rectangle((0, 0, hw - 1, hh - 1), fill=RED)
    draw.rectangle((hw, 0, width - 1, hh - 1), fill=GREEN)
    draw.rectangle((0, hh, hw - 1, height - 1), fill=BLUE)
    draw.rectangle((hw, hh, width - 1, height - 1), fill=WHITE)
    return im


def photo_with_gps_rotated(width: int = 1200, height: int = 900) -> bytes:
    """A camera-style JPEG of a ``width`` x ``height`` scene, stored sideways (orientation 6), with GPS."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.5)
    buf = io.BytesIO()
    quadrants(width, height).transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", exif=exif.tobytes(), quality=92)
    return buf.getvalue()


def assert_upright_quadrants(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    assert not im.getexif()
    w, h = im.size
    rgb = im.convert("RGB")
    got = [
        rgb.getpixel(xy)
        for xy in ((w // 5, h // 5), (w * 4 // 5, h // 5), (w // 5, h * 4 // 5), (w * 4 // 5, h * 4 // 5))
    ]
    for pixel, want in zip(got, (RED, GREEN, BLUE, WHITE), strict=True):
        assert isinstance(pixel, tuple)
        assert all(abs(a - b) <= 40 for a, b in zip(pixel, want, strict=False)), got
    return im


@dataclass
class RecordingClient:
    """Stands in for framework.client.client.Client: records enqueues, or fails like Redis being down.

    With ``forward``, a real client, each enqueue is also made for real (the route reads its task's state).
    """

    calls: list[tuple[Any, Any, dict[str, Any]]] = field(default_factory=list)
    fail: bool = False
    forward: Any = None

    async def enqueue(self, task: Any, payload: Any = None, **options: Any) -> Any:
        if self.fail:
            raise RedisUnavailable("cannot reach Redis at redis://127.0.0.1:1: connection refused")
        self.calls.append((task, payload, options))
        if self.forward is not None:
            return await self.forward.enqueue(task, payload, **options)
        return msgspec.structs.replace  # any object; the route does not use the result


def make_services(
    storage: Storage,
    settings: Settings,
    client: Any = None,
    *,
    redis: Redis | None = None,
    schema: Schema | None = None,
) -> Services:
    services = Services(
        settings=settings,
        redis=redis,  # type: ignore[arg-type]
        schema=schema,  # type: ignore[arg-type]
        client=client or RecordingClient(),  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
    )
    services._storage = storage
    return services


def make_ctx(services: Services) -> TaskContext:
    return TaskContext(
        id="task-1",
        type=PROCESS_IMAGE,
        queue="default",
        retried=0,
        max_retry=2,
        deadline=time.time() + 300,
        headers={},
        logger=structlog.get_logger("test"),
        services=services,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path))


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


async def run(storage: Storage, settings: Settings, upload_id: str | int, key: str, mime: str = "") -> None:
    ctx = make_ctx(make_services(storage, settings))
    await handle_process_image(ctx, ProcessImage(upload_id=upload_id, key=key, mime_type=mime))


async def keys_of(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key async for info in storage.list(prefix)]


# -- the task definition --------------------------------------------------------------------------


def test_task_definition() -> None:
    assert PROCESS_IMAGE == "image:process"
    assert process_image_task.type == "image:process"
    assert (process_image_task.queue, process_image_task.max_retry) == ("default", 2)
    assert process_image_task.timeout == 300
    assert process_image_task.handler is handle_process_image


def test_payload_has_grits_json_field_names() -> None:
    payload = ProcessImage(upload_id="u1", key="uploads/u1/original.jpg", mime_type="image/jpeg")
    assert process_image_task.encode(payload) == (
        b'{"upload_id":"u1","key":"uploads/u1/original.jpg","mime_type":"image/jpeg"}'
    )
    from_go = process_image_task.decode(b'{"upload_id":42,"key":"uploads/42/original.png","mime_type":"image/png"}')
    assert from_go == ProcessImage(upload_id=42, key="uploads/42/original.png", mime_type="image/png")
    assert process_image_task.decode(b'{"upload_id":"a","key":"k"}').mime_type == ""


async def test_enqueue_helper() -> None:
    client = RecordingClient()
    await process_image(client, "u1", "uploads/u1/original.jpg", "image/jpeg", queue="low")  # type: ignore[arg-type]
    [(task, payload, options)] = client.calls
    assert task is process_image_task
    assert payload == ProcessImage(upload_id="u1", key="uploads/u1/original.jpg", mime_type="image/jpeg")
    assert options == {"queue": "low"}


# -- the handler ----------------------------------------------------------------------------------


async def test_makes_every_size_upright_without_gps(storage: LocalStorage, settings: Settings) -> None:
    key = original_key("u1", "jpg")
    await storage.put(key, photo_with_gps_rotated(), content_type="image/jpeg")
    await run(storage, settings, "u1", key, "image/jpeg")
    assert await keys_of(storage) == [
        "uploads/u1/large.webp",
        "uploads/u1/medium.webp",
        "uploads/u1/original.jpg",
        "uploads/u1/record.json",
        "uploads/u1/small.webp",
    ]
    sizes = {}
    for name in ("small", "medium", "large"):
        info = await storage.stat(thumbnail_key("u1", name, "webp"))
        assert info.content_type == "image/webp"
        sizes[name] = assert_upright_quadrants(await storage.get(info.key)).size
    assert sizes == {"small": (320, 240), "medium": (800, 600), "large": (1200, 900)}  # 1200 wide: not enlarged
    record = await read_record(storage, "u1")
    assert record is not None
    assert (record.state, record.mime_type, record.width, record.height, record.error) == (
        "done",
        "image/jpeg",
        1200,
        900,
        None,
    )
    assert [(t.name, t.format, t.key, t.width, t.height) for t in record.thumbnails] == [
        ("large", "webp", "uploads/u1/large.webp", 1200, 900),
        ("medium", "webp", "uploads/u1/medium.webp", 800, 600),
        ("small", "webp", "uploads/u1/small.webp", 320, 240),
    ]


async def test_configured_sizes_and_jpeg(storage: LocalStorage, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=str(tmp_path), plugins={"images": {"sizes": {"thumb": 100}, "formats": ["webp", "jpeg"]}}
    )
    await storage.put("photos/cat.png", _png(quadrants(400, 300)))
    await run(storage, settings, "cat", "photos/cat.png")
    assert await keys_of(storage, upload_prefix("cat")) == [
        "uploads/cat/record.json",
        "uploads/cat/thumb.jpg",
        "uploads/cat/thumb.webp",
    ]
    jpeg = assert_upright_quadrants(await storage.get("uploads/cat/thumb.jpg"))
    assert (jpeg.format, jpeg.size) == ("JPEG", (100, 75))
    assert (await storage.stat("uploads/cat/thumb.jpg")).content_type == "image/jpeg"


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


async def test_running_twice_gives_the_same_objects(storage: LocalStorage, settings: Settings) -> None:
    key = original_key("u2", "jpg")
    await storage.put(key, photo_with_gps_rotated())
    await write_record_from_route(storage, "u2", key)
    await run(storage, settings, "u2", key)
    first = {k: await storage.get(k) for k in await keys_of(storage) if not k.endswith(".json")}
    record1 = await read_record(storage, "u2")
    await run(storage, settings, "u2", key)
    second = {k: await storage.get(k) for k in await keys_of(storage) if not k.endswith(".json")}
    record2 = await read_record(storage, "u2")
    assert first == second
    assert record1 is not None and record2 is not None
    assert record2.thumbnails == record1.thumbnails
    assert (record2.state, record2.filename, record2.created) == ("done", "IMG_0001.JPG", 1000.0)


async def write_record_from_route(storage: Storage, upload_id: str, key: str) -> None:
    from framework_images.storage import UploadRecord

    record = UploadRecord(
        id=upload_id, state="processing", original=key, filename="IMG_0001.JPG", created=1000.0, updated=1000.0
    )
    await write_record(storage, record)


async def test_go_producer_numeric_upload_id(storage: LocalStorage, settings: Settings) -> None:
    payload = process_image_task.decode(b'{"upload_id":42,"key":"media/42.png","mime_type":"image/png"}')
    await storage.put("media/42.png", _png(quadrants(640, 480)))
    await handle_process_image(make_ctx(make_services(storage, settings)), payload)
    record = await read_record(storage, "42")
    assert record is not None and record.state == "done" and record.original == "media/42.png"
    assert await storage.stat("uploads/42/small.webp")


async def test_the_claimed_type_is_not_trusted(storage: LocalStorage, settings: Settings) -> None:
    await storage.put("uploads/u3/original.jpg", _png(quadrants(640, 480)), content_type="image/jpeg")
    await run(storage, settings, "u3", "uploads/u3/original.jpg", "image/jpeg")
    record = await read_record(storage, "u3")
    assert record is not None and (record.state, record.mime_type) == ("done", "image/png")


def _noise_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((640, 480), 60).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


BAD = [
    ("text", b"just some text, no pixels", "not an image"),
    ("pdf", b"%PDF-1.7\n%binary", "not an image"),
    ("truncated", _noise_jpeg()[:4000], "truncated"),
    ("too-many-pixels", _png(Image.new("RGB", (3000, 2000))), "too large"),
]


@pytest.mark.parametrize(("data", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_input_is_archived_with_a_message(
    storage: LocalStorage, tmp_path: Path, data: bytes, message: str
) -> None:
    settings = Settings(data_dir=str(tmp_path), plugins={"images": {"max_pixels": 5_000_000}})
    key = original_key("bad", "bin")
    await storage.put(key, data)
    with pytest.raises(SkipRetry, match=message):
        await run(storage, settings, "bad", key)
    record = await read_record(storage, "bad")
    assert record is not None and record.state == "failed"
    assert record.error is not None and message in record.error
    assert await keys_of(storage) == [record_key("bad")]  # no thumbnail written, the rejected original deleted


async def test_missing_original_is_archived(storage: LocalStorage, settings: Settings) -> None:
    with pytest.raises(SkipRetry, match=r"cannot read the original: no object .uploads/gone/original\.jpg."):
        await run(storage, settings, "gone", "uploads/gone/original.jpg")
    record = await read_record(storage, "gone")
    assert record is not None and record.state == "failed"


@pytest.mark.parametrize(
    ("upload_id", "key", "message"),
    [
        ("../etc", "uploads/x/original.jpg", "invalid upload_id"),
        ("a/b", "uploads/x/original.jpg", "invalid upload_id"),
        ("", "uploads/x/original.jpg", "invalid upload_id"),
        ("ok", "../../etc/passwd", "path traversal"),
        ("ok", "/etc/passwd", "absolute"),
    ],
)
async def test_payloads_that_cannot_name_objects_are_archived(
    storage: LocalStorage, settings: Settings, upload_id: str, key: str, message: str
) -> None:
    with pytest.raises(SkipRetry, match=message):
        await run(storage, settings, upload_id, key)


async def test_a_damaged_record_is_replaced(storage: LocalStorage, settings: Settings) -> None:
    await storage.put(record_key("u4"), b"{not json")
    await storage.put("uploads/u4/original.png", _png(quadrants(100, 100)))
    await run(storage, settings, "u4", "uploads/u4/original.png")
    record = await read_record(storage, "u4")
    assert record is not None and record.state == "done"


def test_invalid_plugin_config_fails_loudly() -> None:
    sections: list[dict[str, Any]] = [
        {"sizes": {"original": 10}},
        {"sizes": {}},
        {"formats": ["gif"]},
        {"webp_quality": 0},
        {"upload_window": float("inf")},  # a rate limit whose window never ends
        {"upload_window": float("nan")},
        {"reducing_gap": float("nan")},
    ]
    for section in sections:
        with pytest.raises(ConfigError, match=r"plugins\.images"):
            load_config(Settings(plugins={"images": section}))
    assert load_config(Settings()) == ImagesConfig()


@pytest.mark.parametrize("value", ["a", "A-b_9", "x" * 64, 42])
def test_upload_ids(value: str | int) -> None:
    assert check_upload_id(value) == str(value)


@pytest.mark.parametrize("value", ["", "a/b", "..", "a b", "x" * 65, True])
def test_bad_upload_ids(value: str | int) -> None:
    with pytest.raises(ValueError, match="invalid upload_id"):
        check_upload_id(value)


# -- S3: a real server, unreachable first, then reachable -----------------------------------------


@dataclass
class TcpProxy:
    """A TCP forwarder that can be started late on a port chosen up front: the S3 server 'coming up'."""

    port: int
    target: tuple[str, int]
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            writer.close()
            self.tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def proxy(s3_server: S3Server) -> AsyncIterator[TcpProxy]:
    host, port = s3_server.endpoint.rsplit(":", 1)
    forwarder = TcpProxy(port=_free_port(), target=(host, int(port)))
    yield forwarder
    await forwarder.stop()


async def test_storage_down_is_retried_then_works_once_up(
    s3_server: S3Server, s3_bucket: str, proxy: TcpProxy, settings: Settings
) -> None:
    direct = s3_server.client()
    direct.make_bucket(s3_bucket)
    data = photo_with_gps_rotated(800, 600)
    direct.put_object(s3_bucket, "uploads/s3/original.jpg", io.BytesIO(data), len(data), content_type="image/jpeg")
    store = S3Storage(
        endpoint=f"127.0.0.1:{proxy.port}",
        bucket=s3_bucket,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
        secure=False,
    )
    with pytest.raises(StorageUnavailable) as info:  # nothing listens on the port yet
        await run(store, settings, "s3", "uploads/s3/original.jpg")
    assert not isinstance(info.value, SkipRetry)
    await proxy.start()  # the server comes (back) up at the same address
    await run(store, settings, "s3", "uploads/s3/original.jpg")
    names = sorted(obj.object_name or "" for obj in direct.list_objects(s3_bucket, recursive=True))
    assert names == [
        "uploads/s3/large.webp",
        "uploads/s3/medium.webp",
        "uploads/s3/original.jpg",
        "uploads/s3/record.json",
        "uploads/s3/small.webp",
    ]
    response = direct.get_object(s3_bucket, "uploads/s3/small.webp")
    try:
        small = response.read()
    finally:
        response.close()
        response.release_conn()
    assert assert_upright_quadrants(small).size == (320, 240)
    await store.close()


# -- hooks ----------------------------------------------------------------------------------------


def test_entry_point_and_hooks() -> None:
    [entry] = [ep for ep in entry_points(group="framework") if ep.name == "images"]
    assert entry.value == "framework_images.hooks"
    assert entry.load() is hooks
    assert hooks.register_task_types(Settings()) == [process_image_task]
    with pytest.raises(ConfigError, match="sizes"):
        hooks.register_task_types(Settings(plugins={"images": {"sizes": {"bad name": 1}}}))
    [router] = hooks.register_routes(Settings(plugins={"images": {"path": "/media/uploads"}}))
    assert isinstance(router, Router) and router.path == "/media/uploads"


# -- the uploads route, feeding the handler -------------------------------------------------------


def upload_app(services: Services) -> Litestar:
    """A bare app with the uploads route; its services carry real Redis (the upload limit) and the storage."""
    return Litestar(
        route_handlers=[upload_router(load_config(services.settings))],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        state=State({"framework_services": services}),
    )


@pytest.fixture
async def web(
    storage: LocalStorage, tmp_path: Path, redis: Redis, schema: Schema, client: Client
) -> AsyncIterator[tuple[AsyncTestClient[Litestar], Services]]:
    settings = Settings(data_dir=str(tmp_path), plugins={"images": {"max_upload_bytes": 300_000}})
    recording = RecordingClient(forward=client)  # the tasks are queued for real (no worker runs them)
    services = make_services(storage, settings, recording, redis=redis, schema=schema)
    async with AsyncTestClient(upload_app(services)) as http:
        yield http, services


async def test_upload_then_process_then_status(web: tuple[AsyncTestClient[Litestar], Services]) -> None:
    client, services = web
    data = photo_with_gps_rotated(600, 400)
    response = await client.post("/uploads", files={"file": ("IMG_1.JPG", data, "image/jpeg")})
    assert response.status_code == 202, response.text
    body = response.json()
    upload_id = body["id"]
    assert body == {
        "id": upload_id,
        "state": "processing",
        "url": f"/uploads/{upload_id}",
        "original": f"/storage/uploads/{upload_id}/original.jpg",
    }
    assert response.headers["location"] == f"/uploads/{upload_id}"
    recording: RecordingClient = services.client  # type: ignore[assignment]
    [(task, payload, _)] = recording.calls
    assert task is process_image_task
    assert payload == ProcessImage(upload_id=upload_id, key=f"uploads/{upload_id}/original.jpg", mime_type="image/jpeg")
    assert await services.storage.get(payload.key) == data

    status = (await client.get(body["url"])).json()
    assert status == {
        "id": upload_id,
        "state": "processing",
        "original": body["original"],
        "mime_type": "image/jpeg",
        "width": 0,
        "height": 0,
        "thumbnails": {},
        "files": [],
    }
    await handle_process_image(make_ctx(services), payload)  # what the worker does
    status = (await client.get(body["url"])).json()
    assert status["state"] == "done"
    assert (status["width"], status["height"]) == (600, 400)
    assert status["thumbnails"] == {
        name: f"/storage/uploads/{upload_id}/{name}.webp" for name in ("large", "medium", "small")
    }
    assert [(f["name"], f["width"], f["height"]) for f in status["files"]] == [
        ("large", 600, 400),
        ("medium", 600, 400),
        ("small", 320, 213),
    ]
    record = await read_record(services.storage, upload_id)
    assert record is not None and record.filename == "IMG_1.JPG"


async def test_upload_of_a_non_image_is_refused_and_not_stored(
    web: tuple[AsyncTestClient[Litestar], Services],
) -> None:
    client, services = web
    response = await client.post("/uploads", files={"file": ("notes.html", b"<script>alert(1)</script>", "image/png")})
    assert response.status_code == 415 and "not an image" in response.json()["detail"]
    assert await keys_of(services.storage) == []
    assert services.client.calls == []  # type: ignore[attr-defined]


async def test_a_rejected_upload_leaves_no_downloadable_original(
    web: tuple[AsyncTestClient[Litestar], Services],
) -> None:
    client, services = web
    truncated = photo_with_gps_rotated(600, 400)[:3000]  # starts like a JPEG, so the route takes it
    response = await client.post("/uploads", files={"file": ("cut.jpg", truncated, "image/jpeg")})
    assert response.status_code == 202
    body = response.json()
    original = body["original"].removeprefix("/storage/")
    assert await services.storage.get(original) == truncated
    [(_, payload, _)] = services.client.calls  # type: ignore[attr-defined]
    with pytest.raises(SkipRetry, match="truncated"):
        await handle_process_image(make_ctx(services), payload)
    status = (await client.get(body["url"])).json()
    assert status["state"] == "failed" and "truncated" in status["error"] and status["original"] == ""
    with pytest.raises(ObjectNotFound):
        await services.storage.get(original)
    assert await keys_of(services.storage) == [record_key(body["id"])]


async def test_upload_size_limit(web: tuple[AsyncTestClient[Litestar], Services]) -> None:
    client, services = web
    response = await client.post("/uploads", files={"file": ("big.jpg", b"\xff" * 300_001, "image/jpeg")})
    assert response.status_code == 413
    assert "300000 bytes" in response.json()["detail"]
    response = await client.post("/uploads", files={"file": ("huge.jpg", b"\xff" * 1_000_000, "image/jpeg")})
    assert response.status_code == 413
    assert await keys_of(services.storage) == []
    edge = b"\xff\xd8\xff" + b"\xff" * 299_997  # a JPEG signature: the route takes it, the task judges the rest
    response = await client.post("/uploads", files={"file": ("edge.jpg", edge, "image/jpeg")})
    assert response.status_code == 202


async def test_uploads_are_limited_per_address_by_default(
    storage: LocalStorage, tmp_path: Path, redis: Redis, schema: Schema
) -> None:
    assert (ImagesConfig().upload_limit, ImagesConfig().upload_window) == (30, 600.0)
    settings = Settings(data_dir=str(tmp_path), plugins={"images": {"upload_limit": 2, "upload_window": 60}})
    services = make_services(storage, settings, redis=redis, schema=schema)
    image = _png(quadrants(40, 40))
    async with AsyncTestClient(upload_app(services)) as client:
        created = [await client.post("/uploads", files={"file": ("a.png", image, "image/png")}) for _ in range(2)]
        assert [r.status_code for r in created] == [202, 202]
        refused = await client.post("/uploads", files={"file": ("a.png", image, "image/png")})
        assert refused.status_code == 429 and "too many uploads" in refused.json()["detail"]
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert (await client.get(created[0].headers["location"])).status_code == 200  # reading states is not limited
    assert len(services.client.calls) == 2  # type: ignore[attr-defined]
    assert len([k for k in await keys_of(storage) if k.endswith("record.json")]) == 2  # the third stored nothing
    async with AsyncTestClient(upload_app(services)) as other_process:  # the count lives in Redis
        again = await other_process.post("/uploads", files={"file": ("a.png", image, "image/png")})
        assert again.status_code == 429


async def test_upload_limit_zero_opens_uploads(storage: LocalStorage, tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), plugins={"images": {"upload_limit": 0}})
    services = make_services(storage, settings)  # no Redis needed: nothing is counted
    image = _png(quadrants(40, 40))
    async with AsyncTestClient(upload_app(services)) as client:
        for _ in range(40):
            assert (await client.post("/uploads", files={"file": ("a.png", image, "image/png")})).status_code == 202


@pytest.mark.parametrize("section", [{"upload_limit": -1}, {"upload_window": 0}])
def test_bad_upload_limit_settings(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="upload_"):
        load_config(Settings(plugins={"images": section}))


async def test_upload_needs_a_file(web: tuple[AsyncTestClient[Litestar], Services]) -> None:
    client, _ = web
    assert (await client.post("/uploads", files={"other": ("a.jpg", b"x", "image/jpeg")})).status_code == 400
    assert (await client.post("/uploads", files={"file": ("a.jpg", b"", "image/jpeg")})).status_code == 400


async def test_unknown_uploads_are_404(web: tuple[AsyncTestClient[Litestar], Services]) -> None:
    client, _ = web
    assert (await client.get("/uploads/0123456789abcdef")).status_code == 404
    assert (await client.get("/uploads/..%2Fetc")).status_code == 404


async def test_upload_when_the_queue_is_down(web: tuple[AsyncTestClient[Litestar], Services]) -> None:
    client, services = web
    services.client.fail = True  # type: ignore[attr-defined]
    response = await client.post("/uploads", files={"file": ("a.png", _png(quadrants(50, 50)), "image/png")})
    assert response.status_code == 503
    [record_key_] = [k for k in await keys_of(services.storage) if k.endswith("record.json")]
    upload_id = record_key_.split("/")[1]
    status = (await client.get(f"/uploads/{upload_id}")).json()
    assert status["state"] == "failed" and "could not queue" in status["error"]
    assert await keys_of(services.storage) == [record_key_]  # the original of the failed upload is gone
