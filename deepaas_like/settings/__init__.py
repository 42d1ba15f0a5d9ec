"""Server settings: one frozen dataclass, built once from four layers.

Precedence, lowest first: the defaults below < the config file (``--config-file`` or
``DEEPAAS_CONFIG_FILE``, INI, section ``[DEFAULT]``) < ``DEEPAAS_*`` environment
variables < command-line flags. Every option is declared once (:mod:`.table`), with its help
text; the argument parser, the environment and config readers, and the sample file
``etc/deepaas_like.conf.sample`` are all derived from this table.
"""

from .layers import Layer, build_parser, load_settings, read_config_file, read_environment, settings_from_layers
from .sample import render_sample_config
from .table import (
    CONFIG_FILE_ENV,
    ENV_PREFIX,
    PER_MODEL,
    ModelSettings,
    Settings,
    env_name,
    flag_name,
    is_per_model,
    option,
    settings_fields,
)
from .values import MIB, SettingsError, is_shared_store, parse_bool, parse_duration, parse_list, parse_size

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "MIB",
    "PER_MODEL",
    "Layer",
    "ModelSettings",
    "Settings",
    "SettingsError",
    "build_parser",
    "env_name",
    "flag_name",
    "is_per_model",
    "is_shared_store",
    "load_settings",
    "option",
    "parse_bool",
    "parse_duration",
    "parse_list",
    "parse_size",
    "read_config_file",
    "read_environment",
    "render_sample_config",
    "settings_fields",
    "settings_from_layers",
]
