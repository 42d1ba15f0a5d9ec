"""Settings: precedence of the four layers, validation, and the sample config file."""

import dataclasses
import re

import pytest

from deepaas_like.settings import SettingsError, load_settings, render_sample_config, settings_fields
from support import ROOT

SAMPLE = ROOT / "etc" / "deepaas_like.conf.sample"


def test_defaults():
    settings = load_settings([], environ={})
    assert (settings.listen_ip, settings.listen_port) == ("127.0.0.1", 5000)
    assert settings.client_max_size == 100 * 1024 * 1024
    assert settings.model_name == () and settings.workers == 1 and settings.warm is True


def test_precedence_defaults_config_env_flags(tmp_path):
    config = tmp_path / "server.conf"
    config.write_text("[DEFAULT]\nlisten_port = 6001\nworkers = 3\nwarm = false\nbase-path = /conf\n")
    environ = {"DEEPAAS_CONFIG_FILE": str(config), "DEEPAAS_LISTEN_PORT": "6002", "DEEPAAS_WORKERS": "4"}
    settings = load_settings(["--listen-port", "6003"], environ=environ)
    assert settings.listen_port == 6003  # flag beats environment
    assert settings.workers == 4  # environment beats config file
    assert settings.warm is False and settings.base_path == "/conf"  # config beats defaults
    assert load_settings(["--config-file", str(config), "--warm"], environ={}).warm is True


def test_lists_sizes_and_legacy_environment():
    settings = load_settings(["--model-name", "a,b", "--model-name", "c", "--client-max-size", "2MiB"], environ={})
    assert settings.model_name == ("a", "b", "c")
    assert settings.client_max_size == 2 * 1024 * 1024
    assert load_settings([], environ={"DEEPAAS_V2_MODEL": "legacy"}).model_name == ("legacy",)
    assert load_settings([], environ={"DEEPAAS_CLIENT_MAX_SIZE": "10KB"}).client_max_size == 10_000


@pytest.mark.parametrize(
    "argv, environ, text",
    [
        (["--workers", "0"], {}, "workers must be at least 1"),
        (["--listen-port", "70000"], {}, "listen_port and health_port must be between"),
        (["--base-path", "api"], {}, "base_path must start with '/'"),
        ([], {"DEEPAAS_WORKERS": "many"}, "environment: invalid value for workers"),
        ([], {"DEEPAAS_WARM": "perhaps"}, "expected true/false"),
        (["--client-max-size", "lots"], {}, "expected a size"),
        (["--model-name", "bad name"], {}, "may only use letters"),
    ],
)
def test_invalid_values_are_explained(argv, environ, text):
    with pytest.raises(SettingsError, match=text):
        load_settings(argv, environ=environ)


def test_config_file_errors_name_the_problem(tmp_path):
    config = tmp_path / "x.conf"
    config.write_text("[DEFAULT]\nlisten_prot = 1\n")
    with pytest.raises(SettingsError, match="unknown option 'listen_prot'"):
        load_settings(["--config-file", str(config)], environ={})
    config.write_text("[server]\nlisten_port = 1\n")
    with pytest.raises(SettingsError, match=r"unknown section \[server\]"):
        load_settings(["--config-file", str(config)], environ={})
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(["--config-file", str(tmp_path / "missing.conf")], environ={})


def test_sample_config_matches_the_code():
    assert SAMPLE.read_text() == render_sample_config(), "run `make sample-config` to regenerate it"


def test_sample_config_documents_every_option_with_its_default():
    text = SAMPLE.read_text()
    for name in (f.name for f in settings_fields()):
        assert f"#{name} =" in text, name
        assert f"DEEPAAS_{name.upper()}" in text, name


def test_uncommented_sample_config_loads_to_the_defaults(tmp_path):
    config = tmp_path / "all.conf"
    lines = [line[1:] if re.match(r"#[a-z_]+ = ", line) else line for line in SAMPLE.read_text().splitlines()]
    config.write_text("\n".join(lines))
    loaded = load_settings(["--config-file", str(config)], environ={})
    defaults = load_settings([], environ={})
    for name in (f.name for f in settings_fields()):
        if name != "data_dir":  # the sample shows ~ for the home directory
            assert getattr(loaded, name) == getattr(defaults, name), name


def test_per_model_options_from_every_layer(tmp_path):
    config = tmp_path / "models.conf"
    config.write_text("[DEFAULT]\nworkers = 2\n[model:irisbench]\nmax_batch_size = 16\nworkers = 3\n")
    settings = load_settings(
        ["--config-file", str(config), "--workers", "echobench=5", "--executor", "echobench=thread", "--workers", "4"],
        environ={"DEEPAAS_PREDICT_TIMEOUT": "30,irisbench=2.5", "DEEPAAS_MAX_QUEUE": "irisbench=7"},
    )
    iris, echo, other = (settings.for_model(n) for n in ("irisbench", "echobench", "other"))
    assert (iris.workers, iris.max_batch_size, iris.predict_timeout, iris.max_queue) == (3, 16, 2.5, 7)
    assert iris.batching and not echo.batching
    assert (echo.workers, echo.executor, echo.predict_timeout) == (5, "thread", 30.0)
    assert (other.workers, other.executor) == (4, "process")  # the flag beats the config's global


def test_per_model_option_errors(tmp_path):
    with pytest.raises(SettingsError, match="max_batch_size must be at least 1"):
        load_settings(["--max-batch-size", "iris=0"], environ={})
    config = tmp_path / "x.conf"
    config.write_text("[model:iris]\nlisten_port = 1\n")
    with pytest.raises(SettingsError, match=r"may only set per-model options"):
        load_settings(["--config-file", str(config)], environ={})


def test_each_component_reads_its_own_section_of_the_settings(tmp_path):
    """Sections are views of the one table: every field is an option or what options imply,
    a model's own values reach the registry's section, and the secrets a contained worker
    must not read are the server's state, keys and configuration."""
    from deepaas_like.settings.sections import AuthSection, RegistrySection, sections_of

    settings = load_settings(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--store",
            f"sqlite:///{tmp_path}/state.db",
            "--workers",
            "iris=3",
            "--jwt-leeway",
            "7",
        ],
        environ={},
    )
    sections = sections_of(settings)
    assert set(sections) == {"server", "auth", "store", "engine", "jobs", "registry"}
    assert sections["auth"] == AuthSection.of(settings) and sections["auth"].jwt_leeway == 7
    registry = RegistrySection.of(settings)
    assert registry.for_model("iris").workers == 3 and registry.for_model("other").workers == 1
    assert str(tmp_path / "data") in registry.secrets and str(registry.artifacts_dir) in registry.secrets
    assert {f"{tmp_path}/state.db", f"{tmp_path}/state.db-wal"} <= set(registry.secrets)
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.max_upload_size = 1  # type: ignore[misc]
