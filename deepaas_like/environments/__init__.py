"""Each model in its own environment: virtual environments built with uv, shared by content.

A plugin or an uploaded version whose requirements conflict with the server's runs with the
interpreter of an environment from :class:`EnvironmentStore` (``store.py``); what uses which
environment is recorded in ``users.py`` so that ``deepaas-env gc`` keeps it::

    store = EnvironmentStore(environments_root(settings))
    env = store.build(read_requirements(Path("requirements.txt").read_text()))
    record_user(store.root, "plugin:my-model", env.key)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .requirements import check_requirement, normalise_requirements, read_requirements
from .store import BuildFailed, Environment, EnvironmentStore, environment_key
from .users import drop_user, in_use, record_user, users

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "BuildFailed",
    "Environment",
    "EnvironmentStore",
    "check_requirement",
    "drop_user",
    "environment_key",
    "environments_root",
    "in_use",
    "normalise_requirements",
    "read_requirements",
    "record_user",
    "users",
]


def environments_root(settings: Settings) -> Path:
    """Where the server's environments live: ``<data-dir>/environments``; with replicas (a
    shared --store), in the shared artifact directory, so that every replica runs the same."""
    return (settings.artifacts_dir if settings.shared_store else Path(settings.data_dir)) / "environments"
