"""Meta-tests: every hook is documented, and every hook has a test named test_hook_<name>."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pluggy
import pytest

from framework import hookspecs

TESTS = Path(__file__).resolve().parents[1]
_PM = pluggy.PluginManager(hookspecs.PROJECT)
HOOKS = sorted(
    name
    for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and _PM.parse_hookspec_opts(hookspecs, name) is not None
)


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 14


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented(name: str) -> None:
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert doc.splitlines()[0].strip(), f"hook {name} has no summary line"
    params = list(inspect.signature(fn).parameters)
    assert "Args:" in doc, f"hook {name} does not describe its arguments"
    for param in params:
        assert re.search(rf"^\s+{param}:", doc, re.MULTILINE), f"hook {name} does not describe argument {param!r}"
    assert "Kind:" in doc, f"hook {name} does not say whether it collects, mutates, fires or is first-result"
    assert "Fires:" in doc, f"hook {name} does not say when it fires"
    if name.startswith("register_") and name != "register_commands":
        assert "Returns:" in doc, f"hook {name} does not say what to return"
    spec_opts = _PM.parse_hookspec_opts(hookspecs, name)
    if spec_opts is not None and spec_opts.get("firstresult"):
        assert "first result" in doc.lower(), f"hook {name} is firstresult but its doc does not say so"


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    pattern = re.compile(rf"def test_hook_{name}\b")
    found = [p for p in TESTS.rglob("test_*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert found, f"no test named test_hook_{name} under tests/"


def test_hook_names_follow_the_naming_scheme() -> None:
    lifecycle = {"startup", "shutdown"}
    for name in HOOKS:
        assert (
            name.startswith(("register_", "prepare_", "task_", "check_"))
            or name.endswith(("_for", "_from_request"))
            or name in lifecycle
        ), f"hook {name} does not follow register_/prepare_/task_/check_/*_for/lifecycle naming"
