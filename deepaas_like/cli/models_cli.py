"""The model ``deepaas-cli`` runs: a plugin in this process (:class:`LocalModel`).

It does what a server's worker does, with the server's own parts: the plugin is loaded
through :func:`deepaas_like.loading.load_plugins`, its arguments are validated by the
same :class:`~deepaas_like.arguments.ArgumentSpec`, it runs through a
:class:`~deepaas_like.engine.adapter.ModelAdapter` with ``storage_dir()`` at
``<data-dir>/models/<name>`` (the server's, so both share what ``train`` saves), after one
``warm()``. :class:`deepaas_like.cli.remote_cli.RemoteModel` offers the same methods
against a running server.
"""

from __future__ import annotations

import contextlib
import datetime
import mimetypes
import os
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, TextIO

from multidict import MultiDict

from .. import runtime
from ..arguments import ArgumentSources, ArgumentSpec
from ..engine.adapter import ModelAdapter, execute
from ..engine.calls import CallFailure, Ok, unwrap
from ..errors import ArgumentError, DeepaasError, PluginLoadError
from ..files import ReturnedFile, UploadedFile
from ..legacy import legacy_vocabulary_allowed
from ..loading import LoadedPlugin
from ..models import checked_metadata, fallback_metadata, response_schema_of
from ..quality.predictor import check_tabular
from ..quality.samples import features_of
from ..settings import Settings
from .arguments_cli import ArgumentFlag, flags_from_spec

JSON = "application/json"
OCTET = "application/octet-stream"
Progress = Callable[[float | None, str | None], None]


class CommandFailed(Exception):
    """Ends the command: ``message`` (and ``detail``, a traceback) on stderr, then ``exit_code``
    (1: the model or the server failed; 2: a usage or validation error)."""

    def __init__(self, message: str, exit_code: int = 1, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.detail = detail


def failed(error: DeepaasError, detail: str = "") -> CommandFailed:
    """The command's end for a server-side error: validation errors are usage errors."""
    return CommandFailed(error.message, 2 if isinstance(error, ArgumentError) else 1, detail)


@dataclass
class ModelOutput:
    """What ``predict`` answered: a JSON value, or binary data (``data`` or a file at ``path``)."""

    json: Any = None
    data: bytes | None = None
    path: str | None = None
    content_type: str = JSON

    @property
    def is_binary(self) -> bool:
        return self.data is not None or self.path is not None


@dataclass
class TrainingReport:
    """A finished training: its document (DEEPaaS's shape) and, from a server, its log."""

    document: dict[str, Any]
    log: str | None = None

    @property
    def ok(self) -> bool:
        return self.document.get("status") == "done"


class LocalModel:
    """A plugin loaded into this process, run the way a server's worker runs it."""

    def __init__(self, plugin: LoadedPlugin, settings: Settings) -> None:
        self.name = plugin.ref.name
        self.adapter = ModelAdapter(self.name, plugin.obj, str(settings.models_dir / self.name))
        self._warm_first = settings.warm
        self._warmed = False
        self._temporary: list[str] = []
        step = "get_predict_args()"
        try:
            with legacy_vocabulary_allowed():
                self.predict_spec = ArgumentSpec(self.name, "predict", self._declared("get_predict_args"))
                step = "get_train_args()"
                self.train_spec = ArgumentSpec(self.name, "train", self._declared("get_train_args"))
                step = "schema"
                self.response_schema = response_schema_of(plugin.obj)
        except Exception as exc:
            raise PluginLoadError(
                self.name, f"{step} failed: {type(exc).__name__}: {exc}", traceback.format_exc()
            ) from exc

    def _declared(self, method: str) -> Any:
        return self.adapter.call(method) if self.adapter.has(method) else {}

    def can(self, method: str) -> bool:
        return self.adapter.has(method)

    @property
    def predict_flags(self) -> list[ArgumentFlag]:
        return flags_from_spec(self.predict_spec)

    @property
    def train_flags(self) -> list[ArgumentFlag]:
        return flags_from_spec(self.train_spec)

    def close(self) -> None:
        """Remove the copies of the files given as arguments (and what the plugin left there)."""
        for folder in self._temporary:
            shutil.rmtree(folder, ignore_errors=True)
        self._temporary.clear()

    # --- the commands ----------------------------------------------------------------

    def warm(self, force: bool = False) -> None:
        """``warm()`` once (unless the settings say --no-warm and ``force`` is not set)."""
        if self._warmed or not (force or self._warm_first):
            return
        self._warmed = True
        if self.adapter.has("warm"):
            self._run("warm", None)

    def metadata(self) -> dict[str, Any]:
        self.warm()
        if not self.adapter.has("get_metadata"):
            return fallback_metadata(self.name, None)
        value = self._run("get_metadata", None)
        try:
            return checked_metadata(value)
        except (TypeError, ValueError) as exc:
            raise CommandFailed(f"Model '{self.name}': {exc}") from None

    def predict(self, values: Mapping[str, Any], files: Mapping[str, str]) -> ModelOutput:
        self._require("predict")
        kwargs = self._validated(self.predict_spec, values, files)
        self.warm()
        result = self._run("predict", kwargs)
        return self._output(result, kwargs.get(self._accept_attribute()))

    def explain(
        self, values: Mapping[str, Any], background: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One prediction explained here, against ``background`` (the rows an initialization
        keeps on a server): the same request a worker gets (see
        :mod:`deepaas_like.engine.explainer`)."""
        self._require("predict")
        if not background:
            raise CommandFailed("in this process, give the background rows: --background FILE (CSV or JSON)", 2)
        features = features_of(background)
        try:
            check_tabular(self.name, self.predict_spec, features)
        except ArgumentError as exc:
            raise failed(exc) from None
        rows = [{f: loaded.get(f) for f in features} for loaded in self._each(background)]
        kwargs = self._validated(self.predict_spec, values, {})
        self.warm()
        request = {"rows": [kwargs], "background": rows, "features": features, "options": dict(options)}
        return {"model": self.name, "data": self._run("explain", request)}

    def _each(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        loaded = []
        for index, row in enumerate(rows):
            try:
                loaded.append(self.predict_spec.load(ArgumentSources(json=row, lenient=True)))
            except ArgumentError as exc:
                raise CommandFailed(f"background row {index}: {exc.message}", 2) from None
        return loaded

    def train(
        self, values: Mapping[str, Any], files: Mapping[str, str], progress: Progress, log: TextIO | None = None
    ) -> TrainingReport:
        """``train()`` here: its progress to ``progress``, what it prints to ``log`` (stderr) as it comes."""
        self._require("train")
        kwargs = self._validated(self.train_spec, values, files)
        self.warm()
        reported: list[tuple[float, str | None]] = []

        def sink(fraction: float, message: str | None) -> None:
            reported[:] = [(fraction, message)]
            progress(fraction, message)

        created = time.time()
        previous, runtime.progress_sink = runtime.progress_sink, sink
        try:
            with plugin_output_to(log or sys.stderr):
                outcome = execute(self.adapter, "train", kwargs)
        finally:
            runtime.progress_sink = previous
        _interrupted(outcome)
        finished = time.time()
        document: dict[str, Any] = {
            "date": _stamp(created),
            "args": _shown(kwargs),
            "uuid": uuid.uuid4().hex,
            "status": "done" if isinstance(outcome, Ok) else "error",
            "model": self.name,
        }
        if isinstance(outcome, Ok):
            document["result"] = {
                "output": outcome.value,
                "finish_date": _stamp(finished),
                "duration": str(datetime.timedelta(seconds=finished - created)),
            }
        document.update(
            started=_stamp(created),
            finish_date=_stamp(finished),
            duration=str(datetime.timedelta(seconds=finished - created)),
        )
        if isinstance(outcome, CallFailure):
            document["message"] = outcome.text
            print(outcome.traceback.rstrip(), file=sys.stderr)
        if reported:
            document["progress"], message = reported[0]
            if message:
                document["progress_message"] = message
        return TrainingReport(document)

    # --- helpers ----------------------------------------------------------------------

    def _require(self, method: str) -> None:
        if not self.adapter.has(method):
            raise CommandFailed(f"Model '{self.name}' does not implement {method}()")

    def _run(self, method: str, kwargs: Mapping[str, Any] | None) -> Any:
        """The plugin's method, its prints on stderr; a failure ends the command."""
        with plugin_output_to(sys.stderr):
            outcome = execute(self.adapter, method, kwargs)
        _interrupted(outcome)
        try:
            return unwrap(outcome, self.name, method)
        except DeepaasError as exc:
            raise failed(exc, getattr(outcome, "traceback", "")) from None

    def _validated(self, spec: ArgumentSpec, values: Mapping[str, Any], files: Mapping[str, str]) -> dict[str, Any]:
        """The plugin's keyword arguments, as the server's validation makes them."""
        sources = ArgumentSources(json=dict(values), files=self._uploads(files), lenient=True)
        try:
            return spec.load(sources)
        except ArgumentError as exc:
            raise failed(exc) from None

    def _uploads(self, files: Mapping[str, str]) -> MultiDict:
        """Copies of the files, as the server hands uploads over: the plugin may move or delete them."""
        uploads: MultiDict = MultiDict()
        if not files:
            return uploads
        folder = tempfile.mkdtemp(prefix="deepaas-cli-")
        self._temporary.append(folder)
        for key, path in files.items():
            suffix = os.path.splitext(path)[1]
            fd, copy = tempfile.mkstemp(dir=folder, suffix=suffix if suffix.isascii() and len(suffix) <= 13 else "")
            with os.fdopen(fd, "wb") as target, open(path, "rb") as source:
                shutil.copyfileobj(source, target)
            uploads.add(
                key,
                UploadedFile(
                    name=key, filename=copy, content_type=guess_type(path), original_filename=os.path.basename(path)
                ),
            )
        return uploads

    def _accept_attribute(self) -> str:
        for name, f in self.predict_spec.declared.items():
            if f is self.predict_spec.accept:
                return f.attribute or name
        return "accept"

    def _output(self, result: Any, accept: str | None) -> ModelOutput:
        """What the server would send for ``result``, without its ``{"status", "predictions"}`` envelope."""
        if isinstance(result, ReturnedFile):
            if not result.filename or not os.path.isfile(result.filename):
                raise CommandFailed(f"Model '{self.name}' returned a file that does not exist: {result.filename!r}")
            return ModelOutput(path=result.filename, content_type=result.content_type or guess_type(result.filename))
        if isinstance(result, bytes):
            return ModelOutput(data=result, content_type=accept if accept and accept != JSON else OCTET)
        if isinstance(result, str) and accept and accept not in (JSON, "*/*") and not accept.endswith("+json"):
            return ModelOutput(data=result.encode(), content_type=accept)
        if self.response_schema is not None:
            with legacy_vocabulary_allowed():
                errors = (
                    self.response_schema().validate(result)
                    if isinstance(result, dict)
                    else {"_schema": [f"Expected an object, got {type(result).__name__}."]}
                )
            if errors:
                raise CommandFailed(
                    f"Model '{self.name}' returned a prediction that does not match its declared "
                    f"response schema: {errors}"
                )
        return ModelOutput(json=result)


def _interrupted(outcome: Any) -> None:
    """Ctrl-C while the plugin ran (the adapter reports it as the plugin's failure) ends the command."""
    if isinstance(outcome, CallFailure) and outcome.exc_type == "KeyboardInterrupt":
        raise CommandFailed("interrupted", 130)


def guess_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or OCTET


@contextlib.contextmanager
def plugin_output_to(stream: TextIO) -> Iterator[None]:
    """Send what plugin code prints (Python's and C libraries' writes to fd 1) to ``stream``
    and fd 2, so that stdout carries the command's result only."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no usable descriptors: Python's own prints are redirected all the same
        saved = None
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _stamp(epoch: float) -> str:
    """DEEPaaS's date format, as the server's training documents have it."""
    return str(datetime.datetime.fromtimestamp(epoch))


def _shown(value: Any) -> Any:
    """Validated arguments for a document: files by their metadata (as the server shows them)."""
    if isinstance(value, UploadedFile):
        return {"name": value.name, "content_type": value.content_type, "original_filename": value.original_filename}
    if isinstance(value, (list, tuple)):
        return [_shown(v) for v in value]
    if isinstance(value, dict):
        return {k: _shown(v) for k, v in value.items()}
    return value
