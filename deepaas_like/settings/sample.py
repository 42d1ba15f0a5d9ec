"""The sample configuration file, ``etc/deepaas_like.conf.sample``, from the table."""

from __future__ import annotations

import textwrap

from .layers import display_default
from .table import PER_MODEL, env_name, flag_name, is_per_model, settings_fields


def render_sample_config() -> str:
    """The text of ``etc/deepaas_like.conf.sample``: every option, commented out."""
    lines = [
        "# deepaas_like sample configuration.",
        "#",
        "# Use it with `deepaas-run --config-file FILE` or DEEPAAS_CONFIG_FILE=FILE.",
        "# Precedence, lowest first: built-in defaults < this file < DEEPAAS_* environment",
        "# variables < command-line flags; a per-model value beats a global one.",
        "# Every option below shows its default value.",
        "# Generated from deepaas_like/settings/; a test fails when the two disagree.",
        "",
        "[DEFAULT]",
    ]
    for f in settings_fields():
        lines.append("")
        for chunk in textwrap.wrap(f.metadata["help"], width=84):
            lines.append(f"# {chunk}")
        if f.metadata["choices"]:
            lines.append(f"# One of: {', '.join(f.metadata['choices'])}.")
        envs = ", ".join((env_name(f.name), *f.metadata["legacy_env"]))
        lines.append(f"# Flag: {flag_name(f.name)}; environment: {envs}.")
        if is_per_model(f):
            lines.append(
                "# Per model too: a [model:NAME] section, --{0} NAME=VALUE, {1}=NAME=VALUE.".format(
                    f.name.replace("_", "-"), env_name(f.name)
                )
            )
        default = display_default(f)
        lines.append(f"#{f.name} = {'' if default == '(empty)' else default}".rstrip())
    lines += [
        "",
        "# Per-model options (" + ", ".join(PER_MODEL) + ")",
        "# for one model go in a section of their own, for example:",
        "#",
        "# [model:irisbench]",
        "# workers = 2",
        "# max_batch_size = 32",
    ]
    return "\n".join(lines) + "\n"
