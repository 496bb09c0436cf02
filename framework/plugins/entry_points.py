"""The installed distributions' entry points of one group, found without importing ``importlib.metadata``.

``importlib.metadata`` costs 30-50 ms to import on a 2-CPU machine (it brings ``email``, ``zipfile``, ``csv``
and ``pathlib`` helpers), more than every plugin's own module together, and ``framework --help`` lists the
plugins' commands at every start. Its entry points come, for every distribution installed the usual way, from
the ``*.dist-info`` and ``*.egg-info`` folders in the directories of ``sys.path``: :func:`entry_points` reads
those the way ``importlib.metadata.entry_points(group=...)`` does (each ``sys.path`` directory in order, the
first distribution of a normalized name found wins, ``entry_points.txt`` parsed as it parses it), and hands
over to ``importlib.metadata`` itself wherever it could find more: a ``sys.path`` entry that is a file (a zip)
or an ``.egg``, or a ``sys.meta_path`` finder of its own that can find distributions. A distribution's name
and version are read from its ``METADATA`` (``PKG-INFO``) headers, and only when asked for.

:mod:`~framework.plugins.manager` uses the result exactly as it used ``importlib.metadata``'s entry points:
``name``, ``value``, ``load()`` and ``dist`` (``name``, ``version``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import re
import sys
from functools import reduce
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("Distribution", "EntryPoint", "EntryPointLike", "entry_points")

_INFO_SUFFIXES = (".dist-info", ".egg-info")
_PATTERN = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")
"""An entry point's value (``module:attr.attr [extras]``), as ``importlib.metadata.EntryPoint.pattern``."""


class DistributionLike(Protocol):
    """What the plugin manager reads of a distribution."""

    @property
    def name(self) -> str:
        """The distribution's name (``Name:`` of its metadata)."""

    @property
    def version(self) -> str:
        """Its version (``Version:`` of its metadata)."""


class EntryPointLike(Protocol):
    """What the plugin manager uses of an entry point (``importlib.metadata.EntryPoint`` is one too)."""

    name: str
    value: str

    @property
    def dist(self) -> DistributionLike | None:
        """The distribution that declares it."""

    def load(self) -> Any:
        """Import the module the value names and return it, or the attribute it names."""


def _normalize(name: str) -> str:
    """PEP 503 normalization with dashes as underscores (``importlib.metadata.Prepared.normalize``)."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


class Distribution:
    """One installed distribution's metadata folder; its name and version read on first use.

    Args:
        path: the ``*.dist-info`` or ``*.egg-info`` folder.
    """

    __slots__ = ("_headers", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._headers: dict[str, str] | None = None

    def _header(self, key: str) -> str:
        if self._headers is None:
            self._headers = {}
            for file in ("METADATA", "PKG-INFO"):
                try:
                    with open(os.path.join(self.path, file), encoding="utf-8") as lines:
                        for line in lines:
                            if not line.strip():
                                break  # the headers end at the first empty line; the description follows
                            field, sep, value = line.partition(":")
                            if sep and not line[0].isspace():
                                self._headers.setdefault(field.strip().lower(), value.strip())
                except OSError:
                    continue
                break
        return self._headers.get(key.lower(), "")

    @property
    def name(self) -> str:
        """``Name:`` of the distribution's metadata."""
        return self._header("Name")

    @property
    def version(self) -> str:
        """``Version:`` of the distribution's metadata."""
        return self._header("Version")

    def __repr__(self) -> str:
        return f"Distribution({self.path!r})"


class EntryPoint:
    """One entry point: ``name = value`` in its distribution's ``entry_points.txt``."""

    __slots__ = ("dist", "group", "name", "value")

    def __init__(self, name: str, value: str, group: str, dist: Distribution) -> None:
        self.name = name
        self.value = value
        self.group = group
        self.dist = dist

    def load(self) -> Any:
        """Import the module named by the value, then follow its attributes (``module:attr.attr``)."""
        match = _PATTERN.match(self.value)
        if match is None:
            raise ValueError(f"invalid entry point value {self.value!r}")
        module = importlib.import_module(match.group("module"))
        attrs = filter(None, (match.group("attr") or "").split("."))
        return reduce(getattr, attrs, module)

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"


def _lean_search_applies() -> bool:
    """Whether the ``sys.path`` directories are all that ``importlib.metadata`` would search."""
    for finder in sys.meta_path:
        if getattr(finder, "find_distributions", None) is not None and finder is not importlib.machinery.PathFinder:
            return False
    for entry in sys.path:
        if not isinstance(entry, str):
            return False
        if os.path.basename(entry).lower().endswith(".egg") or os.path.isfile(entry):
            return False
    return True


def _metadata_folders() -> Iterator[str]:
    """Every distribution's metadata folder, in ``importlib.metadata``'s order; a normalized name once."""
    seen: set[str] = set()
    for entry in sys.path:
        try:
            children = os.listdir(entry or ".")
        except OSError:
            continue
        for child in children:
            low = child.lower()
            if not low.endswith(_INFO_SUFFIXES):
                continue
            name = _normalize(low.rpartition(".")[0].partition("-")[0])
            if name not in seen:
                seen.add(name)
                yield os.path.join(entry, child)


def _parse(text: str, group: str) -> Iterator[tuple[str, str]]:
    """``(name, value)`` of the ``[group]`` section of an ``entry_points.txt`` (comments and blanks skipped)."""
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section == group:
            name, _, value = line.partition("=")
            yield name.strip(), value.strip()


def entry_points(group: str) -> list[EntryPointLike]:
    """The entry points of ``group`` of every installed distribution, as ``importlib.metadata`` lists them."""
    if not _lean_search_applies():
        import importlib.metadata as md  # noqa: PLC0415

        return list(md.entry_points(group=group))
    found: list[EntryPointLike] = []
    for folder in _metadata_folders():
        try:
            with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as file:
                text = file.read()
        except OSError:
            continue
        dist = Distribution(folder)
        found.extend(EntryPoint(name, value, group, dist) for name, value in _parse(text, group))
    return found
