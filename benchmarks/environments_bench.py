"""The environments phase of ``make bench``: models with their own requirements.

* build: an environment of scikit-learn and numpy (deepaas_like.environments, uv) built in
  a new directory from a warm uv cache (the cache filled by a first build elsewhere), then
  the same requirements again (a second model that needs them: a cache hit);
* serve: irisbench installed in an environment of its own (``deepaas-install-plugin
  --isolated``, a copy of the plugin named ``irisiso``, its libraries pinned to the
  server's versions so that only the environment differs) and irisbench in the server's
  environment, in one server with the same flags, each driven at the same concurrency.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IRISBENCH = HERE.parent / "tests" / "bench_plugins" / "irisbench"
ISOLATED_NAME = "irisiso"
LEVEL = 64  # the concurrency of the comparison (that of the loadgen cases at their top)
PINNED = ("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl", "webargs", "marshmallow")
BUILD_REQUIREMENTS = ["scikit-learn", "numpy"]


def build_times(scratch: Path) -> dict:
    """Seconds to build scikit-learn + numpy: from an empty cache, from a warm one in a new
    directory, and again for a second model (the same requirements: a cache hit)."""
    from deepaas_like.environments import EnvironmentStore

    cache = scratch / "uv-cache"
    started = time.perf_counter()
    EnvironmentStore(scratch / "envs-cold", cache_dir=cache).build(BUILD_REQUIREMENTS)
    cold = time.perf_counter() - started
    store = EnvironmentStore(scratch / "envs-warm", cache_dir=cache)
    started = time.perf_counter()
    environment = store.build(BUILD_REQUIREMENTS)
    warm = time.perf_counter() - started
    hits = []
    for _ in range(3):
        started = time.perf_counter()
        again = store.build(list(reversed(BUILD_REQUIREMENTS)))
        hits.append(time.perf_counter() - started)
        assert again.key == environment.key, "the same requirements must give the same environment"
    return {
        "wall_s": round(warm, 3),
        "extra": {
            "cold_s": round(cold, 3),
            "warm_first_s": round(warm, 3),
            "cache_hit_s": round(sorted(hits)[1], 3),
            "lock": environment.lock.replace("\n", ", ").strip(", "),
        },
    }


def isolated_irisbench(scratch: Path, data_dir: Path) -> str:
    """irisbench copied as ``irisiso``, its requirements pinned to the server's versions, and
    installed in an environment of its own under ``data_dir``; the installer's output."""
    source = scratch / "irisiso"
    shutil.copytree(IRISBENCH, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    pyproject = source / "pyproject.toml"
    pins = ", ".join(f'"{name}=={importlib.metadata.version(name)}"' for name in PINNED)
    text = pyproject.read_text()
    text = re.sub(r"dependencies = \[[^\]]*\]", f"dependencies = [{pins}]", text)
    text = text.replace('name = "irisbench"', 'name = "irisiso"').replace("irisbench = ", f"{ISOLATED_NAME} = ")
    pyproject.write_text(text)
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "deepaas-install-plugin"),
            "--isolated",
            "--data-dir",
            str(data_dir),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"deepaas-install-plugin --isolated failed: {done.stderr[-2000:]}")
    return done.stdout
