"""Object storage for plugins (uploads, thumbnails, attachments): one :class:`Storage` API, two backends.

The backend is chosen by ``settings.storage.backend``:

- ``local`` (the development default): files in ``<data_dir>/<storage.local_dir>``, served by the
  web app at ``storage.public_url``; see :mod:`framework.storage.local`. User content is served so it
  cannot act as the app: downloads unless it is a raster image, with ``nosniff`` and a sandboxing
  CSP (see :mod:`framework.web.storage_routes`).
- ``s3``: a bucket on AWS S3, MinIO or another S3-compatible server, through the ``minio`` client
  (``pip install "framework[s3]"``); see :mod:`framework.storage.s3`.

Handlers and routes reach the process's store as ``services.storage``::

    info = await services.storage.put("uploads/1/original.jpg", data, content_type="image/jpeg")
    async for obj in services.storage.list("uploads/1/"):
        ...
    async with await services.storage.open("videos/1.mp4", start=1024) as stream:  # chunk by chunk
        async for chunk in stream:
            ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from framework.errors import ConfigError
from framework.storage.base import (
    DEFAULT_CONTENT_TYPE,
    MAX_KEY_BYTES,
    InvalidKey,
    InvalidMetadata,
    ObjectInfo,
    ObjectNotFound,
    ObjectStream,
    ObjectTooLarge,
    Storage,
    StorageError,
    StorageUnavailable,
    validate_key,
    validate_metadata,
    validate_prefix,
)
from framework.storage.local import LocalStorage, local_objects_dir

if TYPE_CHECKING:
    from framework.settings import Settings

__all__ = (
    "DEFAULT_CONTENT_TYPE",
    "MAX_KEY_BYTES",
    "InvalidKey",
    "InvalidMetadata",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStream",
    "ObjectTooLarge",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "local_objects_dir",
    "open_storage",
    "validate_key",
    "validate_metadata",
    "validate_prefix",
)


def open_storage(settings: Settings) -> Storage:
    """Create the store ``settings.storage`` describes. No I/O happens until the first call.

    Args:
        settings: the app's settings.

    Raises:
        ConfigError: the backend is unknown, its settings are incomplete, or ``s3`` is chosen without
            the ``minio`` package installed.
    """
    backend = settings.storage.backend
    if backend == "local":
        return LocalStorage.from_settings(settings)
    if backend == "s3":
        try:
            from framework.storage.s3 import S3Storage  # noqa: PLC0415 - minio is optional
        except ImportError as exc:
            raise ConfigError(
                'setting storage.backend="s3" needs the minio package: pip install "framework[s3]"'
            ) from exc
        return S3Storage.from_settings(settings)
    raise ConfigError(f"setting storage.backend={backend!r} is invalid: use 'local' or 's3'")
