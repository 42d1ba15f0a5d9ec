"""Shared fixtures: real plugins installed into a temporary site directory, real apps."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import joblib
import pytest
import skops.io
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deepaas_like.api import create_app
from deepaas_like.settings import Settings
from support import TESTS
from support.helpers import wait_ready
from support.registry import iris_frame

FIXTURE_PLUGINS = TESTS / "fixtures" / "plugins"
STORES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stores(*names): run the test on each of these stores (sqlite, postgresql) through the ``store`` fixture",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("stores")
    if marker is not None and "store" in metafunc.fixturenames:
        assert set(marker.args) <= set(STORES), marker.args
        # PostgreSQL's turn is slow (make check leaves it to make test)
        params = [pytest.param(name, marks=pytest.mark.slow) if name == "postgresql" else name for name in marker.args]
        metafunc.parametrize("store", params, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every end-to-end test is slow: make check runs none of them."""
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the whole session (see tests/support/postgres.py)."""
    from support.postgres import start_postgres

    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``--store`` URL of a test: empty (SQLite in the data directory) unless the test
    is marked ``stores(...)``, which runs it once per store, each time on a fresh one.
    The commands a test starts (``deepaas-run``, ``deepaas-token``) get it as DEEPAAS_STORE."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return ""
    url = request.getfixturevalue("postgres").new_database()
    monkeypatch.setenv("DEEPAAS_STORE", url)
    return url


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """Every test must leave no worker or training process behind."""
    yield
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    leaked = multiprocessing.active_children()
    for process in leaked:
        process.kill()
    assert not leaked, f"processes left running: {leaked}"


class PluginSite:
    """A directory on sys.path where tests install plugins the way pip does:
    the code plus a ``*.dist-info`` holding METADATA and the entry point."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.modules: list[str] = []

    def install(self, name: str, fixture: str | None = None, attr: str | None = None, source: str | None = None) -> str:
        module = f"fixture_{(fixture or name).replace('-', '_')}"
        if source is not None:
            (self.path / f"{module}.py").write_text(source)
        else:
            shutil.copy(FIXTURE_PLUGINS / f"{fixture or name}.py", self.path / f"{module}.py")
        info = self.path / f"{module}_{name.replace('-', '_')}-0.0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-{name}\nVersion: 0.0.0\n")
        target = f"{module}:{attr}" if attr else module
        (info / "entry_points.txt").write_text(f"[deepaas.v2.model]\n{name} = {target}\n")
        self.modules.append(module)
        return module


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    installed = PluginSite(site)
    yield installed
    for module in installed.modules:
        sys.modules.pop(module, None)


@pytest.fixture
def make_settings(tmp_path: Path, store: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        # The registry's shared workers start with the first upload, not with every test's app
        # (tests/test_registry.py covers the default, preloading at start).
        values: dict[str, Any] = {
            "data_dir": str(tmp_path / "data"),
            "store": store,
            "shutdown_timeout": 2.0,
            "registry_preload": False,
        }
        values.update(overrides)
        if isinstance(values.get("model_name"), str):
            values["model_name"] = (values["model_name"],)
        return Settings(**values)

    return make


@pytest.fixture
def serve(aiohttp_client, make_settings) -> Callable[..., Awaitable[Any]]:
    """Start the real app for the named models; returns an aiohttp test client."""

    async def start(*models: str, ready: bool = True, per_model: dict | None = None, **overrides: Any):
        """``per_model={"irisbatch": {"max_batch_size": 32}}`` sets one model's options."""
        settings = make_settings(model_name=tuple(models), model_overrides=per_model or {}, **overrides)
        client = await aiohttp_client(create_app(settings))
        if ready:
            await wait_ready(client, base_path=settings.base_path)
        return client

    return start


@pytest.fixture
def layered_venv(tmp_path):
    """A new virtualenv that sees this one's packages and installs into its own."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    parent = sysconfig.get_paths()["purelib"]
    (site / "_layer_over_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return venv / "bin" / "python", site


@pytest.fixture(scope="module")
def iris_models(tmp_path_factory):
    """A pipeline fitted on named columns (joblib), a forest on a bare array (pickle), in files."""
    folder = tmp_path_factory.mktemp("models")
    x, y = iris_frame()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x.to_numpy(), y)
    joblib.dump(pipeline, folder / "iris.joblib")
    joblib.dump(forest, folder / "forest.pkl")
    skops.io.dump(pipeline, folder / "iris.skops")  # loads without running code: needs only models:write
    return {
        "pipeline": pipeline,
        "forest": forest,
        "joblib": folder / "iris.joblib",
        "pickle": folder / "forest.pkl",
        "skops": folder / "iris.skops",
    }
