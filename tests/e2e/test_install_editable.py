"""``deepaas-install-plugin -e DIR``: a plugin that reads files from its checkout, installed editable."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from deepaas_like.cli.install_plugin import main
from support import TESTS  # noqa: E402

EDITABLE_PROJECT = TESTS / "fixtures" / "editable_project"

# Runs in the virtualenv: loads the plugin through deepaas-run's seam and calls it.
PREDICT = """
import json, sys
from deepaas_like.loading import load_plugins
[plugin] = load_plugins(["checkout"])
print(json.dumps({"metadata": plugin.obj.get_metadata(), **plugin.obj.predict(index=int(sys.argv[1]))}))
"""
PROTECTED = """
import json
from deepaas_like.cli.install_plugin import protected_distributions
print(json.dumps(protected_distributions()))
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the plugin's repository, which a test may edit."""
    return Path(
        shutil.copytree(
            EDITABLE_PROJECT, tmp_path / "checkout", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        )
    )


def run_python(python: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=120)


def install_plugin(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "deepaas_like.cli.install_plugin", *args], capture_output=True, text=True, timeout=600
    )


def predict(python: Path, index: int) -> dict:
    result = run_python(python, PREDICT, str(index))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_editable_install_runs_from_the_checkout_and_keeps_our_libraries(layered_venv, checkout):
    python, site = layered_venv
    ours_before = json.loads(run_python(python, PROTECTED).stdout)

    install = install_plugin(python, "-e", str(checkout))

    assert install.returncode == 0, install.stdout + install.stderr
    out = install.stdout
    assert "checkout-deepaas-plugin 0.1.0: models checkout" in out
    assert f"editable runs from {checkout}" in out
    assert "deepaas>=2.1: deepaas_like provides the 'deepaas' import package" in out
    assert "webargs~=5.5.3: webargs 8." in out and "kept as it is" in out
    assert "pyyaml>=5.1" in out  # the plugin's requirements were read, not skipped
    assert "installed and importable: checkout" in out
    assert json.loads(run_python(python, PROTECTED).stdout) == ours_before
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert installed == {"checkout_deepaas_plugin"}  # nothing of ours was installed over
    assert not (site / "checkout_plugin").exists()  # the code stays in the checkout

    answer = predict(python, 1)
    assert answer == {
        "metadata": {
            "name": "checkout",
            "version": "0.1.0",
            "author": "someone",
            "description": "reads its metadata and labels from its repository",
        },
        "label": "dog",
    }


def test_install_without_editable_fails_and_suggests_editable(layered_venv, checkout, tmp_path):
    python, _ = layered_venv

    install = install_plugin(python, str(checkout))

    assert install.returncode == 1, install.stdout + install.stderr
    err = install.stderr
    assert "the plugin does not import, so it was uninstalled again" in err
    assert "FileNotFoundError" in err and "metadata.yml" in err
    assert "install it editable with deepaas-install-plugin -e DIR" in err
    assert f"to run it from its checkout: deepaas-install-plugin -e {checkout}" in err

    # It is not left installed; kept on purpose, deepaas-run says the same when it starts.
    gone = subprocess.run(
        [str(python), "-m", "deepaas_like.cli.run", "--model-name", "checkout", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gone.returncode == 2 and "no plugin with this name is installed" in gone.stderr, gone.stderr
    kept = install_plugin(python, "--keep-broken", str(checkout))
    assert kept.returncode == 1 and "kept: --keep-broken" in kept.stderr, kept.stdout + kept.stderr
    run = subprocess.run(
        [str(python), "-m", "deepaas_like.cli.run", "--model-name", "checkout", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert (
        "deepaas-run: error: model plugin 'checkout': import of checkout_plugin.api failed: "
        "FileNotFoundError" in run.stderr
    )
    assert "deepaas-install-plugin -e DIR" in run.stderr


def test_edits_in_the_checkout_take_effect_without_reinstalling(layered_venv, checkout):
    python, _ = layered_venv
    install = install_plugin(python, "--editable", str(checkout))
    assert install.returncode == 0, install.stdout + install.stderr
    assert predict(python, 0)["label"] == "cat"

    (checkout / "data" / "labels.txt").write_text("tabby\nbeagle\n")
    (checkout / "metadata.yml").write_text("name: checkout\nversion: 0.2.0\n")
    api = checkout / "checkout_plugin" / "api.py"
    api.write_text(
        api.read_text().replace(
            'return {"label": labels[kwargs["index"]]}', 'return {"label": labels[kwargs["index"]].upper()}'
        )
    )

    assert predict(python, 0) == {"metadata": {"name": "checkout", "version": "0.2.0"}, "label": "TABBY"}

    # A file missing from an editable checkout is not blamed on a missing -e.
    (checkout / "metadata.yml").unlink()
    broken = run_python(python, PREDICT, "0")
    assert "FileNotFoundError" in broken.stderr and "metadata.yml" in broken.stderr
    assert "deepaas-install-plugin -e" not in broken.stderr


def test_editable_takes_a_project_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-e", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not a project directory (no pyproject.toml or setup.py)" in capsys.readouterr().err
