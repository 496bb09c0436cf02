"""Hostile uploads, through the thumbnailer and the ``image:process`` handler on real storage: each is a clear
permanent failure, or thumbnails that carry nothing but small, upright pixels.

The images are built here, byte by byte where Pillow would not write them.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING

import httpx
import pytest
from framework_images.processing import MAX_ICC_BYTES, MAX_TIFF_PAGES, ImageError, identify, make_thumbnails
from framework_images.storage import original_key, read_record, record_key, thumbnail_key
from litestar.testing import AsyncTestClient
from PIL import Image, ImageCms, features

from framework.errors import SkipRetry
from framework.settings import Settings
from framework.storage import LocalStorage
from framework.web.app import create_app
from tests.fixtures.web import serve
from tests.plugins.images.test_processing import UNDO, assert_quadrants, encode, exif_bytes, quadrants
from tests.plugins.images.test_tasks import keys_of, make_services, run, upload_app

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=str(tmp_path), plugins={"images": {"formats": ["webp", "jpeg"]}})


def chunk(name: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))


async def rejected(storage: LocalStorage, settings: Settings, upload_id: str, data: bytes, ext: str) -> str:
    """Store ``data`` as an upload, run the handler, check it is archived with nothing left; the error."""
    key = original_key(upload_id, ext)
    await storage.put(key, data)
    with pytest.raises(SkipRetry) as caught:
        await run(storage, settings, upload_id, key)
    record = await read_record(storage, upload_id)
    assert record is not None and record.state == "failed" and record.error == str(caught.value)
    assert await keys_of(storage) == [record_key(upload_id)]  # no thumbnail, the original deleted
    return str(caught.value)


# -- colour profiles --------------------------------------------------------------------------------


def srgb_profile_padded_to(size: int) -> bytes:
    """A valid sRGB ICC profile, its declared size raised to ``size`` bytes with padding after its tags."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    padded = profile + b"\x00" * (size - len(profile))
    return struct.pack(">I", size) + padded[4:]


@pytest.mark.parametrize("fmt", ["WEBP", "JPEG", "TIFF"])
async def test_a_huge_colour_profile_is_not_copied_into_every_thumbnail(
    storage: LocalStorage, settings: Settings, fmt: str
) -> None:
    """An upload carrying megabytes of ICC profile gets thumbnails of a few KB each, colours kept."""
    icc = srgb_profile_padded_to(2_000_000)
    ImageCms.ImageCmsProfile(io.BytesIO(icc))  # a profile LittleCMS reads
    data = encode(Image.new("RGB", (600, 400), (200, 30, 30)), fmt, icc_profile=icc)
    key = original_key("icc", fmt.lower())
    await storage.put(key, data)
    await run(storage, settings, "icc", key)
    record = await read_record(storage, "icc")
    assert record is not None and record.state == "done"
    assert len(record.thumbnails) == 6
    for thumb in record.thumbnails:
        assert thumb.size < MAX_ICC_BYTES, (thumb.name, thumb.format, thumb.size)
        im = Image.open(io.BytesIO(await storage.get(thumb.key)))
        assert "icc_profile" not in im.info
        r, g, b = im.convert("RGB").getpixel((10, 10))  # type: ignore[misc]
        assert abs(r - 200) < 12 and g < 45 and b < 45


def test_bytes_that_are_no_profile_are_not_copied() -> None:
    """Any bytes with ``RGB `` where a profile names its colour space are no profile to pass on."""
    garbage = b"\x00" * 16 + b"RGB " + b"\xff" * 2000
    data = encode(Image.new("RGB", (40, 30), (200, 30, 30)), "PNG", icc_profile=garbage)
    for thumb in make_thumbnails(data, {"s": 20}, ["webp", "jpeg"]):
        assert "icc_profile" not in Image.open(io.BytesIO(thumb.data)).info


def test_a_small_valid_profile_is_still_kept_with_alpha() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGBA", (40, 30), (200, 30, 30, 128)), "PNG", icc_profile=icc)
    [thumb] = make_thumbnails(data, {"s": 20})
    im = Image.open(io.BytesIO(thumb.data))
    assert im.info.get("icc_profile") == icc and im.mode == "RGBA"


def test_a_large_profile_on_a_transparent_image_keeps_the_alpha() -> None:
    data = encode(Image.new("RGBA", (40, 30), (200, 30, 30, 128)), "PNG", icc_profile=srgb_profile_padded_to(200_000))
    [thumb] = make_thumbnails(data, {"s": 20})
    im = Image.open(io.BytesIO(thumb.data))
    assert "icc_profile" not in im.info and im.mode == "RGBA"
    r, g, b, a = im.getpixel((10, 10))  # type: ignore[misc]
    assert abs(r - 200) < 12 and g < 45 and b < 45 and abs(a - 128) < 8


# -- corrupt pixel data behind valid checksums --------------------------------------------------------


async def test_a_png_with_a_broken_pixel_stream_is_rejected_not_made_black(
    storage: LocalStorage, settings: Settings
) -> None:
    """Every chunk's CRC is right but the IDAT's deflate stream is broken: corrupt, not a black thumbnail."""
    ihdr = struct.pack(">IIBBBBB", 100, 100, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"\x78\x9c" + b"\xff" * 200)  # a zlib header, then a reserved block type
        + chunk(b"IEND", b"")
    )
    error = await rejected(storage, settings, "brokenpng", data, "png")
    assert "truncated or corrupt PNG image" in error


# -- AVIF: its decoder raises RuntimeError ------------------------------------------------------------

needs_avif = pytest.mark.skipif(not features.check("avif"), reason="Pillow is built without AVIF")


def avif() -> bytes:
    return encode(Image.effect_noise((40, 30), 60).convert("RGB"), "AVIF")


def pillow_error(data: bytes) -> BaseException | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # what Pillow raises, whatever it is
        return exc
    return None


@needs_avif
def test_damaged_avif_gives_only_image_errors() -> None:
    data = avif()
    unexpected = []
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        try:
            identify(bytes(damaged))
            make_thumbnails(bytes(damaged), {"s": 20})
        except ImageError:
            continue
        except Exception as exc:  # collected, so the failure lists every kind at once
            unexpected.append((pos, repr(exc)[:100]))
    assert unexpected == [], f"{len(unexpected)} damaged bytes escaped: {unexpected[:5]}"


@needs_avif
async def test_a_damaged_avif_is_archived_not_retried(storage: LocalStorage, settings: Settings) -> None:
    data = avif()
    for pos in range(len(data)):  # the first damage on which Pillow's AVIF decoder raises RuntimeError
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        if isinstance(pillow_error(bytes(damaged)), RuntimeError):
            break
    else:
        pytest.fail("no damaged AVIF makes Pillow raise RuntimeError")
    error = await rejected(storage, settings, "badavif", bytes(damaged), "avif")
    assert "AVIF" in error


# -- TIFF with thousands of pages ----------------------------------------------------------------------


def tiff_of_pages(pages: int) -> bytes:
    """A TIFF of ``pages`` one-pixel pages, each a copy of the first page's directory (sharing its strip)."""
    single = encode(Image.new("L", (1, 1), 200), "TIFF")
    assert single[:4] == b"II*\x00"
    first = struct.unpack("<I", single[4:8])[0]
    (count,) = struct.unpack("<H", single[first : first + 2])
    entries = single[first + 2 : first + 2 + 12 * count]
    next_at = first + 2 + 12 * count
    size = 2 + 12 * count + 4
    start = len(single)
    rest = b"".join(
        struct.pack("<H", count) + entries + struct.pack("<I", start + size * (i + 1) if i < pages - 2 else 0)
        for i in range(pages - 1)
    )
    return single[:next_at] + struct.pack("<I", start) + single[next_at + 4 :] + rest


async def test_a_tiff_of_thousands_of_pages_is_not_read_to_the_end(storage: LocalStorage, settings: Settings) -> None:
    """Reading every page of such a file takes time quadratic in their number: pages are counted up to a bound."""
    small = tiff_of_pages(3)
    assert identify(small).frames == 3
    data = tiff_of_pages(MAX_TIFF_PAGES * 3)
    assert len(data) < 1_000_000
    assert identify(data).frames == MAX_TIFF_PAGES
    key = original_key("pages", "tif")
    await storage.put(key, data)
    await run(storage, settings, "pages", key)
    record = await read_record(storage, "pages")
    assert record is not None and record.state == "done"
    assert (record.width, record.height) == (1, 1)
    assert thumbnail_key("pages", "small", "webp") in await keys_of(storage)


# -- TIFF orientation: Pillow applies it itself --------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_tiff_is_turned_upright_once(orientation: int) -> None:
    """A scanner's or camera's TIFF with an orientation tag: upright, not turned twice, nor squashed."""
    displayed = quadrants(1000, 500)
    undo = UNDO[orientation]
    stored = displayed.transpose(undo) if undo is not None else displayed
    data = encode(stored, "TIFF", exif=exif_bytes(orientation))
    assert (identify(data).width, identify(data).height) == (1000, 500)
    thumbs = make_thumbnails(data, {"small": 320}, ["webp", "jpeg"])
    assert [(t.width, t.height) for t in thumbs] == [(320, 160), (320, 160)]
    for thumb in thumbs:
        im = Image.open(io.BytesIO(thumb.data))
        assert im.size == (320, 160)
        assert_quadrants(im)


async def test_a_sideways_tiff_is_recorded_and_stored_upright(storage: LocalStorage, settings: Settings) -> None:
    stored = quadrants(600, 300).transpose(Image.Transpose.ROTATE_90)  # a camera's orientation 6
    key = original_key("tiff6", "tif")
    await storage.put(key, encode(stored, "TIFF", exif=exif_bytes(6), compression="tiff_lzw"))
    await run(storage, settings, "tiff6", key)
    record = await read_record(storage, "tiff6")
    assert record is not None and record.state == "done"
    assert (record.width, record.height) == (600, 300)
    small = Image.open(io.BytesIO(await storage.get(thumbnail_key("tiff6", "small", "webp"))))
    assert small.size == (320, 160)
    assert_quadrants(small)


# -- the uploads route -----------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["", None])
async def test_an_image_sent_without_a_file_name_is_a_client_error(
    storage: LocalStorage, tmp_path: Path, filename: str | None
) -> None:
    """A part without a file name is a text field to the form parser: binary there is a 400, not a server error."""
    settings = Settings(data_dir=str(tmp_path), plugins={"images": {"upload_limit": 0}})
    services = make_services(storage, settings)
    image = encode(Image.new("RGB", (40, 30), (200, 30, 30)), "PNG")
    disposition = 'form-data; name="file"' + ("" if filename is None else f'; filename="{filename}"')
    body = (
        b"--b0undary\r\nContent-Disposition: "
        + disposition.encode()
        + b"\r\nContent-Type: image/png\r\n\r\n"
        + image
        + b"\r\n--b0undary--\r\n"
    )
    async with AsyncTestClient(upload_app(services)) as client:
        response = await client.post(
            "/uploads", content=body, headers={"Content-Type": "multipart/form-data; boundary=b0undary"}
        )
    assert response.status_code == 400, response.text
    assert "as a file, with a file name" in response.json()["detail"]
    assert await keys_of(storage) == []
    assert services.client.calls == []  # type: ignore[attr-defined]


async def test_the_served_app_answers_400_to_an_image_without_a_file_name(
    redis_url: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEWORK_LOAD_PLUGINS", "images")
    settings = Settings(redis_url=redis_url, namespace=namespace, data_dir=str(tmp_path / "data"))
    image = encode(Image.new("RGB", (40, 30), (200, 30, 30)), "PNG")
    async with serve(create_app(settings)) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post("/uploads/", files={"file": ("", image, "image/png")})
        assert response.status_code == 400, response.text
        assert "as a file, with a file name" in response.json()["detail"]
        created = await http.post("/uploads/", files={"file": ("ok.png", image, "image/png")})
        assert created.status_code == 202, created.text
