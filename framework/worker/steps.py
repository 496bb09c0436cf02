"""What a worker does differently for a workflow step: its handler's input, and its finish.

It gives the handler its dependencies' results, and finishes the step through the workflow scripts.

A step is an ordinary task whose message carries the workflow header
(:data:`~framework.protocol.workflow.STEP_HEADER`). When the step takes an input, the results its
dependencies left are read (one script, ``wf_inputs``) and decoded into the payload field it names, with
that field's type, before the handler runs: the types were checked when the workflow was built, and a
result that still does not fit (or does not decode, or nests too deep to decode) fails the step for good with
an error naming the field. So does a step whose workflow is gone (its records expired or were deleted, say
before its archived task was run again): its dependencies' results cannot be told from missing ones, and the
handler never runs on an input made up of ``None``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import msgspec

from framework.errors import PayloadTypeError, WorkflowNotFound
from framework.protocol.workflow import step_of

if TYPE_CHECKING:
    from framework.broker.broker import Broker
    from framework.protocol.message import TaskMessage
    from framework.protocol.workflow import StepRef

__all__ = ("StepInputError", "archive", "fill_input")


class StepInputError(PayloadTypeError):
    """A step's dependencies' results do not decode into the payload field that takes them."""


@lru_cache(maxsize=512)
def _decoder(payload_type: type[Any], field: str) -> msgspec.json.Decoder[Any]:
    for info in msgspec.structs.fields(payload_type):
        if info.name == field:
            return msgspec.json.Decoder(info.type)
    raise StepInputError(f"payload type {payload_type.__name__} has no field {field!r} to take the step's input")


async def fill_input(broker: Broker, step: StepRef, payload: Any) -> Any:
    """``payload`` with the field ``step.input`` set to its dependencies' results.

    Raises:
        StepInputError: the results do not fit the field's type, or the workflow is gone.
        redis.exceptions.RedisError, OSError: the results could not be read (the task is retried).
    """
    try:
        values = await broker.step_inputs(step)
    except WorkflowNotFound as exc:
        raise StepInputError(
            f"step {step.step!r}: its workflow {step.workflow!r} in queue {step.home!r} is gone (its records "
            f"expired or were deleted), so there are no results for {type(payload).__name__}.{step.input}"
        ) from exc
    if step.fan_in:
        raw = b"[" + b",".join(b"null" if v is None else v for v in values) + b"]"
    else:
        raw = values[0] if values and values[0] is not None else b"null"
    try:
        payload_type: Any = type(payload)
        value = _decoder(payload_type, step.input).decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:  # a ValidationError is a DecodeError
        raise StepInputError(
            f"step {step.step!r}: its dependencies' results do not fit {type(payload).__name__}.{step.input}: {exc}"
        ) from exc
    return msgspec.structs.replace(payload, **{step.input: value})


async def archive(broker: Broker, queue: str, task_id: str, msg: TaskMessage, data: bytes) -> int:
    """Archive an active task; a workflow step's workflow learns of the failure in the same script."""
    step = step_of(msg.headers)
    if step is None:
        return await broker.archive(queue, task_id, data)
    return await broker.step_archive(step, queue, task_id, data, msg.error_msg)
