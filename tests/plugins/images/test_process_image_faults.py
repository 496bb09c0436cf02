"""The ``image:process`` handler under bad inputs and a failing store: archived with the right reason, or retried.

The handler runs directly with a minimal context on real local storage. A store whose writes fail
while deletes still work (as on a full disk) is made by putting a file where the backend keeps its
temp files.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest
from framework_images.storage import UploadRecord, original_key, read_record, write_record
from framework_images.tasks import ProcessImage, handle_process_image
from PIL import Image

from framework.errors import SkipRetry
from framework.settings import Settings
from framework.storage import LocalStorage, ObjectNotFound, StorageUnavailable
from tests.plugins.images.test_processing import encode
from tests.plugins.images.test_tasks import make_ctx as task_ctx
from tests.plugins.images.test_tasks import make_services

if TYPE_CHECKING:
    from pathlib import Path

    from framework.context import TaskContext


def make_ctx(storage: LocalStorage, settings: Settings) -> TaskContext:
    return task_ctx(make_services(storage, settings))


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path))


async def uploaded(storage: LocalStorage, upload_id: str, data: bytes, ext: str) -> str:
    """Store an original and its ``processing`` record, as the uploads route does."""
    key = original_key(upload_id, ext)
    await storage.put(key, data)
    await write_record(storage, UploadRecord(id=upload_id, state="processing", original=key, filename=f"f.{ext}"))
    return key


async def run(storage: LocalStorage, settings: Settings, upload_id: str, key: str) -> None:
    await handle_process_image(make_ctx(storage, settings), ProcessImage(upload_id=upload_id, key=key))


async def test_the_rejection_reason_survives_a_store_failing_mid_rejection(
    storage: LocalStorage, settings: Settings
) -> None:
    """Writes fail while the task rejects a truncated image: it is retried, and the retry records why.

    Were the original deleted before the record is written, the retry would find no original and
    record "cannot read the original" instead of what is wrong with the file.
    """
    truncated = encode(Image.effect_noise((400, 300), 60).convert("RGB"), "JPEG")[:3000]
    key = await uploaded(storage, "cut", truncated, "jpg")
    tmp = storage.root / ".local-storage" / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"")  # every put now fails; deletes still work
    with pytest.raises(StorageUnavailable) as info:
        await run(storage, settings, "cut", key)
    assert not isinstance(info.value, SkipRetry)  # retried
    assert await storage.get(key) == truncated  # nothing deleted before the reason is recorded
    tmp.unlink()  # the store recovers
    with pytest.raises(SkipRetry, match="truncated"):
        await run(storage, settings, "cut", key)
    record = await read_record(storage, "cut")
    assert record is not None and record.state == "failed"
    assert record.error is not None and "truncated" in record.error, record.error
    assert record.filename == "f.jpg"
    with pytest.raises(ObjectNotFound):
        await storage.get(key)


async def test_a_damaged_multi_page_tiff_is_archived_not_retried(storage: LocalStorage, settings: Settings) -> None:
    pages = [Image.effect_noise((120, 80), 60).convert("RGB") for _ in range(3)]
    tiff = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    key = await uploaded(storage, "tiff", tiff[: len(tiff) * 2 // 3], "tif")  # the last page is cut off
    with pytest.raises(SkipRetry, match="truncated or corrupt TIFF"):
        await run(storage, settings, "tiff", key)
    record = await read_record(storage, "tiff")
    assert record is not None and record.state == "failed" and record.error is not None
    assert "TIFF" in record.error
    assert [info.key async for info in storage.list()] == ["uploads/tiff/record.json"]


async def test_a_full_page_screenshot_gets_its_thumbnails(storage: LocalStorage, settings: Settings) -> None:
    """1000 x 20000 pixels: the large and medium thumbnails would be taller than WebP allows."""
    screenshot = encode(Image.new("RGB", (1000, 20_000), (30, 60, 90)), "PNG")
    key = await uploaded(storage, "tall", screenshot, "png")
    await run(storage, settings, "tall", key)
    record = await read_record(storage, "tall")
    assert record is not None, "no record"
    assert record.state == "done", record.error
    assert [(t.name, t.width, t.height) for t in record.thumbnails] == [
        ("large", 819, 16_383),
        ("medium", 800, 16_000),
        ("small", 320, 6_400),
    ]
    for thumb in record.thumbnails:
        with Image.open(io.BytesIO(await storage.get(thumb.key))) as im:
            assert (im.format, im.size) == ("WEBP", (thumb.width, thumb.height))


async def test_a_task_delivered_again_after_a_rejection_keeps_the_reason(
    storage: LocalStorage, settings: Settings
) -> None:
    """The worker died after the rejection but before archiving: the task runs again and finds no original."""
    key = await uploaded(storage, "again", b"%PDF-1.7\n%not an image", "jpg")
    with pytest.raises(SkipRetry, match="not an image"):
        await run(storage, settings, "again", key)
    with pytest.raises(SkipRetry, match="not an image"):
        await run(storage, settings, "again", key)
    record = await read_record(storage, "again")
    assert record is not None and record.state == "failed"
    assert record.error is not None and record.error.startswith("not an image"), record.error


async def test_an_original_larger_than_the_upload_limit_is_archived_unread_and_kept(
    storage: LocalStorage, tmp_path: Path
) -> None:
    """Another producer (a Go service) stored an original far above ``max_upload_bytes``: the task does not read it
    into memory, archives with both sizes named, and leaves the file alone (it is not known to be a bad image)."""
    settings = Settings(data_dir=str(tmp_path), plugins={"images": {"max_upload_bytes": 4096}})
    data = encode(Image.effect_noise((400, 300), 60).convert("RGB"), "PNG")
    assert len(data) > 4096
    key = await uploaded(storage, "huge", data, "png")
    with pytest.raises(SkipRetry, match=rf"the original is {len(data)} bytes, more than max_upload_bytes=4096"):
        await run(storage, settings, "huge", key)
    record = await read_record(storage, "huge")
    assert record is not None and record.state == "failed"
    assert record.error is not None and "max_upload_bytes=4096" in record.error
    assert await storage.get(key) == data  # kept
