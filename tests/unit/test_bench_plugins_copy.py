"""tests/bench_plugins are copies of ../shared/bench/plugins (the CEO's reference plugins),
vendored so that `make test` works from a clean clone anywhere; they must not drift.

``tests/bench_plugins/SHA256SUMS`` records the reference files' hashes: the copies are checked
against it in every clone, and it is checked against ../shared wherever that is present.
"""

import hashlib
from pathlib import Path

import echobench.api
import irisbench.api

from support import ROOT, TESTS

HERE = TESTS / "bench_plugins"
SHARED = ROOT.parent / "shared" / "bench" / "plugins"


def recorded() -> dict[str, str]:
    lines = (HERE / "SHA256SUMS").read_text().splitlines()
    return {path.removeprefix("./"): digest for digest, path in (line.split(maxsplit=1) for line in lines)}


def hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and ".egg-info" not in str(path)
        and "build" not in path.relative_to(root).parts[1:2]
        and path.name != "SHA256SUMS"
    }


def test_installed_bench_plugins_are_the_vendored_copies():
    assert Path(echobench.api.__file__).resolve() == (HERE / "echobench" / "echobench" / "api.py").resolve()
    assert Path(irisbench.api.__file__).resolve() == (HERE / "irisbench" / "irisbench" / "api.py").resolve()


def test_vendored_copies_are_the_reference_files():
    expected = recorded()
    assert set(expected) == {
        "echobench/echobench/__init__.py",
        "echobench/echobench/api.py",
        "echobench/pyproject.toml",
        "irisbench/irisbench/__init__.py",
        "irisbench/irisbench/api.py",
        "irisbench/pyproject.toml",
    }
    assert hashes(HERE) == expected
    if SHARED.is_dir():  # in the workplace: the record is that of the reference plugins as they are now
        assert hashes(SHARED) == expected
