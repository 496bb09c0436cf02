"""The generator behind ``framework new`` and ``framework generate``: naming rules, rendering, writing.

:func:`plan` is pure: it derives nothing from the disk but the templates and returns the files to write.
:func:`apply` writes them and refuses to overwrite. The naming rules live here so every generated
name is derived one way: kebab case for distributions (``framework-slack``, ``my-app``), snake case for
modules and functions (``send_report``), Pascal case for payloads (``SendReport``), upper snake case for
type constants (``SEND_REPORT``), and ``"<app>:<task>"`` for task types.

Templates are Jinja files (``*.jinja``; file and folder names are templates too) under ``app/``,
``task/`` (one task module and its test) and ``plugin/``; ``_shared/`` holds partials that are only
included. They live in the top-level ``scaffold/`` folder of the source tree, which the core wheel ships
as the package data ``framework/_scaffold`` (hatch ``force-include``). :func:`template_root` reads the
packaged copy through :mod:`importlib.resources`; an editable install has no packaged copy (hatch adds the
source tree to ``sys.path`` instead), so it falls back to ``scaffold/`` next to the ``framework`` package
when that folder sits in a source tree (beside a ``pyproject.toml``).

The framework distributions need not be on a package index, so a generated project's
``requirements.txt`` says where pip finds them: :func:`find_source` reads how each one was installed
here (PEP 610's ``direct_url.json``: a checkout, editable or not, a wheel or sdist file, a VCS
URL, or nothing for an index) and :class:`Source` turns that into pip requirement lines. The
generated ``pyproject.toml`` keeps plain names, so the project stays publishable.

An app keeps its task modules in ``<package>/tasks/``. Apps generated before the generator said "task"
have ``<package>/jobs/`` instead (their ``hooks.py`` collects that one): :func:`find_app` notices, and a
task added to such an app goes into ``jobs/``, its test named ``test_job_<name>.py`` as before.
"""

from __future__ import annotations

import ast
import builtins
import functools
import json
import keyword
import re
import sys
import tomllib
import unicodedata
from dataclasses import dataclass, fields
from importlib import metadata, resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import jinja2

from framework.errors import FrameworkError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from importlib.resources.abc import Traversable

__all__ = (
    "BUILTIN_PLUGINS",
    "AppLocation",
    "FileToWrite",
    "Kind",
    "Names",
    "ScaffoldError",
    "Source",
    "TaskSpec",
    "apply",
    "check_name",
    "find_app",
    "find_source",
    "plan",
    "suggest_name",
    "template_root",
)

Kind = Literal["app", "task", "plugin", "job"]
"""What to generate; ``job`` is the old name of ``task`` and means the same."""
Origin = Literal["index", "checkout", "archive", "vcs"]
BUILTIN_PLUGINS = ("email", "images", "cleanup", "admin")
"""The first-party plugins ``framework new --plugins`` chooses from (distributions ``framework-<name>``)."""

TASKS_PACKAGE = "tasks"
"""The package of an app's task modules, inside the app's package."""
OLD_TASKS_PACKAGE = "jobs"
"""Its name in apps generated before the generator said "task"."""

MAX_NAME_LENGTH = 30
_SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
_TEMPLATE_SUFFIX = ".jinja"
# Names the generated code itself uses: a task or app called like one of them would shadow it.
_TEMPLATE_NAMES = frozenset(
    {"annotations", "any", "client", "conftest", "cron_entry", "framework", "helpers", "hooks", "jobs", "msgspec"}
    | {"pytest", "redis", "registry", "schema", "services", "settings", "skip_retry", "task_context", "task_def"}
    | {"task_info", "tasks", "tests", "typing", "worker"}
)
_RESERVED = {
    "app": frozenset(sys.stdlib_module_names) | _TEMPLATE_NAMES,
    "task": frozenset(sys.stdlib_module_names) | frozenset(dir(builtins)) | _TEMPLATE_NAMES,
    "plugin": frozenset({*BUILTIN_PLUGINS, "app", "demo"}),
}
_PROBE = "probe_zq"
"""The task name :func:`_template_identifiers` renders the task templates with; no template uses it."""
_TEST_PREFIX = "test"
"""pytest collects functions named ``test*`` and classes named ``Test*`` from the generated test module."""


class ScaffoldError(FrameworkError, ValueError):
    """A name is invalid, a target is not empty, or a file would be overwritten; the message says what to do."""


@dataclass(frozen=True, slots=True)
class FileToWrite:
    """One file of a plan.

    Attributes:
        path: where it goes (``Names.root`` joined with its path in the project).
        content: its text.
    """

    path: Path
    content: str


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """How one task is named and configured. Built by the CLI from ``generate task`` options.

    Attributes:
        module: snake-case module, enqueue-helper and handler stem (``send_report``).
        prefix: the task type's prefix: the app's package or the plugin's name.
        queue: default queue.
        max_retry: default retries before archiving (None: the framework's default).
        timeout: default seconds a run may take (None: the framework's default).
        unique: uniqueness TTL in seconds (None: not unique).
        cron: a schedule for a module-level ``CronEntry`` (None: no cron entry).
        tz: the time zone the cron spec is read in.
    """

    module: str
    prefix: str
    queue: str = "default"
    max_retry: int | None = None
    timeout: float | None = None
    unique: int | None = None
    cron: str | None = None
    tz: str = "UTC"

    @property
    def type(self) -> str:
        """The task type string, a stable public contract: ``"<prefix>:<module>"``."""
        return f"{self.prefix}:{self.module}"

    @property
    def payload(self) -> str:
        """The payload Struct's name, in Pascal case."""
        return pascal(self.module)

    @property
    def constant(self) -> str:
        """The type constant's name, in upper snake case."""
        return self.module.upper()

    @property
    def exports(self) -> list[str]:
        """The task module's ``__all__``, sorted as ruff's RUF022 wants (constants, classes, the rest)."""
        names = [self.constant, self.payload, f"handle_{self.module}", self.module, f"{self.module}_task"]
        if self.cron:
            names.append(f"{self.module}_cron")
        return sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))


@dataclass(frozen=True, slots=True)
class Source:
    """Where a generated project's framework distributions come from: what its ``requirements.txt`` says.

    Attributes:
        origin: how framework itself was installed here: from a package ``index`` (no ``direct_url.json``),
            a ``checkout`` (a local folder, editable or not), an ``archive`` (a wheel or sdist file) or
            ``vcs`` (a repository).
        location: the checkout folder, the archive's folder or the repository URL ("" for an index).
        requirements: a pip requirement line for each distribution not on an index: ``-e URL`` for an
            editable install, ``name @ URL`` otherwise.
        missing: distributions found neither installed here nor beside framework.
    """

    origin: Origin = "index"
    location: str = ""
    requirements: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """Where, in words: ``the framework checkout at /src/framework``, ``your package index``."""
        if self.origin == "checkout":
            return f"the framework checkout at {self.location}"
        if self.origin == "archive":
            return f"the wheels in {self.location}"
        if self.origin == "vcs":
            return f"the repository {self.location}"
        return "your package index"


def installed_from(distribution: str) -> dict[str, Any] | None:
    """How ``distribution`` was installed in this environment: its PEP 610 ``direct_url.json``.

    Returns:
        The parsed file; ``{}`` when it came from an index (no file, or one without a URL); None when
        it is not installed.
    """
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        info = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return info if isinstance(info, dict) and isinstance(info.get("url"), str) else {}


def _local_path(url: str) -> Path | None:
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" and parts.netloc in ("", "localhost") else None


def _beside(core: Mapping[str, Any], distribution: str) -> dict[str, Any] | None:
    """Where ``distribution`` (a plugin, not installed here) is, from where framework is; None: not found.

    A checkout holds the plugins under ``plugins/<name>``; a wheel's folder holds the plugins' wheels
    (the newest ``framework_<name>-*.whl`` wins); a repository holds them under ``plugins/<name>``.
    """
    if not core:
        return {}
    short = distribution.removeprefix("framework-")
    path = _local_path(core["url"])
    if "vcs_info" in core:
        subdirectory = "/".join(p for p in (core.get("subdirectory", ""), "plugins", short) if p)
        return {**core, "subdirectory": subdirectory}
    if path is None:
        return None
    if "dir_info" in core:
        folder = path / "plugins" / short
        found = folder if (folder / "pyproject.toml").is_file() else None
        return {"url": found.as_uri(), "dir_info": core["dir_info"]} if found else None
    wheels = sorted(path.parent.glob(f"{distribution.replace('-', '_')}-*.whl"), key=lambda p: p.stat().st_mtime)
    return {"url": wheels[-1].as_uri(), "archive_info": {}} if wheels else None


def _requirement(distribution: str, info: Mapping[str, Any]) -> str:
    url = info["url"]
    if "vcs_info" in info:
        url = f"{info['vcs_info']['vcs']}+{url}@{info['vcs_info']['commit_id']}"
    if info.get("subdirectory"):
        url += f"#subdirectory={info['subdirectory']}"
    if info.get("dir_info", {}).get("editable"):
        return f"-e {url}"
    return f"{distribution} @ {url}"


def find_source(
    distributions: Iterable[str], installed: Callable[[str], Mapping[str, Any] | None] = installed_from
) -> Source:
    """Where pip finds ``distributions`` (framework's own: ``framework``, ``framework-email``...).

    Each one is looked up in this environment; one not installed here is looked for where framework
    came from. What came from an index needs no line.

    Args:
        distributions: the framework distributions a generated project depends on.
        installed: how a distribution was installed (:func:`installed_from`; a test passes its own).
    """
    core = installed("framework") or {}
    lines: list[str] = []
    missing: list[str] = []
    for name in distributions:
        info = installed(name)
        if info is None:
            info = _beside(core, name)
        if info is None:
            missing.append(name)
        elif info:
            lines.append(_requirement(name, info))
    origin: Origin = "index"
    location = ""
    path = _local_path(core["url"]) if core else None
    if "vcs_info" in core:
        origin, location = "vcs", f"{core['vcs_info']['vcs']}+{core['url']}"
    elif path is not None and "dir_info" in core:
        origin, location = "checkout", str(path)
    elif core:
        origin, location = "archive", str(path.parent) if path else core["url"]
    return Source(origin, location, tuple(lines), tuple(missing))


@dataclass(frozen=True, slots=True)
class Names:
    """What a template sees: every name of the project it renders into, derived once.

    Attributes:
        root: the project folder the files go into.
        package: the import package (``my_app``, ``framework_slack``).
        plugin: the plugin's name (entry point, settings section, template folder); "" for an app.
        plugins: the built-in plugins an app depends on.
        task: the task a ``task`` plan writes (and the example task of ``app`` and ``plugin`` plans).
        tasks_package: the app's package of task modules, inside ``package``: ``tasks``, or ``jobs`` in an
            app generated before the rename (:func:`find_app` tells which).
        framework_version: the framework version the project asks for, at least.
        source: where pip finds the framework distributions (the generated ``requirements.txt``).
    """

    root: Path
    package: str
    plugin: str = ""
    plugins: tuple[str, ...] = ()
    task: TaskSpec | None = None
    tasks_package: str = TASKS_PACKAGE
    framework_version: str = "0.1.0"
    source: Source = Source()

    @property
    def distribution(self) -> str:
        """The distribution name, in kebab case (``my-app``, ``framework-slack``)."""
        return self.package.replace("_", "-")

    @property
    def title(self) -> str:
        """A human title (``My App``, ``Slack``)."""
        return (self.plugin or self.package).replace("_", " ").title()

    @property
    def test_prefix(self) -> str:
        """How a task's test module is named before its name: ``test_task_`` (``test_job_`` beside ``jobs/``)."""
        return "test_job_" if self.tasks_package == OLD_TASKS_PACKAGE else "test_task_"

    def context(self) -> dict[str, object]:
        """The template variables."""
        values: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(distribution=self.distribution, title=self.title, test_prefix=self.test_prefix)
        return values


def _kind(kind: Kind) -> Kind:
    """``kind`` with ``job``, the old name of ``task``, read as ``task``."""
    return "task" if kind == "job" else kind


def pascal(snake: str) -> str:
    """``send_report`` -> ``SendReport``."""
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def suggest_name(name: str, kind: Kind = "app") -> str:
    """A valid name close to ``name``: ASCII snake case, starting with a letter, not reserved.

    Args:
        name: what the user typed.
        kind: ``app`` (a package), ``task`` (a task's module; ``job`` says the same) or ``plugin``.
    """
    kind = _kind(kind)
    text = unicodedata.normalize("NFKD", name.strip()).encode("ascii", "ignore").decode()
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()
    suffix = {"app": "app", "task": "task", "plugin": "plugin"}[kind]
    if not text:
        return f"my_{suffix}"
    if text[0].isdigit():
        text = f"{suffix}_{text}"
    text = text[:MAX_NAME_LENGTH].rstrip("_")
    short = text[: MAX_NAME_LENGTH - len(suffix) - 1].rstrip("_")
    candidates = (text, f"{short}_{suffix}", f"{suffix}_{short}")
    return next((c for c in candidates if not _problem(c, kind)), f"my_{suffix}")


def _forms(snake: str) -> dict[str, str]:
    """Each form of :data:`_PROBE` in identifiers (as typed, type constant, payload class) -> that of ``snake``."""
    return {_PROBE: snake, _PROBE.upper(): snake.upper(), pascal(_PROBE): pascal(snake)}


@functools.cache
def _template_identifiers() -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """What the task templates name, read from the templates themselves rather than kept by hand.

    The task templates are rendered for :data:`_PROBE` with every option on (cron entry, uniqueness,
    retries, timeout, time zone), and the Python files parsed. Every identifier they bind or use (imports,
    functions, classes, parameters, fixtures, locals; not attributes, keyword arguments or payload fields,
    which cannot shadow anything) is split in two: those built from the task's name and the rest.

    Returns:
        The identifiers the templates use whatever the task's name, and those built from it (with
        :data:`_PROBE` standing for the name), each with what it is (an import, a parameter...).
    """
    task = TaskSpec(_PROBE, "probe_app", max_retry=1, timeout=1.0, unique=1, cron="@daily", tz="Europe/Paris")
    names = Names(root=Path("probe"), package="probe_app", task=task)
    fixed: dict[str, str] = {}
    derived: dict[str, str] = {}
    for file in plan("task", names):
        if file.path.suffix != ".py":
            continue
        for identifier, role in _identifiers(ast.parse(file.content)):
            if any(form in identifier for form in _forms(_PROBE)):
                derived.setdefault(identifier, role)
            else:
                fixed.setdefault(identifier, role)
    return fixed, tuple(sorted(derived.items()))


def _identifiers(tree: ast.Module) -> Iterable[tuple[str, str]]:
    """The names a module binds or reads, with what each is; a class body's fields are the class's, skipped."""
    fields_of_classes = {
        id(target)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for statement in node.body
        if isinstance(statement, ast.AnnAssign | ast.Assign)
        for target in ast.walk(statement)
        if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, "function"
        elif isinstance(node, ast.ClassDef):
            yield node.name, "class"
        elif isinstance(node, ast.arg):
            yield node.arg, "parameter"
        elif isinstance(node, ast.alias):
            yield (node.asname or node.name.split(".")[0]), "import"
        elif isinstance(node, ast.Name) and id(node) not in fields_of_classes:
            yield node.id, "variable" if isinstance(node.ctx, ast.Store) else "name"


def _task_clash(snake: str) -> str:
    """Why the task ``snake`` would generate broken code ("" when it would not).

    Its generated module and test bind identifiers built from the name (the module's name, the enqueue
    helper, ``handle_<name>``, ``<name>_task``, ``<name>_cron``, the type constant, the payload class). One
    equal to a name the templates use shadows it (``info = await info(...)``, ``TYPE_CHECKING`` imported
    twice), one equal to a builtin or keyword shadows it or does not compile (``class None``), two equal to
    each other overwrite each other (the task ``a``: constant ``A`` and class ``A``), and a test module
    importing ``test*`` names makes pytest collect the helper as a test.
    """
    if snake.startswith(_TEST_PREFIX):
        return f"pytest would collect its enqueue helper {snake} from the generated test as a test"
    fixed, derived = _template_identifiers()
    derived_roles = dict(derived)
    seen: dict[str, str] = {}
    for pattern, role in derived:
        identifier = pattern
        for probe_form, form in _forms(snake).items():
            identifier = identifier.replace(probe_form, form)
        if keyword.iskeyword(identifier) or identifier in _RESERVED["task"]:
            return f"the generated code would name a {role} {identifier}, a name Python already has"
        if identifier in fixed:
            return (
                f"the generated code would name a {role} {identifier}, which clashes with the {fixed[identifier]} "
                f"{identifier} of the generated task module or its test"
            )
        if seen.setdefault(identifier, pattern) != pattern:
            return f"the generated code would name both a {role} and a {derived_roles[seen[identifier]]} {identifier}"
    return ""


def check_name(name: str, kind: Kind) -> str:
    """Validate a name and return its snake-case form.

    An app name must already be a valid, snake-case package name. Task and plugin names may use
    hyphens for underscores (``send-report``). A task name is also refused when an identifier generated
    from it (helper, handler, constant, payload class...) would clash with a name the task templates use,
    with a builtin, or with another generated identifier: the generated app would fail its own tests.

    Args:
        name: what the user typed.
        kind: ``app``, ``task`` (a task's name; ``job`` says the same) or ``plugin``.

    Raises:
        ScaffoldError: the name is not valid; the message proposes one that is.
    """
    kind = _kind(kind)
    snake = name if kind == "app" else name.replace("-", "_")
    problem = _problem(snake, kind)
    if problem:
        what = {"app": "Python package name", "task": "task name", "plugin": "plugin name"}[kind]
        raise ScaffoldError(f"{name!r} is not a valid {what}: {problem}; try {suggest_name(name, kind)!r}")
    return snake


def _problem(snake: str, kind: Kind) -> str:
    """Why ``snake`` is not a valid name of ``kind`` ("" when it is)."""
    if not _SNAKE.fullmatch(snake):
        return "use lowercase letters, digits and underscores, starting with a letter"
    if len(snake) > MAX_NAME_LENGTH:
        return f"keep it to {MAX_NAME_LENGTH} characters"
    if keyword.iskeyword(snake) or keyword.issoftkeyword(snake):
        return "it is a Python keyword"
    if snake in _RESERVED[kind]:
        return "it would shadow a name Python, the framework or the generated code already uses"
    return _task_clash(snake) if kind == "task" else ""


@dataclass(frozen=True, slots=True)
class AppLocation:
    """An app found on disk by :func:`find_app`.

    Attributes:
        root: the folder holding its ``framework.toml``.
        package: its import package (the first part of the ``app`` setting).
        queues: the queue names its ``framework.toml`` lists (None: the framework's defaults).
        tasks_package: the package of its task modules, inside ``package``: ``tasks``, or ``jobs`` in an
            app generated before the rename.
    """

    root: Path
    package: str
    queues: tuple[str, ...] | None
    tasks_package: str = TASKS_PACKAGE


def find_app(start: Path) -> AppLocation:
    """Find the app ``start`` is in: the nearest ``framework.toml`` in it or a parent, and its ``app`` setting.

    Its task modules are in ``<package>/tasks/``, or in ``<package>/jobs/`` when there is no ``tasks``
    package but a ``jobs`` one: an app generated before the rename, whose ``hooks.py`` collects ``jobs``.

    Raises:
        ScaffoldError: no ``framework.toml``, no ``app`` setting, or no package for the task modules.
    """
    start = start.resolve()
    config = next((d / "framework.toml" for d in (start, *start.parents) if (d / "framework.toml").is_file()), None)
    if config is None:
        raise ScaffoldError(f"no framework.toml in {start} or its parents: run this inside an app (`framework new`)")
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScaffoldError(f"{config} is not valid TOML: {exc}") from exc
    app = data.get("app")
    if not isinstance(app, str) or not app.strip():
        raise ScaffoldError(f'{config} has no `app` setting: set it to the app hook module, like app = "my_app.hooks"')
    package = app.strip().split(".")[0]
    candidates = (TASKS_PACKAGE, OLD_TASKS_PACKAGE)  # tasks wins: jobs is only looked for in an old app
    tasks_package = next((n for n in candidates if (config.parent / package / n / "__init__.py").is_file()), None)
    if tasks_package is None:
        raise ScaffoldError(
            f"{config.parent / package / TASKS_PACKAGE} is not a package: task modules go there, collected by "
            f"{package}.hooks (an app made by `framework new` has both)"
        )
    queues = data.get("queues")
    return AppLocation(config.parent, package, tuple(queues) if isinstance(queues, dict) else None, tasks_package)


def template_root() -> Traversable:
    """The folder holding the ``app``, ``task`` and ``plugin`` templates.

    Raises:
        ScaffoldError: neither the packaged templates nor a source checkout's ``scaffold/`` exist.
    """
    packaged = resources.files("framework") / "_scaffold"
    if packaged.is_dir():
        return packaged
    source_tree = Path(str(resources.files("framework"))).resolve().parent
    if (source_tree / "pyproject.toml").is_file() and (source_tree / "scaffold").is_dir():
        return source_tree / "scaffold"
    raise ScaffoldError("the scaffold templates are missing from this installation of framework; reinstall it")


def _walk(folder: Traversable, prefix: str = "") -> list[str]:
    out: list[str] = []
    for entry in folder.iterdir():
        if entry.is_dir():
            out.extend(_walk(entry, f"{prefix}{entry.name}/"))
        elif entry.name.endswith(_TEMPLATE_SUFFIX):
            out.append(prefix + entry.name)
    return out


def _py(value: object) -> str:
    """A Python (and TOML) literal: double-quoted strings, as ruff format writes them."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _environment(root: Traversable) -> jinja2.Environment:
    def load(name: str) -> str:
        node = root
        for part in name.split("/"):
            node = node / part
        return node.read_text(encoding="utf-8")

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # renders source files (Python, TOML, Markdown), not pages
    )
    env.filters["py"] = _py
    return env


def plan(kind: Kind, names: Names) -> list[FileToWrite]:
    """Render the templates of ``kind`` for ``names``. Pure: nothing is written.

    Args:
        kind: ``app`` (a project), ``task`` (a task module and its test; ``job`` says the same) or
            ``plugin`` (a distribution).
        names: the project's names; ``task`` and ``plugin`` plans need ``names.task``.

    Returns:
        The files, sorted by path.
    """
    kind = _kind(kind)
    if kind in ("task", "plugin") and names.task is None:
        raise ScaffoldError(f"a {kind} plan needs names.task")
    root = template_root()
    env = _environment(root)
    context = names.context()
    files = []
    for relative in _walk(root / kind):
        target = env.from_string(relative).render(context).removesuffix(_TEMPLATE_SUFFIX)
        content = env.get_template(f"{kind}/{relative}").render(context)
        files.append(FileToWrite(names.root / target, content))
    return sorted(files, key=lambda f: f.path.as_posix())


def apply(files: list[FileToWrite], force: bool = False) -> list[Path]:
    """Write a plan. Checks every path first, so a refused plan writes nothing.

    Args:
        files: the plan.
        force: overwrite files that exist.

    Returns:
        The paths written.

    Raises:
        ScaffoldError: a file exists (and ``force`` is false); the message lists them.
    """
    existing = [f.path for f in files if f.path.exists()]
    if existing and not force:
        listed = ", ".join(str(p) for p in existing)
        raise ScaffoldError(f"refusing to overwrite existing files: {listed}")
    for f in files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        f.path.write_text(f.content, encoding="utf-8")
    return [f.path for f in files]
