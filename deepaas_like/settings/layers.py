"""The four layers, lowest first: the defaults < the config file < ``DEEPAAS_*``
environment variables < command-line flags; the argument parser that ``--help`` shows."""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .table import CONFIG_FILE_ENV, PER_MODEL, Settings, env_name, flag_name, is_per_model, settings_fields
from .values import SettingsError, convert, parse_list

# --- the four layers ------------------------------------------------------------


DESCRIPTION = (
    "Serve the installed model plugins (entry-point group 'deepaas.v2.model') behind a "
    "REST API with OpenAPI 3 and Swagger UI. Options may also come from a config file "
    "and DEEPAAS_* environment variables; flags win over both."
)


def build_parser(prog: str = "deepaas-run", description: str = DESCRIPTION) -> argparse.ArgumentParser:
    """Command-line flags for every setting; unspecified flags stay absent."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config-file",
        metavar="PATH",
        help=f"INI file with a [DEFAULT] section of options and [model:NAME] sections of "
        f"per-model options (also ${CONFIG_FILE_ENV}).",
    )
    for f in settings_fields():
        meta = f.metadata
        default = display_default(f)
        scope = "; repeatable, MODEL=VALUE sets one model" if is_per_model(f) else ""
        help_text = f"{meta['help']} (default: {default}; env {env_name(f.name)}{scope})"
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text.replace("%", "%%")}
        kind = meta["kind"]
        value_name = f.name.upper() if not meta["choices"] else "{" + ",".join(meta["choices"]) + "}"
        if kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind == "list":
            kwargs["action"] = "append"
            kwargs["metavar"] = "NAME"
        elif is_per_model(f):
            kwargs["action"] = "append"
            kwargs["metavar"] = f"[MODEL=]{value_name}"
        else:
            kwargs["metavar"] = value_name
        parser.add_argument(flag_name(f.name), **kwargs)
    return parser


def display_default(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta["sample_default"] is not None:
        return meta["sample_default"]
    default = f.default
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(default) or "(empty)"
    return str(default) if default != "" else "(empty)"


@dataclass
class Layer:
    """The options one source (config file, environment, command line) sets."""

    origin: str
    values: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_per_model(self, name: str, items: Iterable[str]) -> None:
        """``VALUE`` sets the option for every model, ``MODEL=VALUE`` for one."""
        for item in items:
            model, sep, value = str(item).rpartition("=")
            if sep:
                self.models.setdefault(model.strip(), {})[name] = value
            else:
                self.values[name] = value


def read_config_file(path: str | os.PathLike[str]) -> Layer:
    """Options from ``[DEFAULT]`` and per-model options from ``[model:NAME]`` sections."""
    parser = configparser.ConfigParser(default_section="__no_default_section__", interpolation=None)
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise SettingsError(f"config file {path} is not valid INI: {exc}") from None
    known = {f.name for f in settings_fields()}
    layer = Layer(f"config file {path}")
    for section in parser.sections():
        model = section[len("model:") :].strip() if section.startswith("model:") else None
        if section != "DEFAULT" and not model:
            raise SettingsError(
                f"config file {path}: unknown section [{section}]; options go in [DEFAULT], "
                "per-model options in [model:NAME]"
            )
        for key, value in parser.items(section):
            name = key.replace("-", "_")
            if name not in known:
                raise SettingsError(
                    f"config file {path}: unknown option {key!r}; known options: {', '.join(sorted(known))}"
                )
            if model is None:
                layer.values[name] = value
            elif name in PER_MODEL:
                layer.models.setdefault(model, {})[name] = value
            else:
                raise SettingsError(
                    f"config file {path}: [{section}] may only set per-model options "
                    f"({', '.join(PER_MODEL)}), not {key!r}"
                )
    return layer


def read_environment(environ: Mapping[str, str]) -> Layer:
    """Options set through ``DEEPAAS_<NAME>`` (and DEEPaaS's legacy variable names)."""
    layer = Layer("environment")
    for f in settings_fields():
        for name in (*f.metadata["legacy_env"], env_name(f.name)):
            if environ.get(name, "") == "":
                continue
            if is_per_model(f):
                layer.add_per_model(f.name, parse_list(environ[name]))
            else:
                layer.values[f.name] = environ[name]
    return layer


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from flags, environment and config file (see module doc)."""
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(list(argv or [])))
    config_file = args.pop("config_file", None) or environ.get(CONFIG_FILE_ENV) or None
    layers: list[Layer] = []
    if config_file:
        layers.append(read_config_file(config_file))
    layers.append(read_environment(environ))
    cli = Layer("command line")
    lists = {f.name for f in settings_fields() if f.metadata["kind"] == "list"}
    for name, value in args.items():
        if name in lists:  # repeated flags, each possibly comma-separated
            cli.values[name] = tuple(n for item in value for n in parse_list(item))
        elif name in PER_MODEL:
            cli.add_per_model(name, value)
        else:
            cli.values[name] = value
    layers.append(cli)
    settings = settings_from_layers(layers)
    if config_file:
        settings = dataclasses.replace(settings, config_file=os.path.abspath(config_file))
    return settings


def settings_from_layers(layers: Iterable[Layer]) -> Settings:
    """Apply the layers in order; a per-model value beats a global one of any layer."""
    by_name = {f.name: f for f in settings_fields()}
    values: dict[str, Any] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for name, raw in layer.values.items():
            values[name] = convert(by_name[name], raw, layer.origin)
        for model, options in layer.models.items():
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", model):
                raise SettingsError(f"{layer.origin}: {model!r} is not a model name")
            for name, raw in options.items():
                overrides.setdefault(model, {})[name] = convert(by_name[name], raw, f"{layer.origin} ({model})")
    for name in ("data_dir", "artifact_dir", "auth_key_file", "jwt_secret_file"):
        if values.get(name):
            values[name] = os.path.abspath(os.path.expanduser(values[name]))
    if len(values.get("base_path", "")) > 1:
        values["base_path"] = values["base_path"].rstrip("/")
    return Settings(**values, model_overrides=overrides)
