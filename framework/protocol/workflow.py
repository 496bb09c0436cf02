"""How a workflow step's task says which workflow it belongs to: one header on its TaskMessage.

A step is an ordinary asynq task once it may run; its message carries the header ``framework-workflow``
with its workflow's home queue, id and the step's name (JSON), so the worker that runs it finishes it
through the workflow scripts (``wf_done``, ``wf_complete``, ``wf_archive``), and Go's tools show it as
any other task. Pure module: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

__all__ = ("STEP_HEADER", "StepRef", "step_of")

STEP_HEADER = "framework-workflow"
"""The header naming a step's workflow (home queue ``q``, id ``w``) and the step (``s``), as JSON."""


class StepRef(msgspec.Struct, frozen=True, omit_defaults=True):
    """Which step of which workflow a task is, and where its handler takes its dependencies' results.

    Attributes:
        home: the workflow's home queue (its keys live under it).
        workflow: the workflow id.
        step: the step's name.
        input: the payload field that receives the dependencies' results ("" = none).
        fan_in: the field takes a list of every dependency's result, in order (else the one dependency's).
    """

    home: str = msgspec.field(name="q")
    workflow: str = msgspec.field(name="w")
    step: str = msgspec.field(name="s")
    input: str = msgspec.field(default="", name="i")
    fan_in: bool = msgspec.field(default=False, name="l")

    def header(self) -> str:
        """The header's value."""
        return _encoder.encode(self).decode()


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StepRef)


def step_of(headers: Mapping[str, str] | None) -> StepRef | None:
    """The step a task's headers name, or None (not a step, or a header that does not parse)."""
    if not headers:
        return None
    value = headers.get(STEP_HEADER)
    if value is None:
        return None
    try:
        return _decoder.decode(value)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
