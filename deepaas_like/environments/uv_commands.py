"""Running uv, and reading what its output says went wrong.

Every command is logged before it runs (``$ uv venv ...``), then each line uv prints, as it
comes: the caller's build log shows what ran and what it said. When uv fails,
:func:`failed_requirement` picks out the requirement it could not resolve or install::

    failed_requirement("... Because there is no version of six==99.0 and you require six==99.0, ...",
                       ("six==99.0",))                                    # "six==99.0"
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_REQUIREMENT = r"(?P<req>[A-Za-z0-9][A-Za-z0-9._\-\[\],]*(?:[<>=!~]=?[^\s,]+(?:,[<>=!~]=?[^\s,]+)*)?)"
# What uv says, in the order to trust it: the first that matches names the culprit.
_CULPRITS = [
    # a build's or a download's failure is the top error: the causes below it are the build's own
    re.compile(r"Failed to (?:download and build|build|download|install|fetch)\s*:?\s*`(?P<req>[^`]+)`"),
    re.compile(rf"there is no version of {_REQUIREMENT}"),
    re.compile(rf"(?:and )?you require {_REQUIREMENT}, we can conclude that your requirements are unsatisfiable"),
    re.compile(rf"only \S+ (?:is|are) available and you require {_REQUIREMENT}"),
    re.compile(rf"{_REQUIREMENT} was not found in the (?:package registry|provided package locations)"),
    re.compile(rf"you require {_REQUIREMENT}"),
]


class UvMissing(RuntimeError):
    pass


def uv_binary() -> str:
    """The uv executable that the ``uv`` package installed next to this server."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError) as exc:
        raise UvMissing("uv is not installed in the server's environment: pip install 'uv>=0.13.9,<0.14'") from exc


def run_uv(args: Sequence[str], *, log: Callable[[str], None], cwd: Path) -> tuple[int, str]:
    """Run ``uv ARGS``, handing each line it prints (stdout and stderr together) to ``log`` as
    it comes; return its exit status and its whole output."""
    log("$ uv " + " ".join(shlex.quote(str(arg)) for arg in args))
    lines = []
    with subprocess.Popen(
        [uv_binary(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        cwd=cwd,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = _ANSI.sub("", line.rstrip("\n"))
            lines.append(line)
            log(line)
    return process.returncode, "\n".join(lines)


def error_summary(output: str, limit: int = 600) -> str:
    """uv's error, on one line: from its first error line to the end (whitespace collapsed)."""
    lines = _ANSI.sub("", output).splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.lstrip().startswith(("error:", "×"))),
        max(len(lines) - 5, 0),
    )
    text = " ".join(" ".join(lines[start:]).replace("╰─▶", " ").split()).removeprefix("error: ").removeprefix("× ")
    text = re.sub(r":? cause: ", ": ", text).rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failed_requirement(output: str, requirements: Sequence[str]) -> str | None:
    """The requirement uv's ``output`` says it could not resolve or install, or None when it
    does not tell. One of ``requirements`` (as asked) when its name matches, else as uv wrote it
    (a dependency of what was asked)."""
    text = " ".join(_ANSI.sub("", output).replace("╰─▶", " ").split())
    for pattern in _CULPRITS:
        match = pattern.search(text)
        found = match.group("req").rstrip(".,") if match else ""
        name = _name(found)
        if name is not None:
            return next((asked for asked in requirements if _name(asked) == name), found)
    return None


def _name(requirement: str) -> str | None:
    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return None
