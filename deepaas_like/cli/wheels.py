"""A plugin's wheel: built (or copied) from whatever names it, and what its metadata says
(name, version, requirements, model entry points). Both ways of installing a plugin,
into the server's environment and into one of its own, start here."""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from ..loading import GROUP

PROVIDED = {"deepaas": "deepaas_like provides the 'deepaas' import package"}


def read_wheel(wheel: Path) -> tuple[str, str, list[str], list[str]]:
    """Name, version, requirements and model entry points of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        info_dir = _info_dir(archive)
        metadata = email.parser.Parser().parsestr(archive.read(f"{info_dir}/METADATA").decode())
    return metadata["Name"], metadata["Version"], metadata.get_all("Requires-Dist") or [], list(entry_points_of(wheel))


def _info_dir(archive: zipfile.ZipFile) -> str:
    return next(n.split("/")[0] for n in archive.namelist() if n.split("/")[0].endswith(".dist-info"))


def entry_points_of(wheel: Path) -> dict[str, str]:
    """The wheel's model entry points: name -> ``module:attribute``."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            entry_text = archive.read(f"{_info_dir(archive)}/entry_points.txt").decode()
        except KeyError:
            entry_text = ""
    found = {}
    section = None
    for line in entry_text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == GROUP and "=" in line:
            name, value = line.split("=", 1)
            found[name.strip()] = value.strip()
    return found


def pip_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def build_wheel(spec: str, into: Path) -> Path:
    """The wheel of one plugin ``spec``, built (or copied) into the empty directory ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    if spec.endswith(".whl") and os.path.isfile(spec):
        (into / os.path.basename(spec)).write_bytes(Path(spec).read_bytes())
    else:
        subprocess.run(pip_command("wheel", "--no-deps", "--wheel-dir", str(into), spec), check=True)
    return next(into.glob("*.whl"))


class WheelBuildFailed(Exception):
    """Building a plugin's wheel failed (pip said why, on the terminal)."""


def build_wheels(sources: list[tuple[str, Path | None]], into: Path) -> list[tuple[Path, Path | None]]:
    """Each source's wheel, built in a directory of its own under ``into``, with the checkout
    it runs from when installed editable (``-e``)."""
    wheels = []
    for index, (spec, editable) in enumerate(sources):
        try:
            wheels.append((build_wheel(spec, into / str(index)), editable))
        except subprocess.CalledProcessError as exc:
            raise WheelBuildFailed(f"building {spec} failed (exit {exc.returncode})") from None
    return wheels
