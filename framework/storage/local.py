"""The ``local`` storage backend: objects are files in a folder of the data directory (the development default).

Layout of the folder (``settings.data_path / settings.storage.local_dir``)::

    <key>                        the object's bytes; the web app serves them at ``storage.public_url``
    .local-storage/meta/<key>    a JSON sidecar: content type and user metadata
    .local-storage/tmp/          files being written; each is moved into place with ``os.replace``

Writes are atomic and durable: a reader sees the old object or the new one, never a partial file.
The bytes are synced to disk before the rename and the folder after it, so a put that returned
survives a crash or power loss. A put into a folder that a concurrent delete is pruning (its last
object gone) recreates the folder. Temp files a killed process left behind are removed by the first
put of the next ``LocalStorage`` once they are an hour old. Keys whose
first segment is ``.local-storage`` are reserved: listings skip that folder and the web app never
serves it (:mod:`framework.web.storage_routes`). Because objects are files, one key cannot be both an
object and the prefix of other objects (``a/b`` and ``a/b/c``); S3 allows that, this backend raises
:class:`~framework.storage.base.InvalidKey`. So does a key with a segment longer than a file name can be
(255 bytes on common file systems), which S3 also allows: no retry could store it, so it must not look
like an outage (:class:`~framework.storage.base.StorageUnavailable` is retried).
URLs are ``<public_url>/<key>`` and do not expire.

A listing walks the folder as it is consumed, a page of objects at a time in a worker thread: it holds the
entries of the folders on its current path only, and a caller that stops early never reads the rest. A file
whose name is not UTF-8, or whose key would be longer than a key can be, is no object (no key names it) and
is not listed, nor is a symlink loop: the key of one names no object.

Every call agrees on what is an object: a regular file, reached through links or not. A key whose path leads
nowhere (missing, a symlink loop, a broken link, a file where a folder should be) or names something else (a
folder, a FIFO) has no object: ``get``, ``open`` and ``stat`` raise
:class:`~framework.storage.base.ObjectNotFound` (never block on a FIFO, never report an outage) and ``delete``
returns false, leaving that path alone. A ``put`` replaces a link at the key itself; a key below such a link
(``loop/x``) raises :class:`~framework.storage.base.InvalidKey`, as a key below an object does.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import itertools
import mimetypes
import os
import stat
import tempfile
import time
from io import FileIO
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar
from urllib.parse import quote

import msgspec

from framework.storage.base import (
    DEFAULT_CONTENT_TYPE,
    MAX_KEY_BYTES,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStream,
    ObjectTooLarge,
    StorageUnavailable,
    check_range,
    validate_key,
    validate_metadata,
    validate_prefix,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping

    from framework.settings import Settings

__all__ = ("LocalStorage", "local_objects_dir")

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Sidecar(msgspec.Struct, frozen=True, kw_only=True):
    content_type: str = DEFAULT_CONTENT_TYPE
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


_encode_sidecar = msgspec.json.Encoder().encode
_decode_sidecar = msgspec.json.Decoder(_Sidecar).decode


_INTERNAL = ".local-storage"
_TMP_PREFIX = "put-"
_STALE_TMP_SECONDS = 3600.0
"""A temp file untouched this long belongs to a writer that died: no put takes that long."""
_PLACE_ATTEMPTS = 20
"""Tries to move a written file into place while concurrent deletes keep pruning its folder."""
_MAX_SEGMENT_BYTES = 255
"""The longest file name (in bytes) of ext4, XFS, Btrfs, tmpfs, APFS and NTFS: the longest key segment."""
_LIST_PAGE = 256
"""Objects a listing reads per trip to a worker thread (one ``stat`` each)."""


def _reserved(segment: str) -> bool:
    """Whether a key's first segment names the backend's own folder, in any case.

    On a case-insensitive file system (macOS, Windows) ``.Local-Storage`` is that folder too, and its
    sidecars must not be served.
    """
    return segment.casefold() == _INTERNAL


def _fsync_folder(folder: Path) -> None:
    """Sync a folder's entries to disk, so a rename or a new entry in it survives a power loss."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError:  # removed since: the object in it was deleted meanwhile
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def local_objects_dir(settings: Settings) -> Path:
    """The folder the web app serves at ``settings.storage.public_url`` for the local backend."""
    return settings.data_path / settings.storage.local_dir


def _take(it: Iterator[_T], n: int) -> builtins.list[_T]:
    return builtins.list(itertools.islice(it, n))


def _leads_nowhere(exc: OSError) -> bool:
    """Whether ``exc`` says a path names no file: missing, a file and a folder mixed up, or a symlink loop."""
    return exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP)


def _file_in_the_way(folder: Path) -> bool:
    """Whether ``folder`` or one of its parents exists as something other than a folder.

    That is an object's file, or a link leading nowhere (a symlink loop, a broken link): no retry makes a folder
    there, so the key cannot be stored.
    """
    for path in (folder, *folder.parents):
        if os.path.lexists(path):
            return not path.is_dir()
    return False


class LocalStorage:
    """Objects as files under ``root`` (see the module docstring for the layout).

    Args:
        root: the backend's folder; created on first write.
        public_url: base URL under which the app serves ``root``.
    """

    def __init__(self, root: Path, *, public_url: str = "/storage") -> None:
        self.root = root
        self.objects_dir = root
        self._meta_dir = root / _INTERNAL / "meta"
        self._tmp_dir = root / _INTERNAL / "tmp"
        self._public_url = public_url.rstrip("/")
        self._swept = False

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalStorage:
        """Build the backend from ``settings.storage`` (``local_dir`` inside ``settings.data_path``)."""
        return cls(local_objects_dir(settings), public_url=settings.storage.public_url)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    # -- the Storage protocol ---------------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` atomically; see :meth:`framework.storage.Storage.put`."""
        self._check(key)
        sidecar = _Sidecar(content_type=content_type or DEFAULT_CONTENT_TYPE, metadata=validate_metadata(metadata))
        return await self._in_thread(self._put_sync, key, bytes(data), sidecar)

    async def get(self, key: str, *, max_size: int | None = None) -> bytes:
        """Return the object's bytes; see :meth:`framework.storage.Storage.get`."""
        self._check(key)
        return await self._in_thread(self._get_sync, key, max_size)

    async def open(self, key: str, *, start: int = 0, length: int | None = None) -> ObjectStream:
        """Open the object's file to read it in chunks; see :meth:`framework.storage.Storage.open`.

        The stream reads the file it opened, so a put meanwhile (which replaces the file) does not
        change what it yields.
        """
        self._check(key)
        check_range(start, length)
        return await self._in_thread(self._open_sync, key, start, length)

    async def stat(self, key: str) -> ObjectInfo:
        """Return the object's info; see :meth:`framework.storage.Storage.stat`."""
        self._check(key)
        return await self._in_thread(self._stat_sync, key)

    async def delete(self, key: str) -> bool:
        """Delete the object and its sidecar; see :meth:`framework.storage.Storage.delete`."""
        self._check(key)
        return await self._in_thread(self._delete_sync, key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Iterate over objects under ``prefix`` in key order as the folder is walked.

        See :meth:`framework.storage.Storage.list`.
        """
        validate_prefix(prefix)
        walk = self._walk(prefix)  # holds no open folder between pages: nothing to close when the caller stops
        while True:
            page = await self._in_thread(_take, walk, _LIST_PAGE)
            for info in page:
                yield info
            if len(page) < _LIST_PAGE:
                return

    async def url(self, key: str, *, expires: float = 3600) -> str:
        """Return ``<public_url>/<key>`` (percent-encoded); ``expires`` is ignored."""
        self._check(key)
        return f"{self._public_url}/{quote(key, safe='/')}"

    async def check(self) -> None:
        """Check that the root folder exists (creating it) and is writable."""
        await self._in_thread(self._check_sync)

    async def close(self) -> None:
        """Nothing to release."""

    # -- blocking parts, run in a worker thread ---------------------------------------------------

    async def _in_thread(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (ObjectNotFound, InvalidKey):
            raise
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                # The key, not the disk: a file system with shorter names than _check allows (eCryptfs), or a
                # root folder so deep the whole path is too long. Permanent, so not StorageUnavailable.
                what = f"object key {args[0]!r}" if args and isinstance(args[0], str) else "object key"
                raise InvalidKey(
                    f"invalid {what}: too long for the file system of local storage at {self.root} ({exc})"
                ) from exc
            raise StorageUnavailable(f"local storage at {self.root} failed: {exc}") from exc

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.objects_dir / key, self._meta_dir / key

    @staticmethod
    def _check(key: str) -> str:
        validate_key(key)
        segments = key.split("/")
        if _reserved(segments[0]):
            raise InvalidKey(f"invalid object key {key!r}: {_INTERNAL}/ is reserved by the local backend")
        for segment in segments:
            size = len(segment.encode("utf-8"))
            if size > _MAX_SEGMENT_BYTES:
                raise InvalidKey(
                    f"invalid object key {key!r}: its segment {segment[:20]!r}... is {size} bytes; the local "
                    f"backend stores segments as file names, at most {_MAX_SEGMENT_BYTES} bytes"
                )
        return key

    def _put_sync(self, key: str, data: bytes, sidecar: _Sidecar) -> ObjectInfo:
        path, meta_path = self._paths(key)
        for folder in (self.objects_dir, self._meta_dir, self._tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if not self._swept:
            self._swept = True
            self._remove_stale_tmp()
        if path.is_dir():
            raise InvalidKey(f"invalid object key {key!r}: it is also the prefix of other objects (local backend)")
        made = self._make_folders(key, path.parent)  # refuse a key under an object before writing its sidecar
        self._write_atomic(key, meta_path, _encode_sidecar(sidecar))
        st = self._write_atomic(key, path, data, made)
        return ObjectInfo(
            key=key,
            size=st.st_size,
            content_type=sidecar.content_type,
            modified=st.st_mtime,
            metadata=dict(sidecar.metadata),
        )

    def _write_atomic(self, key: str, path: Path, data: bytes, made: Iterable[Path] = ()) -> os.stat_result:
        """Write ``data`` to a temp file, sync it, move it to ``path`` and sync the folders that changed.

        ``made`` are folders the caller created for ``path``: their parents are synced too.
        """
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp_dir, prefix=_TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), 0o644)
                os.fsync(fh.fileno())
                st = os.fstat(fh.fileno())
            created = self._place(key, tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        for folder in {path.parent, *(new.parent for new in (*made, *created))}:
            _fsync_folder(folder)
        return st

    def _place(self, key: str, tmp_name: str, path: Path) -> builtins.list[Path]:
        """Move the temp file to ``path``, making its folders; return the folders made.

        A concurrent delete of the last object in a folder removes the folder, possibly between its
        creation here and the rename; the folder is then made again.
        """
        created: builtins.list[Path] = []
        attempts = 0
        while True:
            created += self._make_folders(key, path.parent)
            try:
                os.replace(tmp_name, path)
            except IsADirectoryError as exc:
                raise InvalidKey(
                    f"invalid object key {key!r}: it is also the prefix of other objects (local backend)"
                ) from exc
            except FileNotFoundError:
                attempts += 1
                if attempts >= _PLACE_ATTEMPTS or not os.path.exists(tmp_name):
                    raise
                continue
            return created

    @staticmethod
    def _make_folders(key: str, folder: Path) -> builtins.list[Path]:
        """Make ``folder`` and its missing parents; return the ones made (their parents need a sync)."""
        missing: builtins.list[Path] = []
        current = folder
        while not current.is_dir() and current != current.parent:
            missing.append(current)
            current = current.parent
        for attempt in range(_PLACE_ATTEMPTS):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                break
            except (FileExistsError, NotADirectoryError, FileNotFoundError) as exc:
                # a file where a folder goes, or a delete pruning a folder of the path while it was made (mkdir
                # found it there, then it was gone): only the first is the key's fault
                if _file_in_the_way(folder):
                    raise InvalidKey(
                        f"invalid object key {key!r}: a prefix of it is an object, or a link that leads nowhere "
                        "(local backend)"
                    ) from exc
                if attempt == _PLACE_ATTEMPTS - 1:
                    raise
        return missing

    def _remove_stale_tmp(self) -> None:
        """Remove temp files whose writer died mid-put (a killed process, a power loss)."""
        cutoff = time.time() - _STALE_TMP_SECONDS
        with os.scandir(self._tmp_dir) as entries:
            for entry in entries:
                if not entry.name.startswith(_TMP_PREFIX):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                except FileNotFoundError:  # another process removed it first
                    continue

    def _get_sync(self, key: str, max_size: int | None = None) -> bytes:
        file, st = self._open_file(key)
        with file:
            if max_size is None:
                return file.read()
            if st.st_size > max_size:  # puts replace the file whole: this one does not grow
                raise ObjectTooLarge(key, st.st_size, max_size)
            data = file.read(max_size + 1)  # a file grown by hand since is refused all the same
            if len(data) > max_size:
                raise ObjectTooLarge(key, len(data), max_size)
            return data

    def _open_file(self, key: str) -> tuple[FileIO, os.stat_result]:
        """Open the object's file for reading; :class:`ObjectNotFound` when the key's path names no regular file.

        A path that leads nowhere (missing, a symlink loop, a file where a folder should be) and anything but a
        regular file (a folder, a FIFO, a device) is no object, as :meth:`_stat_sync` and :meth:`_walk` say too.
        """
        path, _ = self._paths(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO put there must not block
        except OSError as exc:
            if not _leads_nowhere(exc):
                raise
            raise ObjectNotFound(f"no object {key!r} in {self!r}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # checked before FileIO, which refuses a folder's fd (EISDIR)
                raise ObjectNotFound(f"no object {key!r} in {self!r}")
            return FileIO(fd, "rb"), st
        except BaseException:
            os.close(fd)
            raise

    def _open_sync(self, key: str, start: int, length: int | None) -> ObjectStream:
        file, st = self._open_file(key)
        try:
            info = self._info(key, st)
            start = min(start, st.st_size)
            count = st.st_size - start if length is None else min(length, st.st_size - start)
            file.seek(start)
        except BaseException:
            file.close()
            raise

        def read(size: int) -> bytes:
            try:
                return file.read(size) or b""
            except OSError as exc:
                raise StorageUnavailable(f"reading object {key!r} in {self!r} failed: {exc}") from exc

        return ObjectStream(info, start=start, length=count, read=read, release=file.close)

    def _stat_sync(self, key: str) -> ObjectInfo:
        path, _ = self._paths(key)
        try:
            st = path.stat()
        except OSError as exc:
            if not _leads_nowhere(exc):
                raise
            raise ObjectNotFound(f"no object {key!r} in {self!r}") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"no object {key!r} in {self!r}")
        return self._info(key, st)

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        """The info of the object under ``key`` whose file has the status ``st``: its sidecar's type and metadata."""
        _, meta_path = self._paths(key)
        try:
            sidecar = _decode_sidecar(meta_path.read_bytes())
        except (FileNotFoundError, NotADirectoryError, msgspec.DecodeError):
            guessed = mimetypes.guess_type(key)[0]
            sidecar = _Sidecar(content_type=guessed or DEFAULT_CONTENT_TYPE)
        return ObjectInfo(
            key=key,
            size=st.st_size,
            content_type=sidecar.content_type,
            modified=st.st_mtime,
            metadata=dict(sidecar.metadata),
        )

    def _delete_sync(self, key: str) -> bool:
        path, meta_path = self._paths(key)
        try:
            if not stat.S_ISREG(path.stat().st_mode):  # a folder, a FIFO: no object, and not ours to remove
                return False
            path.unlink()
        except OSError as exc:  # missing, or a symlink loop: no object, as stat says (the link stays, as a put
            if not _leads_nowhere(exc):  # over it replaces it)
                raise
            return False
        meta_path.unlink(missing_ok=True)
        self._prune(path.parent, self.objects_dir)
        self._prune(meta_path.parent, self._meta_dir)
        return True

    @staticmethod
    def _prune(folder: Path, top: Path) -> None:
        """Remove empty folders from ``folder`` up to (not including) ``top``."""
        while folder != top and top in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def _walk(self, prefix: str) -> Iterator[ObjectInfo]:
        """The objects under ``prefix`` in key order, each folder read when the walk gets to it.

        Only the deepest folder the prefix names in full is walked, and below it only the folders whose keys
        can start with the prefix. A folder's entries are sorted as their keys sort (a folder ``a`` as
        ``a/``, so ``a-b`` comes before ``a/b`` and ``a0`` after it), which gives the whole walk key order.
        """
        if _reserved(prefix.split("/", 1)[0]) and "/" in prefix:
            return
        top = prefix.rpartition("/")[0]
        pending: builtins.list[tuple[str, Iterator[tuple[str, os.DirEntry[str]]]]] = [(top, self._entries(top))]
        while pending:
            folder, entries = pending[-1]
            for name, entry in entries:
                key = f"{folder}/{name}" if folder else name
                if name.endswith("/"):
                    if key.startswith(prefix) or prefix.startswith(key):
                        pending.append((key[:-1], self._entries(key[:-1])))
                        break  # walk it, then go on with this folder's next entries
                elif key.startswith(prefix):
                    try:
                        st = entry.stat()
                    except OSError as exc:  # deleted while listing, or a symlink loop
                        if not _leads_nowhere(exc):
                            raise
                        continue
                    if not stat.S_ISREG(st.st_mode):  # a FIFO, a socket, a device: no object, as stat says
                        continue
                    yield ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime)
            else:
                pending.pop()

    def _entries(self, folder: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """The objects and folders in ``folder`` (a key prefix without its ``/``), in key order; folders end in ``/``.

        Folders linked to (symlinks) are left out, as is the backend's own folder at the top. So are names no
        key can have: not UTF-8, or making a key longer than :data:`~framework.storage.base.MAX_KEY_BYTES`
        (a folder too deep for any key below it is not read at all).
        """
        path = self.objects_dir / folder if folder else self.objects_dir
        room = MAX_KEY_BYTES - (len(folder.encode()) + 1 if folder else 0)  # bytes left for a name in here
        found: builtins.list[tuple[bytes, str, os.DirEntry[str]]] = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        raw = entry.name.encode()
                    except UnicodeEncodeError:  # not UTF-8: no key names it
                        continue
                    try:
                        is_dir = entry.is_dir()
                    except OSError:  # a symlink loop: no folder, and no file either (its stat fails too)
                        is_dir = False
                    if is_dir:
                        if entry.is_symlink() or (not folder and _reserved(entry.name)) or len(raw) + 2 > room:
                            continue
                        found.append((raw + b"/", entry.name + "/", entry))
                    elif len(raw) <= room:
                        found.append((raw, entry.name, entry))
        except OSError as exc:  # gone meanwhile, the prefix names an object, or a symlink loop
            if not _leads_nowhere(exc):
                raise
            return iter(())
        found.sort(key=lambda item: item[0])
        return ((name, entry) for _, name, entry in found)

    def _check_sync(self) -> None:
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(self.objects_dir, os.W_OK | os.X_OK):
            raise PermissionError(f"{self.objects_dir} is not writable")
