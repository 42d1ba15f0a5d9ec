"""The data plane: what every caller asks of the models, in one place.

A prediction from a request's arguments, the Open Inference Protocol's infer, a job
(an asynchronous prediction or a training), model tests and feature impact: the HTTP
handlers parse a request and render what comes back; which model answers, how its
arguments are checked, when it must be ready and how a job is made are decided here.
Every call reaches a model through :meth:`ServedModel.predict
<deepaas_like.models.ServedModel.predict>` (or :meth:`~deepaas_like.models.ServedModel.predict_rows`),
so each one is queued, counted and bookkept alike.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Mapping

from .arguments import ArgumentSources, ArgumentSpec
from .engine.calls import unwrap
from .engine.explainer import BACKGROUND_LIMIT
from .errors import ArgumentError, Conflict, NotFound, NotImplementedByModel
from .jobs.manager import JobManager
from .jobs.model import Job, JobKind
from .models import ModelSet, ServedModel
from .oip import ProtocolError, Tensor, output_tensors, rows_from_tensors
from .outputs import PredictionOutput, prediction_output
from .quality.checks import TestRun, run_checks
from .quality.explanations import (
    MAX_BACKGROUND_ROWS,
    OPTIONS,
    InitializationStore,
    explain_options,
    initialization_route,
)
from .quality.impact import feature_impact
from .quality.predictor import ServedPredictor, check_tabular
from .quality.samples import Row, features_of

Log = Callable[[str], None]


class DataPlane:
    """The served plugins and uploaded models (``models``) and their jobs (``jobs``), as
    every caller uses them."""

    def __init__(self, models: ModelSet, jobs: JobManager, explanations_dir: Path) -> None:
        self.models = models
        self.jobs = jobs
        self.initializations = InitializationStore(explanations_dir)  # the explanations' background rows
        self._backgrounds: dict[tuple[str, tuple[str, ...], str], list[dict[str, Any]]] = {}  # reference datasets'

    async def model(self, name: str, version: int | None = None) -> ServedModel:
        """A plugin, or a version (the current one by default) of an uploaded model: 404 naming
        the served ones when there is none, 409 when the version cannot serve."""
        return await self.models.servable(name, version)

    # --- predictions ------------------------------------------------------------------

    async def predict(self, model: ServedModel, sources: ArgumentSources) -> PredictionOutput:
        """Check a request's arguments against the model's declaration (a 422 never reaches a
        worker), predict through its queue, and shape the answer as the arguments ask."""
        kwargs = model.predict_arguments(sources).load(sources)
        return prediction_output(model, await model.predict(kwargs), kwargs.get("accept"))

    async def infer(self, model: ServedModel, payload: Mapping[str, Any], tensors: list[Tensor]) -> dict[str, Any]:
        """The Open Inference Protocol's infer: a request's input tensors become rows of the
        model's arguments, every row is predicted, and the answers become output tensors.
        Raises :class:`~deepaas_like.oip.ProtocolError` for what the protocol refuses."""
        parameters = payload.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError("parameters must be an object")
        arguments = [a for a in model.predict_args.accepted if a != "accept"]
        uploaded = model.rows_args is not None
        rows, _ = rows_from_tensors(tensors, arguments, len(arguments) if uploaded else None, parameters)
        outputs = output_tensors(await model.predict_rows(rows), requested_outputs(payload))
        answer: dict[str, Any] = {"model_name": model.name, "outputs": outputs}
        if uploaded and model.metadata.get("version") is not None:
            answer["model_version"] = str(model.metadata["version"])
        if "id" in payload:
            answer["id"] = payload["id"]
        if parameters:
            answer["parameters"] = parameters
        return answer

    # --- jobs: asynchronous predictions and trainings ---------------------------------

    @staticmethod
    def job_arguments(model: ServedModel, kind: JobKind) -> ArgumentSpec:
        """The declaration a job's arguments are read against (501 if the model cannot do it)."""
        training = kind is JobKind.TRAINING
        if not (model.can_train if training else model.can_predict):
            method = "train" if training else "predict"
            raise NotImplementedByModel(
                f"Model '{model.name}' does not implement {method}()", details={"model": model.name}
            )
        return model.train_args if training else model.predict_args

    async def submit(
        self,
        kind: JobKind,
        model: ServedModel,
        job_id: str,
        sources: ArgumentSources,
        inputs_dir: Path | None,
        callback_url: str | None,
        owner: str | None,
    ) -> Job:
        """A training or an asynchronous prediction, its arguments checked first (422 now, not
        a failed job later), written to the store before its caller hears of it."""
        spec = self.job_arguments(model, kind)
        training = kind is JobKind.TRAINING
        kwargs = (spec if training else model.predict_arguments(sources)).load(sources)
        await model.wait_ready()
        submit = self.jobs.submit_training if training else self.jobs.submit_prediction
        return await submit(model, job_id, kwargs, inputs_dir, callback_url, owner=owner)

    # --- model tests and feature impact ---------------------------------------------------

    async def predicting(self, name: str) -> ServedModel:
        """A model (an uploaded one's current version) that predicts, once it is ready."""
        model = await self.model(name)
        if not model.can_predict:
            raise Conflict(f"Model '{model.name}' does not predict", details={"model": model.name})
        await model.wait_ready()
        return model

    def sample_rows(self, name: str, rows: list[Row] | None, row_count: int | None, seed: int) -> list[Row]:
        """The rows given, or the reference dataset of an uploaded model's current version;
        ``row_count`` of them drawn with ``seed`` when fewer are asked for."""
        if rows is None and self.models.is_uploaded(name):
            rows = self.models.uploads.datasets.rows(name)
        if rows is None:
            raise ArgumentError(
                "Give sample rows: JSON {\"rows\": [...]} or a CSV file as the 'data' part "
                "(an uploaded model may keep a reference dataset: PUT .../versions/{n}/dataset)",
                {"rows": ["Missing data for required field."]},
            )
        if row_count is not None and row_count < len(rows):
            rows = random.Random(seed).sample(rows, row_count)
        return rows

    async def start_tests(
        self,
        model: ServedModel,
        rows: list[Row],
        run: TestRun,
        *,
        lenient: bool,
        owner: str | None,
    ) -> Job:
        """Model tests of ``model`` on ``rows`` as a job (its document shows each check as it ends)."""
        check_rows(model, rows, lenient)
        predictor = ServedPredictor(model)

        async def work(job: Job, log: Log) -> dict[str, Any]:
            job.result = run.document()
            log(f"model tests of {model.name}: {len(rows)} sample rows; configuration {run.configuration}")
            await run_checks(predictor, rows, run, log, on_change=lambda r: job.result.update(r.document()))
            return run.document()

        args = {"rows": len(rows), "configuration": run.configuration, "ignore": list(run.ignore)}
        return await self.jobs.submit_task(JobKind.TEST, model, self.jobs.new_id(), args, work, owner=owner)

    async def start_impact(
        self,
        model: ServedModel,
        rows: list[Row],
        *,
        seed: int,
        repeats: int,
        lenient: bool,
        owner: str | None,
    ) -> Job:
        """Feature impact of ``model`` over ``rows`` as a job (422 unless the model is tabular)."""
        features = features_of(rows)
        check_tabular(model.name, model.predict_args, features)
        check_rows(model, rows, lenient)
        predictor = ServedPredictor(model)
        jobs = self.jobs

        async def work(job: Job, log: Log) -> dict[str, Any]:
            log(
                f"feature impact of {model.name}: {len(rows)} rows, {len(features)} features, {repeats} repeats, "
                f"seed {seed}"
            )
            return await feature_impact(
                predictor,
                rows,
                features,
                seed=seed,
                repeats=repeats,
                log=log,
                progress=lambda fraction, note: jobs.report_progress(job, fraction, note),
            )

        args = {"rowCount": len(rows), "features": features, "seed": seed, "repeats": repeats}
        return await jobs.submit_task(JobKind.IMPACT, model, jobs.new_id(), args, work, owner=owner)

    # --- prediction explanations ----------------------------------------------------------

    async def start_initialization(
        self, model: ServedModel, rows: list[Row], *, lenient: bool, owner: str | None
    ) -> Job:
        """Keep ``rows`` as the background of ``model``'s explanations, as a job: each row checked
        like a prediction's (422 now), the model tabular (422), stored with the model (it survives
        restarts; a new initialization replaces the old one)."""
        if not rows or len(rows) > MAX_BACKGROUND_ROWS:
            raise ArgumentError(
                f"An initialization takes 1 to {MAX_BACKGROUND_ROWS} rows ({len(rows)} given)",
                {"rows": [f"Must have 1 to {MAX_BACKGROUND_ROWS} rows."]},
            )
        features = features_of(rows)
        check_tabular(model.name, model.predict_args, features)
        loaded = check_rows(model, rows, lenient)
        kept = [{f: kwargs.get(f) for f in features} for kwargs in loaded]
        store = self.initializations

        async def work(job: Job, log: Log) -> dict[str, Any]:
            document = store.put(model.name, features, kept, job.id)
            log(f"explanations initialization of {model.name}: {len(kept)} rows, features {', '.join(features)}")
            return {"rowCount": document["rowCount"], "features": features}

        args = {"rowCount": len(rows), "features": features}
        return await self.jobs.submit_task(JobKind.EXPLANATIONS, model, self.jobs.new_id(), args, work, owner=owner)

    def background(self, model: ServedModel) -> tuple[list[str], list[Row]]:
        """The features and background rows of ``model``'s explanations: its initialization, else
        (an uploaded version) its reference dataset, a seeded sample of at most
        :data:`~deepaas_like.engine.explainer.BACKGROUND_LIMIT` rows; 409 saying how to give one.
        An uploaded model's features are its inputs, in their order."""
        initialization = self.initializations.get(model.name)
        if model.rows_args is None:
            document = initialization or self.initializations.required(model.name)
            return list(document["features"]), document["rows"]
        inputs = model_inputs(model)
        if initialization is not None:
            if sorted(initialization["features"]) != sorted(inputs):
                raise Conflict(
                    f"The explanations initialization of model '{model.name}' gives "
                    f"{', '.join(initialization['features'])}; this version takes {', '.join(inputs)}: "
                    f"POST {initialization_route(model.name)} with rows of its inputs",
                    details={"model": model.name, "initialization": initialization_route(model.name)},
                )
            return inputs, initialization["rows"]
        return inputs, self._dataset_background(model, inputs)

    def _dataset_background(self, model: ServedModel, inputs: list[str]) -> list[Row]:
        """An uploaded version's reference dataset as background rows (kept by file: it is
        read, checked and sampled once)."""
        number = int(model.metadata["version"])
        try:
            path = self.models.uploads.datasets.path(model.name, number)
        except NotFound:
            raise Conflict(
                f"Model '{model.name}' has no background rows for its explanations: POST "
                f"{initialization_route(model.name)} with rows (its explanations initialization), or keep a "
                f"reference dataset with the version: PUT /v2/models/{model.name}/versions/{number}/dataset (a CSV)",
                details={"model": model.name, "initialization": initialization_route(model.name)},
            ) from None
        key = (model.name, tuple(inputs), str(path))
        kept = self._backgrounds.get(key)
        if kept is None:
            from .quality.samples import rows_from_csv

            rows = rows_from_csv(path.read_bytes())
            missing = [c for c in inputs if c not in rows[0]]
            if missing:
                raise Conflict(
                    f"The reference dataset of version {number} of model '{model.name}' lacks its inputs "
                    f"{', '.join(missing)}: PUT one with them, or POST {initialization_route(model.name)} with rows",
                    details={"model": model.name, "version": number},
                )
            if len(rows) > BACKGROUND_LIMIT:
                rows = random.Random(0).sample(rows, BACKGROUND_LIMIT)
            kept = check_rows(model, [{c: row[c] for c in inputs} for row in rows], lenient=True)
            if len(self._backgrounds) >= 64:
                self._backgrounds.clear()
            self._backgrounds[key] = kept
        return kept

    async def explain(
        self, model: ServedModel, sources: ArgumentSources, options: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Explain one prediction (the request's arguments, checked as predict checks them) or
        ``{"rows": [...]}`` (each checked leniently, the bad one named; an uploaded model's may be
        lists of its inputs' values): computed in the model's workers against its
        :meth:`background` (409 without one); see :mod:`deepaas_like.engine.explainer` for the
        answer's shape."""
        if not model.can_predict:
            raise NotImplementedByModel(
                f"Model '{model.name}' does not implement predict()", details={"model": model.name}
            )
        check_tabular(model.name, model.predict_args, [])  # a model of files: 422 before the 409
        if model.rows_args is not None and not model_inputs(model):
            raise ArgumentError(
                f"Model '{model.name}' does not say what its inputs are: its predictions cannot be explained",
                {"model": ["Inputs unknown."]},
            )
        features, background = self.background(model)
        given = sources.json.get("rows") if isinstance(sources.json, dict) else None
        if given is not None:
            from .quality.samples import checked_rows

            if model.rows_args is not None and isinstance(given, list):
                given = [as_object(i, row, features) for i, row in enumerate(given)]
            rows = check_rows(model, checked_rows(given), lenient=True)
        else:
            rows = [model.predict_args.load(sources)]
        request = {"rows": rows, "background": background, "features": features, "options": options}
        await model.wait_ready()
        answer: list[dict[str, Any]] = unwrap(await model.dispatcher.call("explain", request), model.name, "explain")
        return answer

    async def explain_tensors(
        self, model: ServedModel, payload: Mapping[str, Any], tensors: list[Tensor]
    ) -> dict[str, Any]:
        """The Open Inference Protocol's explain: the input tensors' rows (as infer reads them;
        ``parameters`` carry the options) explained; the outputs ``strength`` [rows, features]
        FP64 (0 for a row the thresholds leave out), ``expected_value``, ``prediction`` and
        ``explained`` [rows], the features named in ``parameters``."""
        parameters = payload.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError("parameters must be an object")
        arguments = model_inputs(model)
        rows, _ = rows_from_tensors(
            tensors, arguments, len(arguments) if model.rows_args is not None else None, parameters
        )
        options = explain_options({k: v for k, v in parameters.items() if k in OPTIONS})
        features = self.background(model)[0]
        options["maxExplanations"] = len(features)
        answers = await self.explain(model, ArgumentSources(json={"rows": rows}), options)
        strengths: list[float] = []
        for row in answers:
            by_feature = {e["feature"]: e["strength"] for e in row["predictionExplanations"]}
            strengths.extend(float(by_feature.get(f, 0.0)) for f in features)
        summary = [
            {
                "prediction": row["prediction"],
                "expected_value": float(row.get("expectedValue", 0.0)),
                "explained": bool(row["predictionExplanations"]),
            }
            for row in answers
        ]
        strength = {
            "name": "strength",
            "datatype": "FP64",
            "shape": [len(answers), len(features)],
            "data": strengths,
            "parameters": {"features": features},
        }
        answer: dict[str, Any] = {
            "model_name": model.name,
            "outputs": [strength, *output_tensors(summary)],
            "parameters": {**parameters, "features": features},
        }
        if "id" in payload:
            answer["id"] = payload["id"]
        return answer


def check_rows(model: ServedModel, rows: list[Row], lenient: bool) -> list[dict[str, Any]]:
    """Each row as the model's predict takes it: one it refuses is a 422 now, not a failed job
    later (the first such row is named). ``lenient``: the rows came as text (a CSV file)."""
    loaded = []
    for index, row in enumerate(rows):
        try:
            loaded.append(model.predict_args.load(ArgumentSources(json=row, lenient=lenient)))
        except ArgumentError as exc:
            raise ArgumentError(f"Row {index}: {exc.message}", {"rows": {str(index): exc.errors}}) from None
    return loaded


def model_inputs(model: ServedModel) -> list[str]:
    """The names of the model's inputs in their declared order (an uploaded model's columns,
    ``x0``… when only counted)."""
    return list(model.predict_args.body_fields)


def as_object(index: int, row: Any, features: list[str]) -> Any:
    """Row ``index`` given as a list of the inputs' values as an object of them (422 when it has
    not one value per input; anything else as it is: :func:`~deepaas_like.quality.samples.checked_rows`
    says what is wrong with it)."""
    if not isinstance(row, list):
        return row
    if len(row) != len(features):
        raise ArgumentError(
            f"rows[{index}] has {len(row)} values; the model takes {len(features)}: {', '.join(features)}",
            {"rows": [f"Row {index}: {len(row)} values, not {len(features)}."]},
        )
    return dict(zip(features, row, strict=True))


def requested_outputs(payload: Mapping[str, Any]) -> list[str] | None:
    """The output tensors an infer request names (None: all of them)."""
    wanted = payload.get("outputs")
    if wanted is None:
        return None
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted):
        raise ProtocolError("outputs must be a list of objects with a name")
    return [o["name"] for o in wanted]
