"""The one seam that finds and imports model plugins.

Plugins are entry points in the ``deepaas.v2.model`` group (DEEPaaS v2's group), read
through stevedore. Two things differ from stevedore's defaults on purpose:

* entry points are read afresh from ``importlib.metadata`` every time, never from
  stevedore's on-disk cache (keyed on float32 mtimes, it can miss a plugin installed
  a moment ago) or its per-process class cache;
* a plugin that fails to import raises :class:`PluginLoadError` carrying the real
  exception and traceback, instead of being logged and skipped (which made DEEPaaS
  answer "model not found").
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

from .errors import PluginLoadError
from .legacy import legacy_vocabulary_allowed

if TYPE_CHECKING:
    import stevedore

GROUP = "deepaas.v2.model"


@dataclass(frozen=True)
class PluginRef:
    """Where a plugin comes from. Picklable: worker processes load it again from it."""

    name: str
    value: str
    group: str = GROUP
    distribution: str | None = None

    def load_object(self) -> Any:
        """Import the entry point's target and turn it into a model object."""
        with legacy_vocabulary_allowed():
            target = importlib.metadata.EntryPoint(self.name, self.value, self.group).load()
            return resolve_model_object(self.name, target)


def resolve_model_object(name: str, target: Any) -> Any:
    """Module and instance plugins are used as they are; a class is instantiated once."""
    if inspect.isclass(target):
        try:
            obj = target()
        except Exception as exc:
            raise PluginLoadError(
                name,
                f"class {target.__module__}.{target.__qualname__} could not be "
                f"instantiated without arguments: {type(exc).__name__}: {exc}",
                traceback.format_exc(),
            ) from exc
    else:
        obj = target
    if not any(callable(getattr(obj, m, None)) for m in ("predict", "train")):
        kind = "module" if isinstance(obj, ModuleType) else type(obj).__name__
        raise PluginLoadError(
            name,
            f"the entry point names a {kind} that has neither predict() nor train(); it does not look like a model",
        )
    return obj


@functools.cache
def _fresh_manager_class() -> type[stevedore.NamedExtensionManager]:
    """A stevedore manager that never answers from a stale entry-point cache. (stevedore is
    imported here, by the server that discovers plugins: a worker loads its plugin by its
    reference, and a worker in a model's own environment has no stevedore.)"""
    import stevedore

    class FreshEntryPointManager(stevedore.NamedExtensionManager):
        def list_entry_points(self) -> list[importlib.metadata.EntryPoint]:
            return discover_entry_points(self.namespace)

    return FreshEntryPointManager


def discover_entry_points(group: str = GROUP) -> list[importlib.metadata.EntryPoint]:
    """Installed entry points of ``group``, read now (identical duplicates dropped)."""
    importlib.invalidate_caches()
    found: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=group):
        found.setdefault((ep.name, ep.value), ep)
    return list(found.values())


@dataclass
class LoadedPlugin:
    """A plugin imported in the server process, with where it came from."""

    ref: PluginRef
    obj: Any


def load_plugins(
    names: Sequence[str] = (), group: str = GROUP, broken: list[PluginLoadError] | None = None
) -> list[LoadedPlugin]:
    """Import the selected plugins (all installed ones when ``names`` is empty).

    Raises :class:`PluginLoadError` for an unknown name, two plugins claiming one
    name, or a plugin whose import fails; the error carries the real cause. With
    ``broken`` (a list), a plugin that fails to import, or is not a model, is added there
    instead, and the others load.
    """
    available = discover_entry_points(group)
    by_name: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in available:
        by_name.setdefault(ep.name, []).append(ep)
    for name, eps in list(by_name.items()):
        if len(eps) > 1:
            targets = ", ".join(f"{ep.value} ({_dist_name(ep)})" for ep in eps)
            error = PluginLoadError(name, f"several installed plugins use this name: {targets}")
            if broken is None or name in names:
                raise error
            broken.append(error)
            del by_name[name]
    wanted = list(dict.fromkeys(names)) or sorted(by_name)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        installed = ", ".join(sorted(by_name)) or "none"
        raise PluginLoadError(
            missing[0],
            f"no plugin with this name is installed in the '{group}' entry-point group (installed: {installed})",
        )
    if not wanted:
        return []

    failures: list[PluginLoadError] = []

    def on_failure(
        _manager: stevedore.ExtensionManager[Any], ep: importlib.metadata.EntryPoint, exc: BaseException
    ) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        message = f"import of {ep.value} failed: {type(exc).__name__}: {exc}"
        # A plain OSError without errno is how Keras and h5py report a missing model file.
        missing_file = isinstance(exc, (FileNotFoundError, NotADirectoryError)) or (
            type(exc) is OSError and exc.errno is None
        )
        dist = getattr(ep, "dist", None)
        direct_url = (dist.read_text("direct_url.json") if dist is not None else None) or ""
        if missing_file and '"editable":true' not in direct_url.replace(" ", ""):  # PEP 610, as pip writes it
            message += (
                "; if the plugin reads files from its source checkout (data/, models/, a metadata file "
                "beside its package), they are not in its installed package: install it editable with "
                "deepaas-install-plugin -e DIR"
            )
        failures.append(PluginLoadError(ep.name, message, tb))

    with legacy_vocabulary_allowed():
        manager = _fresh_manager_class()(
            group,
            names=wanted,
            name_order=True,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=None,
        )
    if failures:
        if broken is None:
            raise failures[0]
        broken.extend(failures)
    loaded = []
    for ext in manager.extensions:
        ref = PluginRef(ext.name, ext.entry_point.value, group, _dist_name(ext.entry_point))
        try:
            with legacy_vocabulary_allowed():
                obj = resolve_model_object(ext.name, ext.plugin)
        except PluginLoadError as exc:
            if broken is None:
                raise
            broken.append(exc)
            continue
        loaded.append(LoadedPlugin(ref, obj))
    return loaded


def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None
