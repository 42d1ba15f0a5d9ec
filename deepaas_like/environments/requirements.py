"""What an environment may be asked to contain: requirement strings, checked and normalised.

Only requirements that name what to install from a package index (or a URL) are accepted;
options and local paths are refused, since they would make the environment depend on files
and settings outside it::

    read_requirements("six==1.16.0  # pinned\\n\\nnumpy<2\\n")   # ["six==1.16.0", "numpy<2"]
    normalise_requirements(["Six == 1.16.0", "numpy <2"])        # ("numpy<2", "six==1.16.0")
"""

from __future__ import annotations

import re
from typing import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# a comment starts a line, or follows whitespace (pip's rule: "six==1.16.0 # why")
_COMMENT = re.compile(r"(^|\s)#.*$")
_LOCAL = ("/", ".", "~", "file:")


def read_requirements(text: str) -> list[str]:
    """The requirements of a requirements.txt, one per line, comments and blank lines skipped.

    Raises ValueError naming the line for an option (``-e``, ``-r``, ``--index-url``, ...) or a
    local path: the index is the server's to choose, and an environment must not depend on
    files outside it.
    """
    lines = []
    for number, line in enumerate(_logical_lines(text), start=1):
        line = _COMMENT.sub("", line).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise ValueError(
                f"requirements line {number}: {line!r}: options (-e, -r, -c, --index-url, ...) are not "
                "accepted here; list each package as name==version, and let the server choose the index"
            )
        lines.append(check_requirement(line))
    return lines


def check_requirement(line: str) -> str:
    """``line`` as a normalised requirement string (canonical name, sorted extras and specifiers).

    Raises ValueError naming the line when it is no requirement or names a local path.
    """
    if line.startswith(_LOCAL):
        raise _local_path(line)
    try:
        requirement = Requirement(line)
    except InvalidRequirement as exc:
        raise ValueError(f"not a requirement: {line!r} ({exc}); write it as name==version, e.g. six==1.16.0") from exc
    if requirement.url and requirement.url.startswith("file:"):
        raise _local_path(line)
    requirement.name = canonicalize_name(requirement.name)
    requirement.extras = {canonicalize_name(extra) for extra in requirement.extras}
    return str(requirement)


def normalise_requirements(requirements: Iterable[str]) -> tuple[str, ...]:
    """Each requirement checked and normalised, without repeats, sorted: the same request
    spelled or ordered differently gives the same tuple."""
    if isinstance(requirements, str):
        raise TypeError("requirements: give a list of strings, or read_requirements(text) for a file's text")
    normalised = tuple(sorted({check_requirement(line.strip()) for line in requirements}))
    if not normalised:
        raise ValueError("no requirements: an environment needs at least one")
    return normalised


def _local_path(line: str) -> ValueError:
    return ValueError(
        f"requirement {line!r} is a local path: an environment must not depend on files outside it; "
        "publish the package to the index, or give its URL"
    )


def _logical_lines(text: str) -> list[str]:
    """Lines with pip's backslash continuations joined."""
    return re.sub(r"\\\r?\n", " ", text).splitlines()
