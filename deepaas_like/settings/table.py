"""The table of options: every option once, with its default, help, kind and choices
(:func:`option`); the settings a server runs with (:class:`Settings`) and a model's own
(:class:`ModelSettings`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .rules import validate
from .values import MIB, SettingsError, is_shared_store

ENV_PREFIX = "DEEPAAS_"
CONFIG_FILE_ENV = "DEEPAAS_CONFIG_FILE"


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "deepaas_like")


def option(
    default: Any,
    help: str,
    *,
    kind: str = "str",
    choices: Sequence[str] | None = None,
    legacy_env: Sequence[str] = (),
    sample_default: str | None = None,
) -> Any:
    """Declare one setting (a dataclass field carrying its own documentation).

    An option that :class:`ModelSettings` also has is *per model*: it may be set for one
    model, ``--workers irisbench=4``, ``DEEPAAS_WORKERS=2,irisbench=4``, or
    ``workers = 4`` in a ``[model:irisbench]`` section of the config file.
    """
    meta = {
        "help": help,
        "kind": kind,
        "choices": tuple(choices) if choices else None,
        "legacy_env": tuple(legacy_env),
        "sample_default": sample_default,
    }
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelSettings:
    """How one model is executed: the per-model options of :class:`Settings`.

    Its fields are the one list of per-model options; each is also an option of
    :class:`Settings` (the global value) with the same name.
    """

    executor: str
    workers: int
    predict_timeout: float
    max_queue_wait: float
    max_queue: int
    max_batch_size: int
    max_batch_time_ms: float
    ray_num_cpus: float
    ray_num_gpus: float

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise SettingsError(f"workers must be at least 1, got {self.workers}")
        if self.predict_timeout < 0 or self.max_batch_time_ms < 0 or self.max_queue_wait < 0:
            raise SettingsError("predict_timeout, max_queue_wait and max_batch_time_ms must not be negative")
        if self.max_queue < 0:
            raise SettingsError(f"max_queue must not be negative, got {self.max_queue}")
        if self.max_batch_size < 1:
            raise SettingsError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.ray_num_cpus < 0 or self.ray_num_gpus < 0:
            raise SettingsError("ray_num_cpus and ray_num_gpus must not be negative")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1


PER_MODEL = tuple(f.name for f in dataclasses.fields(ModelSettings))


@dataclass(frozen=True)
class Settings:
    """Everything that configures one ``deepaas-run`` server."""

    listen_ip: str = option("127.0.0.1", "IP address the server listens on.")
    listen_port: int = option(5000, "TCP port the server listens on.", kind="int")
    model_name: tuple[str, ...] = option(
        (),
        "Serve only these models: entry-point names in the 'deepaas.v2.model' group. "
        "Repeat the flag (or separate names with commas) for several. Empty: serve "
        "every installed plugin.",
        kind="list",
        legacy_env=("DEEPAAS_V2_MODEL",),
    )
    workers: int = option(
        1,
        "Workers per model (processes, or threads with --executor thread). Each process "
        "imports the plugin and runs warm() once, then serves one call at a time.",
        kind="int",
    )
    executor: str = option(
        "process",
        "Where model code runs: 'process' (worker processes; a crash or a GIL-bound "
        "model never stalls the server), 'thread' (threads of the server process; no "
        "process hop, for models that are cheap or release the GIL) or 'ray' (actors on a "
        "Ray cluster, see --ray-address; needs deepaas_like[ray]).",
        choices=("process", "thread", "ray"),
    )
    ray_num_cpus: float = option(
        1.0,
        "With --executor ray: CPUs each of the model's actors reserves on the cluster.",
        kind="float",
    )
    ray_num_gpus: float = option(
        0.0,
        "With --executor ray: GPUs (or fractions of one) each of the model's actors reserves.",
        kind="float",
    )
    predict_timeout: float = option(
        0.0,
        "Seconds a prediction may take; a slower one is answered 504 and its worker "
        "process is replaced (a thread cannot be stopped: it finishes in the background). "
        "0: no limit.",
        kind="float",
    )
    max_queue_wait: float = option(
        10.0,
        "Longest wait for a free worker, in seconds, that a new prediction is admitted to "
        "(estimated from the queue depth and the model's recent service time). A request "
        "that would wait longer is answered 503 at once, with Retry-After, instead of "
        "letting latency grow without bound.",
        kind="float",
    )
    max_queue: int = option(
        0,
        "Hard cap on the predictions waiting for a free worker, per model, on top of "
        "--max-queue-wait; beyond it the server answers 503. 0: no cap.",
        kind="int",
    )
    max_batch_size: int = option(
        1,
        "Adaptive batching: group up to this many concurrent predictions into one call "
        "(the plugin's predict_batch(), else predict() row by row in one worker call). "
        "1: off.",
        kind="int",
    )
    max_batch_time_ms: float = option(
        2.0,
        "Adaptive batching: longest wait, in milliseconds, for more predictions to fill "
        "a batch once a worker is free (a busy server fills batches without waiting).",
        kind="float",
    )
    worker_poll_us: int = option(
        2000,
        "Microseconds a worker process keeps polling for its next call before it sleeps, "
        "after a call that came alone; and the server for a worker's answer, while a CPU "
        "is free for it. When messages follow each other closely this saves the CPU's "
        "wake-up on each (tenths of a millisecond on a virtual machine) for some CPU time; "
        "the windows adapt, so a quiet server sleeps at once. 0: always sleep (e.g. under "
        "a tight container CPU quota, which counts the polling).",
        kind="int",
    )
    warm: bool = option(
        True,
        "Run each model's warm() before serving it. With --no-warm the workers start "
        "without it and the model is ready at once.",
        kind="bool",
    )
    health_port: int = option(
        0,
        "Also answer /v2/health/live and /v2/health/ready on this port, from a small "
        "process of their own: probes get an answer in milliseconds even when the main "
        "port is flooded, and liveness fails when the server's event loop stalls. 0: off.",
        kind="int",
    )
    base_path: str = option(
        "",
        "Serve every route under this path prefix (for a reverse proxy), e.g. /deepaas.",
    )
    client_max_size: int = option(
        100 * MIB,
        "Largest request body accepted, in bytes (suffixes KiB, MiB, GiB, KB, MB, GB "
        "allowed). Larger requests are answered 413.",
        kind="size",
        sample_default="100MiB",
    )
    predict_endpoint: bool = option(True, "Serve the predict routes.", kind="bool")
    train_endpoint: bool = option(True, "Serve the training routes.", kind="bool")
    doc_endpoint: bool = option(
        True, "Serve Swagger UI at /api (the spec at /swagger.json is always served).", kind="bool"
    )
    data_dir: str = option(
        _default_data_dir,
        "Directory for the server's own state: its database (state.sqlite3: jobs and "
        "uploaded models), uploaded model files, jobs' files and logs, and models' "
        "storage_dir(). One server per directory.",
        sample_default="~/.local/share/deepaas_like",
    )
    ray_address: str = option(
        "",
        "With --executor ray: the Ray cluster to use (e.g. ray://head:10001 or HOST:6379). "
        "Empty: a local Ray head is started with the server, on 127.0.0.1.",
    )
    store: str = option(
        "",
        "Where the server keeps its state (jobs, uploaded models' records, tokens, users, "
        "roles, audit log), as a URL: empty for <data-dir>/state.sqlite3, or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (needs deepaas_like[postgresql]). "
        "The schema is created or migrated on start.",
    )
    artifact_dir: str = option(
        "",
        "Directory of uploaded model files, stored by SHA-256 (empty: <data-dir>/artifacts). "
        "Replicas on one PostgreSQL --store share one, e.g. on a network file system; they "
        "also keep there the plugins' storage_dir() (models/) and the files that "
        "asynchronous predictions answer (results/).",
    )
    auth_key_file: str = option(
        "",
        "File holding the key that API tokens are hashed with, created on first use "
        "(empty: <data-dir>/auth.key). Replicas share one, so a token works on all.",
    )
    auth: bool = option(
        False,
        "Require a credential: a bearer API token (deepaas-token) or, with "
        "--jwt-secret-file, an HS256 JWT. Public models answer metadata and predict "
        "without one. Off: anyone who reaches the port may use the models, and on a "
        "non-loopback address uploads and admin routes are refused.",
        kind="bool",
    )
    jwt_secret_file: str = option(
        "",
        "File holding the shared secret (at least 32 bytes) that HS256 JWTs are signed with; "
        "their claims name a user (userId, email). Empty: JWTs are not accepted.",
    )
    jwt_allow_no_exp: bool = option(
        False,
        "Accept JWTs without an 'exp' claim (Datrics clients send such tokens); by default a JWT must expire.",
        kind="bool",
    )
    jwt_leeway: float = option(
        30.0,
        "Clock difference, in seconds, tolerated when checking a JWT's exp and nbf (0 to 300).",
        kind="float",
    )
    jwt_scopes: tuple[str, ...] = option(
        ("models:read", "models:predict", "models:train", "models:write"),
        "Scopes of a user named by a JWT (never admin): per-model roles then decide what "
        "they may do with uploaded models.",
        kind="list",
    )
    public_models: tuple[str, ...] = option(
        (),
        "Plugins whose metadata and predict answer without a credential (uploaded models "
        "are made public with is_public).",
        kind="list",
    )
    metrics_auth: bool = option(
        False,
        "With --auth, /metrics needs a credential with the admin scope too (health routes stay open).",
        kind="bool",
    )
    allowed_hosts: tuple[str, ...] = option(
        (),
        "Host names a request may name in its Host header, besides localhost (and "
        "*.localhost) and IP addresses, which are always accepted; '.example.org' accepts its "
        "subdomains too, '*' any name (behind a proxy that checks it). Empty: this machine's "
        "host name. Any other Host is answered 403 on every route but health, so that a web "
        "page cannot reach the server through DNS rebinding.",
        kind="list",
    )
    cors_origins: tuple[str, ...] = option(
        (),
        "Web origins (https://app.example.org) whose pages may call the API from a browser: "
        "their POST, PUT, PATCH and DELETE are accepted, and answers carry CORS headers. Such "
        "requests from any other origin (a page the operator happens to visit) are refused "
        "with 403.",
        kind="list",
    )
    request_read_timeout: float = option(
        60.0,
        "Seconds a client may take to send a request's headers, and may leave between two "
        "pieces of its body (suffixes s, m, h allowed); a slower connection is closed. 0: no "
        "limit.",
        kind="duration",
        sample_default="60s",
    )
    max_form_parts: int = option(
        10000,
        "Most fields and parts an urlencoded form or a multipart body may hold (the demo "
        "takes up to 10000 values of one argument); more is answered 413 (send many values "
        "as JSON). Parts are read a few at a time, other requests served in between.",
        kind="int",
    )
    enable_uploads: bool = option(
        False,
        "Serve the registry's write routes (upload, update, archive, config) on a "
        "non-loopback --listen-ip. Loading an uploaded pickle runs code in a worker: "
        "without authentication, allow it only on a network you trust. On 127.0.0.1 they "
        "are always served.",
        kind="bool",
    )
    allow_unconfined_code: bool = option(
        False,
        "Serve uploaded formats whose loading runs code (pickle, joblib, TorchScript) even "
        "where the workers that load them cannot be contained (a kernel without Landlock, "
        "--executor ray). Off: there, such uploads are refused (403) and such versions are "
        "not served; skops, ONNX, Keras and .pt2 files are served everywhere.",
        kind="bool",
    )
    sandbox_user: str = option(
        "nobody",
        "When the server runs as root: the unprivileged user that the workers loading uploaded files run as.",
    )
    sandbox_memory: int = option(
        8 * 1024 * MIB,
        "Address space each worker that loads uploaded files may map (RLIMIT_AS; suffixes "
        "KiB, MiB, GiB allowed): every model it keeps loaded counts. 0: no limit.",
        kind="size",
        sample_default="8GiB",
    )
    sandbox_tasks: int = option(
        512,
        "Processes and threads each worker that loads uploaded files may start "
        "(RLIMIT_NPROC): a fork bomb stops there, and dies with the worker.",
        kind="int",
    )
    max_upload_size: int = option(
        1024 * MIB,
        "Largest model file accepted by an upload, in bytes (suffixes KiB, MiB, GiB, KB, "
        "MB, GB allowed); larger uploads are answered 413 and nothing is kept.",
        kind="size",
        sample_default="1GiB",
    )
    registry_workers: int = option(
        1,
        "Worker processes shared by every uploaded model (plugins keep their own).",
        kind="int",
    )
    registry_preload: bool = option(
        False,
        "Start the shared workers with the server, importing the framework plugins' light "
        "libraries (scikit-learn, onnxruntime) ahead of the first upload, which then answers "
        "at once (about 220 MiB more for a server that may never get one). Off: they start, "
        "and import, with the first upload (or at start when models have been uploaded).",
        kind="bool",
    )
    max_loaded_models: int = option(
        20,
        "Uploaded models each shared worker keeps loaded; the least recently used one is "
        "unloaded to make room (and loaded again on its next call).",
        kind="int",
    )
    max_concurrent_trainings: int = option(
        1,
        "Trainings that run at the same time on this server; more wait as 'queued' and start first in, first out.",
        kind="int",
    )
    keep_training_versions: int = option(
        10,
        "Versions of a plugin's storage_dir() kept (each training that ends well records one): "
        "after a training, the oldest beyond this many go, never the current one nor version 1 "
        "(the storage_dir before the first training). 0: keep every version.",
        kind="int",
    )
    prediction_retention: float = option(
        86400.0,
        "How long the result of an asynchronous prediction is kept after it finished, in "
        "seconds (suffixes s, m, h, d allowed); then the job and its files are removed. "
        "Trainings are kept.",
        kind="duration",
        sample_default="1d",
    )
    job_lease: float = option(
        15.0,
        "Replicas on one PostgreSQL --store: a replica renews the lease on the jobs it runs "
        "every third of this (seconds; suffixes allowed); when a replica has not renewed it for "
        "this long, another one marks its unfinished jobs interrupted.",
        kind="duration",
        sample_default="15s",
    )
    callback_attempts: int = option(
        5,
        "Attempts to POST a finished job to its callback_url before the delivery is recorded as failed.",
        kind="int",
    )
    callback_backoff: float = option(
        1.0,
        "Seconds before the second callback attempt; each later wait doubles.",
        kind="float",
    )
    start_method: str = option(
        "forkserver",
        "How worker processes start: 'forkserver' (each model's first workers are fresh "
        "interpreters; later ones, trainings and the workers re-warmed after them, are "
        "forked from a helper that has imported the models' libraries once) or 'spawn' "
        "(every process a fresh interpreter, for libraries that cannot be forked after "
        "import).",
        choices=("spawn", "forkserver"),
    )
    log_level: str = option(
        "INFO",
        "Log level of the server's own messages.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    )
    access_log: bool = option(False, "Log one line per HTTP request.", kind="bool")
    shutdown_timeout: float = option(
        5.0,
        "Seconds that running requests get to finish after SIGINT/SIGTERM before the server stops its workers.",
        kind="float",
    )

    model_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-model values of the per-model options: ``{"irisbench": {"workers": 4}}``."""
    config_file: str = ""
    """The config file the settings were read from, if any (kept from contained workers)."""

    def __post_init__(self) -> None:
        validate(self)
        for name in self.model_overrides:
            self.for_model(name)  # validates the overridden values

    @property
    def shared_store(self) -> bool:
        """Whether --store is one that replicas share (PostgreSQL), not a SQLite file."""
        return is_shared_store(self.store)

    @property
    def models_dir(self) -> Path:
        """Parent of every model's storage_dir(): in the data directory; with replicas, in the
        shared artifact directory, so that what a training saves is what every replica loads."""
        return (self.artifacts_dir if self.shared_store else Path(self.data_dir)) / "models"

    @property
    def artifacts_dir(self) -> Path:
        """Uploaded model files, by SHA-256."""
        return Path(self.artifact_dir) if self.artifact_dir else Path(self.data_dir) / "artifacts"

    @property
    def auth_key_path(self) -> Path:
        """The key API tokens are hashed with."""
        return Path(self.auth_key_file) if self.auth_key_file else Path(self.data_dir) / "auth.key"

    def for_model(self, name: str) -> "ModelSettings":
        """The per-model options of one model: its overrides, else the global values."""
        own = self.model_overrides.get(name, {})
        return ModelSettings(**{f: own.get(f, getattr(self, f)) for f in PER_MODEL})


def settings_fields() -> tuple[dataclasses.Field, ...]:
    """The declared options, in declaration order."""
    return tuple(f for f in dataclasses.fields(Settings) if "help" in f.metadata)


def is_per_model(f: dataclasses.Field) -> bool:
    return f.name in PER_MODEL


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")
