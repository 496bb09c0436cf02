"""Thumbnail speed: framework-images against a bare Pillow script doing the same resizes, in one run.

Run from the repository root::

    python -m bench.images_bench                 # 8 photos, 5 runs
    python -m bench.images_bench --photos 4 --runs 3 --formats webp jpeg --max-ratio 1.25

It generates photos of realistic sizes and content (12 MP and 24 MP camera JPEGs with gradients,
texture and grain, a portrait phone photo stored sideways with EXIF orientation 6, and PNG
screenshots), then times, image by image and alternating the order in every run:

- ``framework``: what the ``image:process`` handler runs in its thread, ``identify`` then
  ``make_thumbnails`` (checks, EXIF orientation, metadata stripping, mode handling);
- ``bare``: a plain Pillow script making the same thumbnails with the same fast paths (JPEG draft,
  ``reducing_gap``, one decode, each size from the next larger), without any of the checks; its
  output is checked to be byte-identical to ours, so both do the same work;
- ``naive`` (for reference): the usual script, ``Image.open`` + ``exif_transpose`` + ``thumbnail``
  per size, without draft sharing.

It prints thumbnails per second (median of the runs) and the framework/bare time ratio; with
``--max-ratio`` it exits with status 1 when the ratio is above it.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from framework_images.config import ImagesConfig
from framework_images.processing import identify, make_thumbnails
from PIL import ExifTags, Image, ImageDraw, ImageFilter, ImageOps

CONFIG = ImagesConfig()
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes


# -- generating realistic photos ------------------------------------------------------------------


def _scene(width: int, height: int, seed: int) -> Image.Image:
    """Sky-to-ground gradients, soft blotches, some shapes with edges, and sensor grain."""
    sky = Image.linear_gradient("L").resize((width, height))
    side = Image.linear_gradient("L").rotate(90).resize((width, height))
    blotches = Image.effect_noise((max(1, width // 64), max(1, height // 64)), 80 + seed % 20).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    r = Image.blend(sky, blotches, 0.45)
    g = Image.blend(side, blotches.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 0.35)
    b = Image.blend(ImageOps.invert(sky), side, 0.4)
    im = Image.merge("RGB", (r, g, b))
    draw = ImageDraw.Draw(im)
    for n in range(12):
        x = (seed * 7919 + n * 104729) % width
        y = (seed * 104723 + n * 7907) % height
        size = width // (6 + n % 5)
        colour = ((n * 53 + seed) % 256, (n * 97) % 256, (n * 31 + 80) % 256)
        if n % 2:
            draw.ellipse((x, y, x + size, y + size * 2 // 3), fill=colour)
        else:
            draw.rectangle((x, y, x + size // 2, y + size), fill=colour, outline=(20, 20, 20), width=6)
    im = im.filter(ImageFilter.GaussianBlur(1.2))
    grain = Image.effect_noise((width, height), 18).convert("RGB")
    return Image.blend(im, grain, 0.12)


def _jpeg(im: Image.Image, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "BenchCam"
    exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.9)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def generate(count: int) -> list[Photo]:
    """``count`` photos: mostly 12 MP JPEGs, plus a 24 MP JPEG, a sideways phone photo and PNG screenshots."""
    photos: list[Photo] = []
    for n in range(count):
        kind = n % 8
        if kind == 3:
            photos.append(Photo("24MP camera JPEG", _jpeg(_scene(6000, 4000, n))))
        elif kind == 5:
            scene = _scene(3024, 4032, n)  # portrait as seen; stored landscape, orientation 6
            photos.append(
                Photo("12MP phone JPEG (orientation 6)", _jpeg(scene.transpose(Image.Transpose.ROTATE_90), 6))
            )
        elif kind == 7:
            photos.append(Photo("2560x1440 PNG screenshot", _png(_scene(2560, 1440, n).quantize(64).convert("RGB"))))
        else:
            photos.append(Photo("12MP camera JPEG", _jpeg(_scene(4000, 3000, n))))
    return photos


# -- the three contestants ------------------------------------------------------------------------


def framework_thumbnails(data: bytes, formats: list[str]) -> list[bytes]:
    identify(data, max_pixels=CONFIG.max_pixels)
    thumbs = make_thumbnails(
        data,
        CONFIG.sizes,
        formats,
        webp_quality=CONFIG.webp_quality,
        webp_method=CONFIG.webp_method,
        jpeg_quality=CONFIG.jpeg_quality,
        reducing_gap=CONFIG.reducing_gap,
        max_pixels=CONFIG.max_pixels,
    )
    return [t.data for t in thumbs]


def _save(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "webp":
        im.save(buf, "WEBP", quality=CONFIG.webp_quality, method=CONFIG.webp_method)
    else:
        im.save(buf, "JPEG", quality=CONFIG.jpeg_quality)
    return buf.getvalue()


def bare_thumbnails(data: bytes, formats: list[str]) -> list[bytes]:
    """The same thumbnails with Pillow alone (RGB inputs without ICC profiles, like the generated ones)."""
    gap = CONFIG.reducing_gap or 2.0
    im = Image.open(io.BytesIO(data))
    orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    rotated = orientation >= 5
    width, height = (im.height, im.width) if rotated else im.size
    plan = sorted(((name, min(w, width)) for name, w in CONFIG.sizes.items()), key=lambda item: (-item[1], item[0]))
    big_w = plan[0][1]
    big_h = max(1, round(height * big_w / width))
    request = (big_h, big_w) if rotated else (big_w, big_h)
    im.draft(None, (math.ceil(request[0] * gap), math.ceil(request[1] * gap)))
    src: Image.Image = im.convert("RGB") if im.mode != "RGB" else im
    out: list[bytes] = []
    for _, w in plan:
        h = max(1, round(height * w / width))
        size = (h, w) if rotated else (w, h)
        if src.size != size:
            src = src.resize(size, Image.Resampling.LANCZOS, reducing_gap=gap)
        upright = src.transpose(TRANSPOSE[orientation]) if orientation in TRANSPOSE else src
        out.extend(_save(upright, fmt) for fmt in formats)
    return out


def naive_thumbnails(data: bytes, formats: list[str]) -> list[bytes]:
    """What a quick script does: reopen and thumbnail() for each size."""
    out: list[bytes] = []
    for w in sorted(CONFIG.sizes.values(), reverse=True):
        im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        im.thumbnail((w, w * 100))
        im = im.convert("RGB")
        out.extend(_save(im, fmt) for fmt in formats)
    return out


# -- timing ---------------------------------------------------------------------------------------

Maker = Callable[[bytes, list[str]], list[bytes]]


def run_once(photos: list[Photo], formats: list[str], makers: dict[str, Maker], flip: bool) -> dict[str, float]:
    """Time each maker over all photos, alternating which goes first photo by photo."""
    totals = dict.fromkeys(makers, 0.0)
    names = list(makers)
    for n, photo in enumerate(photos):
        order = names if (n + flip) % 2 == 0 else names[::-1]
        for name in order:
            started = time.perf_counter()
            makers[name](photo.data, formats)
            totals[name] += time.perf_counter() - started
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--photos", type=int, default=8, help="number of generated photos (default 8)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs; the median is reported (default 5)")
    parser.add_argument("--formats", nargs="+", default=["webp"], choices=["webp", "jpeg"])
    parser.add_argument("--no-naive", action="store_true", help="skip the naive reference script")
    parser.add_argument("--max-ratio", type=float, default=None, help="exit 1 if framework/bare is above this")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    photos = generate(args.photos)
    megapixels = sum(identify(p.data, max_pixels=CONFIG.max_pixels).width * identify(p.data).height for p in photos)
    print(
        f"generated {len(photos)} photos ({megapixels / 1e6:.0f} MP, {sum(len(p.data) for p in photos) / 1e6:.1f} MB)"
        f" in {time.perf_counter() - started:.1f}s"
    )
    for photo in photos:
        info = identify(photo.data)
        print(f"  {photo.name:34} {info.width}x{info.height}  {len(photo.data) / 1e6:.1f} MB")
    sizes = ", ".join(f"{name}={width}" for name, width in CONFIG.sizes.items())
    print(
        f"sizes: {sizes}; formats: {', '.join(args.formats)}; webp q{CONFIG.webp_quality} m{CONFIG.webp_method}, "
        f"jpeg q{CONFIG.jpeg_quality}; reducing_gap {CONFIG.reducing_gap}"
    )

    for photo in photos:  # same work: byte-identical outputs
        if framework_thumbnails(photo.data, args.formats) != bare_thumbnails(photo.data, args.formats):
            print(f"outputs differ for {photo.name}: the bare script is not doing the same work", file=sys.stderr)
            return 2
    print("outputs of framework and bare are byte-identical")

    makers: dict[str, Maker] = {"framework": framework_thumbnails, "bare": bare_thumbnails}
    if not args.no_naive:
        makers["naive"] = naive_thumbnails
    per_run: dict[str, list[float]] = {name: [] for name in makers}
    for run in range(args.runs):
        for name, seconds in run_once(photos, args.formats, makers, flip=bool(run % 2)).items():
            per_run[name].append(seconds)

    count = len(photos) * len(CONFIG.sizes) * len(args.formats)
    print(f"\n{count} thumbnails per run, {args.runs} runs, median:")
    medians = {name: statistics.median(times) for name, times in per_run.items()}
    for name, seconds in medians.items():
        spread = f"{min(per_run[name]):.2f}-{max(per_run[name]):.2f}s"
        print(f"  {name:10} {seconds:7.2f}s  {count / seconds:7.1f} thumbnails/s  (runs {spread})")
    ratio = medians["framework"] / medians["bare"]
    print(f"framework / bare time ratio: {ratio:.3f} (target <= 1.25)")
    if "naive" in medians:
        print(f"naive / framework time ratio: {medians['naive'] / medians['framework']:.2f}")
    if args.max_ratio is not None and ratio > args.max_ratio:
        print(f"ratio {ratio:.3f} is above {args.max_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
