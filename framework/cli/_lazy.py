"""A click group whose commands load on demand, and old command names kept as hidden aliases.

``framework --help`` lists every built-in command from the one-line summaries the group holds, without
importing a command's module; running a command imports only its own module. A worker then starts without
the scaffold, the inspector or the dashboard's code, and help prints without any of them.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from framework.errors import PluginError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

__all__ = ("Lazy", "LazyGroup")


class Lazy(NamedTuple):
    """Where a command is defined, and what ``--help`` says of it before it is loaded.

    Attributes:
        module: the module that defines it (``framework.cli.run``).
        attribute: the command object's name in that module.
        summary: the first sentence of its help, as the group's ``--help`` lists it; a test checks that it
            matches the command's own.
    """

    module: str
    attribute: str
    summary: str


class LazyGroup(click.Group):
    """A group that imports a command's module when the command is run or its help is asked for.

    Args:
        lazy: the commands loaded on demand, by name.
        aliases: old names still accepted, each to the current name; hidden from ``--help`` and completion.
        args: passed to :class:`click.Group`.
        kwargs: passed to :class:`click.Group`.

    Commands added with :meth:`add_command` (a plugin's) sit beside the lazy ones but may not take a name of
    theirs: a built-in command always means the same thing, and runs without the plugins being loaded. Nor may
    a plugin take a name another plugin's command has (see :meth:`adding_for`).
    """

    def __init__(
        self,
        *args: Any,
        lazy: Mapping[str, Lazy] | None = None,
        aliases: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.aliases = dict(aliases or {})
        self.added_by: dict[str, str | None] = {}
        """The plugin that added each command added by :meth:`add_command` (None: outside :meth:`adding_for`)."""
        self._adding: str | None = None

    def builtin(self, name: str) -> bool:
        """Whether ``name`` is one of the group's own commands or aliases (not one a plugin added)."""
        return name in self.lazy or name in self.aliases

    @contextlib.contextmanager
    def adding_for(self, plugin: str) -> Iterator[None]:
        """Within the block, the commands added are ``plugin``'s: errors name it, and so do later clashes."""
        before, self._adding = self._adding, plugin
        try:
            yield
        finally:
            self._adding = before

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Add ``cmd``; a name the group already uses for its own commands, or for another plugin's, is refused.

        The same plugin adding a command of the same name again replaces its own.

        Raises:
            PluginError: ``name`` (or the command's name) is a built-in command or alias, or a command of
                another plugin (or one added outside :meth:`adding_for`) has it; names both plugins.
        """
        name = name or cmd.name
        by = self._adding
        who = f"plugin {by!r}: " if by is not None else ""
        if name is not None and self.builtin(name):
            raise PluginError(f"{who}the command name {name!r} is taken by a built-in command: choose another one")
        if name is not None and name in self.commands and self.added_by.get(name) != by:
            other = self.added_by.get(name)
            owner = f"plugin {other!r}" if other is not None else "the application"
            raise PluginError(
                f"{who}the command name {name!r} is taken by a command of {owner}; the first one is kept: "
                "block one of the plugins (FRAMEWORK_BLOCK_PLUGINS) or rename one command"
            )
        super().add_command(cmd, name)
        if name is not None:
            self.added_by[name] = by

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name`` (or the one it is an alias of), its module imported at the first call."""
        name = self.aliases.get(cmd_name, cmd_name)
        command = self.commands.get(name)
        if command is None and name in self.lazy:
            entry = self.lazy[name]
            command = getattr(importlib.import_module(entry.module), entry.attribute)
            self.commands[name] = command
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted; aliases are left out."""
        return sorted({*self.lazy, *self.commands})

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click does, but an unknown name's suggestions come from every command, loaded or not."""
        name = args[0]
        if not ctx.resilient_parsing and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib  # noqa: PLC0415

            close = difflib.get_close_matches(name, self.list_commands(ctx))
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands as click does, a command not loaded yet by the summary it was given."""
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name) or click.Command(name, help=self.lazy[name].summary)
            if not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in rows])
