"""The parts of the environment store that run no process: requirements, keys, uv's failures,
the records of who uses what, and the store's reading and removing of built environments
(made here by hand: tests/e2e/test_environments.py builds real ones with uv)."""

import json
import os
import time
from pathlib import Path

import pytest

from deepaas_like.cli import env_cli
from deepaas_like.environments import (
    Environment,
    EnvironmentStore,
    drop_user,
    environment_key,
    environments_root,
    in_use,
    normalise_requirements,
    read_requirements,
    record_user,
)
from deepaas_like.environments.store import MARKER, RECORD, lock_text
from deepaas_like.environments.uv_commands import error_summary, failed_requirement
from deepaas_like.settings import load_settings

# uv 0.13's words, as it prints them without a terminal
NO_VERSION = """\
Resolved 0 packages
error: No solution found when resolving dependencies
  cause: Because there is no version of six==99.0 and you require six==99.0, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501 (uv's lines, verbatim)
NOT_FOUND = """\
error: No solution found when resolving dependencies
  cause: Because nonexistent-pkg-zzq was not found in the package registry and you require nonexistent-pkg-zzq==1.0, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501 (uv's lines, verbatim)
CONFLICT = """\
error: No solution found when resolving dependencies
  cause: Because requests==2.31.0 depends on urllib3>=1.21.1,<3 and you require requests==2.31.0, we can conclude that you require urllib3>=1.21.1,<3.
         And because you require urllib3==0.1, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501 (uv's lines, verbatim)
ONLY = """\
error: No solution found when resolving dependencies
  cause: Because only six<=1.17.0 is available and you require six>=99, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501 (uv's lines, verbatim)
UNREACHABLE = """\
error: Request failed after 3 retries in 11.2s
  cause: Failed to fetch: http://127.0.0.1:9/simple/six/
  cause: error sending request for url (http://127.0.0.1:9/simple/six/)
  cause: Connection refused (os error 111)
"""
# on a terminal uv draws its causes as a tree, wrapped
FANCY = """\
  × No solution found when resolving dependencies:
  ╰─▶ Because there is no version of foo==9.9 and bar==1.0 depends on
      foo==9.9, we can conclude that bar==1.0 cannot be used.
"""
# a build's own failure to resolve its build requirements: the package that failed is the culprit
BUILD = """\
Resolved 1 package in 10ms
  × Failed to build `broken==0.1`
  ├─▶ Failed to resolve requirements from `build-system.requires`
  ╰─▶ Because setuptools>=40 was not found in the package registry and you require setuptools>=40, we can
      conclude that your requirements are unsatisfiable.
"""


def test_read_requirements_skips_comments_and_blank_lines():
    text = "# the model's own\nsix==1.16.0  # pinned\n\nNumPy <2\nwebargs==5.5.3 \\\n  ; python_version>'3'\n"
    assert read_requirements(text) == ["six==1.16.0", "numpy<2", 'webargs==5.5.3; python_version > "3"']


@pytest.mark.parametrize(
    "line",
    ["-e ./plugin", "-r other.txt", "--index-url https://example.org/simple", "-c constraints.txt", "--hash=sha256:00"],
)
def test_read_requirements_refuses_options(line):
    with pytest.raises(ValueError, match="options .* are not accepted"):
        read_requirements(f"six==1.16.0\n{line}\n")


@pytest.mark.parametrize("line", ["./plugin", "/srv/wheels/foo-1.0-py3-none-any.whl", "foo @ file:///srv/foo"])
def test_read_requirements_refuses_local_paths(line):
    with pytest.raises(ValueError, match="local path"):
        read_requirements(line)


def test_a_malformed_requirement_is_named():
    with pytest.raises(ValueError, match="not a requirement: 'six=1.16'"):
        read_requirements("numpy\nsix=1.16\n")


def test_normalised_requirements_are_the_same_however_spelled_or_ordered():
    first = normalise_requirements(["webargs==5.5.3", "Marshmallow == 3.23.2", "six==1.16.0"])
    assert first == ("marshmallow==3.23.2", "six==1.16.0", "webargs==5.5.3")
    assert normalise_requirements(["six ==1.16.0", "marshmallow==3.23.2", "WebArgs==5.5.3", "six==1.16.0"]) == first
    assert normalise_requirements(["Foo_Bar[Z,a] >=1,<2"]) == ("foo-bar[a,z]<2,>=1",)


def test_no_requirements_or_a_string_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        normalise_requirements([])
    with pytest.raises(TypeError, match="list of strings"):
        normalise_requirements("six==1.16.0")


def test_the_key_is_the_python_version_and_the_lock():
    lock = lock_text("# comment\nsix==1.16.0\nmarshmallow==3.23.2\n\n")
    assert lock == "marshmallow==3.23.2\nsix==1.16.0\n"
    key = environment_key("3.11", lock)
    assert len(key) == 64 and int(key, 16) >= 0
    assert environment_key("3.11", lock_text("marshmallow==3.23.2\nsix==1.16.0")) == key
    assert environment_key("3.12", lock) != key
    assert environment_key("3.11", lock_text("six==1.17.0\nmarshmallow==3.23.2")) != key


@pytest.mark.parametrize(
    "output, asked, culprit",
    [
        (NO_VERSION, ("six==99.0",), "six==99.0"),
        (NOT_FOUND, ("nonexistent-pkg-zzq==1.0", "six"), "nonexistent-pkg-zzq==1.0"),
        (CONFLICT, ("requests==2.31.0", "urllib3==0.1"), "urllib3==0.1"),
        (ONLY, ("Six>=99",), "Six>=99"),
        (FANCY, ("bar==1.0",), "foo==9.9"),  # a dependency of what was asked: as uv writes it
        (BUILD, ("broken==0.1",), "broken==0.1"),
        (UNREACHABLE, ("six==1.16.0",), None),  # the index's fault, not a requirement's
    ],
)
def test_the_failed_requirement_is_read_from_uvs_output(output, asked, culprit):
    assert failed_requirement(output, asked) == culprit


def test_the_error_summary_is_one_line():
    assert error_summary(NO_VERSION) == (
        "No solution found when resolving dependencies: Because there is no version of six==99.0 and you "
        "require six==99.0, we can conclude that your requirements are unsatisfiable"
    )
    assert error_summary(FANCY).startswith("No solution found when resolving dependencies: Because there is no")


def made_by_hand(root: Path, lock: str, *, created: float, requirements=("six==1.16.0",)) -> Environment:
    """A complete environment as the store writes one, without its venv."""
    key = environment_key("3.11", lock)
    env = Environment(
        key=key,
        path=root / key,
        requirements=tuple(requirements),
        lock=lock,
        python_version="3.11",
        created=created,
        size=3 * 2**20,
    )
    env.path.mkdir(parents=True)
    (env.path / RECORD).write_text(json.dumps(env.record()))
    (env.path / MARKER).touch()
    return env


def test_the_store_lists_complete_environments_oldest_first(tmp_path):
    store = EnvironmentStore(tmp_path)
    newer = made_by_hand(tmp_path, "six==1.17.0\n", created=2000.0)
    older = made_by_hand(tmp_path, "six==1.16.0\n", created=1000.0)
    incomplete = made_by_hand(tmp_path, "six==1.15.0\n", created=500.0)
    (incomplete.path / MARKER).unlink()
    (tmp_path / ".build-abc-123").mkdir()
    assert store.list() == [older, newer]
    assert store.get(older.key) == older
    assert store.get(incomplete.key) is None
    assert store.get("../" + older.key) is None
    assert older.python == older.path / "bin" / "python"


def test_remove_is_a_no_op_for_a_missing_environment(tmp_path):
    store = EnvironmentStore(tmp_path)
    env = made_by_hand(tmp_path, "six==1.16.0\n", created=1.0)
    store.remove(env.key)
    assert not env.path.exists() and store.list() == []
    store.remove(env.key)
    with pytest.raises(ValueError, match="not an environment key"):
        store.remove("../etc")
    assert [entry.name for entry in tmp_path.iterdir() if not entry.name.startswith(".locks")] == []


def test_collect_keeps_what_is_used_and_what_is_recent(tmp_path):
    store = EnvironmentStore(tmp_path)
    used = made_by_hand(tmp_path, "six==1.16.0\n", created=1.0)
    unused = made_by_hand(tmp_path, "six==1.17.0\n", created=2.0)
    recent = made_by_hand(tmp_path, "six==1.15.0\n", created=3.0)
    for env in (used, unused):
        os.utime(env.path / MARKER, (time.time() - 3600, time.time() - 3600))
    stale, fresh = tmp_path / f".build-{unused.key}-x", tmp_path / f".build-{unused.key}-y"
    stale.mkdir(), fresh.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert store.collect({used.key}, grace=600) == [unused.key]
    assert store.list() == [used, recent]
    assert not stale.exists() and fresh.exists()
    assert store.collect({used.key}) == [recent.key]


def test_users_are_recorded_and_dropped(tmp_path):
    record_user(tmp_path, "plugin:irisbench", "a" * 64, name="irisbench")
    record_user(tmp_path, "upload:iris/3", "b" * 64)
    record_user(tmp_path, "upload:iris/4", "b" * 64)
    assert in_use(tmp_path) == {"a" * 64, "b" * 64}
    record = json.loads((tmp_path / "users" / "plugin%3Airisbench.json").read_text())
    assert record["environment"] == "a" * 64 and record["name"] == "irisbench"
    drop_user(tmp_path, "plugin:irisbench")
    drop_user(tmp_path, "plugin:irisbench")
    assert in_use(tmp_path) == {"b" * 64}
    assert in_use(tmp_path / "nothing-here") == set()


def test_a_broken_user_record_stops_gc(tmp_path):
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "plugin.json").write_text("{not json")
    with pytest.raises(ValueError, match="plugin.json: not an environment user's record"):
        in_use(tmp_path)


def test_environments_live_in_the_data_directory_or_with_replicas_in_the_shared_one(tmp_path):
    assert environments_root(load_settings(["--data-dir", str(tmp_path)])) == tmp_path / "environments"
    shared = load_settings(
        ["--data-dir", str(tmp_path), "--store", "postgresql://db/deepaas", "--artifact-dir", str(tmp_path / "nfs")]
    )
    assert environments_root(shared) == tmp_path / "nfs" / "environments"


def test_the_cli_finds_an_environment_by_a_unique_prefix(tmp_path, capsys):
    env = made_by_hand(tmp_path, "six==1.16.0\n", created=1.0)
    other = made_by_hand(tmp_path, "six==1.17.0\n", created=2.0)
    assert env_cli.main(["--root", str(tmp_path), "show", env.key[:6]]) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown.split("\n# lock\n")[0])["key"] == env.key
    assert shown.endswith("# lock\nsix==1.16.0\n")
    assert env_cli.main(["--root", str(tmp_path), "show", "zz"]) == 1
    assert "no environment with key 'zz'" in capsys.readouterr().err
    assert env_cli.main(["--root", str(tmp_path), "remove", ""]) == 1
    record_user(tmp_path, "plugin:x", other.key)
    assert env_cli.main(["--root", str(tmp_path), "remove", other.key[:8]]) == 1
    assert "used by plugin:x: remove those models first, or pass --force" in capsys.readouterr().err
    assert env_cli.main(["--root", str(tmp_path), "remove", "--force", other.key[:8]]) == 0
    assert EnvironmentStore(tmp_path).list() == [env]
