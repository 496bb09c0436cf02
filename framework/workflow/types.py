"""Whether a value of one type fits a field of another: the check a workflow makes when it is built.

Conservative and structural: a step's input field must accept every type its dependencies may produce.
``Any`` and ``object`` accept everything; unions accept what one member accepts; a union is accepted when
each member is; generic containers compare their arguments; ``int`` fits ``float`` (msgspec decodes it so).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

__all__ = ("accepts", "item_type", "type_name")

_UNIONS = (Union, types.UnionType)
_NONE = type(None)


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def accepts(target: Any, source: Any) -> bool:  # noqa: PLR0911 - one return per rule, in order
    """Whether a field of type ``target`` takes every value of type ``source``."""
    target, source = _strip(target), _strip(source)
    if target in (Any, object) or source is Any or target == source:
        return True
    if get_origin(source) in _UNIONS:
        return all(accepts(target, member) for member in get_args(source))
    if get_origin(target) in _UNIONS:
        return any(accepts(member, source) for member in get_args(target))
    if source is None or source is _NONE:
        return target is None or target is _NONE
    if typing.Literal in (get_origin(target), get_origin(source)):
        return _accepts_literal(target, source)
    if get_origin(target) is not None or get_origin(source) is not None:
        return _accepts_generic(target, source)
    if isinstance(target, type) and isinstance(source, type):
        return (target is float and source is int) or issubclass(source, target)
    return False


def _accepts_literal(target: Any, source: Any) -> bool:
    if get_origin(target) is typing.Literal:
        return get_origin(source) is typing.Literal and set(get_args(source)) <= set(get_args(target))
    return all(accepts(target, type(value)) for value in get_args(source))


def _accepts_generic(target: Any, source: Any) -> bool:
    t_base, s_base = get_origin(target) or target, get_origin(source) or source
    if not (isinstance(t_base, type) and isinstance(s_base, type) and issubclass(s_base, t_base)):
        return False
    t_args, s_args = get_args(target), get_args(source)
    if not t_args or not s_args:
        return not t_args
    if t_base is tuple and len(t_args) == 2 and t_args[1] is Ellipsis:
        return all(accepts(t_args[0], arg) for arg in s_args if arg is not Ellipsis)
    return len(t_args) == len(s_args) and all(accepts(t, s) for t, s in zip(t_args, s_args, strict=True))


def item_type(tp: Any) -> Any | None:
    """The item type of a list-like field type (``list[T]``, ``Sequence[T]``, ``tuple[T, ...]``), or None.

    ``Any`` (and a bare ``list``) gives ``Any``: a field that takes anything takes a list of anything.
    """
    tp = _strip(tp)
    if tp in (Any, object, list, tuple):
        return Any
    origin = get_origin(tp)
    if origin in _UNIONS:
        found = [item for item in map(item_type, get_args(tp)) if item is not None]
        return found[0] if found else None
    if not (isinstance(origin, type) and issubclass(origin, Sequence)) or origin is str:
        return None
    args = get_args(tp)
    if origin is tuple:
        return args[0] if len(args) == 2 and args[1] is Ellipsis else None
    return args[0] if args else Any


def type_name(tp: Any) -> str:
    """How a type is written: ``Image``, ``list[int]``, ``int | None``."""
    tp = _strip(tp)
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return repr(tp).replace("typing.", "")
