"""Environments built for real by uv, from PyPI (tiny pure-Python packages), and deepaas-env.

The timings printed (pytest -s) are measurements, not checks: what proves a cache hit is
that it created nothing and ran no ``uv venv``.
"""

import json
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from deepaas_like.environments import (
    BuildFailed,
    EnvironmentStore,
    environments_root,
    in_use,
    record_user,
)
from deepaas_like.settings import load_settings

DEEPAAS_ENV = str(Path(sys.executable).parent / "deepaas-env")
WEBARGS_5 = ["six==1.16.0", "webargs==5.5.3", "marshmallow==3.23.2"]


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory) -> Path:
    """One uv cache for the module's stores: only the first build downloads."""
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture
def store(tmp_path, uv_cache) -> EnvironmentStore:
    return EnvironmentStore(tmp_path / "environments", cache_dir=uv_cache)


def run_in(python: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)


def entries(root: Path) -> set[str]:
    return {entry.name for entry in root.iterdir()}


def test_a_build_then_the_same_requirements_again_is_a_cache_hit(store):
    built: list[str] = []
    started = time.perf_counter()
    env = store.build(WEBARGS_5, log=built.append)
    print(f"\nfirst build of {' '.join(WEBARGS_5)}: {time.perf_counter() - started:.2f} s")
    assert any(line.startswith("$ uv venv") for line in built) and "+ webargs==5.5.3" in [x.strip() for x in built]
    assert env.path == store.root / env.key and env.python_version == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert env.requirements == ("marshmallow==3.23.2", "six==1.16.0", "webargs==5.5.3")
    assert "webargs==5.5.3\n" in env.lock and env.size > 0
    answer = run_in(env.python, "import six, webargs, marshmallow; print(webargs.__version__, marshmallow.__version__)")
    assert answer.stdout.split() == ["5.5.3", "3.23.2"], answer.stderr
    # its own environment: the server's packages are not there
    assert run_in(env.python, "import aiohttp").returncode != 0
    # built aside and renamed: nothing in it names the build directory
    for script in (env.path / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            assert b".build-" not in script.read_bytes(), script
    assert json.loads((env.path / "env.json").read_text())["key"] == env.key

    before = entries(store.root)
    hit: list[str] = []
    started = time.perf_counter()
    again = store.build(["Marshmallow == 3.23.2", "webargs==5.5.3 ", "SIX==1.16.0"], log=hit.append)
    print(f"cache hit: {time.perf_counter() - started:.2f} s")
    assert again == env
    assert entries(store.root) == before
    assert not any(line.startswith(("$ uv venv", "$ uv pip install")) for line in hit)
    assert store.list() == [env] and store.get(env.key) == env


def test_a_requirement_with_no_such_version_is_named_and_nothing_is_left(store):
    with pytest.raises(BuildFailed) as failed:
        store.build(["six==99.0"])
    assert failed.value.requirement == "six==99.0"
    assert "could not resolve six==99.0" in failed.value.message
    assert "there is no version of six==99.0" in failed.value.log
    assert store.list() == [] and entries(store.root) <= {".locks"}


def test_a_package_that_does_not_build_is_named_and_nothing_is_left(tmp_path, uv_cache):
    """A local index serving one sdist whose build fails (its metadata is static: it resolves)."""
    source = tmp_path / "broken-0.1"
    source.mkdir()
    (source / "PKG-INFO").write_text("Metadata-Version: 2.2\nName: broken\nVersion: 0.1\n")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
    )
    (source / "backend.py").write_text(
        textwrap.dedent("""\
            def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
                raise SystemExit("this package does not build, on purpose")
        """)
    )
    index = tmp_path / "index"
    (index / "broken").mkdir(parents=True)
    with tarfile.open(index / "broken" / "broken-0.1.tar.gz", "w:gz") as sdist:
        sdist.add(source, arcname=source.name)
    (index / "broken" / "index.html").write_text('<a href="broken-0.1.tar.gz">broken-0.1.tar.gz</a>')
    store = EnvironmentStore(tmp_path / "environments", index_url=index.as_uri(), cache_dir=uv_cache)
    with pytest.raises(BuildFailed) as failed:
        store.build(["Broken==0.1"])
    assert failed.value.requirement == "broken==0.1"
    assert failed.value.message.startswith("could not install broken==0.1")
    assert "this package does not build, on purpose" in failed.value.log
    assert store.list() == [] and entries(store.root) == {".locks"}


BUILD_ONE = """
import json, sys
from pathlib import Path
from deepaas_like.environments import EnvironmentStore
lines = []
env = EnvironmentStore(Path(sys.argv[1]), cache_dir=Path(sys.argv[2])).build(["six==1.16.0"], log=lines.append)
print(json.dumps({"key": env.key, "built": any(line.startswith("$ uv venv") for line in lines)}))
"""


def test_two_processes_building_one_environment_build_it_once(tmp_path, uv_cache):
    root = tmp_path / "environments"
    builders = [
        subprocess.Popen([sys.executable, "-c", BUILD_ONE, str(root), str(uv_cache)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    answers = [json.loads(builder.communicate(timeout=120)[0]) for builder in builders]
    assert answers[0]["key"] == answers[1]["key"]
    assert sum(answer["built"] for answer in answers) == 1
    [env] = EnvironmentStore(root).list()
    assert run_in(env.python, "import six; print(six.__version__)").stdout.strip() == "1.16.0"
    assert not [entry for entry in entries(root) if entry.startswith((".build-", ".trash-"))]


def test_collect_removes_what_no_user_records(store):
    used = store.build(["six==1.16.0"])
    unused = store.build(["six==1.17.0"])
    assert used.key != unused.key
    record_user(store.root, "plugin:old-six", used.key, name="old-six")
    assert store.collect(in_use(store.root)) == [unused.key]
    assert store.list() == [used] and not unused.path.exists()
    assert run_in(used.python, "import six").returncode == 0


def deepaas_env(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DEEPAAS_ENV, *args], capture_output=True, text=True, timeout=60)


def test_deepaas_env_lists_shows_removes_and_collects(tmp_path, uv_cache):
    data_dir = tmp_path / "data"
    store = EnvironmentStore(environments_root(load_settings(["--data-dir", str(data_dir)])), cache_dir=uv_cache)
    assert store.root == data_dir / "environments"
    first, second, third = (store.build([f"six=={version}"]) for version in ("1.15.0", "1.16.0", "1.17.0"))
    record_user(store.root, "upload:iris/3", second.key)

    listed = deepaas_env("--data-dir", str(data_dir), "list")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["KEY", "PYTHON", "MiB", "CREATED", "USERS", "REQUIREMENTS"]
    assert [row.split()[0] for row in rows[1:]] == [first.key[:12], second.key[:12], third.key[:12]]
    assert rows[2].split()[-2:] == ["1", "six==1.16.0"]

    shown = deepaas_env("--root", str(store.root), "show", second.key[:10])
    assert shown.returncode == 0, shown.stderr
    record, lock = shown.stdout.split("\n# lock\n")
    assert json.loads(record)["used_by"] == ["upload:iris/3"] and lock == "six==1.16.0\n"

    refused = deepaas_env("--data-dir", str(data_dir), "remove", second.key[:12])
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "used by upload:iris/3" in refused.stderr
    removed = deepaas_env("--data-dir", str(data_dir), "remove", first.key[:12])
    assert removed.returncode == 0 and removed.stdout.startswith(f"removed environment {first.key[:12]}")

    kept = deepaas_env("--data-dir", str(data_dir), "gc")  # third was built just now: within the grace
    assert kept.returncode == 0 and kept.stdout.endswith("0 environment(s) removed, 2 kept\n")
    collected = deepaas_env("--data-dir", str(data_dir), "gc", "--grace", "0")
    assert collected.returncode == 0, collected.stderr
    assert collected.stdout.splitlines() == [
        f"removed environment {third.key[:12]}",
        "1 environment(s) removed, 1 kept",
    ]
    assert store.list() == [second]

    missing = deepaas_env("--data-dir", str(data_dir), "show", "ffff")
    assert missing.returncode == 1 and missing.stderr.startswith("deepaas-env: error: no environment with key 'ffff'")
    assert deepaas_env("--root", str(store.root), "--data-dir", str(data_dir), "list").returncode == 2
