"""The ``s3`` storage backend: any S3-compatible server (AWS S3, MinIO, SeaweedFS, ...) through ``minio``.

``minio`` is an optional dependency of the core (``pip install "framework[s3]"``); this module is
imported only when ``storage.backend = "s3"``. The client is synchronous, so every call runs in a
worker thread. Its HTTP pool retries a failed request twice (connection errors and 5xx) with a short
backoff; longer outages surface as :class:`~framework.storage.base.StorageUnavailable` and are the task
queue's to retry.

A stalled server never holds a call for ever: a connection not made within ``storage.connect_timeout``
(5 s by default), or an answer, or the next bytes of a body being read, not received within
``storage.read_timeout`` (60 s) fails the call, or the :class:`~framework.storage.base.ObjectStream`'s read,
with ``StorageUnavailable`` naming the endpoint, the operation and the timeout. A timeout is not retried at
once (a stalled server would hold the call three times as long): the read timeout bounds each wait, not a
whole transfer, so a large download that keeps moving is never cut.

The bucket is created on first use only when a write finds it missing (``NoSuchBucket``): a
development convenience that costs nothing when the bucket exists and never needs the
``ListBucket``/``CreateBucket`` permissions in production, where the bucket is made beforehand.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import itertools
import os
import time
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import check_bucket_name
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError

from framework.errors import ConfigError
from framework.storage.base import (
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFound,
    ObjectStream,
    ObjectTooLarge,
    StorageError,
    StorageUnavailable,
    check_range,
    validate_key,
    validate_metadata,
    validate_prefix,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping
    from types import TracebackType

    from minio.datatypes import Object
    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

    from framework.settings import Settings

__all__ = ("S3Storage",)

_P = ParamSpec("_P")
_T = TypeVar("_T")

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"})
_TRANSIENT = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "XMinioServerNotInitialized"}
)
_MAX_EXPIRES = 7 * 24 * 3600
_LIST_PAGE = 1000
_META_PREFIX = "x-amz-meta-"


def _take(it: Iterator[_T], n: int) -> builtins.list[_T]:
    return builtins.list(itertools.islice(it, n))


def _timeout(exc: BaseException) -> ReadTimeoutError | ConnectTimeoutError | None:
    """The timeout ``exc`` is (or that made urllib3 give up), if it is one; a refused connection is none."""
    reason = exc.reason if isinstance(exc, MaxRetryError) else exc
    if isinstance(reason, ReadTimeoutError):
        return reason
    if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
        return reason  # urllib3's NewConnectionError (refused, no route, DNS) subclasses ConnectTimeoutError
    return None


class _Retry(urllib3.Retry):
    """urllib3's retries (connection errors, 5xx answers), except that a timeout is raised at once.

    A server that accepts and then says nothing would otherwise hold a call for every retry's timeout in turn.
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if error is not None and _timeout(error) is not None:
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


class S3Storage:
    """Objects in one bucket of an S3-compatible server.

    Args:
        endpoint: ``host:port``, or a URL whose scheme then decides ``secure``.
        bucket: the bucket name.
        access_key: the access key; none for anonymous access.
        secret_key: the secret key.
        session_token: a temporary session token, if any.
        region: the bucket's region; none lets the client ask the server once.
        secure: use TLS.
        create_bucket: create the bucket when a write finds it missing.
        connect_timeout: seconds to wait for a connection.
        read_timeout: seconds to wait for an answer, and for each next part of a body being read.
        retries: retries of one request on connection errors and 5xx answers (never after a timeout).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        secure: bool = True,
        create_bucket: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        if "://" in endpoint:
            parts = urlsplit(endpoint)
            secure = parts.scheme == "https"
            endpoint = parts.netloc
        if not endpoint:
            raise ConfigError("setting storage.endpoint is empty: the s3 backend needs host:port of the server")
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise ConfigError(f"setting storage.bucket={bucket!r} is invalid: {exc}") from exc
        self.endpoint = endpoint
        self.bucket = bucket
        self._region = region
        self._create_bucket = create_bucket
        self._timeouts = {"connect": connect_timeout, "read": read_timeout}
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=_Retry(total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        )
        self._client = Minio(
            endpoint,
            access_key=access_key or None,
            secret_key=secret_key or None,
            session_token=session_token or None,
            secure=secure,
            region=region,
            http_client=self._http,
        )

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> S3Storage:
        """Build the backend from ``settings.storage``.

        Empty credentials fall back to ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
        ``AWS_SESSION_TOKEN`` in ``environ`` (default ``os.environ``), the region to ``AWS_REGION``.
        """
        env = os.environ if environ is None else environ
        s = settings.storage
        return cls(
            endpoint=s.endpoint,
            bucket=s.bucket,
            access_key=s.access_key or env.get("AWS_ACCESS_KEY_ID"),
            secret_key=s.secret_key or env.get("AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("AWS_SESSION_TOKEN"),
            region=s.region or env.get("AWS_REGION") or None,
            secure=s.secure,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
        )

    def __repr__(self) -> str:
        return f"S3Storage({self.endpoint!r}, bucket={self.bucket!r})"

    # -- the Storage protocol ---------------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key``; see :meth:`framework.storage.Storage.put`."""
        validate_key(key)
        meta = validate_metadata(metadata)
        content_type = content_type or DEFAULT_CONTENT_TYPE
        result = await self._call("put", key, self._put_sync, key, bytes(data), content_type, meta)
        return ObjectInfo(
            key=key,
            size=len(data),
            content_type=content_type,
            modified=time.time(),
            metadata=meta,
            etag=(getattr(result, "etag", None) or "").strip('"'),
        )

    async def get(self, key: str, *, max_size: int | None = None) -> bytes:
        """Return the object's bytes; see :meth:`framework.storage.Storage.get`."""
        validate_key(key)
        return await self._call("get", key, self._get_sync, key, max_size)

    async def open(self, key: str, *, start: int = 0, length: int | None = None) -> ObjectStream:
        """Send the GET (a ``Range`` one for part of the object) and stream its body; see :meth:`Storage.open`.

        The body is read from the connection a chunk at a time, in worker threads; closing the stream
        closes the response and hands the connection back to the pool.
        """
        validate_key(key)
        check_range(start, length)
        return await self._call("open", key, self._open_sync, key, start, length)

    async def stat(self, key: str) -> ObjectInfo:
        """Return the object's info; see :meth:`framework.storage.Storage.stat`."""
        validate_key(key)
        return _info_of(key, await self._call("stat", key, self._client.stat_object, self.bucket, key))

    async def delete(self, key: str) -> bool:
        """Delete the object; see :meth:`framework.storage.Storage.delete` (a HEAD tells whether it existed)."""
        validate_key(key)
        try:
            await self._call("delete", key, self._client.stat_object, self.bucket, key)
        except ObjectNotFound:
            return False
        await self._call("delete", key, self._client.remove_object, self.bucket, key)
        return True

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Iterate over objects under ``prefix``, a page at a time; see :meth:`framework.storage.Storage.list`."""
        validate_prefix(prefix)
        pages = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
        while True:
            try:
                page = await self._call("list", prefix, _take, pages, _LIST_PAGE)
            except ObjectNotFound:  # no bucket yet: nothing in it
                return
            for obj in page:
                if obj.object_name is None or obj.is_dir:
                    continue
                yield ObjectInfo(
                    key=obj.object_name,
                    size=obj.size or 0,
                    modified=obj.last_modified.timestamp() if obj.last_modified else 0.0,
                    etag=(obj.etag or "").strip('"'),
                )
            if len(page) < _LIST_PAGE:
                return

    async def url(self, key: str, *, expires: float = 3600) -> str:
        """Return a presigned GET URL valid for ``expires`` seconds (1 s to 7 days)."""
        validate_key(key)
        if not 1 <= expires <= _MAX_EXPIRES:
            raise ValueError(f"expires={expires!r} is invalid: presigned URLs last 1 s to 7 days ({_MAX_EXPIRES} s)")
        delta = timedelta(seconds=int(expires))
        return await self._call("url", key, self._client.presigned_get_object, self.bucket, key, expires=delta)

    async def check(self) -> None:
        """Ask the server whether the bucket exists; raises StorageUnavailable when it cannot be reached."""
        await self._call("check", None, self._client.bucket_exists, self.bucket)

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.clear()

    # -- blocking parts, run in a worker thread ---------------------------------------------------

    def _put_sync(self, key: str, data: bytes, content_type: str, metadata: dict[str, str]) -> Any:
        def put() -> Any:
            meta: Any = metadata or None
            return self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata=meta
            )

        try:
            return put()
        except S3Error as exc:
            if exc.code != "NoSuchBucket" or not self._create_bucket:
                raise
        try:
            self._client.make_bucket(self.bucket, location=self._region)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return put()

    def _get_sync(self, key: str, max_size: int | None = None) -> bytes:
        response = self._client.get_object(self.bucket, key)
        try:
            if max_size is None:
                return bytes(response.read())
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_size:
                raise ObjectTooLarge(key, int(length), max_size)
            data = bytes(response.read(max_size + 1))  # a body longer than announced is refused all the same
            if len(data) > max_size:
                raise ObjectTooLarge(key, int(length) if length and length.isdigit() else len(data), max_size)
            return data
        finally:
            response.close()
            response.release_conn()

    def _open_sync(self, key: str, start: int, length: int | None) -> ObjectStream:
        if length == 0:  # minio would send no Range at all, and S3 has no empty range to ask for
            return self._empty_stream(key, start)
        try:
            response = self._client.get_object(self.bucket, key, offset=start, length=length or 0)
        except S3Error as exc:
            if exc.code != "InvalidRange":
                raise
            return self._empty_stream(key, start)  # start at or beyond the end (or an empty object)
        try:
            headers = response.headers
            count = int(headers.get("Content-Length", "0"))
            content_range = headers.get("Content-Range")
            if content_range:  # "bytes <first>-<last>/<size>"
                size = int(content_range.rsplit("/", 1)[1])
            elif start:
                raise StorageError(f"S3 open of {key!r} at {self.endpoint} failed: the server ignored the Range")
            else:
                size = count
            info = _info_from_headers(key, size, headers)
        except BaseException:
            response.close()
            response.release_conn()
            raise

        def read(amount: int) -> bytes:
            try:
                return bytes(response.read(amount, decode_content=False))  # the bytes as stored, as S3 counts them
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._unavailable("read", key, exc) from exc

        def release() -> None:
            response.close()  # closes the connection unless the body was read whole (then it is pooled already)
            response.release_conn()

        return ObjectStream(info, start=start, length=count, read=read, release=release)

    def _empty_stream(self, key: str, start: int) -> ObjectStream:
        info = _info_of(key, self._client.stat_object(self.bucket, key))
        return ObjectStream(info, start=min(start, info.size), length=0, read=lambda _: b"", release=lambda: None)

    async def _call(self, op: str, key: str | None, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            raise self._translate(op, key, exc) from exc
        except (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._unavailable(op, key, exc) from exc

    def _unavailable(self, op: str, key: str | None, exc: BaseException) -> StorageUnavailable:
        """The error of a call that could not reach the server, timed out, or lost its connection."""
        timeout = _timeout(exc)
        if timeout is None:
            return StorageUnavailable(f"S3 {op} of {key!r} at {self.endpoint} failed: {exc}")
        kind = "read" if isinstance(timeout, ReadTimeoutError) else "connect"
        what = "the server sent nothing for" if kind == "read" else "no connection within"
        return StorageUnavailable(
            f"S3 {op} of {key!r} at {self.endpoint} timed out: {what} {self._timeouts[kind]:g} s "
            f"(setting storage.{kind}_timeout)"
        )

    def _translate(self, op: str, key: str | None, exc: S3Error) -> StorageError:
        code = exc.code or ""
        status = getattr(exc.response, "status", 0) or 0
        where = f"in bucket {self.bucket!r} at {self.endpoint}"
        if code in _NOT_FOUND:
            missing = "bucket" if code == "NoSuchBucket" else "object"
            return ObjectNotFound(f"no object {key!r} {where} (the {missing} does not exist)")
        if status >= 500 or code in _TRANSIENT:
            return StorageUnavailable(f"S3 {op} of {key!r} {where} failed: {code}: {exc.message}")
        return StorageError(f"S3 {op} of {key!r} {where} failed: {code}: {exc.message}")


def _user_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """The user metadata among an object's headers: ``x-amz-meta-<name>`` as ``<name>`` (lower case)."""
    return {
        name.lower()[len(_META_PREFIX) :]: value
        for name, value in headers.items()
        if name.lower().startswith(_META_PREFIX)
    }


def _info_of(key: str, obj: Object) -> ObjectInfo:
    """An object's info from minio's ``stat_object`` answer (a HEAD)."""
    return ObjectInfo(
        key=key,
        size=obj.size or 0,
        content_type=obj.content_type or DEFAULT_CONTENT_TYPE,
        modified=obj.last_modified.timestamp() if obj.last_modified else 0.0,
        metadata=_user_metadata(obj.metadata or {}),
        etag=obj.etag or "",
    )


def _info_from_headers(key: str, size: int, headers: Mapping[str, str]) -> ObjectInfo:
    """An object's info from the headers of a GET or HEAD of it (``size`` is the whole object's)."""
    try:
        modified = parsedate_to_datetime(headers.get("Last-Modified", "")).timestamp()
    except (TypeError, ValueError, IndexError):
        modified = 0.0
    return ObjectInfo(
        key=key,
        size=size,
        content_type=headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
        modified=modified,
        metadata=_user_metadata(headers),
        etag=headers.get("ETag", "").replace('"', ""),
    )
