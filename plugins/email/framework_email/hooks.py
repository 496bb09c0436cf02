"""What the email plugin contributes to the framework: the entry point's target.

- ``register_task_types``: the ``email:send`` task (:mod:`framework_email.tasks`), with the provider's rate
  and concurrency limit from ``[plugins.email]`` (``rate_limit``, ``concurrency_limit``).
- ``startup``: builds the email service (config, renderer, backend) in processes that run tasks, so a
  configuration error stops start-up instead of failing the first email.
- ``shutdown``: releases the backend.
- ``check_config``: builds the service the way ``startup`` does, for ``framework doctor``.
- ``register_admin_panels``: the outbox folder, for the admin's outbox panel, while the ``outbox``
  backend is in use (a hook the admin plugin declares; optional, so this plugin loads without the admin).

Templates live in ``templates/email/``. ``framework_hookspecs`` points the plugin manager at
:mod:`framework_email.hookspecs`, through which other plugins add delivery backends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework import ConfigError, hookimpl
from framework_email import hookspecs
from framework_email.config import load_config, outbox_path, provider_limit

# The service (and its backends) and the task are imported by the hooks that use them: every
# ``framework`` command loads this module, and most never send an email.

if TYPE_CHECKING:
    import pluggy

    from framework import Services, Settings, TaskDef

__all__ = (
    "check_config",
    "framework_hookspecs",
    "register_admin_panels",
    "register_task_types",
    "shutdown",
    "startup",
)

framework_hookspecs = hookspecs
"""The hooks this plugin offers other plugins; the plugin manager adds them before registering plugins."""

_TASK_ROLES = frozenset({"worker", "run"})
"""Process roles that run tasks and so need a backend; the web app only enqueues."""


@hookimpl
def check_config(settings: Settings, plugin_manager: pluggy.PluginManager) -> None:
    """Build the service from ``[plugins.email]`` as ``startup`` does: the section, the backend and its settings.

    Building connects to nothing; backends contributed by other plugins count. The provider's limit settings
    are checked too.
    """
    from framework_email.service import EmailService  # noqa: PLC0415

    backends = plugin_manager.hook.register_email_backends(settings=settings)
    service = EmailService.from_settings(settings, backends=backends)
    provider_limit(service.config)


@hookimpl
def register_task_types(settings: Settings) -> list[TaskDef[Any]]:
    """Contribute the ``email:send`` task, limited as ``[plugins.email]`` says (a bad limit setting stops start-up).

    A section that does not decode at all is reported by ``check_config`` (``framework doctor``) and stops the
    start-up of a process that sends email; the task type is still contributed, so the rest of the checks run.
    """
    from framework_email.tasks import send_email_task, send_email_task_for  # noqa: PLC0415

    try:
        config = load_config(settings)
    except ConfigError:
        return [send_email_task]
    return [send_email_task_for(config)]


@hookimpl
def startup(services: Services) -> None:
    """Build the email service once, in processes that run tasks."""
    if services.role not in _TASK_ROLES:
        return
    from framework_email.service import EMAIL_SERVICE, EmailService  # noqa: PLC0415

    if EMAIL_SERVICE not in services.stash:
        services.stash[EMAIL_SERVICE] = EmailService.from_services(services)


@hookimpl
async def shutdown(services: Services) -> None:
    """Release the backend's resources, if the service was built."""
    from framework_email.service import EMAIL_SERVICE  # noqa: PLC0415

    service = services.stash.get(EMAIL_SERVICE)
    if service is not None:
        await service.aclose()


@hookimpl(optionalhook=True)
def register_admin_panels(settings: Settings) -> dict[str, Any]:
    """Offer the admin the outbox folder while the ``outbox`` backend is the one in use."""
    config = load_config(settings)
    return {"outbox": outbox_path(settings, config)} if config.backend == "outbox" else {}
