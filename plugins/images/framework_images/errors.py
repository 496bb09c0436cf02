"""Why bytes cannot be made into thumbnails: the errors of :mod:`framework_images.processing`.

A module of their own, without Pillow, so that the task module can catch them while Pillow is imported only
when the first image is processed (it and its format plugins are about 45 ms of a worker's start-up).
"""

from __future__ import annotations

from framework.errors import FrameworkError

__all__ = ("ImageError", "ImageTooLarge", "NotAnImage", "TruncatedImage")


class ImageError(FrameworkError, ValueError):
    """The bytes cannot be made into thumbnails; permanent, the message says why."""


class NotAnImage(ImageError):
    """The bytes are not an image in a supported format."""


class TruncatedImage(ImageError):
    """The bytes start like an image but are cut short or corrupt."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (a possible decompression bomb)."""
