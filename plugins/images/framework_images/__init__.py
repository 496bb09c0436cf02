"""framework-images: image uploads and thumbnails for framework.

An uploads route stores originals in the storage service and queues ``image:process``, which
writes WebP (and optionally JPEG) thumbnails of every configured size next to the original.
Contributions are listed in :mod:`framework_images.hooks`; settings in :mod:`framework_images.config`.
"""
