"""A tiny app hook module used by the CLI hook tests (loaded through FRAMEWORK_APP)."""

from __future__ import annotations

import click

from framework.hookspecs import hookimpl


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command()
    @click.argument("who")
    def greet(who: str) -> None:
        """Say hello (contributed by a plugin)."""
        click.echo(f"hello {who} from a plugin command")
