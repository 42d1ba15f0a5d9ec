"""The worker side of the registry: one process hosts many uploaded models.

Each worker of the registry's shared pool runs a :class:`RegistryHost` as its "plugin".
A call names its *target* (a :class:`Target`: which file, how to read it, its columns);
the host loads the file with its framework plugin on first use and keeps the most
recently used models loaded, at most ``DEEPAAS_LIKE_MAX_LOADED_MODELS`` of them. Loads
and evictions are reported to the server as events.

This module runs in worker processes only: loading a pickle runs code, and the server
process never loads an uploaded file.
"""

from __future__ import annotations

import base64
import collections
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .. import runtime
from ..engine.adapter import ModelAdapter
from ..errors import ArgumentError
from ..frameworks import Framework, LoadedModel, discover_frameworks

CAPACITY_ENV = "DEEPAAS_LIKE_MAX_LOADED_MODELS"
PRELOAD_ENV = "DEEPAAS_LIKE_PRELOAD_FRAMEWORKS"
# A host in a model's own environment: the server's framework entry points, as JSON
# ({name: "module:attr"}), loaded when the environment has no distribution that declares any
FRAMEWORKS_ENV = "DEEPAAS_LIKE_FRAMEWORKS"
ROWS = "rows"


@dataclass(frozen=True)
class Target:
    """One servable version of an uploaded model, as a worker needs to know it (picklable).

    ``columns``: the argument names whose values make a row, in order (``None``: the
    model takes only ``rows``, lists of any width). ``output_schema``: a JSON Schema
    that each row's prediction must match.
    """

    key: str
    model: str
    path: str
    library: str
    filetype: str
    columns: tuple[str, ...] | None = None
    output_schema: dict[str, Any] | None = field(default=None, hash=False)
    contained_only: bool = False  # its loading runs code: only a contained host may load it


class OutputMismatch(Exception):
    """A prediction does not match the version's declared output schema."""


class NotANumber(ValueError):
    """The model answered NaN or an infinity (inputs out of the range it can take): a 422."""

    status = 422


EXTREME = 1e15  # inputs at least this large are named when a model's answer is not a number


def _finite(value: Any) -> bool:
    """Whether every number in an answer is finite (NaN, inf and -inf are not)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


class RowError(ValueError):
    """A row of ``rows`` is not what the model takes."""


class UploadedModel:
    """An uploaded model as a plugin object: ``predict``, ``predict_batch``, ``describe``."""

    def __init__(self, loaded: LoadedModel, framework: Framework, target: Target) -> None:
        self.loaded = loaded
        self.framework = framework
        self.target = target
        self._validator = _validator(target.output_schema)
        self._trees: Any = None  # its Trees for explanations (False: not a tree model; None: not looked at)

    # --- what a call sends -------------------------------------------------------------

    def _rows(self, kwargs: Mapping[str, Any]) -> tuple[list[list[Any]], bool]:
        """The rows of one request, and whether it was a single row (given by columns)."""
        columns = self.target.columns
        if ROWS in kwargs and kwargs[ROWS] is not None:
            rows = []
            for index, row in enumerate(kwargs[ROWS]):
                if isinstance(row, Mapping):
                    if columns is None:
                        raise RowError(
                            f"rows[{index}] is an object, but this model's inputs have no names: "
                            "send each row as a list of values"
                        )
                    missing = [c for c in columns if c not in row]
                    if missing:
                        raise RowError(f"rows[{index}] lacks {', '.join(missing)}")
                    rows.append([row[c] for c in columns])
                else:
                    if columns is not None and len(row) != len(columns):
                        raise RowError(
                            f"rows[{index}] has {len(row)} values; the model takes {len(columns)}: {', '.join(columns)}"
                        )
                    rows.append(list(row))
            return rows, False
        if columns is None:
            raise RowError('this model\'s inputs are unknown: send {"rows": [[...], ...]}')
        return [[kwargs[c] for c in columns]], True

    def _checked(self, outputs: list[dict[str, Any]], rows: list[list[Any]]) -> list[dict[str, Any]]:
        for index, output in enumerate(outputs):
            if not _finite(output):  # a NaN probability would still pick a label: not a confident answer
                raise NotANumber(self._out_of_range(rows[index] if index < len(rows) else []))
        if self._validator is not None:
            for index, output in enumerate(outputs):
                errors = sorted(self._validator.iter_errors(output), key=str)
                if errors:
                    raise OutputMismatch(f"prediction {index} does not match the output schema: {errors[0].message}")
        return outputs

    def _out_of_range(self, row: list[Any]) -> str:
        names = self.target.columns or tuple(f"x{i}" for i in range(len(row)))
        extreme = [
            f"{n}={v!r}"
            for n, v in zip(names, row)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not abs(v) < EXTREME
        ]
        return "the model's answer is not a number (NaN or infinite): " + (
            f"these inputs are out of the range it can take: {', '.join(extreme)}"
            if extreme
            else "its inputs are out of the range it can take"
        )

    # --- the plugin's methods ----------------------------------------------------------------

    def predict(self, **kwargs: Any) -> Any:
        rows, single = self._rows(kwargs)
        outputs = self._checked(self.loaded.predict(rows), rows)
        return outputs[0] if single else outputs

    def predict_batch(self, requests: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Every request's rows in one call of the model; a bad request fails alone."""
        answers: list[Any] = [None] * len(requests)
        rows: list[list[Any]] = []
        spans: list[tuple[int, int, int, bool]] = []
        for index, kwargs in enumerate(requests):
            try:
                own, single = self._rows(kwargs)
            except RowError as exc:
                answers[index] = exc
                continue
            spans.append((index, len(rows), len(own), single))
            rows.extend(own)
        outputs = self.loaded.predict(rows) if rows else []
        for index, start, count, single in spans:  # a request whose answer is not a number fails alone
            try:
                answered = self._checked(outputs[start : start + count], rows[start : start + count])
            except (NotANumber, OutputMismatch) as exc:
                answers[index] = exc
                continue
            answers[index] = answered[0] if single else answered
        return answers

    def explain(
        self,
        rows: list[dict[str, Any]],
        background: list[dict[str, Any]],
        features: list[str],
        options: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """Explain ``rows`` (objects of the model's inputs, as the server sends them): shap's
        TreeExplainer for a scikit-learn tree model (:func:`~deepaas_like.engine.explainer.tree_parts`),
        else its KernelExplainer over this model's batched predictions against ``background``.
        The answer is the plugins' (see :mod:`deepaas_like.engine.explainer`)."""
        from ..engine.explainer import NotAdditive, explain_rows, explained_answers, import_shap

        names = list(self.target.columns) if self.target.columns is not None else list(features)
        if sorted(names) != sorted(features):
            raise ArgumentError(
                f"The features {', '.join(features)} are not this model's inputs: {', '.join(names)}",
                {"features": ["Not the model's inputs."]},
            )

        def predict(given: list[dict[str, Any]]) -> list[Any]:
            inputs = [[row[n] for n in names] for row in given]
            return list(self._checked(self.loaded.predict(inputs), inputs))

        request = {"rows": rows, "background": background, "features": names, "options": options}
        trees = self._tree_explainer(import_shap())
        if trees is not None:
            answers = predict(rows)
            inputs = [[row[n] for n in names] for row in rows]
            try:
                return explained_answers(rows, names, answers, options, trees.attribute(inputs, answers))
            except NotAdditive:
                self._trees = False  # the trees are not what the model answers: the Kernel path from now on
        return explain_rows(predict, request)

    def _tree_explainer(self, shap: Any) -> Any:
        """The model's :class:`~deepaas_like.engine.explainer.Trees` (built on first use), or None."""
        from ..engine.explainer import Trees, tree_parts

        if self._trees is None:
            estimator = getattr(self.loaded, "estimator", None)  # a scikit-learn model's own
            self._trees = Trees(shap, estimator) if estimator is not None and tree_parts(estimator) else False
        return self._trees or None

    def describe(self) -> dict[str, Any]:
        """The model's signature as its file tells it, as plain JSON data (a library's
        version may be a ``str`` subclass, which the server would not read back)."""
        described: dict[str, Any] = json.loads(json.dumps(self.loaded.signature.to_json(), default=str))
        return described

    def to_onnx(self, probe: list[list[Any]]) -> dict[str, Any]:
        """Convert to ONNX and compare with the original on ``probe``: the graph (base64, as a
        contained worker's answers are JSON) and the original's answers."""
        onnx_bytes = self.framework.to_onnx(self.loaded, probe)
        return {"onnx": base64.b64encode(onnx_bytes).decode("ascii"), "original": self.loaded.predict(probe)}


def _validator(schema: dict[str, Any] | None) -> Any:
    if not schema:
        return None
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


class RegistryHost:
    """The plugin of a shared registry worker: the uploaded models it has loaded, LRU."""

    def __init__(self) -> None:
        self.capacity = max(1, int(os.environ.get(CAPACITY_ENV, "20")))
        self._frameworks: dict[str, Framework] | None = None
        self._broken: dict[str, str] = {}
        self._loaded: collections.OrderedDict[str, ModelAdapter] = collections.OrderedDict()

    def predict(self, **kwargs: Any) -> Any:
        raise NotImplementedError("the registry host predicts only for a target (an uploaded model)")

    def warm(self) -> None:
        """At the worker's start: the framework plugins' cheap imports (see Framework.preload)."""
        if os.environ.get(PRELOAD_ENV) != "1":
            return
        for framework in self._discovered().values():
            framework.preload()

    def _discovered(self) -> dict[str, Framework]:
        if self._frameworks is None:
            self._frameworks, self._broken = discover_frameworks(json.loads(os.environ.get(FRAMEWORKS_ENV) or "{}"))
        return self._frameworks

    def framework(self, library: str) -> Framework:
        frameworks = self._discovered()
        try:
            return frameworks[library]
        except KeyError:
            reason = self._broken.get(library) or (
                f"no framework plugin for library '{library}' is installed "
                f"(installed: {', '.join(sorted(frameworks)) or 'none'})"
            )
            raise LookupError(reason) from None

    def adapter_for(self, target: Target) -> ModelAdapter:
        """The loaded model for ``target``, loading it (and evicting the least recently used)."""
        adapter = self._loaded.get(target.key)
        if adapter is not None:
            self._loaded.move_to_end(target.key)
            hosted = adapter.obj
            if hosted.target != target:  # the same file, read with other columns or another schema
                adapter = self._loaded[target.key] = ModelAdapter(
                    target.model, UploadedModel(hosted.loaded, hosted.framework, target)
                )
            return adapter
        started = time.perf_counter()
        framework = self.framework(target.library)
        channel = runtime.file_channel  # a contained worker: the server hands it the file
        path = channel.local_copy(target.key, target.filetype) if channel is not None else target.path
        try:
            loaded = framework.load(path, target.filetype)
        except BaseException:
            # Whatever a failed load left behind (threads, processes, memory: it may have run
            # its author's code) goes with this worker: it ends after this call, and the
            # server starts a fresh one.
            runtime.recycle = f"a failed load of {target.key}"
            raise
        finally:
            if channel is not None:
                channel.done_with(path)
        adapter = ModelAdapter(target.model, UploadedModel(loaded, framework, target))
        self._loaded[target.key] = adapter
        evicted = []
        while len(self._loaded) > self.capacity:
            key, _ = self._loaded.popitem(last=False)
            evicted.append(key)
        if runtime.event_sink is not None:
            runtime.event_sink(
                "loaded", {"key": target.key, "seconds": time.perf_counter() - started, "evicted": evicted}
            )
        return adapter
