"""Email rendering: Jinja templates ``email/<name>.html`` and ``email/<name>.txt`` to an HTML and a text body.

Templates are looked up in the app's folders first, then in this plugin's ``templates/`` folder, so an
app overrides ``welcome`` by adding ``email/welcome.html`` to one of its folders, and adds a template by
adding a new name. An override can extend the original through the ``default:`` prefix::

    {% extends "default:email/welcome.html" %}

HTML is autoescaped; text is not. Variables are strict: a variable the template needs and the data lacks
is an error, and so is a missing template, a broken one, or any exception raised while rendering (say
``{{ total / count }}`` with a zero ``count``). All are permanent (:class:`EmailTemplateError` is a
:class:`~framework.errors.SkipRetry`, and its message names the template), because a retry renders the same
template with the same data.

A synchronous environment renders in a worker thread, so a template that runs long does not stall the
process's other tasks, and the task's timeout still fires.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from framework.errors import SkipRetry

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

__all__ = ("TEMPLATES_DIR", "EmailRenderer", "EmailTemplateError", "RenderedEmail")

TEMPLATES_DIR = Path(__file__).parent / "templates"
"""This plugin's template folder; it holds ``email/base.html``, ``email/welcome.html`` and the others."""

_AUTOESCAPE = jinja2.select_autoescape(enabled_extensions=("html", "htm", "xml"), default_for_string=True)
_BLANK_RUNS = re.compile(r"\n(?:[ \t]*\n){2,}")


class EmailTemplateError(SkipRetry):
    """A template is missing, broken, needs a variable the data lacks, or raised while rendering.

    Permanent: the task is archived at once, since a retry renders the same template with the same data.
    """


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """The bodies of one email. At least one is set.

    Attributes:
        html: the HTML body, or ``None`` when the template has no ``.html`` file.
        text: the plain-text body, or ``None`` when the template has no ``.txt`` file.
    """

    html: str | None
    text: str | None


def _loader(search_dirs: Sequence[Path], shared: jinja2.BaseLoader | None) -> jinja2.BaseLoader:
    """App folders, then the shared environment's loader, then ours; ``default:`` always reaches ours."""
    own = jinja2.FileSystemLoader(TEMPLATES_DIR)
    chain: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(search_dirs)] if search_dirs else []
    if shared is not None:
        chain.append(shared)
    chain += [own, jinja2.PrefixLoader({"default": own}, delimiter=":")]
    return jinja2.ChoiceLoader(chain)


def _tidy_text(text: str) -> str:
    """Trim the blank lines template tags leave: at most one blank line in a row, one newline at the end."""
    return _BLANK_RUNS.sub("\n\n", text).strip("\n") + "\n"


class EmailRenderer:
    """Renders the email templates by name.

    Args:
        search_dirs: the app's template folders, searched in order before the plugin's own; each holds
            ``email/<name>.html`` and/or ``email/<name>.txt``.
        env: the app's shared Jinja environment, when there is one. Its filters, globals and loader are
            used through an overlay with strict variables and HTML-only autoescaping; the search folders
            and this plugin's templates are tried around its loader. Without it a private one is built.
        context: values every template sees (``app_name``, ``app_url``); a task's data wins over them.
    """

    def __init__(
        self,
        search_dirs: Sequence[str | os.PathLike[str]] = (),
        *,
        env: jinja2.Environment | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self.search_dirs = tuple(Path(d) for d in search_dirs)
        loader = _loader(self.search_dirs, env.loader if env is not None else None)
        if env is None:
            self.env = jinja2.Environment(
                loader=loader, autoescape=_AUTOESCAPE, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
            )
        else:
            self.env = env.overlay(loader=loader, autoescape=_AUTOESCAPE, undefined=jinja2.StrictUndefined)
        self.context: dict[str, Any] = {"app_name": "", "app_url": "", **(context or {})}

    async def render(self, template: str, data: Mapping[str, Any]) -> RenderedEmail:
        """Render ``email/<template>.html`` and ``email/<template>.txt`` with ``data``.

        Args:
            template: the template's name, such as ``welcome`` or ``password-reset``.
            data: the template's variables.

        Returns:
            The HTML and text bodies; a missing file of the two gives ``None`` for that body.

        Raises:
            EmailTemplateError: neither file exists, a template is broken, it needs a variable that
                ``data`` lacks, or rendering raised; the message names the template and what failed.
        """
        context = {**self.context, **data}
        html = await self._render_file(template, f"email/{template}.html", context)
        text = await self._render_file(template, f"email/{template}.txt", context)
        if text is not None:
            text = _tidy_text(text)
        if html is None and text is None:
            where = ", ".join(str(d) for d in (*self.search_dirs, TEMPLATES_DIR))
            raise EmailTemplateError(
                f"email template {template!r} not found: no email/{template}.html or email/{template}.txt in {where}"
            )
        return RenderedEmail(html=html, text=text)

    async def _render_file(self, template: str, name: str, context: Mapping[str, Any]) -> str | None:
        """Render one file, or return ``None`` when it does not exist."""
        try:
            compiled = self.env.get_template(name)
        except jinja2.TemplateNotFound as exc:
            if exc.name == name:
                return None
            raise EmailTemplateError(f"email template {template!r} ({name}) is broken: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise EmailTemplateError(f"email template {template!r} ({name}) is broken: {exc}") from exc
        except UnicodeDecodeError as exc:  # the loaders read UTF-8: a file saved in another encoding
            raise EmailTemplateError(f"email template {template!r} ({name}) is broken: not UTF-8 text: {exc}") from exc
        try:
            if self.env.is_async:
                return await compiled.render_async(context)
            # In a thread: a template that runs long (a loop over a large count) leaves the process's other
            # tasks running and lets the task's timeout fire; the thread itself goes on until the template ends.
            return await asyncio.to_thread(compiled.render, context)
        except jinja2.UndefinedError as exc:
            raise EmailTemplateError(
                f"email template {template!r} ({name}) needs a variable the task's data lacks: {exc.message}"
            ) from exc
        except Exception as exc:
            # Anything else a template raises while rendering (a division by a zero count, a filter given the
            # wrong type, a global that fails) comes from the template and its data, which a retry sends
            # unchanged: it is permanent too, and the message says which template failed and how.
            raise EmailTemplateError(
                f"email template {template!r} ({name}) failed to render: {type(exc).__name__}: {exc}"
            ) from exc
