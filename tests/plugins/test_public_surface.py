"""The built-in plugins use the framework as any plugin would: through its public modules only.

Every import of a ``framework`` module in ``plugins/*/framework_*/`` counts, at module level, inside
functions and under ``TYPE_CHECKING``. What a plugin needs that is not public becomes a facade name, a
hook or a documented module, never an import of the core's internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import framework

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

PUBLIC = {
    "framework": "the facade: what apps import",
    "framework.cli": "CliContext, pass_cli and examples, for commands added through register_commands",
    "framework.errors": "the exceptions",
    "framework.hookspecs": "hookspec and hookimpl, for plugins that declare hooks of their own",
    "framework.inspector": "the inspector's queries and the values they return",
    "framework.logging": "get_logger and configure_logging",
    "framework.scheduler.cron": "cron specs and durations: parse_schedule, parse_duration, CronSpecError",
    "framework.settings": "the settings",
    "framework.storage": "the storage interface and its errors",
    "framework.web.ratelimit": "the shared rate limit and the client address of a request",
    "framework.web.tokens": "one-time tokens and their index",
}
"""The modules a plugin may import, and what for. Everything else in ``framework`` is internal."""


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every ``framework`` import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "framework"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "framework":
            found.append((node.lineno, node.module or "", [a.name for a in node.names]))
    return found


def _plugin_files() -> list[Path]:
    return sorted(p for p in PLUGINS.glob("*/framework_*/**/*.py") if "__pycache__" not in p.parts)


def test_there_are_plugin_files_to_check() -> None:
    assert {p.relative_to(PLUGINS).parts[0] for p in _plugin_files()} == {"admin", "cleanup", "email", "images"}


def test_plugins_import_only_public_framework_modules() -> None:
    offenders = []
    for path in _plugin_files():
        for line, module, names in _imports(path):
            where = f"{path.relative_to(PLUGINS)}:{line}"
            if module not in PUBLIC:
                offenders.append(f"{where} imports {module}")
            elif module == "framework":
                offenders += [f"{where}: framework has no public {n!r}" for n in names if n not in framework.__all__]
    assert not offenders, "plugins reaching into the framework's internals:\n" + "\n".join(offenders)


def test_every_public_module_is_importable_and_declares_its_names() -> None:
    import importlib

    for name in PUBLIC:
        module = importlib.import_module(name)
        assert isinstance(getattr(module, "__all__", None), tuple | list), f"{name} has no __all__"
