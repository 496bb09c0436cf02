"""The core's shape, drawn from its imports: packages in layers, imports running downward, no circles.

Every ``import`` in ``framework/`` counts: at module level, inside functions (lazy imports still tie two
modules together) and under ``TYPE_CHECKING``. The facade (``framework/__init__.py``) and the entry points
(``__main__``, the old-path shim ``_compat``) may import anything.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import framework
from framework import _compat

ROOT = Path(framework.__file__).resolve().parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("model", "storage", "workflow", "limits"),  # the task model (settings, errors, ...), storage, workflows, limits
    ("embedded",),
    ("transport",),
    ("protocol",),
    ("broker",),
    ("client", "inspector"),
    ("plugins",),
    ("scheduler",),
    ("worker",),
    ("web",),
    ("cli",),
    ("testing",),
)
"""Lowest first. A package may import its own modules and those of lower layers, never a higher one."""

RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

EXEMPT = {"framework", "framework.__main__", "framework._compat"}

ANNOTATION_ONLY = {
    ("framework.task", "framework.client.client"): "TaskDef.enqueue's parameter and result types (Client, TaskInfo)",
    ("framework.task", "framework.client.sync"): "TaskDef.enqueue_sync's parameter type (SyncClient)",
    ("framework.services", "framework.client.client"): "the type of Services.client",
    ("framework.services", "framework.protocol.keys"): "the type of Services.schema",
}
"""Imports under ``TYPE_CHECKING`` that name a higher layer's type in an annotation, and why.

The task model hands a handler the running process's client, key schema and storage; their classes live
in the layers that build them. Nothing runs these imports.
"""

TOP_LEVEL_BUDGET = 16


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and (ROOT / parts[1]).is_dir():
        return parts[1]
    return "model"


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """(importer, imported module, under TYPE_CHECKING) for every import of a framework module."""

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        type_checking: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                type_checking.update(id(inner) for inner in ast.walk(node) if inner is not node)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: relative import; the framework imports by absolute path"
                base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                if target.startswith("framework"):
                    imported = resolve(target)
                    if imported and imported != name:
                        found.append((name, imported, id(node) in type_checking))
    return found


def test_no_layer_imports_upward() -> None:
    modules = _modules()
    upward = []
    for importer, imported, annotation in _imports(modules):
        if importer in EXEMPT:
            continue
        src, dst = _package(importer), _package(imported)
        assert src in RANK, f"package framework.{src} is in no layer; add it to LAYERS"
        if RANK[dst] > RANK[src] and not (annotation and (importer, imported) in ANNOTATION_ONLY):
            where = " under TYPE_CHECKING" if annotation else ""
            upward.append(f"{importer} ({src}) imports {imported} ({dst}){where}")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(set(upward)))


def test_the_annotation_only_list_is_current() -> None:
    found = {(a, b) for a, b, annotation in _imports(_modules()) if annotation}
    stale = [pair for pair in ANNOTATION_ONLY if pair not in found]
    assert not stale, f"no longer imported, drop from ANNOTATION_ONLY: {stale}"


def test_no_import_circles() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, imported, annotation in _imports(modules):
        if (importer, imported) in ANNOTATION_ONLY:
            continue  # a type named in an annotation; see ANNOTATION_ONLY
        if annotation and RANK.get(_package(importer)) == RANK.get(_package(imported)):
            # Types of one layer may name each other in annotations (TaskDef's handler takes a TaskContext,
            # whose services hold the Registry of TaskDefs): that is one model, not a dependency loop.
            continue
        if importer not in EXEMPT and imported not in EXEMPT and not imported.startswith(importer + "."):
            # a package's __init__ is its own docstring; submodules importing each other is what counts
            graph[importer].add(imported)
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(modules):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_top_level_stays_small() -> None:
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(top) <= TOP_LEVEL_BUDGET, f"{len(top)} modules at the top of framework/: {top}"
    packages = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists())
    assert set(packages) == set(RANK) - {"model"}, packages


def test_every_package_says_what_it_owns_and_may_import() -> None:
    for init in sorted(ROOT.rglob("__init__.py")):
        if init.parent == ROOT:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.relative_to(ROOT.parent)} has no docstring"


def test_old_module_paths_are_served_but_not_used_here() -> None:
    # framework 0.1's flat paths still import (the same module object) ...
    import importlib

    for old, new in _compat.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    # and the flat modules that became packages lend their names, wherever those live now
    import framework.client
    import framework.client.sync
    import framework.client.values

    old_client: Any = framework.client
    assert old_client.SyncClient is framework.client.sync.SyncClient
    assert old_client.TaskInfo is framework.client.values.TaskInfo
    with pytest.raises(AttributeError):
        _ = old_client.NoSuchName
    # ... while the framework, its plugins and its tests use the new paths only
    repo = ROOT.parent
    offenders = []
    for folder in ("framework", "plugins", "tests", "bench", "scaffold"):
        for path in (repo / folder).rglob("*"):
            if path.suffix not in (".py", ".jinja") or path.name == "_compat.py":
                continue
            text = path.read_text(encoding="utf-8")
            offenders += [
                f"{path.relative_to(repo)}: {old}"
                for old in _compat.MOVED
                if f"from {old} import" in text or f"import {old}\n" in text
            ]
    assert not offenders, offenders
