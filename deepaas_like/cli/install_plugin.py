"""``deepaas-install-plugin``: install a DEEPaaS v2 plugin without breaking deepaas_like.

DEEPaaS-era plugins list ``deepaas>=2.1`` and often ``webargs~=5.5.3`` in their
requirements; plain ``pip install`` refuses them next to deepaas_like (webargs 8), or
would replace our libraries if it could. This command:

1. builds the plugin's wheel (``pip wheel --no-deps``: a directory, a PyPI name, a
   VCS URL, an sdist or a wheel all work);
2. reads its requirements and sets aside ``deepaas`` (deepaas_like provides its
   import names) and every library deepaas_like itself runs on, at the versions
   installed now;
3. installs the remaining requirements with pip, constrained so that none of
   deepaas_like's own libraries can change, then the plugin itself with
   ``--no-deps``;
4. imports the plugin through the same seam ``deepaas-run`` uses, and reports.

``-e DIR`` installs a plugin's source checkout editable, as ``pip install -e .`` in
DEEPaaS plugins' READMEs and Dockerfiles does: steps 1-3 are the same (the wheel is
built only to read the requirements and entry points), then ``pip install --no-deps
-e DIR`` makes the plugin import from ``DIR`` itself. Use it for plugins that read
files beside their package in the repository (``Path(__file__).parents[1] / "data"``,
a metadata YAML at the root, ``models/``): a wheel holds only the package, so such a
plugin fails with ``FileNotFoundError`` when installed without ``-e``. Edits in
``DIR`` take effect without installing again.

Example::

    deepaas-install-plugin ./my_deepaas_plugin
    deepaas-install-plugin -e ./my_deepaas_plugin     # runs from the checkout
    deepaas-install-plugin my-plugin-on-pypi==1.4 --dry-run
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..loading import GROUP
from .wheels import PROVIDED, WheelBuildFailed, build_wheels, pip_command, read_wheel

OURS = "deepaas_like"


@dataclass
class Plan:
    """What will be done with one plugin: its requirements, and how it is installed.

    ``editable`` is the source checkout the plugin is installed from with ``pip
    install -e``; ``None`` installs ``wheel``.
    """

    wheel: Path
    name: str
    version: str
    entry_points: list[str]
    editable: Path | None = None
    install: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def protected_distributions(root: str = OURS) -> dict[str, str]:
    """deepaas_like and everything it depends on (not its extras), by canonical name."""
    found: dict[str, str] = {}
    pending = [root]
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[name] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def plan_for(wheel: Path, protected: dict[str, str], editable: Path | None = None) -> Plan:
    name, version, requirements, entry_points = read_wheel(wheel)
    plan = Plan(wheel, name, version, entry_points, editable)
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            plan.kept.append(f"{text}: not a valid requirement, ignored")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(requirement.name)
        if key in PROVIDED:
            plan.kept.append(f"{text}: {PROVIDED[key]}")
        elif key in protected:
            installed = protected[key]
            verdict = (
                "satisfied"
                if requirement.specifier.contains(installed, prereleases=True)
                else ("kept as it is: deepaas_like runs DEEPaaS plugins on it")
            )
            plan.kept.append(f"{text}: {requirement.name} {installed} is installed, {verdict}")
        else:
            plan.install.append(str(requirement))
    return plan


def is_project_dir(path: str) -> bool:
    """Whether ``path`` is a project pip can install editable (what ``-e`` accepts here)."""
    return any(os.path.isfile(os.path.join(path, name)) for name in ("pyproject.toml", "setup.py"))


def verify(entry_points: Sequence[str]) -> subprocess.CompletedProcess:
    """Import the plugins in a fresh interpreter, through deepaas-run's own seam."""
    code = (
        "import sys\n"
        "from deepaas_like.loading import load_plugins\n"
        "from deepaas_like.errors import PluginLoadError\n"
        "try:\n"
        "    print(' '.join(p.ref.name for p in load_plugins(sys.argv[1:])))\n"
        "except PluginLoadError as exc:\n"
        "    sys.exit(f'{exc}\\n{exc.traceback_text}')\n"
    )
    return subprocess.run([sys.executable, "-c", code, *entry_points], capture_output=True, text=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deepaas-install-plugin",
        description="Install DEEPaaS v2 model plugins next to deepaas_like without changing "
        "deepaas_like's own libraries (deepaas, webargs, marshmallow, aiohttp...).",
    )
    parser.add_argument("specs", nargs="*", metavar="PLUGIN", help="a directory, PyPI name, VCS URL, sdist or wheel")
    parser.add_argument(
        "-e",
        "--editable",
        action="append",
        default=[],
        metavar="DIR",
        help="install the plugin in source directory DIR editable (like pip install -e): it runs from DIR, "
        "so files it reads beside its package (data/, models/, a metadata YAML) are found and edits in DIR "
        "take effect without installing again; repeatable",
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would be installed, install nothing")
    parser.add_argument(
        "--isolated",
        action="store_true",
        help="install the plugin in an environment of its own, with its requirements as it states them "
        "(built with uv, shared by plugins that need the same packages); deepaas-run serves it next to the others",
    )
    parser.add_argument(
        "--data-dir",
        help="--isolated: the server's --data-dir, where environments live (default: as deepaas-run finds it)",
    )
    parser.add_argument("--config-file", help="--isolated: deepaas-run's config file (for its --data-dir)")
    parser.add_argument(
        "--uninstall",
        action="append",
        default=[],
        metavar="NAME",
        help="--isolated: stop serving the model NAME installed in an environment of its own (deepaas-env gc "
        "then removes the environment if nothing else uses it); repeatable",
    )
    parser.add_argument(
        "--keep-broken",
        action="store_true",
        help="keep a plugin installed even when it does not import (by default it is uninstalled "
        "again, so that deepaas-run serving every plugin is not left with a broken one)",
    )
    args = parser.parse_args(argv)
    if not args.specs and not args.editable and not args.uninstall:
        parser.error("name at least one PLUGIN or -e DIR")
    for directory in args.editable:
        if not is_project_dir(directory):
            parser.error(
                f"-e {directory}: not a project directory (no pyproject.toml or setup.py); "
                "-e takes a plugin's source checkout"
            )
    if args.isolated:
        return _isolated(parser, args)
    if args.uninstall:
        parser.error("--uninstall goes with --isolated (plugins in the server's environment: pip uninstall)")
    if args.data_dir or args.config_file:
        parser.error("--data-dir and --config-file go with --isolated")
    protected = protected_distributions()
    if canonicalize_name(OURS) not in protected:
        print("deepaas-install-plugin: error: deepaas_like is not installed in this environment", file=sys.stderr)
        return 1
    sources: list[tuple[str, Path | None]] = [(spec, None) for spec in args.specs]
    sources += [(directory, Path(directory).resolve()) for directory in args.editable]
    with tempfile.TemporaryDirectory(prefix="deepaas-install-plugin-") as tmp:
        try:
            plans = [plan_for(wheel, protected, editable) for wheel, editable in build_wheels(sources, Path(tmp))]
        except WheelBuildFailed as exc:
            print(f"deepaas-install-plugin: error: {exc}", file=sys.stderr)
            return 1
        for plan in plans:
            print(f"{plan.name} {plan.version}: models {', '.join(plan.entry_points) or '(none found!)'}")
            if plan.editable is not None:
                print(f"  editable runs from {plan.editable}")
            for line in plan.kept:
                print(f"  keep     {line}")
            for requirement in plan.install:
                print(f"  install  {requirement}")
        if args.dry_run:
            return 0
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(
            "".join(f"{name}=={version}\n" for name, version in protected.items() if name != canonicalize_name(OURS))
        )
        requirements = sorted({r for plan in plans for r in plan.install})
        targets: list[str] = []
        for plan in plans:
            targets += ["-e", str(plan.editable)] if plan.editable is not None else [str(plan.wheel)]
        try:
            if requirements:
                subprocess.run(pip_command("install", "-c", str(constraints), *requirements), check=True)
            subprocess.run(pip_command("install", "--no-deps", *targets), check=True)
        except subprocess.CalledProcessError as exc:
            print(
                f"deepaas-install-plugin: error: pip failed (exit {exc.returncode}); deepaas_like's own "
                "libraries were not changed",
                file=sys.stderr,
            )
            return 1
    names = [name for plan in plans for name in plan.entry_points]
    if not names:
        print(f"warning: no entry point in the '{GROUP}' group: deepaas-run will not serve it", file=sys.stderr)
        return 0
    result = verify(names)
    if result.returncode != 0:
        if args.keep_broken:
            print(f"installed, but the plugin does not import (kept: --keep-broken):\n{result.stderr}", file=sys.stderr)
        else:
            undone = subprocess.run(
                pip_command("uninstall", "--yes", *(plan.name for plan in plans)), capture_output=True, text=True
            )
            print(
                f"the plugin does not import, so it was uninstalled again"
                f"{'' if undone.returncode == 0 else ' (pip uninstall failed: ' + undone.stderr.strip() + ')'}; "
                f"the requirements installed for it stay (keep the plugin anyway with --keep-broken):\n"
                f"{result.stderr}",
                file=sys.stderr,
            )
        # deepaas_like.loading adds this hint when a plugin installed without -e misses a file.
        if "deepaas-install-plugin -e" in result.stderr:
            for spec in args.specs:
                if is_project_dir(spec):
                    print(
                        f"hint: {spec} was installed as a wheel, which holds only its package; to run it "
                        f"from its checkout: deepaas-install-plugin -e {spec}",
                        file=sys.stderr,
                    )
        return 1
    print(f"installed and importable: {result.stdout.strip()}; serve it with: deepaas-run --model-name {names[0]}")
    return 0


def _isolated(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ..environments import environments_root
    from ..settings import SettingsError, load_settings
    from .install_isolated import install_isolated, uninstall_isolated

    flags = [
        *(["--data-dir", args.data_dir] if args.data_dir else []),
        *(["--config-file", args.config_file] if args.config_file else []),
    ]
    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        parser.error(str(exc))
    root = environments_root(settings)
    if args.uninstall:
        return uninstall_isolated(root, args.uninstall)
    sources: list[tuple[str, Path | None]] = [(spec, None) for spec in args.specs]
    sources += [(directory, Path(directory).resolve()) for directory in args.editable]
    runtime = Path(settings.data_dir) / "runtime"
    return install_isolated(root, runtime, sources, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
