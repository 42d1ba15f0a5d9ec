"""The rules between options that a single option's type cannot say (checked once, when a
:class:`~deepaas_like.settings.table.Settings` is made)."""

from __future__ import annotations

import re
from typing import Any

from ..scopes import SCOPES
from .values import SettingsError


def validate(s: Any) -> None:
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
    if s.keep_training_versions < 0:
        raise SettingsError(f"keep_training_versions must not be negative, got {s.keep_training_versions}")
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
