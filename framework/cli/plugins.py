"""``framework plugins``: every loaded plugin, its distribution, version, hooks and contributions."""

from __future__ import annotations

import json
from typing import Any

import click

from framework.cli import CliContext, examples, pass_cli

__all__ = ("plugins",)


def _contributions(ctx: CliContext) -> dict[str, dict[str, list[str]]]:
    from framework.plugins.manager import _results_by_plugin  # noqa: PLC0415

    settings = ctx.settings
    out: dict[str, dict[str, list[str]]] = {}

    def add(plugin: str, kind: str, items: list[str]) -> None:
        if items:
            out.setdefault(plugin, {}).setdefault(kind, []).extend(items)

    for plugin, tasks in _results_by_plugin(ctx.pm, "register_task_types", settings=settings):
        add(plugin, "task_types", [t.type for t in tasks or []])
    for plugin, entries in _results_by_plugin(ctx.pm, "register_cron_entries", settings=settings):
        add(plugin, "cron_entries", [f"{e.name} ({e.spec})" for e in entries or []])
    for plugin, routes in _results_by_plugin(ctx.pm, "register_routes", settings=settings):
        add(plugin, "routes", _route_labels(routes or []))
    return out


_IMPLICIT_METHODS = frozenset({"OPTIONS", "HEAD"})
"""Methods the web framework answers on every route by itself; not worth listing."""


def _route_labels(routes: list[Any]) -> list[str]:
    """One label per route handler (``GET /healthz``) and per router prefix (``/admin/* (15 routes)``).

    Routers mounted at the same prefix (public and guarded pages, say) count as one prefix; a label
    appears once.
    """
    labels: list[str] = []
    prefixes: dict[str, set[tuple[str, str]]] = {}
    for route in routes:
        inner = getattr(route, "routes", None)
        if isinstance(inner, list):  # a router: summarise it by its prefix
            endpoints = prefixes.setdefault(getattr(route, "path", "") or "/", set())
            for r in inner:
                endpoints.update((m, r.path) for m in set(getattr(r, "methods", ()) or ()) - _IMPLICIT_METHODS)
            continue
        paths = getattr(route, "paths", None) or [getattr(route, "path", "")]
        methods = sorted(set(getattr(route, "http_methods", []) or []) - _IMPLICIT_METHODS)
        label = f"{'|'.join(methods)} {', '.join(sorted(paths))}".strip()
        if label and label not in labels:
            labels.append(label)
    summaries = [f"{prefix.rstrip('/')}/* ({len(found)} routes)" for prefix, found in prefixes.items()]
    return summaries + labels


@click.command(epilog=examples("framework plugins", "framework plugins --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_cli
def plugins(ctx: CliContext, as_json: bool) -> None:
    """List every loaded plugin: distribution, version, hooks and what it contributes."""
    from framework.plugins.manager import get_plugins  # noqa: PLC0415

    infos = get_plugins(ctx.pm, ctx.settings)
    contributions = _contributions(ctx)
    rows: list[dict[str, Any]] = []
    for info in infos:
        rows.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "builtin": info.builtin,
                "hooks": info.hooks,
                "templates": info.templates_dir,
                "static": info.static_dir,
                "contributes": contributions.get(info.name, {}),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from framework.cli._tables import PlainTable, plain_console, print_fitted  # noqa: PLC0415

    table = PlainTable(title="Plugins")
    for col in ("name", "distribution", "version", "hooks", "contributes"):
        table.add_column(col)
    for row in rows:
        contributes = "\n".join(f"{k}: {', '.join(v)}" for k, v in row["contributes"].items())
        table.add_row(
            row["name"], row["distribution"] or "-", row["version"] or "-", ", ".join(row["hooks"]), contributes
        )
    print_fitted(table, plain_console())
