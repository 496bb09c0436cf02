"""The shapes of a workflow, and the plan a client stores.

* :func:`chain` ``(a, b, c)``: each runs when the one before succeeded.
* :func:`group` ``(a, b, c)``: all at once; what follows a group gets the list of their results, in order.
* :func:`chord` ``([a, b, c], callback)``: a group, then one callback taking the list of results.
* :class:`Workflow`: any graph: ``wf.add(step, after=[x, y])``.

Shapes nest (a chain of groups of chains ...). A step takes its dependencies' results through the payload
field it names (``taskdef.step(payload, input="field")``): the one result of the step it follows, or the list
of results when it follows a group or a list of steps. :meth:`Workflow.plan` checks, before anything runs,
that the field exists and takes the result types the dependencies declare (``TaskDef(result=...)``), with
``None`` in the mix for a dependency whose failure is handed on.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from framework.errors import InvalidWorkflow
from framework.task import OnFailure, Step, StepOptions
from framework.workflow.types import accepts, item_type, type_name

__all__ = ("Plan", "PlannedStep", "StepHandle", "Workflow", "chain", "chord", "group")

_ALLOWED = StepOptions.__optional_keys__
_NOT_FOR_STEPS = {
    "task_id": "a step's task id is derived from its workflow's",
    "process_at": "a step runs when its dependencies are done",
    "process_in": "a step runs when its dependencies are done",
    "group": "aggregation groups do not mix with workflows",
}
_POLICIES = ("fail", "continue")


@dataclass(frozen=True, slots=True)
class _Node:
    step: Step[Any]
    deps: tuple[int, ...]
    fan_in: bool
    on_failure: OnFailure | None


@dataclass(frozen=True, slots=True)
class StepHandle:
    """A step added to a :class:`Workflow`, to name it in a later step's ``after``."""

    workflow: Workflow
    index: int


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """One step of a :class:`Plan`.

    Attributes:
        index: its position (its task id is ``<workflow id>-<index>``).
        name: its unique name.
        step: the step (task type, payload, input field, options).
        deps: the names of its dependencies, in the order its input lists their results.
        fan_in: its input is the list of its dependencies' results (else the one dependency's result).
        handed_on: its failure is handed on to its dependants (``on_failure="continue"``).
    """

    index: int
    name: str
    step: Step[Any]
    deps: tuple[str, ...]
    fan_in: bool
    handed_on: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked workflow, ready to store.

    Attributes:
        name: the workflow's name (shown by the dashboard and the CLI).
        steps: its steps, each after its dependencies.
        outputs: the steps nothing depends on: the workflow's result is theirs.
        grouped: the workflow's result is the list of the outputs' results (else the one output's).
    """

    name: str
    steps: tuple[PlannedStep, ...]
    outputs: tuple[str, ...]
    grouped: bool

    def result_type(self) -> Any:
        """The type of the workflow's result (``Any`` where a step declares none)."""
        by_name = {s.name: s for s in self.steps}
        types = [by_name[name].step.task.result or Any for name in self.outputs]
        if not self.grouped:
            return types[0]
        first = types[0]
        return list[first] if all(t == first for t in types) else list[Any]  # type: ignore[valid-type]


class Workflow:
    """A graph of steps. Build one with :meth:`add`, or with :func:`chain`, :func:`group` and :func:`chord`.

    Args:
        name: shown by the dashboard and the CLI (default: the first step's task type).
        on_failure: what a step archived after its retries does: ``"fail"`` the workflow (default; its
            dependants do not run) or ``"continue"`` (they run, getting ``None`` for its result). A step's
            own ``on_failure`` overrides it.
    """

    def __init__(self, name: str | None = None, *, on_failure: OnFailure = "fail") -> None:
        if on_failure not in _POLICIES:
            raise InvalidWorkflow(f"on_failure must be 'fail' or 'continue', got {on_failure!r}")
        self.name = name
        self.on_failure: OnFailure = on_failure
        self._nodes: list[_Node] = []
        self._grouped = False

    def __len__(self) -> int:
        return len(self._nodes)

    def add(self, step: Step[Any], *, after: StepHandle | Sequence[StepHandle] = ()) -> StepHandle:
        """Add ``step``, to run once the steps in ``after`` succeeded; returns a handle for later ``after``.

        ``after`` as one handle gives the step that step's result; as a list (or tuple), the list of results.
        """
        if not isinstance(step, Step):
            raise InvalidWorkflow(f"add() takes a step (taskdef.step(payload)), got {type(step).__name__}")
        handles = [after] if isinstance(after, StepHandle) else list(after)
        for handle in handles:
            if not isinstance(handle, StepHandle) or handle.workflow is not self:
                raise InvalidWorkflow(f"after= takes handles returned by this workflow's add(), got {handle!r}")
        deps = tuple(h.index for h in handles)
        self._nodes.append(_Node(step, deps, not isinstance(after, StepHandle), step.on_failure))
        return StepHandle(self, len(self._nodes) - 1)

    def _outputs(self) -> list[int]:
        used = {d for node in self._nodes for d in node.deps}
        return [i for i in range(len(self._nodes)) if i not in used]

    def _absorb(self, part: Workflow, after: list[int], fan_in: bool) -> list[int]:
        """Copy ``part``'s steps in; its first steps depend on ``after``. Returns its outputs' new indices."""
        offset = len(self._nodes)
        own_policy = part.on_failure if part is not self and part.on_failure != "fail" else None
        for node in part._nodes:
            if node.deps:
                deps, node_fan_in = tuple(d + offset for d in node.deps), node.fan_in
            else:
                deps, node_fan_in = tuple(after), fan_in
            self._nodes.append(_Node(node.step, deps, node_fan_in, node.on_failure or own_policy))
        return [offset + i for i in part._outputs()]

    def plan(self) -> Plan:
        """Check the workflow and name its steps.

        Raises:
            InvalidWorkflow: no steps; a name used twice or not usable; an option a step cannot have; an input
                field the payload lacks, or whose type does not take the dependencies' result types.
        """
        if not self._nodes:
            raise InvalidWorkflow("a workflow needs at least one step")
        names = _names(self._nodes)
        planned = []
        for i, node in enumerate(self._nodes):
            _check_options(names[i], node.step)
            handed_on = (node.on_failure or self.on_failure) == "continue"
            deps = [self._nodes[d] for d in node.deps]
            dep_policies = [(d.on_failure or self.on_failure) == "continue" for d in deps]
            _check_input(names[i], node, deps, [names[d] for d in node.deps], dep_policies)
            planned.append(
                PlannedStep(i, names[i], node.step, tuple(names[d] for d in node.deps), node.fan_in, handed_on)
            )
        outputs = self._outputs()
        grouped = self._grouped or len(outputs) > 1
        name = self.name or self._nodes[0].step.task.type
        return Plan(name, tuple(planned), tuple(names[i] for i in outputs), grouped)


def _as_workflow(item: Step[Any] | Workflow) -> Workflow:
    if isinstance(item, Workflow):
        return item
    if isinstance(item, Step):
        single = Workflow()
        single.add(item)
        return single
    raise InvalidWorkflow(f"a workflow is built from steps (taskdef.step(payload)) and shapes, got {item!r}")


def chain(*items: Step[Any] | Workflow, name: str | None = None, on_failure: OnFailure = "fail") -> Workflow:
    """Run ``items`` one after another; each step (or shape) starts when the one before succeeded."""
    wf = Workflow(name, on_failure=on_failure)
    outputs: list[int] = []
    grouped = False
    for item in items:
        part = _as_workflow(item)
        outputs = wf._absorb(part, outputs, grouped or len(outputs) > 1)
        grouped = part._grouped
    wf._grouped = grouped
    return wf


def group(*items: Step[Any] | Workflow, name: str | None = None, on_failure: OnFailure = "fail") -> Workflow:
    """Run ``items`` at once; what follows the group gets the list of their results, in this order."""
    wf = Workflow(name, on_failure=on_failure)
    for item in items:
        wf._absorb(_as_workflow(item), [], fan_in=False)
    wf._grouped = True
    return wf


def chord(
    header: Sequence[Step[Any] | Workflow] | Workflow,
    callback: Step[Any] | Workflow,
    *,
    name: str | None = None,
    on_failure: OnFailure = "fail",
) -> Workflow:
    """A group, then ``callback`` with the list of the group's results, once, after all of them."""
    members = group(header) if isinstance(header, Workflow) else group(*header)
    return chain(members, callback, name=name, on_failure=on_failure)


def _names(nodes: list[_Node]) -> list[str]:
    given = [node.step.name for node in nodes]
    taken: set[str] = set()
    for name in given:
        if name is None:
            continue
        if not name.strip() or name != name.strip() or "\n" in name:
            raise InvalidWorkflow(f"step name {name!r}: use a name without surrounding spaces or line breaks")
        if name in taken:
            raise InvalidWorkflow(f"two steps are named {name!r}: step names must be unique in a workflow")
        taken.add(name)
    names = []
    counts: dict[str, int] = {}
    for node, name in zip(nodes, given, strict=True):
        chosen = name
        if chosen is None:
            base = node.step.task.type
            n = counts.get(base, 0)
            while chosen is None or chosen in taken:
                n += 1
                chosen = base if n == 1 else f"{base}-{n}"
            counts[base] = n
            taken.add(chosen)
        names.append(chosen)
    return names


def _check_options(name: str, step: Step[Any]) -> None:
    for option in step.options:
        if option in _NOT_FOR_STEPS:
            raise InvalidWorkflow(f"step {name!r}: option {option!r} is not for a step ({_NOT_FOR_STEPS[option]})")
        if option not in _ALLOWED:
            allowed = ", ".join(sorted(_ALLOWED))
            raise InvalidWorkflow(f"step {name!r}: unknown option {option!r} (a step takes {allowed})")
    if step.on_failure is not None and step.on_failure not in _POLICIES:
        raise InvalidWorkflow(f"step {name!r}: on_failure must be 'fail' or 'continue', got {step.on_failure!r}")


def _check_input(name: str, node: _Node, deps: list[_Node], dep_names: list[str], handed_on: list[bool]) -> None:
    field = node.step.input
    if field is None:
        return
    payload_type = node.step.task.payload
    if payload_type is builtins.bytes:
        raise InvalidWorkflow(f"step {name!r}: its task takes a bytes payload, which has no field {field!r}")
    fields = {f.name: f.type for f in msgspec.structs.fields(payload_type)}
    if field not in fields:
        raise InvalidWorkflow(f"step {name!r}: payload {payload_type.__name__} has no field {field!r} for its input")
    if not deps:
        raise InvalidWorkflow(f"step {name!r} takes input {field!r} but runs first: it follows no step")
    target = fields[field]
    where = f"{payload_type.__name__}.{field}"
    if node.fan_in:
        target = item_type(fields[field])
        if target is None:
            raise InvalidWorkflow(
                f"step {name!r} follows {len(deps)} steps as a group, so {where} must be a list of their results, "
                f"not {type_name(fields[field])}"
            )
    elif len(deps) != 1:
        raise InvalidWorkflow(f"step {name!r}: one input field for {len(deps)} dependencies needs a list")
    for dep, dep_name, may_fail in zip(deps, dep_names, handed_on, strict=True):
        produced = dep.step.task.result
        if produced is None:
            if target is Any or target is object:
                continue
            raise InvalidWorkflow(
                f"step {name!r} takes {where} from step {dep_name!r}, but task {dep.step.task.type!r} declares no "
                "result type (TaskDef(result=...))"
            )
        source = produced | None if may_fail else produced
        if not accepts(target, source):
            extra = " (None: its failure is handed on)" if may_fail and accepts(target, produced) else ""
            raise InvalidWorkflow(
                f"step {name!r}: {where} is {type_name(target)}, but step {dep_name!r} returns "
                f"{type_name(source)}{extra}"
            )
