"""tests/bench_plugins are copies of ../shared/bench/plugins (the CEO's reference plugins),
vendored so that `make test` works from a clean clone anywhere; they must not drift."""

from pathlib import Path

import echobench.api
import pytest
import irisbench.api

HERE = Path(__file__).parent / "bench_plugins"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "plugins"


def test_installed_bench_plugins_are_the_vendored_copies():
    assert Path(echobench.api.__file__).resolve() == (HERE / "echobench" / "echobench" / "api.py").resolve()
    assert Path(irisbench.api.__file__).resolve() == (HERE / "irisbench" / "irisbench" / "api.py").resolve()


def test_vendored_copies_match_shared_when_it_is_present():
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a clone outside the workplace): nothing to compare the copies with")
    for source in SHARED.rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts and ".egg-info" not in str(source):
            copy = HERE / source.relative_to(SHARED)
            assert copy.read_bytes() == source.read_bytes(), f"{copy} differs from {source}"
