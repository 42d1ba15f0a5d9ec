"""``deepaas-install-plugin --isolated``: a plugin in an environment of its own.

The plugin's requirements are installed as it states them (``webargs~=5.5.3``, an old
scikit-learn, a TensorFlow of its year), unconstrained by the server's, in an environment
built with uv and shared by every plugin that needs the same resolved packages
(:mod:`deepaas_like.environments`). ``deepaas`` itself is left out: the worker's runtime
provides it. The plugin's own code is installed beside the environment (or, with ``-e``,
runs from its checkout), it is imported once there to describe its arguments, and it is
registered so that ``deepaas-run`` serves it next to the others.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..environments import BuildFailed, EnvironmentStore
from ..errors import PluginLoadError
from ..isolated import IsolatedPlugin, describe, register, registered, runtime_dir, unregister
from .wheels import PROVIDED, WheelBuildFailed, build_wheels, entry_points_of, read_wheel

CODE_DIR = "plugins"


@dataclass
class IsolatedPlan:
    """One plugin: its wheel, name and version, model entry points, and its environment's requirements."""

    wheel: Path
    name: str
    version: str
    entry_points: dict[str, str]
    requirements: list[str]
    left_out: list[str]
    editable: Path | None = None


def plan_isolated(wheel: Path, editable: Path | None) -> IsolatedPlan:
    name, version, requires, _ = read_wheel(wheel)
    requirements, left_out = [], []
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            left_out.append(f"{text}: not a valid requirement, ignored")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if canonicalize_name(requirement.name) in PROVIDED:
            left_out.append(f"{text}: {PROVIDED[canonicalize_name(requirement.name)]}")
            continue
        requirement.marker = None
        requirements.append(str(requirement))
    return IsolatedPlan(wheel, name, version, entry_points_of(wheel), requirements, left_out, editable)


def _import_roots(wheel: Path, checkout: Path) -> list[str]:
    """Where, in a plugin's checkout, its top-level packages are (the checkout or its src/)."""
    with zipfile.ZipFile(wheel) as archive:
        tops = {n.split("/")[0] for n in archive.namelist() if not n.split("/")[0].endswith((".dist-info", ".data"))}
    roots = []
    for top in sorted(tops):
        module = top[:-3] if top.endswith(".py") else top
        for base in (checkout, checkout / "src"):
            if (base / module).is_dir() or (base / f"{module}.py").is_file():
                if str(base) not in roots:
                    roots.append(str(base))
                break
    return roots or [str(checkout)]


def install_code(store: EnvironmentStore, plan: IsolatedPlan) -> list[str]:
    """The directories of the plugin's own code: its checkout (``-e``), or its wheel installed
    (without dependencies) in a directory of its own, named by the wheel's content."""
    if plan.editable is not None:
        return _import_roots(plan.wheel, plan.editable)
    digest = hashlib.sha256(plan.wheel.read_bytes()).hexdigest()[:16]
    target = store.root / CODE_DIR / f"{canonicalize_name(plan.name)}-{plan.version}-{digest}"
    if not (target / ".complete").exists():
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent if target.parent.exists() else None))
        command = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--no-deps", "--target", str(staging)]
        subprocess.run([*command, "--python", sys.executable, str(plan.wheel)], check=True)
        (staging / ".complete").touch()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
    return [str(target)]


def install_isolated(
    root: Path, runtime: Path, sources: Sequence[tuple[str, Path | None]], *, dry_run: bool = False
) -> int:
    """Build each plugin's environment, install its code, describe it there and register it."""
    store = EnvironmentStore(root)
    with tempfile.TemporaryDirectory(prefix="deepaas-install-plugin-") as tmp:
        try:
            plans = [plan_isolated(wheel, editable) for wheel, editable in build_wheels(list(sources), Path(tmp))]
        except WheelBuildFailed as exc:
            return _error(str(exc))
        for plan in plans:
            print(f"{plan.name} {plan.version}: models {', '.join(plan.entry_points) or '(none found!)'}")
            for line in plan.left_out:
                print(f"  keep     {line}")
            for requirement in plan.requirements:
                print(f"  require  {requirement}")
        if dry_run:
            return 0
        for plan, (spec, _) in zip(plans, sources):
            if not plan.entry_points:
                print(f"warning: {plan.name} has no model entry point: nothing to serve", file=sys.stderr)
                continue
            try:
                environment = store.build(plan.requirements, log=lambda line: print(f"  uv  {line}"))
                code = install_code(store, plan)
            except BuildFailed as exc:
                which = f" (the requirement that failed: {exc.requirement})" if exc.requirement else ""
                print(
                    f"deepaas-install-plugin: error: {plan.name}'s environment: {exc.message}{which}", file=sys.stderr
                )
                return 1
            except subprocess.CalledProcessError as exc:
                print(
                    f"deepaas-install-plugin: error: installing {plan.name} failed (exit {exc.returncode})",
                    file=sys.stderr,
                )
                return 1
            for name, value in plan.entry_points.items():
                plugin = IsolatedPlugin(
                    name, value, environment.key, tuple(code), distribution=plan.name, version=plan.version, source=spec
                )
                try:
                    described = describe(environment, runtime_dir(runtime), plugin)
                except PluginLoadError as exc:
                    print(
                        f"deepaas-install-plugin: error: {name} does not import in its environment: {exc}",
                        file=sys.stderr,
                    )
                    if exc.traceback_text:
                        print(exc.traceback_text.rstrip(), file=sys.stderr)
                    return 1
                register(root, plugin)
                arguments = ", ".join(described["predict_args"]) or "(none)"
                print(
                    f"installed {name} in environment {environment.key[:12]} (python {described['python']}): "
                    f"predict takes {arguments}; serve it with: deepaas-run --model-name {name}"
                )
    return 0


def uninstall_isolated(root: Path, names: Sequence[str]) -> int:
    """Stop serving ``names`` (their registrations go; their environments stay until gc)."""
    known = registered(root)
    missing = [name for name in names if name not in known]
    if missing:
        installed = ", ".join(sorted(known)) or "none"
        return _error(f"no model {', '.join(missing)} in an environment of its own here (installed: {installed})")
    for name in names:
        unregister(root, name)
        print(f"uninstalled {name} (environment {known[name].environment[:12]}: deepaas-env gc removes it if unused)")
    return 0


def _error(message: str) -> int:
    print(f"deepaas-install-plugin: error: {message}", file=sys.stderr)
    return 1
