"""``framework tasks enqueue``: enqueue one task from the command line."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from framework.cli import CliContext, examples, pass_cli
from framework.cli.tasks._common import emit_json, json_option, run_redis, tasks, when_text

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from framework.client.client import TaskInfo
    from framework.registry import Registry

__all__ = ("enqueue",)


def _seconds(text: str, name: str) -> float:
    """Seconds from a number or a Go duration (``90``, ``1m30s``, ``2h``)."""
    from framework.scheduler.cron import parse_duration  # noqa: PLC0415

    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text)
        except ValueError as exc:
            hint = "use seconds or a Go duration such as 90s or 1h30m"
            raise click.BadParameter(f"{exc}; {hint}", param_hint=name) from exc
    if math.isnan(value) or value < 0:
        raise click.BadParameter(f"{text!r} is not a non-negative duration", param_hint=name)
    return value


def _instant(text: str) -> float:
    """Unix seconds from a number or an ISO 8601 time (a time without a zone is UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is neither Unix seconds nor an ISO 8601 time", param_hint="--at") from exc
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _headers(items: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--header")
        headers[name] = value
    return headers


def _options(opts: dict[str, Any]) -> dict[str, Any]:
    """Client options from the command's flags (only those given)."""
    out: dict[str, Any] = {k: opts[k] for k in ("queue", "max_retry", "task_id", "group") if opts[k] is not None}
    if opts["process_in"] is not None:
        out["process_in"] = _seconds(opts["process_in"], "--in")
    if opts["process_at"] is not None:
        out["process_at"] = _instant(opts["process_at"])
    for key in ("unique", "timeout", "retention"):
        if opts[key] is not None:
            out[key] = _seconds(opts[key], f"--{key}")
    if opts["header"]:
        out["headers"] = _headers(opts["header"])
    return out


def _check_type(task_type: str, registry: Registry, *, force: bool) -> None:
    """Refuse a task type no loaded plugin registers (a typo, most often) unless ``--force``."""
    if task_type in registry:
        return
    if force:
        click.echo(f"warning: no loaded plugin handles task type {task_type!r}; the payload is not checked", err=True)
        return
    import difflib  # noqa: PLC0415 - only to suggest a name

    known = sorted(t.type for t in registry)
    close = difflib.get_close_matches(task_type, known, n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise click.BadParameter(
        f"no loaded plugin registers task type {task_type!r}. {hint}"
        f"Registered: {', '.join(known) or 'none'}. Use --force to enqueue it anyway (for a worker elsewhere, "
        "e.g. a Go service).",
        param_hint="TASK_TYPE",
    )


def _payload(text: str | None, task_type: str, registry: Registry) -> Any:
    """The payload: parsed JSON for a registered type (checked by the client; none = all defaults), else the bytes."""
    if text is None:
        return {} if task_type in registry else None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--payload") from exc
    except RecursionError as exc:  # json's parser recurses once per level of nesting
        raise click.BadParameter("not valid JSON: nested too deeply", param_hint="--payload") from exc
    return parsed if task_type in registry else text.encode()


@tasks.command(
    epilog=examples(
        """framework tasks enqueue demo:hello --payload '{"name": "Ann"}'""",
        "framework tasks enqueue demo:hello --in 1h30m -q low",
        """framework tasks enqueue go:report --force --payload '{"id": 7}'""",
    )
)
@click.argument("task_type")
@click.option("--payload", default=None, help="Payload as JSON (checked against the task type's payload).")
@click.option("--queue", "-q", default=None, help="Queue (default: the task type's, or 'default').")
@click.option("--in", "process_in", default=None, help="Run after this delay: seconds or a Go duration (1h30m).")
@click.option("--at", "process_at", default=None, help="Run at this time: ISO 8601 (UTC if no zone) or Unix seconds.")
@click.option("--max-retry", type=click.IntRange(min=0), default=None, help="Retries before archiving.")
@click.option("--unique", default=None, help="Refuse duplicates (same type and payload) for this TTL.")
@click.option("--task-id", default=None, help="Task id (default: a new UUID).")
@click.option("--timeout", default=None, help="Seconds (or a Go duration) one run may take.")
@click.option("--retention", default=None, help="Keep the completed task this long.")
@click.option("--group", default=None, help="Aggregation group.")
@click.option("--header", multiple=True, help="Header NAME=VALUE (repeatable).")
@click.option("--force", is_flag=True, help="Enqueue a task type no loaded plugin registers (payload stored as given).")
@json_option
@pass_cli
def enqueue(ctx: CliContext, /, task_type: str, payload: str | None, force: bool, as_json: bool, **opts: Any) -> None:
    """Enqueue a task of type TASK_TYPE.

    When a loaded plugin registers TASK_TYPE, the payload is checked against its payload type and the
    type's defaults (queue, retries, timeout) apply. Any other type is refused (it is most likely a
    typo) unless --force, which stores the JSON as given for a worker elsewhere to run.
    """
    from framework.client.client import Client  # noqa: PLC0415
    from framework.plugins.manager import collect_task_types  # noqa: PLC0415
    from framework.protocol.keys import Schema  # noqa: PLC0415
    from framework.registry import Registry  # noqa: PLC0415

    registry = Registry()
    collect_task_types(ctx.pm, ctx.settings, registry)
    _check_type(task_type, registry, force=force)
    data = _payload(payload, task_type, registry)
    options = _options(opts)

    async def go(redis: Redis) -> TaskInfo:
        client = Client(redis, schema=Schema(ctx.settings.namespace), settings=ctx.settings, registry=registry)
        return await client.enqueue(task_type, data, **options)

    info = run_redis(ctx, go)
    if as_json:
        emit_json(info)
        return
    when = f" at {when_text(datetime.fromtimestamp(info.next_process_at, UTC))}" if info.state == "scheduled" else ""
    click.echo(f"enqueued {info.type} task {info.id} in queue {info.queue!r}: {info.state}{when}")
