"""Domain errors. Each carries the HTTP status it is answered with.

The model and execution layers raise these without knowing about HTTP; one
front door in :mod:`deepaas_like.api.front_door` renders them as JSON bodies
``{"message": ..., **details}``.
"""

from __future__ import annotations

from typing import Any, Mapping


class DeepaasError(Exception):
    """Base of every error the API answers on purpose."""

    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {"message": self.message, **self.details}


class BadRequest(DeepaasError):
    """The request body could not be read (malformed JSON, multipart, encoding)."""

    status = 400


class NotFound(DeepaasError):
    status = 404


class Unauthorized(DeepaasError):
    """No credential, or one that is malformed, expired or revoked."""

    status = 401

    def __init__(self, message: str, *, error: str = "invalid_token") -> None:
        super().__init__(
            message,
            headers={"WWW-Authenticate": 'Bearer realm="deepaas_like"' + (f', error="{error}"' if error else "")},
        )


class Forbidden(DeepaasError):
    """A valid credential without the scope or role the route needs (or a refusal of the server's)."""

    status = 403


class Conflict(DeepaasError):
    """The request is valid but not in the resource's current state."""

    status = 409


class PayloadTooLarge(DeepaasError):
    """The request body is over ``--client-max-size``."""

    status = 413

    def __init__(self, limit: int, message: str | None = None) -> None:
        super().__init__(
            message or f"Request body too large: the limit is {limit} bytes (--client-max-size)",
            details={"limit": limit},
        )


class UnsupportedMediaType(DeepaasError):
    status = 415


class ArgumentError(DeepaasError):
    """Arguments failed validation; ``errors`` maps each argument to its messages."""

    status = 422

    def __init__(self, message: str, errors: Mapping[str, Any], **extra: Any) -> None:
        super().__init__(message, details={"errors": dict(errors), **extra})
        self.errors = dict(errors)


class ModelError(DeepaasError):
    """The plugin's own code raised while handling a request."""

    status = 500

    def __init__(
        self,
        model: str,
        method: str,
        exc_type: str,
        exc_message: str,
        *,
        status: int | None = None,
    ) -> None:
        text = f"{exc_type}: {exc_message}" if exc_message else exc_type
        super().__init__(
            f"Model '{model}' failed in {method}(): {text}",
            details={"model": model, "error_type": exc_type},
            status=status,
        )
        self.model = model
        self.method = method
        self.exc_type = exc_type
        self.exc_message = exc_message


class NotImplementedByModel(DeepaasError):
    status = 501


class ModelUnavailable(DeepaasError):
    """The model cannot take the request now (worker died, not warm yet, stopping)."""

    status = 503

    def __init__(self, message: str, *, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, details=details, headers={"Retry-After": str(retry_after)})


class QueueFull(ModelUnavailable):
    """The model's queue is full: a new prediction would wait too long (or the hard cap)."""

    def __init__(self, model: str, reason: str, retry_after: int) -> None:
        super().__init__(
            f"Model '{model}' is busy: {reason}; retry in {retry_after} s",
            retry_after=retry_after,
            model=model,
        )


class PredictTimeout(DeepaasError):
    """The model took longer than its --predict-timeout."""

    status = 504

    def __init__(self, model: str, timeout: float) -> None:
        super().__init__(
            f"Model '{model}' did not answer within {timeout:g} s (--predict-timeout)",
            details={"model": model, "timeout": timeout},
        )


class ConfigurationError(DeepaasError):
    """A setting the server cannot start with (a file too short, a port taken, a store that
    cannot be opened): ``deepaas-run`` says it in one line, naming the option, and exits 2."""

    exit_code = 2


class PluginLoadError(Exception):
    """A plugin could not be imported or is not a usable model (startup error)."""

    def __init__(self, name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(f"model plugin '{name}': {message}")
        self.name = name
        self.reason = message
        self.traceback_text = traceback_text
