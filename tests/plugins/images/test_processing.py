"""Pillow thumbnails: every mode and orientation checked on the output pixels, and every bad input."""

from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING

import pytest
from framework_images.processing import (
    ImageError,
    ImageTooLarge,
    NotAnImage,
    Thumbnail,
    TruncatedImage,
    identify,
    make_thumbnails,
    sniff,
)
from PIL import ExifTags, Image, ImageCms, ImageDraw

from framework.errors import FrameworkError

if TYPE_CHECKING:
    from collections.abc import Sequence

SIZES = {"small": 320, "medium": 800, "large": 1600}
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def decode(thumb: Thumbnail) -> Image.Image:
    im = Image.open(io.BytesIO(thumb.data))
    im.load()
    assert im.format == {"webp": "WEBP", "jpeg": "JPEG"}[thumb.format]
    assert im.size == (thumb.width, thumb.height)
    return im


def near(pixel: Sequence[int] | float | None, want: Sequence[int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, want, strict=False))


def quadrants(width: int, height: int) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    im = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(im)
    hw, hh = width // 2, height // 2
    draw.rectangle((0, 0, hw - 1, hh - 1), fill=RED)
    draw.rectangle((hw, 0, width - 1, hh - 1), fill=GREEN)
    draw.rectangle((0, hh, hw - 1, height - 1), fill=BLUE)
    draw.rectangle((hw, hh, width - 1, height - 1), fill=WHITE)
    return im


def assert_quadrants(im: Image.Image) -> None:
    w, h = im.size
    rgb = im.convert("RGB")
    corners = [(w // 5, h // 5), (w * 4 // 5, h // 5), (w // 5, h * 4 // 5), (w * 4 // 5, h * 4 // 5)]
    got = [rgb.getpixel(xy) for xy in corners]
    for pixel, want in zip(got, (RED, GREEN, BLUE, WHITE), strict=True):
        assert near(pixel, want), got


# Stored = displayed.transpose(UNDO[o]) is what a camera writes with EXIF orientation o.
UNDO = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def exif_bytes(orientation: int = 1, *, gps: bool = False) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestCam"
    if gps:
        ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
        ifd[ExifTags.GPS.GPSLatitudeRef] = "N"
        ifd[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.5)
        ifd[ExifTags.GPS.GPSLongitudeRef] = "E"
        ifd[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 3.2)
    return exif.tobytes()


# -- orientation, size, aspect ratio --------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_is_applied(orientation: int, fmt: str) -> None:
    displayed = quadrants(1000, 500)
    undo = UNDO[orientation]
    stored = displayed.transpose(undo) if undo is not None else displayed
    data = encode(stored, fmt, exif=exif_bytes(orientation), quality=95)
    thumbs = make_thumbnails(data, {"small": 320, "medium": 800}, ["webp", "jpeg"])
    assert [(t.name, t.format, t.width, t.height) for t in thumbs] == [
        ("medium", "webp", 800, 400),
        ("medium", "jpeg", 800, 400),
        ("small", "webp", 320, 160),
        ("small", "jpeg", 320, 160),
    ]
    for thumb in thumbs:
        im = decode(thumb)
        assert_quadrants(im)
        assert not im.getexif()  # the orientation tag is gone with the rest of EXIF
    info = identify(data)
    assert (info.width, info.height) == (1000, 500)


def test_aspect_ratio_and_every_size() -> None:
    data = encode(Image.new("RGB", (3000, 1000), RED), "JPEG")
    thumbs = make_thumbnails(data, SIZES)
    assert [(t.name, t.width, t.height) for t in thumbs] == [
        ("large", 1600, 533),
        ("medium", 800, 267),
        ("small", 320, 107),
    ]
    for thumb in thumbs:
        assert near(decode(thumb).getpixel((10, 10)), RED)
        assert thumb.content_type == "image/webp" and thumb.ext == "webp"


def test_smaller_images_are_not_enlarged() -> None:
    data = encode(quadrants(500, 250), "PNG")
    thumbs = make_thumbnails(data, SIZES, ["webp", "jpeg"])
    assert [(t.name, t.format, t.width, t.height) for t in thumbs] == [
        ("large", "webp", 500, 250),
        ("large", "jpeg", 500, 250),
        ("medium", "webp", 500, 250),
        ("medium", "jpeg", 500, 250),
        ("small", "webp", 320, 160),
        ("small", "jpeg", 320, 160),
    ]
    for thumb in thumbs:
        assert_quadrants(decode(thumb))


def test_tall_and_tiny_images() -> None:
    thumbs = make_thumbnails(encode(Image.new("RGB", (100, 4000), BLUE), "PNG"), {"s": 50})
    assert (thumbs[0].width, thumbs[0].height) == (50, 2000)
    thumbs = make_thumbnails(encode(Image.new("RGB", (4000, 3), BLUE), "PNG"), {"s": 40})
    assert (thumbs[0].width, thumbs[0].height) == (40, 1)  # never 0 pixels high
    thumbs = make_thumbnails(encode(Image.new("RGB", (1, 1), GREEN), "PNG"), SIZES)
    assert {(t.width, t.height) for t in thumbs} == {(1, 1)}


def test_large_jpeg_uses_reduced_decoding_and_keeps_quality() -> None:
    displayed = quadrants(4000, 3000)
    data = encode(displayed.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif_bytes(6), quality=90)
    thumbs = make_thumbnails(data, {"small": 320}, reducing_gap=2.0)
    im = decode(thumbs[0])
    assert im.size == (320, 240)
    assert_quadrants(im)
    plain = make_thumbnails(data, {"small": 320}, reducing_gap=None)
    assert plain[0].data != thumbs[0].data  # the fast path really is a different path
    assert_quadrants(decode(plain[0]))


def test_output_is_deterministic() -> None:
    data = encode(quadrants(1200, 900), "JPEG", exif=exif_bytes(3, gps=True))
    first = make_thumbnails(data, SIZES, ["webp", "jpeg"])
    second = make_thumbnails(data, SIZES, ["webp", "jpeg"])
    assert [t.data for t in first] == [t.data for t in second]


# -- metadata -------------------------------------------------------------------------------------


def webp_chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        name, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        chunks.append(name)
        pos += 8 + size + (size & 1)
    return chunks


def test_gps_exif_and_xmp_are_stripped() -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    data = encode(quadrants(900, 600), "JPEG", exif=exif_bytes(1, gps=True), xmp=xmp, comment=b"secret")
    source = Image.open(io.BytesIO(data))
    assert source.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the original does carry GPS
    thumbs = make_thumbnails(data, {"small": 320}, ["webp", "jpeg"])
    webp, jpeg = (decode(t) for t in thumbs)
    assert not webp.getexif() and not jpeg.getexif()
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment"):
        assert key not in webp.info and key not in jpeg.info
    assert set(webp_chunks(thumbs[0].data)) <= {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ICCP"}
    for raw in (thumbs[0].data, thumbs[1].data):
        assert b"Exif" not in raw and b"TestCam" not in raw and b"xmpmeta" not in raw and b"secret" not in raw


def test_rgb_icc_profile_is_kept() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(quadrants(600, 400), "JPEG", icc_profile=icc)
    for thumb in make_thumbnails(data, {"s": 300}, ["webp", "jpeg"]):
        assert decode(thumb).info.get("icc_profile") == icc


# -- colour modes ---------------------------------------------------------------------------------


def test_cmyk_becomes_rgb() -> None:
    im = Image.new("CMYK", (600, 400), (0, 255, 255, 0))  # red
    ImageDraw.Draw(im).rectangle((300, 0, 599, 399), fill=(255, 255, 0, 0))  # blue
    for data in (encode(im, "JPEG", quality=95), encode(im, "TIFF")):
        assert Image.open(io.BytesIO(data)).mode == "CMYK"
        for thumb in make_thumbnails(data, {"s": 300}, ["webp", "jpeg"]):
            out = decode(thumb)
            assert out.mode == "RGB"
            assert near(out.getpixel((50, 100)), RED)
            assert near(out.getpixel((250, 100)), BLUE)


def palette_with_transparency() -> Image.Image:
    im = Image.new("P", (400, 200), 0)
    im.putpalette([*RED, *GREEN] + [0] * (254 * 3))
    ImageDraw.Draw(im).rectangle((200, 0, 399, 199), fill=1)
    im.info["transparency"] = 1  # the green half is transparent
    return im


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_keeps_alpha(fmt: str) -> None:
    data = encode(palette_with_transparency(), fmt)
    webp, jpeg = make_thumbnails(data, {"s": 200}, ["webp", "jpeg"])
    im = decode(webp)
    assert im.mode == "RGBA"
    assert near(im.getpixel((40, 50)), (*RED, 255), 30)
    assert im.getpixel((160, 50))[3] < 10  # type: ignore[index]
    flat = decode(jpeg)  # JPEG has no alpha: transparent parts are white
    assert flat.mode == "RGB"
    assert near(flat.getpixel((40, 50)), RED)
    assert near(flat.getpixel((160, 50)), WHITE)


def test_rgba_png_keeps_alpha_without_dark_fringes() -> None:
    im = Image.new("RGBA", (800, 400), (0, 0, 0, 0))
    ImageDraw.Draw(im).rectangle((0, 0, 399, 399), fill=(*WHITE, 255))
    thumb = make_thumbnails(encode(im, "PNG"), {"s": 100})[0]
    out = decode(thumb)
    assert out.mode == "RGBA"
    assert near(out.getpixel((10, 25)), (*WHITE, 255), 20)
    assert out.getpixel((90, 25))[3] < 10  # type: ignore[index]
    edge = out.getpixel((49, 25))  # the edge pixel stays white, only its alpha falls off
    assert isinstance(edge, tuple) and min(edge[:3]) > 200


@pytest.mark.parametrize(
    ("mode", "value", "want"),
    [("L", 128, 128), ("1", 255, 255), ("I;16", 32768, 128), ("I", 40000, 156), ("I", 200, 200), ("F", 99.6, 100)],
)
def test_grey_and_deep_modes_become_rgb(mode: str, value: float, want: int) -> None:
    im = Image.new(mode, (300, 200), value)
    fmt = "TIFF" if mode in ("I", "F") else "PNG"
    data = encode(im, fmt)
    out = decode(make_thumbnails(data, {"s": 100})[0])
    assert out.mode == "RGB"
    assert near(out.getpixel((50, 30)), (want, want, want), 6)


def test_grey_with_alpha() -> None:
    im = Image.new("LA", (300, 200), (90, 255))
    ImageDraw.Draw(im).rectangle((150, 0, 299, 199), fill=(90, 0))
    out = decode(make_thumbnails(encode(im, "PNG"), {"s": 150})[0])
    assert out.mode == "RGBA"
    assert near(out.getpixel((20, 50)), (90, 90, 90, 255), 8)
    assert out.getpixel((130, 50))[3] < 10  # type: ignore[index]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animation_gives_its_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (300, 200), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert identify(data).frames == 3
    thumbs = make_thumbnails(data, {"s": 150}, ["webp", "jpeg"])
    for thumb in thumbs:
        out = decode(thumb)
        assert getattr(out, "n_frames", 1) == 1
        assert near(out.getpixel((75, 50)), RED)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "WEBP", "PNG", "JPEG", "GIF"])
def test_each_input_format(fmt: str) -> None:
    data = encode(quadrants(640, 480), fmt)
    info = identify(data)
    assert (info.format, info.width, info.height, info.frames) == (fmt, 640, 480, 1)
    assert sniff(data[:16]) == (info.ext, info.mime_type)
    assert_quadrants(decode(make_thumbnails(data, {"s": 320})[0]))


# -- bad input ------------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``: tiny bytes, huge image."""

    def chunk(name: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + name + body + struct.pack(">I", zlib.crc32(name + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def damaged_png() -> bytes:
    data = bytearray(encode(Image.effect_noise((200, 200), 60).convert("RGB"), "PNG"))
    data[len(data) // 2] ^= 0xFF  # inside IDAT: the chunk checksum no longer matches
    return bytes(data)


BAD_INPUTS = [
    ("empty", b"", NotAnImage, "the file is empty"),
    ("text", b"hello, this is not an image at all", NotAnImage, "not an image"),
    ("pdf", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", NotAnImage, "not an image"),
    ("heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", NotAnImage, "HEIC"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', NotAnImage, "not an image"),
    ("ico", encode(Image.new("RGB", (32, 32)), "ICO"), NotAnImage, "not an image"),
    ("jpeg-header-only", encode(quadrants(400, 300), "JPEG")[:120], TruncatedImage, "truncated"),
    ("jpeg-cut", encode(Image.effect_noise((400, 300), 50), "JPEG")[:3000], TruncatedImage, "truncated"),
    ("png-cut", encode(Image.effect_noise((300, 300), 50), "PNG")[:2000], TruncatedImage, "truncated"),
    ("png-damaged", damaged_png(), TruncatedImage, "corrupt"),
    ("gif-cut", encode(Image.effect_noise((300, 300), 50).convert("P"), "GIF")[:500], TruncatedImage, "truncated"),
    ("webp-cut", encode(Image.effect_noise((300, 300), 50), "WEBP")[:200], TruncatedImage, "truncated"),
    ("bomb", png_header(100_000, 100_000), ImageTooLarge, "decompression bomb"),
    ("pillow-warning-band", png_header(10_000, 10_000), ImageTooLarge, "too large"),
]


@pytest.mark.parametrize(
    ("data", "error", "message"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_names_the_problem(data: bytes, error: type[ImageError], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        make_thumbnails(data, SIZES, max_pixels=200_000_000)
    assert isinstance(info.value, FrameworkError) and isinstance(info.value, ValueError)


def test_pixel_limit() -> None:
    data = encode(Image.new("RGB", (2000, 1000)), "PNG")
    with pytest.raises(ImageTooLarge, match=r"2000x1000 is 2000000 pixels, above the limit of 1999999"):
        make_thumbnails(data, SIZES, max_pixels=1_999_999)
    with pytest.raises(ImageTooLarge):
        identify(data, max_pixels=1_999_999)
    assert make_thumbnails(data, {"s": 10}, max_pixels=2_000_000)


def test_unknown_output_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown"):
        make_thumbnails(encode(Image.new("RGB", (10, 10)), "PNG"), SIZES, ["gif"])


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", ("jpg", "image/jpeg")),
        (b"\x89PNG\r\n\x1a\n\x00\x00", ("png", "image/png")),
        (b"GIF89a\x01\x00", ("gif", "image/gif")),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ("webp", "image/webp")),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"II*\x00\x08\x00", ("tif", "image/tiff")),
        (b"BM\x00\x00", ("bmp", "image/bmp")),
        (b"\x00\x00\x00\x1cftypavif", ("avif", "image/avif")),
        (b"\x00\x00\x00\x18ftypheic", ("heic", "image/heic")),
        (b"%PDF-1.4", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff(head) == expected
