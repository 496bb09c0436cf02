"""Settings of the images plugin: the ``[plugins.images]`` section, decoded into :class:`ImagesConfig`.

Example (``framework.toml``)::

    [plugins.images]
    sizes = { thumb = 200, medium = 800 }
    formats = ["webp", "jpeg"]
    max_upload_bytes = 10485760
    upload_limit = 30      # uploads per client address per upload_window; 0 = no limit
    upload_window = 600    # seconds
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from framework.settings import Settings

__all__ = ("MAX_SIDES", "MIB", "PLUGIN_NAME", "ImageFormat", "ImagesConfig", "load_config")

PLUGIN_NAME = "images"
"""The plugin's entry-point name and the name of its settings section: ``[plugins.images]``."""

MIB = 1024 * 1024

ImageFormat = Literal["webp", "jpeg"]
"""An output format of thumbnails."""

MAX_SIDES: dict[str, int] = {"webp": 16383, "jpeg": 65500}
"""Output format -> the longest side, in pixels, its encoder can write (libwebp's and libjpeg's limits).

Here rather than in :mod:`framework_images.processing` so that reading the settings (``framework --help`` does,
to list the plugin's commands) does not import Pillow."""

_SIZE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_RESERVED_NAMES = frozenset({"original", "record"})


def _default_sizes() -> dict[str, int]:
    return {"small": 320, "medium": 800, "large": 1600}


class ImagesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How uploads are accepted and thumbnails made. Set by the user; read by the plugin.

    Attributes:
        sizes: thumbnail name -> width in pixels. The height follows the aspect ratio. An image
            narrower than a width is not enlarged: that thumbnail keeps the original width.
            Names are lower-case letters, digits, ``-`` and ``_`` (they are part of object keys);
            ``original`` and ``record`` are taken. A width is at most what every format can hold
            (16383 pixels for WebP, 65500 for JPEG).
        formats: output formats, each size is written in each; the first is the one the uploads
            route lists under ``thumbnails``.
        webp_quality: lossy WebP quality, 1-100.
        webp_method: WebP encoder effort, 0 (fast) to 6 (small files).
        jpeg_quality: JPEG quality, 1-100.
        reducing_gap: Pillow's two-step resize factor (JPEG draft decoding and ``reduce`` first,
            then resampling); 2.0 is Pillow's default, bigger is closer to a plain resample, and
            none resamples the full image.
        max_upload_bytes: the largest upload the route accepts (413 above), and the largest original the
            task reads: a larger one (stored by another producer) is archived unread, naming both sizes.
        max_pixels: the largest image (width x height) the task decodes; above, it is archived as
            a possible decompression bomb. Pillow's own limit (``Image.MAX_IMAGE_PIXELS``, about 89
            million) applies too, also where Pillow would only warn.
        max_parallel: at most this many images are decoded at once per process (0 = one per CPU).
        path: URL path of the uploads route.
        upload_limit: uploads one client address may make per ``upload_window`` seconds; above it the
            route answers 429 with ``Retry-After``. The count is kept in Redis, shared by every web
            process. 0 opens uploads to anyone without a limit (for an app that guards the route
            itself, or a trusted network).
        upload_window: the window of ``upload_limit``, in seconds.
    """

    sizes: dict[str, int] = msgspec.field(default_factory=_default_sizes)
    formats: list[ImageFormat] = msgspec.field(default_factory=lambda: ["webp"])
    webp_quality: int = 80
    webp_method: int = 4
    jpeg_quality: int = 85
    reducing_gap: float | None = 2.0
    max_upload_bytes: int = 20 * MIB
    max_pixels: int = 50_000_000
    max_parallel: int = 0
    path: str = "/uploads"
    upload_limit: int = 30
    upload_window: float = 600.0

    def __post_init__(self) -> None:
        _check_sizes(self.sizes)
        if not self.formats or len(set(self.formats)) != len(self.formats) or not set(self.formats) <= MAX_SIDES.keys():
            raise ValueError(f"formats={self.formats!r} is invalid: give one or more of 'webp', 'jpeg', once each")
        _check_widths(self.sizes, self.formats)
        for name in ("webp_quality", "jpeg_quality"):
            if not 1 <= getattr(self, name) <= 100:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: use 1 to 100")
        if not 0 <= self.webp_method <= 6:
            raise ValueError(f"webp_method={self.webp_method!r} is invalid: use 0 to 6")
        if self.reducing_gap is not None and not 1.0 < self.reducing_gap < math.inf:  # NaN is not in range either
            raise ValueError(f"reducing_gap={self.reducing_gap!r} is invalid: use a finite number > 1.0, or none")
        for name in ("max_upload_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be >= 1")
        if self.upload_limit < 0:
            raise ValueError(f"upload_limit={self.upload_limit!r} is invalid: must be >= 0 (0 = no limit)")
        if not 0 < self.upload_window < math.inf:
            raise ValueError(f"upload_window={self.upload_window!r} is invalid: must be a finite number > 0 of seconds")
        if self.max_parallel < 0:
            raise ValueError(f"max_parallel={self.max_parallel!r} is invalid: must be >= 0")
        if not self.path.startswith("/"):
            raise ValueError(f"path={self.path!r} is invalid: it must start with '/'")


def _check_sizes(sizes: dict[str, int]) -> None:
    if not sizes:
        raise ValueError("sizes={} is invalid: give at least one name = width")
    for name, width in sizes.items():
        if not _SIZE_NAME.match(name) or name in _RESERVED_NAMES:
            raise ValueError(
                f"sizes[{name!r}] is invalid: names are 1-32 of a-z, 0-9, '-', '_' and not 'original' or 'record'"
            )
        if width < 1:
            raise ValueError(f"sizes[{name!r}]={width!r} is invalid: widths must be >= 1 pixel")


def _check_widths(sizes: dict[str, int], formats: list[ImageFormat]) -> None:
    for fmt in formats:
        limit = MAX_SIDES[fmt]
        for name, width in sizes.items():
            if width > limit:
                raise ValueError(
                    f"sizes[{name!r}]={width!r} is invalid: {fmt} thumbnails are at most {limit} pixels wide"
                )


def load_config(settings: Settings) -> ImagesConfig:
    """Decode ``[plugins.images]`` from ``settings``.

    Args:
        settings: the app's settings.

    Raises:
        framework.errors.ConfigError: a value is invalid; the message names it.
    """
    return settings.plugin_config(PLUGIN_NAME, ImagesConfig)
