"""Server settings: one frozen dataclass, built once from four layers.

Precedence, lowest first: the defaults below < the config file (``--config-file`` or
``DEEPAAS_CONFIG_FILE``, INI, section ``[DEFAULT]``) < ``DEEPAAS_*`` environment
variables < command-line flags. Every option is declared once here, with its help
text; the argument parser, the environment and config readers, and the sample file
``etc/deepaas_like.conf.sample`` are all derived from this table.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .scopes import SCOPES

ENV_PREFIX = "DEEPAAS_"
CONFIG_FILE_ENV = "DEEPAAS_CONFIG_FILE"
MIB = 1024 * 1024


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


def is_shared_store(url: str) -> bool:
    """Whether a --store URL is one that several servers share: any but SQLite (empty: the
    SQLite file in --data-dir)."""
    return bool(url) and url.split(":", 1)[0].split("+", 1)[0] != "sqlite"


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
        True,
        "Start the shared workers with the server, importing the framework plugins' light "
        "libraries (scikit-learn, onnxruntime) ahead of the first upload, which then answers "
        "at once. Off: they start, and import, with the first upload.",
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
        _validate(self)
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


# --- parsing of textual values (config file, environment) ------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": MIB,
    "mib": MIB,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 1048576, 512KiB or 100MiB, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text).lower())
    if not match:
        raise ValueError(f"expected a duration such as 3600, 90s, 30m, 12h or 7d, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(text).split(",") if part.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": lambda text: str(text).strip(),
    "int": lambda text: int(str(text).strip()),
    "float": lambda text: float(str(text).strip()),
    "bool": parse_bool,
    "size": parse_size,
    "duration": parse_duration,
    "list": parse_list,
}


def _convert(f: dataclasses.Field, raw: Any, origin: str) -> Any:
    kind = f.metadata["kind"]
    try:
        value = _PARSERS[kind](raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise SettingsError(f"{origin}: invalid value for {f.name}: {exc}") from None
    choices = f.metadata["choices"]
    if choices:
        value = value.upper() if f.name == "log_level" else value
        if value not in choices:
            raise SettingsError(f"{origin}: {f.name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _validate(s: Settings) -> None:
    if not 0 <= s.listen_port <= 65535 or not 0 <= s.health_port <= 65535:
        raise SettingsError(
            f"listen_port and health_port must be between 0 and 65535, got {s.listen_port} and {s.health_port}"
        )
    s.for_model("")  # the global per-model values
    if s.client_max_size < 1:
        raise SettingsError(f"client_max_size must be positive, got {s.client_max_size}")
    if s.shutdown_timeout < 0:
        raise SettingsError("shutdown_timeout must not be negative")
    if not 0 <= s.jwt_leeway <= 300:
        raise SettingsError(f"jwt_leeway must be between 0 and 300 seconds, got {s.jwt_leeway}")
    unknown = [scope for scope in s.jwt_scopes if scope not in SCOPES or scope == "admin"]
    if unknown:
        raise SettingsError(
            f"jwt_scopes may hold {', '.join(x for x in SCOPES if x != 'admin')}; not {', '.join(unknown)}"
        )
    if s.request_read_timeout < 0 or s.max_form_parts < 1:
        raise SettingsError("request_read_timeout must not be negative and max_form_parts must be at least 1")
    bad = [o for o in s.cors_origins if not re.fullmatch(r"https?://[^/\s]+", o)]
    if bad:
        raise SettingsError(f"cors_origins are origins such as https://app.example.org (no path): not {', '.join(bad)}")
    if s.sandbox_memory < 0 or s.sandbox_tasks < 1:
        raise SettingsError("sandbox_memory must not be negative and sandbox_tasks must be at least 1")
    if s.registry_workers < 1 or s.max_loaded_models < 1 or s.max_upload_size < 1:
        raise SettingsError("registry_workers, max_loaded_models and max_upload_size must be at least 1")
    if s.max_concurrent_trainings < 1:
        raise SettingsError(f"max_concurrent_trainings must be at least 1, got {s.max_concurrent_trainings}")
    if s.callback_attempts < 1 or s.callback_backoff < 0 or s.prediction_retention < 0:
        raise SettingsError(
            "callback_attempts must be at least 1; callback_backoff and prediction_retention must not be negative"
        )
    if not 0 <= s.worker_poll_us <= 100_000:
        raise SettingsError(f"worker_poll_us must be between 0 and 100000 microseconds, got {s.worker_poll_us}")
    if s.job_lease < 1:
        raise SettingsError(f"job_lease must be at least 1 second, got {s.job_lease}")
    if s.base_path and (not s.base_path.startswith("/") or s.base_path == "/"):
        raise SettingsError(f"base_path must start with '/' and name a path, got {s.base_path!r}")
    if s.store and not re.match(r"(sqlite|postgresql)(\+\w+)?://", s.store):
        raise SettingsError(
            f"--store must be empty (SQLite in --data-dir), sqlite:///PATH or postgresql://USER@HOST/DB, "
            f"got {s.store!r}"
        )
    for name in s.model_name:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise SettingsError(f"model name {name!r} may only use letters, digits, '_', '.', '-'")


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
        default = _display_default(f)
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


def _display_default(f: dataclasses.Field) -> str:
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
            values[name] = _convert(by_name[name], raw, layer.origin)
        for model, options in layer.models.items():
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", model):
                raise SettingsError(f"{layer.origin}: {model!r} is not a model name")
            for name, raw in options.items():
                overrides.setdefault(model, {})[name] = _convert(by_name[name], raw, f"{layer.origin} ({model})")
    for name in ("data_dir", "artifact_dir", "auth_key_file", "jwt_secret_file"):
        if values.get(name):
            values[name] = os.path.abspath(os.path.expanduser(values[name]))
    if len(values.get("base_path", "")) > 1:
        values["base_path"] = values["base_path"].rstrip("/")
    return Settings(**values, model_overrides=overrides)


def render_sample_config() -> str:
    """The text of ``etc/deepaas_like.conf.sample``: every option, commented out."""
    lines = [
        "# deepaas_like sample configuration.",
        "#",
        "# Use it with `deepaas-run --config-file FILE` or DEEPAAS_CONFIG_FILE=FILE.",
        "# Precedence, lowest first: built-in defaults < this file < DEEPAAS_* environment",
        "# variables < command-line flags; a per-model value beats a global one.",
        "# Every option below shows its default value.",
        "# Generated from deepaas_like/settings.py; a test fails when the two disagree.",
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
        default = _display_default(f)
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
