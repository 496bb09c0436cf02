"""Hostile and unusual images: every failure is an ImageError naming the problem, whatever the warnings filter.

Pytest turns warnings into errors here while production only prints them, so the cases where Pillow
warns run under both filters.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from typing import TYPE_CHECKING

import pytest
from framework_images.config import ImagesConfig
from framework_images.processing import (
    ImageError,
    ImageTooLarge,
    Thumbnail,
    TruncatedImage,
    identify,
    make_thumbnails,
)
from PIL import Image, ImageDraw

from tests.plugins.images.test_processing import encode

if TYPE_CHECKING:
    from collections.abc import Iterator

RED, GREEN = (255, 0, 0), (0, 255, 0)


def decode(thumb: Thumbnail) -> Image.Image:
    im = Image.open(io.BytesIO(thumb.data))
    im.load()
    assert im.size == (thumb.width, thumb.height)
    return im


@pytest.fixture(params=["error", "ignore"], ids=["warnings-are-errors", "warnings-ignored"])
def warnings_filter(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test as pytest does (warnings raise) and as production does (warnings are only printed)."""
    with warnings.catch_warnings():
        warnings.simplefilter(request.param)
        yield request.param


def _animations() -> dict[str, bytes]:
    base = Image.effect_noise((24, 16), 60).convert("RGB")
    rest = [base.rotate(90), base.rotate(180)]
    return {
        "gif": encode(base.convert("P"), "GIF", save_all=True, append_images=[f.convert("P") for f in rest]),
        "tiff-pages": encode(base, "TIFF", save_all=True, append_images=rest),
        "webp": encode(base, "WEBP", save_all=True, append_images=rest),
        "apng": encode(base, "PNG", save_all=True, append_images=rest),
    }


ANIMATIONS = _animations()


def _process(data: bytes) -> None:
    identify(data, max_pixels=5_000_000)
    make_thumbnails(data, {"s": 20}, ["webp", "jpeg"], max_pixels=5_000_000)


@pytest.mark.parametrize("name", sorted(ANIMATIONS))
def test_a_multi_frame_file_cut_anywhere_is_an_image_error(name: str, warnings_filter: str) -> None:
    """Counting frames reads every frame: a damaged later frame must be reported, not crash with a TypeError."""
    data = ANIMATIONS[name]
    unexpected = []
    for cut in range(1, len(data), 2):
        try:
            _process(data[:cut])
        except ImageError:
            continue
        except Exception as exc:  # collected, so the failure lists every kind at once
            unexpected.append((cut, repr(exc)[:100]))
    assert unexpected == [], f"{len(unexpected)} cuts of {len(data)} bytes escaped: {unexpected[:5]}"


def test_a_later_frame_cut_off_names_the_problem(warnings_filter: str) -> None:
    data = ANIMATIONS["tiff-pages"]
    with pytest.raises(TruncatedImage, match="truncated or corrupt"):
        identify(data[: len(data) * 2 // 3])


@pytest.mark.parametrize("seed", range(4))
def test_damaged_bytes_give_only_image_errors(seed: int, warnings_filter: str) -> None:
    """Random damage to real files of each format: an ImageError or thumbnails, never another exception."""
    rng = random.Random(seed)
    base = Image.effect_noise((32, 24), 60).convert("RGB")
    sources = [
        encode(base, "JPEG"),
        encode(base, "PNG"),
        encode(base, "TIFF"),
        encode(base.convert("CMYK"), "TIFF", compression="tiff_lzw"),
        encode(base, "BMP"),
        encode(base, "WEBP"),
        *ANIMATIONS.values(),
    ]
    unexpected = []
    for _ in range(400):
        data = bytearray(rng.choice(sources))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            _process(bytes(data))
        except ImageError:
            continue
        except Exception as exc:  # collected, so the failure lists every kind at once
            unexpected.append(repr(exc)[:100])
    assert unexpected == [], f"{len(unexpected)} of 400 damaged files escaped: {sorted(set(unexpected))[:5]}"


# -- shapes the output formats cannot hold --------------------------------------------------------


def test_a_very_tall_image_gets_thumbnails_within_the_webp_limit() -> None:
    """A full-page screenshot: 100 wide, 20000 high. WebP holds at most 16383 pixels a side."""
    im = Image.new("RGB", (100, 20_000), RED)
    ImageDraw.Draw(im).rectangle((0, 10_000, 99, 19_999), fill=GREEN)
    thumbs = make_thumbnails(encode(im, "PNG"), {"small": 320, "tiny": 50}, ["webp", "jpeg"])
    assert [(t.name, t.format, t.width, t.height) for t in thumbs] == [
        ("small", "webp", 82, 16_383),  # narrower than asked, so the height fits; the aspect ratio is kept
        ("small", "jpeg", 82, 16_383),
        ("tiny", "webp", 50, 10_000),
        ("tiny", "jpeg", 50, 10_000),
    ]
    for thumb in thumbs:
        out = decode(thumb).convert("RGB")
        top, bottom = (
            out.getpixel((thumb.width // 2, thumb.height // 4)),
            out.getpixel((thumb.width // 2, thumb.height * 3 // 4)),
        )
        assert isinstance(top, tuple) and isinstance(bottom, tuple)
        assert top[0] > 200 > top[1] and bottom[1] > 200 > bottom[0]


def test_a_very_tall_image_within_the_jpeg_limit() -> None:
    thumbs = make_thumbnails(encode(Image.new("L", (2, 70_000), 90), "PNG"), {"s": 320}, ["jpeg"])
    assert [(t.width, t.height) for t in thumbs] == [(2, 65_500)]  # libjpeg's largest side
    decode(thumbs[0])


def test_sizes_wider_than_a_format_allows_are_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match=r"sizes\['huge'\]=16384 is invalid: webp thumbnails are at most 16383"):
        ImagesConfig(sizes={"huge": 16_384})
    assert ImagesConfig(sizes={"huge": 16_384}, formats=["jpeg"]).sizes == {"huge": 16_384}
    with pytest.raises(ValueError, match="formats"):
        ImagesConfig(formats=["gif"])  # type: ignore[list-item]


# -- transparency given as one colour -------------------------------------------------------------


def test_rgb_png_with_a_transparent_colour_keeps_it_transparent() -> None:
    im = Image.new("RGB", (200, 100), RED)
    ImageDraw.Draw(im).rectangle((100, 0, 199, 99), fill=GREEN)
    data = encode(im, "PNG", transparency=GREEN)  # a tRNS chunk: green pixels are transparent
    webp, jpeg = make_thumbnails(data, {"s": 200}, ["webp", "jpeg"])
    out = decode(webp)
    assert out.mode == "RGBA"
    assert out.getpixel((40, 50)) == pytest.approx((255, 0, 0, 255), abs=30)
    assert out.getpixel((160, 50))[3] < 10  # type: ignore[index]
    flat = decode(jpeg).getpixel((160, 50))  # JPEG: transparent is white, as for every other transparency
    assert flat == pytest.approx((255, 255, 255), abs=30)


def test_16_bit_grey_png_with_a_transparent_level_keeps_it_transparent() -> None:
    im = Image.new("I;16", (200, 100), 40_000)
    ImageDraw.Draw(im).rectangle((100, 0, 199, 99), fill=1000)
    data = encode(im, "PNG", transparency=1000)
    out = decode(make_thumbnails(data, {"s": 200})[0])
    assert out.mode == "RGBA"
    assert out.getpixel((40, 50)) == pytest.approx((156, 156, 156, 255), abs=4)
    assert out.getpixel((160, 50))[3] < 10  # type: ignore[index]


# -- Pillow's own pixel limit ---------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``: tiny bytes, huge image."""

    def chunk(name: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_pillows_pixel_limit_holds_when_its_warning_is_only_printed(warnings_filter: str) -> None:
    """Between Pillow's limit (about 89 M pixels) and twice that, Pillow only warns; the limit must still hold."""
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    data = png_header(10_000, 10_000)  # 100 M pixels: above the limit, below twice it
    assert limit < 100_000_000 < 2 * limit
    with pytest.raises(ImageTooLarge, match="too large"):
        identify(data, max_pixels=200_000_000)
    with pytest.raises(ImageTooLarge, match="too large"):
        make_thumbnails(data, {"s": 100}, max_pixels=200_000_000)
