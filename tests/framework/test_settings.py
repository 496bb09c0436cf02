"""Settings: one typed object from a TOML file, the environment and overrides, with clear errors.

Every wrong value must fail with a :class:`ConfigError` naming the setting, the value (secrets hidden)
and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest

from framework.errors import ConfigError
from framework.settings import CronEntrySettings, QueueLimit, Settings, StorageSettings, TaskDefaults, load_settings


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``./framework.toml`` is read from the working directory: use an empty one per test."""
    monkeypatch.chdir(tmp_path)


def load(env: dict[str, str] | None = None, path: Path | None = None, **overrides: Any) -> Settings:
    return load_settings(path, environ=env or {}, **overrides)


def write_toml(tmp_path: Path, text: str, name: str = "framework.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and the environment ----------------------------------------------------------------------------


def test_defaults() -> None:
    s = load()
    assert s == Settings()
    assert s.redis_url is None
    assert s.namespace == "asynq"
    assert s.queues == {"critical": 6, "default": 3, "low": 1}
    assert s.concurrency == 100
    assert s.shutdown_timeout == 8.0  # asynq's
    assert 0 < s.heartbeat_interval < 15  # well inside the 30 s lease
    assert s.plugins == {}
    assert s.storage == StorageSettings()
    assert s.max_payload_size == 4 * 1024 * 1024
    assert s.unknown_type_wait == 3600.0


def test_env_scalars() -> None:
    s = load(
        {
            "FRAMEWORK_CONCURRENCY": "20",
            "FRAMEWORK_SHUTDOWN_TIMEOUT": "2.5",
            "FRAMEWORK_STRICT_PRIORITY": "true",
            "FRAMEWORK_ENV": "production",
            "FRAMEWORK_NAMESPACE": "myapp",
            "FRAMEWORK_ADMIN_TOKEN": "s3cret",
            "FRAMEWORK_TEMPLATES_DIR": "",  # empty = none for an optional setting
            "FRAMEWORK_MAX_PAYLOAD_SIZE": "1048576",
            "FRAMEWORK_UNKNOWN_TYPE_WAIT": "0",
        }
    )
    assert s.concurrency == 20
    assert s.shutdown_timeout == 2.5
    assert s.strict_priority is True
    assert s.env == "production"
    assert s.namespace == "myapp"
    assert s.admin_token == "s3cret"
    assert s.templates_dir is None
    assert s.max_payload_size == 1048576
    assert s.unknown_type_wait == 0.0


@pytest.mark.parametrize(
    ("raw", "queues"),
    [
        ("critical=6,low=1", {"critical": 6, "low": 1}),
        (" critical = 6 , low=1 ,", {"critical": 6, "low": 1}),
        ('{"critical": 6, "low": 1}', {"critical": 6, "low": 1}),
        ("weird:name {x}=2", {"weird:name {x}": 2}),
    ],
)
def test_env_dict(raw: str, queues: dict[str, int]) -> None:
    assert load({"FRAMEWORK_QUEUES": raw}).queues == queues


@pytest.mark.parametrize(
    ("raw", "plugins"),
    [
        ("email,admin", ["email", "admin"]),
        (" email , admin ", ["email", "admin"]),
        ('["email", "admin"]', ["email", "admin"]),
        ("", []),  # set but empty: no plugins at all
    ],
)
def test_env_list(raw: str, plugins: list[str]) -> None:
    assert load({"FRAMEWORK_LOAD_PLUGINS": raw}).load_plugins == plugins


def test_env_json_for_nested_settings() -> None:
    s = load(
        {
            "FRAMEWORK_QUEUE_LIMITS": '{"low": {"max": 2}}',
            "FRAMEWORK_QUEUE_DEFAULTS": '{"low": {"max_retry": 3, "timeout": 60}}',
            "FRAMEWORK_STORAGE": '{"backend": "s3", "bucket": "b"}',
            "FRAMEWORK_CRON": '[{"name": "n", "spec": "@daily", "task": "x:y"}]',
            "FRAMEWORK_PLUGINS": '{"email": {"backend": "smtp"}}',
        }
    )
    assert s.queue_limits == {"low": QueueLimit(max=2)}
    assert s.queue_defaults == {"low": TaskDefaults(max_retry=3, timeout=60)}
    assert (s.storage.backend, s.storage.bucket) == ("s3", "b")
    assert s.cron == [CronEntrySettings(name="n", spec="@daily", task="x:y")]
    assert s.plugins == {"email": {"backend": "smtp"}}


def test_redis_url_env() -> None:
    assert load({"REDIS_URL": "redis://h:1/0"}).redis_url == "redis://h:1/0"
    both = load({"REDIS_URL": "redis://conventional:1", "FRAMEWORK_REDIS_URL": "redis://ours:2"})
    assert both.redis_url == "redis://ours:2"
    assert load({"REDIS_URL": ""}).redis_url is None


def test_other_environment_variables_are_ignored() -> None:
    s = load({"FRAMEWORK_TRACE_PLUGINS": "1", "FRAMEWORK_NOT_A_SETTING": "x", "CONCURRENCY": "99", "PATH": "/bin"})
    assert s == Settings()


# --- the TOML file and precedence --------------------------------------------------------------------------------

TOML = """
namespace = "from-toml"
concurrency = 4
redis_url = "redis://toml:6379/0"
queues = { critical = 5, default = 2 }

[queue_defaults.critical]
max_retry = 3

[storage]
backend = "s3"
bucket = "files"

[[cron]]
name = "nightly"
spec = "0 3 * * *"
task = "report:generate"
payload = { kind = "daily" }

[plugins.email]
backend = "smtp"
mail_from = "Acme <hi@acme.test>"

[plugins.email.smtp]
port = 2525
"""


def test_toml_file(tmp_path: Path) -> None:
    s = load(path=write_toml(tmp_path, TOML, "custom.toml"))
    assert s.namespace == "from-toml"
    assert s.concurrency == 4
    assert s.redis_url == "redis://toml:6379/0"
    assert s.queues == {"critical": 5, "default": 2}
    assert s.queue_defaults == {"critical": TaskDefaults(max_retry=3)}
    assert (s.storage.backend, s.storage.bucket) == ("s3", "files")
    assert s.cron == [
        CronEntrySettings(name="nightly", spec="0 3 * * *", task="report:generate", payload={"kind": "daily"})
    ]
    assert s.plugins["email"] == {"backend": "smtp", "mail_from": "Acme <hi@acme.test>", "smtp": {"port": 2525}}


def test_toml_file_found_in_the_working_directory_or_by_env(tmp_path: Path) -> None:
    write_toml(tmp_path, 'namespace = "cwd"')
    assert load().namespace == "cwd"
    other = write_toml(tmp_path, 'namespace = "by-env"', "elsewhere.toml")
    assert load({"FRAMEWORK_CONFIG": str(other)}).namespace == "by-env"


def test_precedence_toml_then_env_then_overrides(tmp_path: Path) -> None:
    path = write_toml(tmp_path, TOML)
    env = {"FRAMEWORK_CONCURRENCY": "8", "REDIS_URL": "redis://env:1/0"}
    s = load(env, path)
    assert (s.namespace, s.concurrency, s.redis_url) == ("from-toml", 8, "redis://env:1/0")
    s = load(env, path, concurrency=16, namespace="override")
    assert (s.namespace, s.concurrency, s.redis_url) == ("override", 16, "redis://env:1/0")
    # one setting is replaced whole: env queues do not merge into the file's
    assert load({"FRAMEWORK_QUEUES": "low=1"}, path).queues == {"low": 1}


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"settings file .*nope\.toml does not exist"):
        load(path=tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"nope\.toml \(FRAMEWORK_CONFIG\) does not exist"):
        load({"FRAMEWORK_CONFIG": str(tmp_path / "nope.toml")})
    bad = write_toml(tmp_path, "concurrency = = 3", "bad.toml")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load(path=bad)


# --- errors: the setting, the value, what is allowed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        (
            {"FRAMEWORK_CONCURRENCY": "lots"},
            {},
            "setting concurrency='lots' (from FRAMEWORK_CONCURRENCY) is invalid: Expected `int`, got `str`",
        ),
        (
            {"FRAMEWORK_ENV": "prod"},
            {},
            "setting env='prod' (from FRAMEWORK_ENV) is invalid: Invalid enum value",
        ),
        ({"FRAMEWORK_STRICT_PRIORITY": "maybe"}, {}, "setting strict_priority='maybe'"),
        ({"FRAMEWORK_QUEUES": "a=1,b=x"}, {}, "setting queues={'a': '1', 'b': 'x'} (from FRAMEWORK_QUEUES)"),
        ({"FRAMEWORK_QUEUES": "a=1,b"}, {}, "setting queues='a=1,b' is invalid: expected name=value pairs"),
        ({"FRAMEWORK_QUEUES": "{broken"}, {}, "setting queues from the environment is not valid JSON: '{broken'"),
        ({"FRAMEWORK_STORAGE": '{"backend": "ftp"}'}, {}, "setting storage.backend='ftp' (from FRAMEWORK_STORAGE)"),
        (
            {"FRAMEWORK_CRON": '[{"name": "n", "spec": 5, "task": "t"}]'},
            {},
            "setting cron[0].spec=5 (from FRAMEWORK_CRON) is invalid: Expected `str`, got `int`",
        ),
        ({}, {"log_level": "loud"}, "setting log_level='loud' (from arguments) is invalid: Invalid enum value"),
        ({}, {"concurrency": 0}, "setting concurrency=0 is invalid: must be an integer >= 1"),
        ({}, {"queues": {}}, "setting queues={} is invalid: at least one queue"),
        ({}, {"queues": {" ": 1}}, "setting queues has an empty queue name"),
        ({}, {"queues": {"a": 0}}, "setting queues['a']=0 is invalid: weights must be integers >= 1"),
        ({}, {"queue_limits": {"a": {"max": -1}}}, "setting queue_limits['a']=QueueLimit(max=-1, reserved=0)"),
        (
            {},
            {"concurrency": 2, "queue_limits": {"a": {"reserved": 2}, "b": {"reserved": 1}}},
            "setting queue_limits reserves 3 slots but concurrency=2",
        ),
        ({}, {"queue_defaults": {"a": {"max_retry": -1}}}, "setting queue_defaults['a'].max_retry=-1 is invalid"),
        ({}, {"queue_defaults": {"a": {"timeout": 0}}}, "setting queue_defaults['a'].timeout=0.0 is invalid"),
        ({}, {"queue_defaults": {"a": {"retention": -1}}}, "setting queue_defaults['a'].retention=-1.0 is invalid"),
        ({}, {"queue_defaults": {"a": {"retries": 1}}}, "Object contains unknown field `retries`"),
        ({}, {"shutdown_timeout": 0}, "setting shutdown_timeout=0.0 is invalid: must be a number of seconds > 0"),
        ({}, {"cancel_grace": 0}, "setting cancel_grace=0.0 is invalid: must be a number of seconds > 0"),
        ({}, {"loop_block_threshold": -1}, "setting loop_block_threshold=-1.0 is invalid: must be seconds >= 0"),
        ({}, {"heartbeat_interval": -1}, "setting heartbeat_interval=-1.0 is invalid"),
        ({}, {"heartbeat_interval": 15}, "setting heartbeat_interval=15.0 is invalid: must be < 15 s"),
        ({}, {"forward_interval": 0}, "setting forward_interval=0.0 is invalid"),
        ({}, {"janitor_interval": 0}, "setting janitor_interval=0.0 is invalid"),
        ({}, {"recoverer_interval": 0}, "setting recoverer_interval=0.0 is invalid"),
        ({}, {"workflow_check_interval": 0}, "setting workflow_check_interval=0.0 is invalid"),
        ({}, {"dequeue_batch": 0}, "setting dequeue_batch=0 is invalid: must be an integer >= 1"),
        ({}, {"max_payload_size": -1}, "setting max_payload_size=-1 is invalid: must be a number of bytes >= 0"),
        ({}, {"unknown_type_wait": -1}, "setting unknown_type_wait=-1.0 is invalid: must be a number of seconds >= 0"),
        ({}, {"port": 70000}, "setting port=70000 is invalid: must be an integer from 0 to 65535"),
        ({}, {"redis_url": "http://h:1"}, "setting redis_url='http://h:1' is invalid: use redis://, rediss://"),
        (
            {},
            {"concurency": 3},
            "unknown setting 'concurency' (from arguments); allowed settings: admin_",
        ),
    ],
)
def test_invalid_setting(env: dict[str, str], overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(env, **overrides)
    assert message in str(err.value)


def test_error_names_the_toml_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "bogus = 1\n")
    with pytest.raises(ConfigError) as err:
        load(path=path)
    assert f"unknown setting 'bogus' (from {path}); allowed settings:" in str(err.value)
    write_toml(tmp_path, "concurrency = 'ten'\n")
    with pytest.raises(ConfigError) as err:
        load(path=path)
    assert f"setting concurrency='ten' (from {path}) is invalid" in str(err.value)


def test_replace_validates_again() -> None:
    s = Settings()
    assert s.replace(concurrency=3).concurrency == 3
    with pytest.raises(ConfigError, match="concurrency=0"):
        s.replace(concurrency=0)


def test_data_path_is_absolute(tmp_path: Path) -> None:
    assert Settings(data_dir="rel/data").data_path == (tmp_path / "rel" / "data").resolve()


# --- secrets never appear in errors ---------------------------------------------------------------------------


def test_redis_url_password_is_redacted() -> None:
    with pytest.raises(ConfigError) as err:
        load({"REDIS_URL": "http://alice:hunter2@cache.internal:6379/0"})
    text = str(err.value)
    assert "hunter2" not in text
    assert "setting redis_url='http://alice:***@cache.internal:6379/0' is invalid" in text
    with pytest.raises(ConfigError) as err:
        load({}, redis_url="ftp://:hunter2@host")
    assert "hunter2" not in str(err.value)
    assert "ftp://:***@host" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load({"REDIS_URL": "tcp://host:6379/0?db=1&password=hunter2"})
    assert "hunter2" not in str(err.value)
    assert "tcp://host:6379/0?db=1&password=***" in str(err.value)


def test_secret_values_are_masked() -> None:
    with pytest.raises(ConfigError) as err:
        load({"FRAMEWORK_STORAGE": '{"backend": "s3", "secret_key": "hunter2", "bogus": 1}'})
    assert "hunter2" not in str(err.value)
    assert "'secret_key': '***'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load({}, admin_token=12345)
    assert "12345" not in str(err.value)
    assert "setting admin_token='***' (from arguments) is invalid: Expected `str | null`" in str(err.value)


# --- per-plugin sections ------------------------------------------------------------------------------------------


class SmtpSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "localhost"
    port: int = 25
    password: str = ""


class PluginConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backend: Literal["outbox", "smtp"] = "outbox"
    retries: int = 3
    ratio: float = 0.5
    tags: list[str] = msgspec.field(default_factory=list)
    smtp: SmtpSection = msgspec.field(default_factory=SmtpSection)


def test_plugin_config_decodes_into_the_plugin_struct(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[plugins.demo]\nbackend = "smtp"\nretries = 5\ntags = ["a", "b"]\n[plugins.demo.smtp]\nport = 2525\n',
    )
    s = load(path=path)
    assert s.plugin_config("demo", PluginConfig) == PluginConfig(
        backend="smtp", retries=5, tags=["a", "b"], smtp=SmtpSection(port=2525)
    )
    assert s.plugin_config("absent", PluginConfig) == PluginConfig()  # defaults


def test_plugin_config_from_env_json_with_lax_strings() -> None:
    s = load({"FRAMEWORK_PLUGINS": '{"demo": {"retries": "7", "ratio": "0.25"}}'})
    config = s.plugin_config("demo", PluginConfig)
    assert (config.retries, config.ratio) == (7, 0.25)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"retries": "many"}, "setting plugins.demo.retries='many' is invalid: Expected `int`, got `str`"),
        ({"backend": "pigeon"}, "setting plugins.demo.backend='pigeon' is invalid: Invalid enum value 'pigeon'"),
        ({"smtp": {"port": "x"}}, "setting plugins.demo.smtp.port='x' is invalid"),
        ({"tags": ["a", 3]}, "setting plugins.demo.tags[1]=3 is invalid: Expected `str`, got `int`"),
        ({"colour": "red"}, "invalid setting in [plugins.demo]: Object contains unknown field `colour`"),
    ],
)
def test_plugin_config_wrong_value(section: dict[str, Any], message: str) -> None:
    s = Settings(plugins={"demo": section})
    with pytest.raises(ConfigError) as err:
        s.plugin_config("demo", PluginConfig)
    assert message in str(err.value)


def test_plugin_config_masks_secrets() -> None:
    s = Settings(plugins={"demo": {"smtp": {"password": 123456}}})
    with pytest.raises(ConfigError) as err:
        s.plugin_config("demo", PluginConfig)
    assert "123456" not in str(err.value)
    assert "setting plugins.demo.smtp.password='***' is invalid" in str(err.value)
