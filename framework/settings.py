"""The :class:`Settings` object: one typed place for every setting, read from TOML and the environment.

Sources, later ones winning:

1. defaults declared on the Structs below;
2. a TOML file: ``$FRAMEWORK_CONFIG`` or ``./framework.toml`` when it exists;
3. environment variables ``FRAMEWORK_<SETTING>`` (for example ``FRAMEWORK_CONCURRENCY=20``), plus the
   conventional ``REDIS_URL``. Mappings take ``name=value,name=value`` (``FRAMEWORK_QUEUES=critical=6,low=1``)
   or JSON; lists take comma-separated words or JSON.

Each plugin has its own section (``[plugins.email]`` in TOML), decoded into that plugin's own Struct by
:meth:`Settings.plugin_config`. A wrong value raises :class:`~framework.errors.ConfigError` naming the
setting, the value and what is allowed.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from framework.errors import ConfigError
from framework.limits.rules import check_setting

__all__ = (
    "MAX_PAYLOAD_SIZE",
    "MAX_RESULT_SIZE",
    "CronEntrySettings",
    "QueueLimit",
    "Settings",
    "StorageSettings",
    "TaskDefaults",
    "load_settings",
    "redact_url",
)

T = TypeVar("T")

_ENV_PREFIX = "FRAMEWORK_"

MAX_PAYLOAD_SIZE = 4 * 1024 * 1024
"""The default of ``max_payload_size`` (4 MiB), also the limit of a client built without settings."""

MAX_RESULT_SIZE = 64 * 1024 * 1024
"""The default of ``max_result_size`` (64 MiB)."""

_REDIS_STRING_MAX = 512 * 1024 * 1024
"""The largest string Redis stores (its ``proto-max-bulk-len`` default): a larger result could never be written."""


class QueueLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Slots a queue may use in one worker process (beyond asynq).

    Attributes:
        max: at most this many of the worker's slots run tasks of this queue (0 = no cap).
        reserved: this many slots are kept for this queue alone; other queues cannot take them.
    """

    max: int = 0
    reserved: int = 0


class TaskDefaults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Enqueue defaults for the tasks of one queue, below per-task-type defaults.

    Attributes:
        max_retry: retries before a task is archived (asynq's default is 25).
        timeout: seconds a handler may run (asynq's default is 1800).
        retention: seconds a completed task is kept (0 = deleted at once).
    """

    max_retry: int | None = None
    timeout: float | None = None
    retention: float | None = None


class CronEntrySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A cron entry declared in settings (plugins declare theirs through a hook).

    Attributes:
        name: a stable name; it identifies the entry across restarts.
        spec: five-field cron spec, ``@daily``-style macro or ``@every 30s``.
        task: the task type to enqueue.
        payload: the payload, as JSON-compatible data checked against the task's payload type.
        tz: IANA time zone the spec is read in.
        queue: queue to enqueue into (default: the task type's).
        run_missed: after downtime, run the most recent missed tick once.
    """

    name: str
    spec: str
    task: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    tz: str = "UTC"
    queue: str | None = None
    run_missed: bool = False


class StorageSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The object storage service used by plugins (uploads, thumbnails, attachments).

    Attributes:
        backend: ``local`` (a folder in the data directory) or ``s3`` (any S3-compatible server).
        local_dir: folder for the local backend; relative paths are inside the data directory.
        endpoint: S3 endpoint ``host:port``.
        bucket: S3 bucket name.
        access_key: S3 access key (or env ``AWS_ACCESS_KEY_ID``).
        secret_key: S3 secret key (or env ``AWS_SECRET_ACCESS_KEY``).
        region: S3 region.
        secure: use TLS to reach the endpoint.
        public_url: base URL under which the local backend's files are served.
        connect_timeout: S3: seconds to wait for a connection to the endpoint.
        read_timeout: S3: seconds to wait for the server's next bytes (an answer, or more of a body being
            read). A call that waits longer fails with ``StorageUnavailable``.
    """

    backend: Literal["local", "s3"] = "local"
    local_dir: str = "storage"
    endpoint: str = ""
    bucket: str = "framework"
    access_key: str = ""
    secret_key: str = ""
    region: str | None = None
    secure: bool = True
    public_url: str = "/storage"
    connect_timeout: float = 5.0
    read_timeout: float = 60.0


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every setting of an app. Set by the user (TOML, environment); read by the framework.

    Attributes:
        env: ``development`` (embedded servers, generated admin token) or ``production``.
        redis_url: Redis to use (``redis://``, ``rediss://``, ``unix://``); none starts embedded Valkey.
        namespace: key prefix of the queues; keep ``asynq`` to share them with Go asynq.
        data_dir: where embedded Valkey, the outbox and local storage keep their files.
        queues: queue name -> weight for weighted selection.
        strict_priority: always drain higher-weight queues first.
        queue_limits: optional per-queue slot caps and reservations.
        queue_defaults: enqueue defaults per queue.
        concurrency: handlers one worker process runs at once.
        shutdown_timeout: seconds to let running tasks finish on shutdown before requeueing them.
        cancel_grace: seconds a handler the worker cancelled (timeout, deadline, ``asynq:cancel``, shutdown)
            gets to end before the worker gives up on it: its outcome is written then (a failure, or a
            requeue at shutdown) and whatever it does later writes nothing (see :mod:`framework.worker.execution`).
        loop_block_threshold: seconds the event loop may be blocked (an async handler that does blocking
            work) before the worker logs ``event_loop_blocked``; deadlines that pass during such a stall
            are moved on for the tasks that did not cause it (0 = neither; see :mod:`framework.worker.watchdog`).
        heartbeat_interval: seconds between lease extensions and server heartbeats.
        forward_interval: longest wait between checks for due scheduled and retry tasks (sooner when one is
            due; a retry this worker schedules is forwarded when it is due).
        janitor_interval: seconds between sweeps of expired completed tasks.
        recoverer_interval: seconds between looks for tasks of dead workers.
        workflow_check_interval: seconds between checks of the running workflows whose home queue a worker
            serves, for steps whose task vanished or was completed without the framework's outcome (deleted,
            or run by a worker that does not run workflows, such as Go asynq's): such a step is failed as
            lost, so its workflow ends (or hands the failure on) instead of waiting for ever. One worker per
            queue checks each interval, at most 100 workflows per queue per check.
        dequeue_batch: tasks one dequeue call may take from a queue.
        max_payload_size: largest payload, in bytes, a client enqueues (0 = no limit); a larger one raises
            :class:`~framework.errors.PayloadTooLarge` and nothing is stored.
        max_result_size: largest result, in bytes, a worker stores (1 to 512 MiB, Redis's largest string): a
            handler that returns a larger one (encoded) has its task archived with
            :class:`~framework.errors.ResultTooLarge`, and ``ctx.write_result`` raises it for larger bytes. Keep
            it below the server's ``proto-max-bulk-len`` when that is lowered: a result Redis refuses is taken
            for a Redis fault, and the outcome write retried.
        unknown_type_wait: seconds a task whose type the worker that took it has no handler for keeps being
            put back for another worker (a Go worker, or one with other task types) before it is archived,
            counted from the first time it was put back (0 = archive it at once); see
            :meth:`~framework.worker.outcomes.OutcomeWriter.unknown_type`.
        limits: task limits by name (``[limits.<name>]``: ``rate`` such as ``"100/s"``, ``burst``,
            ``concurrency``, and ``overrides`` per key), replacing what the code declares (see
            :mod:`framework.limits`).
        event_loop: the event loop of ``framework worker``/``scheduler``: ``auto`` (uvloop when installed),
            ``uvloop`` or ``asyncio``.
        cron: cron entries declared in settings.
        cron_forget_after: seconds after the last time any scheduler ran an entry that its records go (its
            ``<ext>:cron:entries`` record, last fired tick and ``<ns>:scheduler_history:<id>``): every running
            scheduler removes them, so an entry taken out of the settings, or one whose name, spec, time zone or
            task type changed (a new id), does not leave them for ever. More than 20 s (two scheduler
            heartbeats); keep it longer than any scheduler stays down, whose ``run_missed`` entries would
            otherwise have forgotten their last tick.
        plugins: per-plugin sections, decoded by :meth:`plugin_config`.
        load_plugins: only these plugins load (names); none means all.
        block_plugins: these plugins never load.
        host: address the web server binds.
        port: port the web server binds.
        log_level: structlog level.
        log_format: ``console`` or ``json``.
        storage: the object storage service.
        app: import path of the app's own hook module (``myapp.hooks``), registered as the last plugin;
            none serves the built-in demo.
        templates_dir: the app's own templates folder; it overrides every plugin's templates.
        admin_token: token (or password) that opens the admin dashboard and API.
        admin_readonly_token: token for read-only access to the admin.
    """

    env: Literal["development", "production"] = "development"
    redis_url: str | None = None
    namespace: str = "asynq"
    data_dir: str = ".data"
    queues: dict[str, int] = msgspec.field(default_factory=lambda: {"critical": 6, "default": 3, "low": 1})
    strict_priority: bool = False
    queue_limits: dict[str, QueueLimit] = msgspec.field(default_factory=dict)
    queue_defaults: dict[str, TaskDefaults] = msgspec.field(default_factory=dict)
    concurrency: int = 100
    shutdown_timeout: float = 8.0
    cancel_grace: float = 2.0
    loop_block_threshold: float = 1.0
    heartbeat_interval: float = 2.0
    forward_interval: float = 1.0
    janitor_interval: float = 8.0
    recoverer_interval: float = 5.0
    workflow_check_interval: float = 30.0
    dequeue_batch: int = 64
    max_payload_size: int = MAX_PAYLOAD_SIZE
    max_result_size: int = MAX_RESULT_SIZE
    unknown_type_wait: float = 3600.0
    limits: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    cron: list[CronEntrySettings] = msgspec.field(default_factory=list)
    cron_forget_after: float = 30 * 24 * 3600.0
    plugins: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    load_plugins: list[str] | None = None
    block_plugins: list[str] = msgspec.field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)
    app: str | None = None
    templates_dir: str | None = None
    admin_token: str | None = None
    admin_readonly_token: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def data_path(self) -> Path:
        """The data directory as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    def plugin_config(self, name: str, config_type: type[T]) -> T:
        """Decode the ``[plugins.<name>]`` section into the plugin's own Struct.

        Args:
            name: the plugin's section name.
            config_type: the plugin's config Struct type; its defaults fill missing fields.

        Raises:
            ConfigError: a value in the section does not fit ``config_type``.
        """
        raw = self.plugins.get(name, {})
        try:
            return msgspec.convert(raw, config_type, strict=False)
        except msgspec.ValidationError as exc:
            path = _error_path(str(exc))
            if not path:
                raise ConfigError(f"invalid setting in [plugins.{name}]: {exc}") from exc
            setting, value = _lookup(raw, path)
            raise ConfigError(f"setting plugins.{name}.{setting}={_mask(setting, value)!r} is invalid: {exc}") from exc

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated again)."""
        return msgspec.structs.replace(self, **changes)


class _InvalidSetting(ConfigError):
    """A value :func:`_validate` refuses; :func:`load_settings` re-raises it naming where the value came from.

    Args:
        setting: the top-level setting the value belongs to (its key in the sources).
        label: how the message names the value (``queue_defaults['low'].timeout``).
        value: the refused value.
        rule: what is allowed.

    Attributes:
        setting: as given.
    """

    def __init__(self, setting: str, label: str, value: object, rule: str) -> None:
        self.setting = setting
        super().__init__(f"setting {label}={value!r} is invalid: {rule}")

    def with_source(self, where: str) -> ConfigError:
        """The same refusal, saying which file, variable or argument the value came from."""
        return ConfigError(f"{self} (from {where})")


def _check_number(
    setting: str, value: float, minimum: float, rule: str, *, above: bool = False, label: str | None = None
) -> None:
    """Refuse ``value`` unless it is finite and ``>= minimum`` (``> minimum`` when ``above``).

    Written so NaN fails: every comparison with NaN is False, so ``value < minimum`` would let it through,
    and ``asyncio.sleep(nan)`` returns at once, turning an interval into a busy loop. Infinity fails too: none
    of these settings can mean "never", and an infinite number of seconds cannot go into a task message.
    """
    if not math.isfinite(value):
        raise _InvalidSetting(setting, label or setting, value, f"{rule}; {value!r} is not a finite number")
    if not (value > minimum if above else value >= minimum):
        raise _InvalidSetting(setting, label or setting, value, rule)


def _validate(s: Settings) -> None:
    """Check the rules msgspec types cannot express; raise ConfigError naming the setting."""
    _check_number("concurrency", s.concurrency, 1, "must be an integer >= 1")
    if not s.namespace.strip() or any(c in s.namespace for c in "{}"):
        # braces would make the namespace the hash tag of every key (one Cluster slot for all queues)
        raise _InvalidSetting("namespace", "namespace", s.namespace, "must be a non-blank name without { or }")
    _validate_queues(s)
    _validate_intervals(s)
    _validate_limits(s)
    _check_number("dequeue_batch", s.dequeue_batch, 1, "must be an integer >= 1")
    _check_number("max_payload_size", s.max_payload_size, 0, "must be a number of bytes >= 0 (0 = no limit)")
    _check_number("max_result_size", s.max_result_size, 1, "must be a number of bytes >= 1")
    if s.max_result_size > _REDIS_STRING_MAX:
        raise _InvalidSetting(
            "max_result_size",
            "max_result_size",
            s.max_result_size,
            "must be at most 536870912 (512 MiB, Redis's limit)",
        )
    _check_number("unknown_type_wait", s.unknown_type_wait, 0, "must be a number of seconds >= 0")
    for timeout in ("connect_timeout", "read_timeout"):
        value, label = getattr(s.storage, timeout), f"storage.{timeout}"
        _check_number("storage", value, 0, "must be a number of seconds > 0", above=True, label=label)
    if not 0 <= s.port <= 65535:
        raise _InvalidSetting("port", "port", s.port, "must be an integer from 0 to 65535")
    if s.redis_url is not None and not s.redis_url.startswith(_URL_SCHEMES):
        raise ConfigError(
            f"setting redis_url={redact_url(s.redis_url)!r} is invalid: use redis://, rediss://, unix://, "
            "redis+cluster:// or redis+sentinel://"
        )


_URL_SCHEMES = ("redis://", "rediss://", "unix://", "valkey://", "redis+cluster://", "redis+sentinel://")


def _validate_limits(s: Settings) -> None:
    for name, table in s.limits.items():
        check_setting(name, table)


def _validate_queues(s: Settings) -> None:
    if not s.queues:
        raise ConfigError("setting queues={} is invalid: at least one queue with a weight >= 1 is needed")
    for name, weight in s.queues.items():
        if not name.strip():
            raise ConfigError(f"setting queues has an empty queue name: {s.queues!r}")
        if weight < 1:
            raise ConfigError(f"setting queues[{name!r}]={weight!r} is invalid: weights must be integers >= 1")
    for name, limit in s.queue_limits.items():
        if limit.max < 0 or limit.reserved < 0:
            raise ConfigError(f"setting queue_limits[{name!r}]={limit!r} is invalid: max and reserved must be >= 0")
    reserved = sum(limit.reserved for limit in s.queue_limits.values())
    if reserved > s.concurrency:
        raise ConfigError(
            f"setting queue_limits reserves {reserved} slots but concurrency={s.concurrency}: "
            "reservations must not exceed the concurrency"
        )
    _validate_queue_defaults(s.queue_defaults)


def _validate_intervals(s: Settings) -> None:
    for field_name in (
        "shutdown_timeout",
        "cancel_grace",
        "heartbeat_interval",
        "forward_interval",
        "janitor_interval",
        "recoverer_interval",
        "workflow_check_interval",
    ):
        _check_number(field_name, getattr(s, field_name), 0, "must be a number of seconds > 0", above=True)
    _check_number("loop_block_threshold", s.loop_block_threshold, 0, "must be seconds >= 0 (0 = off)")
    _check_number(
        "cron_forget_after",
        s.cron_forget_after,
        20,
        "must be a number of seconds > 20 (two scheduler heartbeats, or running entries would be forgotten)",
        above=True,
    )
    if s.heartbeat_interval >= 15:
        raise _InvalidSetting(
            "heartbeat_interval", "heartbeat_interval", s.heartbeat_interval, "must be < 15 s so 30 s leases stay valid"
        )


def _validate_queue_defaults(defaults: Mapping[str, TaskDefaults]) -> None:
    for name, d in defaults.items():
        label = f"queue_defaults[{name!r}]"
        if d.max_retry is not None:
            _check_number("queue_defaults", d.max_retry, 0, "must be >= 0", label=f"{label}.max_retry")
        if d.timeout is not None:
            rule = "must be a number of seconds > 0"
            _check_number("queue_defaults", d.timeout, 0, rule, above=True, label=f"{label}.timeout")
        if d.retention is not None:
            rule = "must be seconds >= 0"
            _check_number("queue_defaults", d.retention, 0, rule, label=f"{label}.retention")


_SECRET_WORDS = ("password", "secret", "token", "api_key", "access_key")


def _mask(name: str, value: Any) -> Any:
    """``value`` as it may appear in an error: secrets as ``***``, passwords in URLs hidden."""
    if isinstance(value, Mapping):
        return {k: _mask(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(name, v) for v in value]
    if value not in (None, "") and any(word in name.lower() for word in _SECRET_WORDS):
        return "***"
    if isinstance(value, str):
        return redact_url(value)
    return value


def _error_path(text: str) -> list[str | int]:
    """The location of a msgspec validation error, ``at `$.a[0].b``` -> ["a", 0, "b"]; [...] ends it."""
    if "at `$" not in text:
        return []
    raw = text.rsplit("at `$", 1)[1].rstrip("`")
    path: list[str | int] = []
    for part in raw.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("["):
            inner = part[1:-1]
            if not inner.isdigit():
                break
            path.append(int(inner))
        else:
            path.append(part)
    return path


def _lookup(data: Any, path: list[str | int]) -> tuple[str, Any]:
    """The dotted name of ``path`` and the value found there in ``data`` (None when absent)."""
    name = ""
    value = data
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
        if isinstance(part, int) and isinstance(value, list) and part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, Mapping):
            value = value.get(part)
        else:
            value = None
    return name, value


def redact_url(url: str) -> str:
    """Hide the password in a URL (``user:password@`` and a ``?password=`` query parameter)."""
    url = re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"


_FIELD_TYPES = {f.name: f.type for f in msgspec.structs.fields(Settings)}


def _parse_env_value(name: str, raw: str) -> Any:
    """Turn an environment string into data msgspec can convert for setting ``name``."""
    text = raw.strip()
    if text[:1] and text[0] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"setting {name} from the environment is not valid JSON: {raw!r} ({exc})") from exc
    annotation = str(_FIELD_TYPES.get(name, ""))
    if annotation.startswith("dict"):
        out: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"setting {name}={raw!r} is invalid: expected name=value pairs separated by commas")
            if key.strip() in out:
                raise ConfigError(f"setting {name}={raw!r} is invalid: it names {key.strip()!r} twice")
            out[key.strip()] = value.strip()
        return out
    if annotation.startswith("list"):
        return [p.strip() for p in text.split(",") if p.strip()]
    if annotation.endswith("None") and text == "":
        return None
    return text


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if environ.get("REDIS_URL"):
        data["redis_url"] = environ["REDIS_URL"]
    for key, raw in environ.items():
        if not key.startswith(_ENV_PREFIX):
            continue
        name = key[len(_ENV_PREFIX) :].lower()
        if name in _FIELD_TYPES:
            data[name] = _parse_env_value(name, raw)
    return data


def _describe_error(exc: msgspec.ValidationError, data: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    text = str(exc)
    path = _error_path(text)
    if path:
        name, value = _lookup(data, path)
        where = sources.get(str(path[0]), "settings")
        return f"setting {name}={_mask(name, value)!r} (from {where}) is invalid: {text}"
    if text.startswith("Object contains unknown field `"):
        unknown = text.split("`")[1]
        where = sources.get(unknown, "settings")
        return f"unknown setting {unknown!r} (from {where}); allowed settings: {', '.join(sorted(_FIELD_TYPES))}"
    return f"invalid settings: {text}"


def _not_utf8(exc: UnicodeDecodeError) -> str:
    """What is wrong with a settings file that is not UTF-8, in words (UTF-16 is what some editors save)."""
    if exc.object[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "is UTF-16 text, not UTF-8"
    return f"is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset {exc.start})"


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build :class:`Settings` from a TOML file, the environment and keyword overrides.

    Args:
        path: a TOML file; default ``$FRAMEWORK_CONFIG`` or ``./framework.toml`` if present.
        environ: the environment to read (default ``os.environ``).
        **overrides: values that win over every other source.

    Raises:
        ConfigError: a value is not allowed; the message names the setting, the value and the rule.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    explicit = path or env.get("FRAMEWORK_CONFIG")
    toml_path = Path(explicit) if explicit else Path("framework.toml")
    if toml_path.is_file():
        import tomllib  # noqa: PLC0415 - only when there is a file to read

        try:
            text = toml_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"settings file {toml_path} {_not_utf8(exc)}: TOML is UTF-8; save it as UTF-8") from exc
        except OSError as exc:
            raise ConfigError(f"settings file {toml_path} cannot be read: {exc.strerror or exc}") from exc
        try:
            file_data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file {toml_path} is not valid TOML: {exc}") from exc
        data.update(file_data)
        sources.update(dict.fromkeys(file_data, str(toml_path)))
    elif explicit:
        where = "" if path else " (FRAMEWORK_CONFIG)"
        problem = "is not a file" if toml_path.exists() else "does not exist"
        raise ConfigError(f"settings file {toml_path}{where} {problem}")
    env_data = _from_env(env)
    data.update(env_data)
    sources.update({k: _ENV_PREFIX + k.upper() for k in env_data})
    if "redis_url" in env_data and not env.get(_ENV_PREFIX + "REDIS_URL"):
        sources["redis_url"] = "REDIS_URL"
    data.update(overrides)
    sources.update(dict.fromkeys(overrides, "arguments"))
    try:
        return msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe_error(exc, data, sources)) from exc
    except _InvalidSetting as exc:
        if exc.setting not in sources:
            raise
        raise exc.with_source(sources[exc.setting]) from exc
