"""The settings in sections: what each component reads, and nothing else.

The options stay declared once (:mod:`.table`: flags, environment, config file and the
sample derive from it); a section is a frozen view of some of them, plus what they
imply (paths, a model's defaults), made with ``Section.of(settings)``. A component takes
its section, so what it depends on is written in one place and a test builds it alone.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .table import ModelSettings, Settings
from .values import MIB

S = TypeVar("S", bound="Section")


@dataclass(frozen=True)
class Section:
    @classmethod
    def of(cls: type[S], settings: Settings) -> S:
        """This section of ``settings``: each field read from the option (or the property)
        of the same name."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class ServerSection(Section):
    """The HTTP server: where it listens, what it serves, how it reads requests."""

    listen_ip: str
    listen_port: int
    base_path: str
    client_max_size: int
    request_read_timeout: float
    max_form_parts: int
    allowed_hosts: tuple[str, ...]
    cors_origins: tuple[str, ...]
    predict_endpoint: bool
    train_endpoint: bool
    doc_endpoint: bool
    health_port: int
    access_log: bool
    log_level: str
    shutdown_timeout: float


@dataclass(frozen=True)
class AuthSection(Section):
    """Keys and access (the gate)."""

    auth: bool
    auth_key_path: Path
    jwt_secret_file: str
    jwt_allow_no_exp: bool
    jwt_leeway: float
    jwt_scopes: tuple[str, ...]
    public_models: tuple[str, ...]
    metrics_auth: bool
    enable_uploads: bool
    listen_ip: str  # without --auth, only a loopback server may be written to


@dataclass(frozen=True)
class StoreSection(Section):
    """Where the server keeps its state."""

    store: str
    data_dir: str
    shared_store: bool
    models_dir: Path


@dataclass(frozen=True)
class EngineSection(Section):
    """How models' code runs (the global values; a model's own: :meth:`Settings.for_model`)."""

    executor: str
    workers: int
    start_method: str
    worker_poll_us: int
    warm: bool
    ray_address: str
    ray_num_cpus: float
    ray_num_gpus: float
    log_level: str


@dataclass(frozen=True)
class JobsSection(Section):
    """Trainings and asynchronous predictions."""

    max_concurrent_trainings: int
    keep_training_versions: int  # versions of a plugin's storage_dir kept (jobs/versions.py)
    models_dir: Path  # the plugins' storage_dirs, and their versions beside them
    prediction_retention: float
    job_lease: float
    callback_attempts: int
    callback_backoff: float
    data_dir: str  # the jobs' folders and the outbox
    artifacts_dir: Path  # with replicas: results every replica reads
    base_path: str  # in the jobs' links


@dataclass(frozen=True)
class RegistrySection(Section):
    """Uploaded models: their files, their shared workers and how those are contained."""

    enable_uploads: bool
    allow_unconfined_code: bool
    max_upload_size: int
    registry_workers: int
    registry_preload: bool
    max_loaded_models: int
    artifacts_dir: Path
    data_dir: str
    shutdown_timeout: float
    engine: EngineSection
    model_defaults: ModelSettings  # an uploaded model's options before its version's config
    model_overrides: Mapping[str, Mapping[str, Any]]  # per model, as the settings give them
    sandbox_user: str
    sandbox_memory: int
    sandbox_tasks: int
    secrets: tuple[str, ...]  # what a contained worker must never read: state, keys, configuration

    @classmethod
    def of(cls, settings: Settings) -> RegistrySection:
        store = settings.store
        sqlite = store.split("///", 1)[1].split("?", 1)[0] if store.startswith("sqlite") and "///" in store else ""
        store_files = [os.path.abspath(sqlite) + end for end in ("", "-wal", "-shm", "-journal")] if sqlite else []
        secrets = (
            settings.data_dir,
            str(settings.artifacts_dir),
            str(settings.models_dir),
            str(settings.auth_key_path),
            settings.jwt_secret_file,
            *store_files,
            settings.config_file,
        )
        return cls(
            enable_uploads=settings.enable_uploads,
            allow_unconfined_code=settings.allow_unconfined_code,
            max_upload_size=settings.max_upload_size,
            registry_workers=settings.registry_workers,
            registry_preload=settings.registry_preload,
            max_loaded_models=settings.max_loaded_models,
            artifacts_dir=settings.artifacts_dir,
            data_dir=settings.data_dir,
            shutdown_timeout=settings.shutdown_timeout,
            engine=EngineSection.of(settings),
            model_defaults=settings.for_model(""),
            model_overrides=settings.model_overrides,
            sandbox_user=settings.sandbox_user,
            sandbox_memory=settings.sandbox_memory,
            sandbox_tasks=settings.sandbox_tasks,
            secrets=tuple(os.path.abspath(p) for p in secrets if p),
        )

    def for_model(self, name: str) -> ModelSettings:
        """An uploaded model's options: its own values in the settings, else the global ones."""
        return dataclasses.replace(self.model_defaults, **dict(self.model_overrides.get(name, {})))

    @property
    def worker_file_size(self) -> int:
        """A contained worker's largest file: its private copy of an uploaded one."""
        return self.max_upload_size + MIB

    @property
    def worker_reply_limit(self) -> int:
        """A contained worker's largest answer: an ONNX conversion answers the graph."""
        return 2 * self.max_upload_size + 64 * MIB


def sections_of(settings: Settings) -> dict[str, Any]:
    """Every section of ``settings`` by name (for a look at what a server runs with)."""
    kinds = (ServerSection, AuthSection, StoreSection, EngineSection, JobsSection, RegistrySection)
    return {kind.__name__.removesuffix("Section").lower(): kind.of(settings) for kind in kinds}
