"""Thumbnails with Pillow. Pure, synchronous and CPU-bound: callers run these functions in a thread.

:func:`make_thumbnails` decodes an image once and writes every configured size from it:

- The real type is read from the bytes (:func:`sniff`, then Pillow), never from a client's claim.
- JPEGs are decoded at a reduced scale when the largest thumbnail allows it (``draft``), and each
  size is resized from the next larger one, with Pillow's ``reducing_gap`` two-step resize.
- EXIF orientation is applied (the output is upright, its EXIF is gone); the aspect ratio is kept;
  an image narrower than a size is not enlarged (that thumbnail keeps the original width). No side
  of a thumbnail exceeds what its formats can hold (:data:`MAX_SIDES`: 16383 pixels for WebP), so a
  very tall image (a full-page screenshot) gets a narrower thumbnail than the size asks for.
- EXIF (GPS, camera), XMP and comments are not written to thumbnails. An RGB ICC profile is kept,
  so wide-gamut photos keep their colours, when it is a valid profile of at most
  :data:`MAX_ICC_BYTES`: a larger one is applied (the pixels are converted to sRGB) rather than
  copied into every thumbnail, and one that is not a valid profile is dropped. CMYK is converted to
  sRGB (through its ICC profile when it has one).
- Palette, grey, 16-bit and CMYK images become RGB; transparency (an alpha channel, or a
  transparent colour as in palette, grey and RGB PNGs) becomes an alpha channel (WebP keeps it;
  JPEG gets a white background). Animations give their first frame.
- Bytes Pillow cannot decode, whatever it raises (or warns, when warnings are errors), give an
  :class:`ImageError` saying what is wrong, never another exception.

Outputs are deterministic: the same input and options give the same bytes.
"""

from __future__ import annotations

import io
import math
import struct
from typing import TYPE_CHECKING, Any

import msgspec
from PIL import ExifTags, Image, ImageCms, ImageMath, UnidentifiedImageError

from framework_images.config import MAX_SIDES
from framework_images.errors import ImageError, ImageTooLarge, NotAnImage, TruncatedImage

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from PIL import ImageFile

__all__ = (
    "MAX_ICC_BYTES",
    "MAX_SIDES",
    "MAX_TIFF_PAGES",
    "OUTPUT_FORMATS",
    "ImageError",
    "ImageTooLarge",
    "NotAnImage",
    "SourceImage",
    "Thumbnail",
    "TruncatedImage",
    "identify",
    "make_thumbnails",
    "sniff",
)


class SourceImage(msgspec.Struct, frozen=True, kw_only=True):
    """What the bytes really are.

    Attributes:
        format: Pillow's format name (``JPEG``, ``PNG``, ...).
        mime_type: the matching MIME type.
        ext: the usual file extension, without the dot.
        width: width as displayed, after EXIF orientation.
        height: height as displayed.
        frames: number of frames (more than 1 for animations); a TIFF's pages are counted up to
            :data:`MAX_TIFF_PAGES`.
    """

    format: str
    mime_type: str
    ext: str
    width: int
    height: int
    frames: int = 1


class Thumbnail(msgspec.Struct, frozen=True, kw_only=True):
    """One encoded thumbnail.

    Attributes:
        name: the size name (``small``, ...).
        format: ``webp`` or ``jpeg``.
        width: pixel width.
        height: pixel height.
        content_type: the MIME type of ``data``.
        ext: the file extension of ``format``, without the dot.
        data: the encoded image.
    """

    name: str
    format: str
    width: int
    height: int
    content_type: str
    ext: str
    data: bytes


OUTPUT_FORMATS: dict[str, tuple[str, str, str]] = {
    "webp": ("WEBP", "image/webp", "webp"),
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
}
"""Output format -> (Pillow format, MIME type, extension)."""

MAX_ICC_BYTES = 64 * 1024
"""The largest ICC profile copied into thumbnails (sRGB's is about 3 KB, Display P3's under 1 KB)."""

MAX_TIFF_PAGES = 1000
"""The TIFF pages :func:`identify` reads and counts: Pillow checks each page against every one before
it, so reading all the pages of a file made of thousands of tiny ones takes minutes."""

# Pillow format -> (MIME type, extension); the inputs accepted, a list kept short on purpose.
_INPUTS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "MPO": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
    "TIFF": ("image/tiff", "tif"),
    "BMP": ("image/bmp", "bmp"),
    "AVIF": ("image/avif", "avif"),
}
Image.init()
_OPEN_FORMATS = tuple(name for name in _INPUTS if name in Image.OPEN)
_SUPPORTED = "JPEG, PNG, GIF, WebP, TIFF, BMP" + (", AVIF" if "AVIF" in _OPEN_FORMATS else "")

_ORIENTATION = ExifTags.Base.Orientation
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow raises on damaged bytes (RuntimeError: the AVIF decoder), and its warnings when a
# warnings filter makes them errors.
_DECODE_ERRORS = (
    OSError,
    RuntimeError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Warning,
)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

_MAGIC: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (0, b"GIF87a", "gif", "image/gif"),
    (0, b"GIF89a", "gif", "image/gif"),
    (8, b"WEBP", "webp", "image/webp"),
    (0, b"II*\x00", "tif", "image/tiff"),
    (0, b"MM\x00*", "tif", "image/tiff"),
    (0, b"BM", "bmp", "image/bmp"),
    (4, b"ftypavif", "avif", "image/avif"),
    (4, b"ftypavis", "avif", "image/avif"),
    (4, b"ftypheic", "heic", "image/heic"),
    (4, b"ftypheix", "heic", "image/heic"),
    (4, b"ftypmif1", "heif", "image/heif"),
)


def sniff(head: bytes) -> tuple[str, str] | None:
    """Guess an image type from the first bytes of a file, without decoding.

    Args:
        head: the first bytes (16 are enough).

    Returns:
        ``(extension, MIME type)``, or None when no known image signature matches.
    """
    for offset, magic, ext, mime in _MAGIC:
        if head[offset : offset + len(magic)] == magic and (magic != b"WEBP" or head[:4] == b"RIFF"):
            return ext, mime
    return None


def _unreadable(data: bytes, detail: object) -> ImageError:
    """The error for bytes Pillow cannot open: not an image, unsupported, or a damaged header."""
    kind = sniff(data[:16])
    if kind is None:
        return NotAnImage(f"not an image: the data (starting {data[:8]!r}) is none of {_SUPPORTED}")
    name = kind[1].removeprefix("image/").upper()
    if kind[0] in ("heic", "heif"):
        return NotAnImage(f"not a supported image: {name} cannot be read; supported are {_SUPPORTED}")
    return TruncatedImage(f"truncated or corrupt image: the data starts like a {name} file ({detail})")


def _open(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Open (header only), mapping failures to :class:`ImageError` and checking the pixel limit."""
    if not data:
        raise NotAnImage("not an image: the file is empty")
    try:
        im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image too large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise _unreadable(data, exc) from exc
    except _DECODE_ERRORS as exc:
        raise _unreadable(data, exc) from exc
    # Pillow only warns between its limit and twice that; a warning must not decide whether to decode.
    pillow_limit = Image.MAX_IMAGE_PIXELS
    limit = max_pixels if pillow_limit is None else min(max_pixels, pillow_limit)
    width, height = im.size
    if width * height > limit:
        raise ImageTooLarge(
            f"image too large: {width}x{height} is {width * height} pixels, above the limit of {limit} "
            "(a possible decompression bomb)"
        )
    return im


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except _DECODE_ERRORS:  # damaged EXIF: show the image as stored
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def identify(data: bytes, *, max_pixels: int = 50_000_000) -> SourceImage:
    """Say what the bytes really are, reading the header only.

    Raises:
        NotAnImage: not an image in a supported format.
        TruncatedImage: the header is damaged, or a later frame's (counting frames reads them all).
        ImageTooLarge: more than ``max_pixels`` pixels, or more than Pillow's ``Image.MAX_IMAGE_PIXELS``.
    """
    im = _open(data, max_pixels)
    fmt = im.format or ""
    mime, ext = _INPUTS.get(fmt, ("application/octet-stream", "bin"))
    width, height = im.size
    if _orientation(im) >= 5 and fmt != "TIFF":  # Pillow gives a TIFF's displayed size already
        width, height = height, width
    try:  # counting frames reads every frame's header: a damaged later frame shows here
        frames = _count_frames(im)
    except _DECODE_ERRORS as exc:
        raise TruncatedImage(f"truncated or corrupt {fmt} image: a frame after the first is damaged ({exc})") from exc
    return SourceImage(format=fmt, mime_type=mime, ext=ext, width=width, height=height, frames=frames)


def _count_frames(im: ImageFile.ImageFile) -> int:
    """The number of frames; a TIFF's pages are read one by one, up to :data:`MAX_TIFF_PAGES`."""
    if im.format != "TIFF":
        return int(getattr(im, "n_frames", 1))
    pages = 1
    while pages < MAX_TIFF_PAGES:
        try:
            im.seek(pages)
        except EOFError:  # no more pages
            break
        pages += 1
    return pages


def _load(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Open, verify the whole file where the format allows it (PNG checksums), and reopen."""
    checked = _open(data, max_pixels)
    try:
        checked.verify()
    except _DECODE_ERRORS as exc:
        raise TruncatedImage(f"truncated or corrupt {checked.format} image: {exc}") from exc
    return _open(data, max_pixels)


def _decode(im: ImageFile.ImageFile) -> None:
    try:
        im.load()
    except _DECODE_ERRORS as exc:
        raise TruncatedImage(f"truncated or corrupt {im.format} image: {exc}") from exc


def _to_rgb(im: Image.Image) -> tuple[Image.Image, bytes | None]:
    """Convert to RGB or RGBA; return the image and the ICC profile to write with it (RGB profiles only)."""
    icc: bytes | None = im.info.get("icc_profile") or None
    mode = im.mode
    if mode == "CMYK":
        return _cmyk_to_rgb(im, icc), None
    keep_icc = icc if icc is not None and icc[16:20] == b"RGB " else None
    if mode == "RGBA" or (mode == "RGB" and "transparency" not in im.info):
        return _rgb_profile(im, keep_icc)
    if mode == "I" or mode.startswith("I;16"):
        im = _deep_grey_to_l(im)
    elif mode == "F":
        im = im.convert("L")
    target = "RGBA" if im.mode in _ALPHA_MODES or "transparency" in im.info else "RGB"
    try:
        converted = im.convert(target)
    except ValueError as exc:
        raise NotAnImage(f"not a supported image: colour mode {mode} cannot be converted to RGB") from exc
    return _rgb_profile(converted, keep_icc)


def _rgb_profile(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """An RGB(A) image and the profile to write with it: at most :data:`MAX_ICC_BYTES` and valid, or none.

    A larger valid profile is applied instead (the pixels converted to sRGB); bytes that are no valid
    profile are dropped, the pixels taken as sRGB.
    """
    if icc is None:
        return im, None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im, None
    if len(icc) <= MAX_ICC_BYTES:
        return im, icc
    try:
        converted = ImageCms.profileToProfile(im.convert("RGB"), profile, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im, None
    if converted is None:
        return im, None
    if im.mode == "RGBA":
        converted.putalpha(im.getchannel("A"))
    return converted, None


def _deep_grey_to_l(im: Image.Image) -> Image.Image:
    """16- or 32-bit grey to 8-bit ``L`` (``LA`` when a grey level is transparent, as in a PNG's tRNS)."""
    deep = im.convert("I")
    transparent = im.info.get("transparency")
    high = deep.getextrema()[1]  # one band, so (min, max)
    grey = deep.point(lambda value: value * (1 / 256)) if isinstance(high, int | float) and high > 255 else deep
    grey = grey.convert("L")
    grey.info.pop("transparency", None)  # a 16-bit level; the alpha channel below replaces it
    if not isinstance(transparent, int):
        return grey
    alpha = ImageMath.lambda_eval(lambda args: (args["im"] != transparent) * 255, im=deep)
    if not isinstance(alpha, Image.Image):
        return grey
    grey.putalpha(alpha.convert("L"))
    return grey


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    if icc is not None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(im, source, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            converted = None
        if converted is not None:
            return converted
    return im.convert("RGB")


def _plan(sizes: Mapping[str, int], width: int, height: int, max_side: int) -> list[tuple[str, int, int]]:
    """(name, width, height) of each thumbnail as displayed, largest first.

    Never wider than the source, and no side above ``max_side``: a thumbnail that would be taller is
    made narrower, keeping the aspect ratio (down to 1 pixel wide).
    """
    plan = []
    for name, wanted in sizes.items():
        w = min(wanted, width, max_side)
        h = max(1, round(height * w / width))
        if h > max_side:
            w, h = max(1, round(width * max_side / height)), max_side
        plan.append((name, w, h))
    plan.sort(key=lambda item: (-item[1], item[0]))
    return plan


def _encode(im: Image.Image, fmt: str, icc: bytes | None, options: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    extra: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if fmt == "webp":
        im.save(buf, "WEBP", quality=options["webp_quality"], method=options["webp_method"], **extra)
    else:
        if im.mode == "RGBA":
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(im, mask=im.getchannel("A"))
            im = flat
        im.save(buf, "JPEG", quality=options["jpeg_quality"], **extra)
    return buf.getvalue()


def make_thumbnails(
    data: bytes,
    sizes: Mapping[str, int],
    formats: Sequence[str] = ("webp",),
    *,
    webp_quality: int = 80,
    webp_method: int = 4,
    jpeg_quality: int = 85,
    reducing_gap: float | None = 2.0,
    max_pixels: int = 50_000_000,
) -> list[Thumbnail]:
    """Make a thumbnail of each size in each format (see the module docstring for what is done).

    Args:
        data: the original file's bytes.
        sizes: size name -> width in pixels.
        formats: ``webp`` and/or ``jpeg``.
        webp_quality: lossy WebP quality, 1-100.
        webp_method: WebP encoder effort, 0-6.
        jpeg_quality: JPEG quality, 1-100.
        reducing_gap: Pillow's two-step resize factor, or None for a plain resample of the full image.
        max_pixels: refuse images with more pixels than this.

    Returns:
        The thumbnails, largest size first, formats in the given order within a size.

    Raises:
        NotAnImage: not an image in a supported format.
        TruncatedImage: cut short or corrupt.
        ImageTooLarge: more than ``max_pixels`` pixels, or more than Pillow's ``Image.MAX_IMAGE_PIXELS``.
    """
    unknown = [fmt for fmt in formats if fmt not in OUTPUT_FORMATS]
    if unknown or not sizes:
        raise ValueError(f"formats {unknown!r} are unknown or no sizes are given")
    im = _load(data, max_pixels)
    if im.format not in ("JPEG", "MPO"):
        # Only JPEG is decoded at a reduced scale (draft, below), so the others are decoded now, before
        # their orientation is read: loading a TIFF applies its orientation (and drops the tag), and
        # reading a PNG's EXIF decodes it, where a failure must not pass for damaged EXIF (a second
        # load would then give the pixels decoded so far without an error).
        _decode(im)
    orientation = _orientation(im)
    rotated = orientation >= 5
    width, height = (im.height, im.width) if rotated else im.size
    plan = _plan(sizes, width, height, min(MAX_SIDES[fmt] for fmt in formats))
    if reducing_gap is not None:  # JPEG: decode at 1/2, 1/4 or 1/8 scale when the largest size allows
        big_w, big_h = plan[0][1], plan[0][2]
        if rotated:
            big_w, big_h = big_h, big_w
        im.draft(None, (math.ceil(big_w * reducing_gap), math.ceil(big_h * reducing_gap)))
    _decode(im)
    source, icc = _to_rgb(im)
    source.info = {}  # EXIF, XMP, comments: none of it reaches the thumbnails
    options = {"webp_quality": webp_quality, "webp_method": webp_method, "jpeg_quality": jpeg_quality}
    out: list[Thumbnail] = []
    for name, w, h in plan:
        stored = (h, w) if rotated else (w, h)
        if source.size != stored:
            source = source.resize(stored, Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
        upright = source.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else source
        for fmt in formats:
            _, mime, ext = OUTPUT_FORMATS[fmt]
            encoded = _encode(upright, fmt, icc, options)
            out.append(Thumbnail(name=name, format=fmt, width=w, height=h, content_type=mime, ext=ext, data=encoded))
    return out
