"""Plugins in environments of their own: registered by ``deepaas-install-plugin --isolated``,
described by a process in their environment, served by workers started with its interpreter.

The server never imports such a plugin. What it knows of one comes from
:func:`describe` (its methods, metadata, and arguments as JSON Schema:
:mod:`deepaas_like.portable`); its workers are fresh interpreters of its environment with
a small runtime first on their path (:func:`runtime_dir`: this package and the ``deepaas``
compatibility package, which need nothing but the standard library there) and the
plugin's own code after it.

A registration is a user record of the environment store (:mod:`deepaas_like.environments`):
``plugin:<name>``, with the entry point and where the plugin's code is.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import deepaas_like

from .engine.worker import EnvironmentLaunch
from .environments import Environment, EnvironmentStore, drop_user, record_user, users
from .errors import PluginLoadError
from .loading import GROUP, PluginRef
from .models import ServedModel, build_isolated_model
from .settings import ModelSettings
from .settings.sections import EngineSection

USER_PREFIX = "plugin:"
DESCRIBE_TIMEOUT = 300.0  # seconds: importing a plugin may load a large framework
DESCRIBE = "import sys; sys.path[0:0] = sys.argv[4:]; from deepaas_like.portable import main; main()"


@dataclass(frozen=True)
class IsolatedPlugin:
    """A plugin registered in an environment: its entry point, the environment's key, and the
    directories of its own code (installed for it, or its source checkout with ``-e``)."""

    name: str
    value: str
    environment: str
    code: tuple[str, ...]
    group: str = GROUP
    distribution: str | None = None
    version: str | None = None
    source: str | None = None

    @property
    def ref(self) -> PluginRef:
        return PluginRef(self.name, self.value, self.group, self.distribution)


def register(root: Path, plugin: IsolatedPlugin) -> None:
    record_user(
        root,
        USER_PREFIX + plugin.name,
        plugin.environment,
        kind="plugin",
        name=plugin.name,
        value=plugin.value,
        group=plugin.group,
        distribution=plugin.distribution,
        version=plugin.version,
        code=list(plugin.code),
        source=plugin.source,
        installed=time.time(),
    )


def unregister(root: Path, name: str) -> None:
    drop_user(root, USER_PREFIX + name)


def registered(root: Path) -> dict[str, IsolatedPlugin]:
    """The plugins registered in environments under ``root``, by name."""
    if not (root / "users").is_dir():
        return {}
    found = {}
    for user, record in users(root).items():
        if not user.startswith(USER_PREFIX) or record.get("kind") != "plugin":
            continue
        found[record["name"]] = IsolatedPlugin(
            name=record["name"],
            value=record["value"],
            environment=record["environment"],
            code=tuple(record.get("code") or ()),
            group=record.get("group") or GROUP,
            distribution=record.get("distribution"),
            version=record.get("version"),
            source=record.get("source"),
        )
    return found


def runtime_dir(where: Path, extra: Mapping[str, Path] | None = None) -> Path:
    """A directory holding this package and the ``deepaas`` compatibility package (links to
    the installed ones), and ``extra`` (name -> target: a package's directory, or a module's
    file, linked under its own file name), to put first on a worker's path in a model's
    environment: the same code as the server's, and nothing else of the server's environment."""
    package = Path(deepaas_like.__file__).resolve().parent
    links = {"deepaas_like": package, "deepaas": package / "compat" / "deepaas", **(extra or {})}
    where.mkdir(parents=True, exist_ok=True)
    for name, target in links.items():
        link = where / (target.name if target.is_file() else name)
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        temporary = where / f".{link.name}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target, target_is_directory=target.is_dir())
        os.replace(temporary, link)  # atomic: a worker starting now sees the old link or the new one
    return where


def launch(environment: Environment, runtime: Path, plugin: IsolatedPlugin) -> EnvironmentLaunch:
    """How a worker of ``plugin`` starts: the environment's interpreter, our runtime, its code."""
    return EnvironmentLaunch(str(environment.python), (str(runtime), *plugin.code))


def describe(environment: Environment, runtime: Path, plugin: IsolatedPlugin) -> dict[str, Any]:
    """The plugin's portable description, from a process in its environment (the plugin is
    imported there, once). Raises :class:`PluginLoadError` with the plugin's own error."""
    paths: Sequence[str] = (str(runtime), *plugin.code)
    command = [str(environment.python), "-I", "-c", DESCRIBE, plugin.name, plugin.value, plugin.group, *paths]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DESCRIBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise PluginLoadError(
            plugin.name, f"importing it in its environment took longer than {DESCRIBE_TIMEOUT:.0f} s"
        ) from None
    except OSError as exc:
        raise PluginLoadError(plugin.name, f"its environment's interpreter cannot run: {exc}") from None
    try:
        answer = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise PluginLoadError(
            plugin.name, f"describing it in its environment failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    if "error" in answer:
        raise PluginLoadError(
            plugin.name, f"import in its environment failed: {answer['error']}", str(answer.get("traceback") or "")
        )
    return answer


def environment_of(store: EnvironmentStore, plugin: IsolatedPlugin) -> Environment:
    """The plugin's environment (a PluginLoadError saying how to rebuild it when it is gone)."""
    environment = store.get(plugin.environment)
    if environment is None:
        raise PluginLoadError(
            plugin.name,
            f"its environment {plugin.environment[:12]} is gone (removed?); install it again with "
            f"deepaas-install-plugin --isolated {plugin.source or plugin.name}",
        )
    return environment


def served_isolated(
    root: Path,
    runtime: Path,
    names: Sequence[str],
    engine: EngineSection,
    models_dir: Path,
    options_of: Callable[[str], ModelSettings],
) -> tuple[dict[str, ServedModel], list[PluginLoadError]]:
    """The plugins registered in environments under ``root`` that ``names`` selects (every one
    when empty), ready to serve; and those that could not be described, with why. Each is
    described by a process in its environment, all at once."""
    wanted = {name: plugin for name, plugin in registered(root).items() if not names or name in names}
    if not wanted:
        return {}, []
    store = EnvironmentStore(root)
    runtime_dir(runtime)

    def build(plugin: IsolatedPlugin) -> ServedModel:
        environment = environment_of(store, plugin)
        description = describe(environment, runtime, plugin)
        return build_isolated_model(
            plugin.ref,
            description,
            launch(environment, runtime, plugin),
            engine,
            models_dir / plugin.name,
            options_of(plugin.name),
        )

    served: dict[str, ServedModel] = {}
    broken: list[PluginLoadError] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, len(wanted))) as pool:
        futures = {name: pool.submit(build, plugin) for name, plugin in sorted(wanted.items())}
        for name, future in futures.items():
            try:
                served[name] = future.result()
            except PluginLoadError as exc:
                broken.append(exc)
    return served, broken
