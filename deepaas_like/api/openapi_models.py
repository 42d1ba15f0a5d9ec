"""Each model's own paths in the OpenAPI document: metadata, readiness, predict with a
form of its arguments, asynchronous predictions and trainings, tests and feature impact.
A plugin's come from its declarations; an uploaded model's, from its input columns."""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from marshmallow import fields as ma_fields

from ..arguments import ArgumentSpec
from ..jobs.model import STATUSES
from ..models import ServedModel
from ..quality.samples import MAX_ROWS as MAX_SAMPLE_ROWS
from ..registry.rows import MAX_ROWS
from ..registry.service import Registry
from ..settings import Settings
from . import openapi_explain, openapi_oip, openapi_quality
from .openapi_registry import UPLOADED
from .openapi_schemas import error_responses, json_response


def _request_body(spec: ArgumentSpec) -> dict[str, Any] | None:
    if not spec.body_fields:
        return None
    # Arrays as repeated form fields (values=1&values=2), which is what we parse.
    explode = {
        (f.data_key or name): {"style": "form", "explode": True}
        for name, f in spec.body_fields.items()
        if isinstance(f, (ma_fields.List, ma_fields.Tuple))
    }
    form: dict[str, Any] = {"schema": spec.schema_class, **({"encoding": explode} if explode else {})}
    content: dict[str, Any] = {"multipart/form-data": form}
    if not spec.has_files:
        content["application/x-www-form-urlencoded"] = dict(form)
        content["application/json"] = {"schema": spec.schema_class}
    required = any(f.required for f in spec.body_fields.values())
    return {"required": required, "content": content}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _predict_operation(model: ServedModel) -> dict[str, Any]:
    """The predict operation: its form, and its answer in each type the model offers."""
    spec = model.predict_args
    json_schema: Any = model.response_schema or {"$ref": "#/components/schemas/Prediction"}
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    for choice in spec.accept_choices or []:
        if isinstance(choice, str) and choice not in ("application/json", "*/*"):
            content[choice] = {"schema": {"type": "string", "format": "binary"}}
    description = str(model.metadata.get("description") or "")
    if spec.accept is not None:
        description += (
            "\n\nThe response format is chosen by the `Accept` header (the response content "
            "type in Swagger UI) or an explicit `accept` argument"
            + (f": one of {', '.join(map(str, spec.accept_choices))}." if spec.accept_choices else ".")
        )
    operation: dict[str, Any] = {
        "tags": [model.name],
        "summary": f"Predict with {model.name}",
        "description": description.strip(),
        "operationId": f"{_slug(model.name)}_predict",
        "responses": {
            "200": {"description": "The prediction", "content": content},
            **error_responses(400, 413, 415, 422, 500, 501, 503, 504),
        },
    }
    body = _request_body(spec)
    if body:
        operation["requestBody"] = body
    return operation


def _job_paths(model: ServedModel, kind: str) -> dict[str, dict[str, Any]]:
    """Submit, list, get, cancel (and log or result) of trainings or predictions."""
    training = kind == "training"
    schema = {"$ref": f"#/components/schemas/{'TrainingJob' if training else 'PredictionJob'}"}
    job = {"application/json": {"schema": schema}}
    slug, tag = _slug(model.name), [model.name]
    base = f"/v2/models/{model.name}/{'train' if training else 'predictions'}/"
    callback = (
        "Add `callback_url` (an http(s) URL) to have the finished job's document POSTed there, "
        "with retries; the delivery is recorded in `callback`."
    )
    submit: dict[str, Any] = {
        "tags": tag,
        "summary": f"Start a training of {model.name}" if training else f"Predict with {model.name}, asynchronously",
        "description": (
            "Queues the training (it runs in a process of its own, first in first out) and answers its "
            "document at once; follow it with GET .../train/{uuid}. "
            if training
            else "Takes the same arguments as predict, validated at once (422), and answers 202 with the job; "
            "its URL is in Location. "
        )
        + callback,
        "operationId": f"{slug}_{'train' if training else 'submit_prediction'}",
        "responses": {
            "200" if training else "202": {"description": "The job", "content": job},
            **error_responses(400, 413, 415, 422, 501, 503),
        },
    }
    body = _request_body(model.train_args if training else model.predict_args)
    if body:
        submit["requestBody"] = body
    uuid_param = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}
    filters = [
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": [s.value for s in STATUSES]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    ]
    listed = {
        "description": "The jobs, oldest first (total in X-Total-Count)",
        "headers": {"X-Total-Count": {"schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": {"type": "array", "items": schema}}},
    }
    what = "training" if training else "prediction"
    paths: dict[str, dict[str, Any]] = {
        base: {
            "post": submit,
            "get": {
                "tags": tag,
                "summary": f"List the {what}s of {model.name}",
                "parameters": filters,
                "operationId": f"{slug}_list_{what}s",
                "responses": {"200": listed, **error_responses(422)},
            },
        },
        base + "{uuid}": {
            "parameters": [uuid_param],
            "get": {
                "tags": tag,
                "summary": f"Status of a {what} (with its result, duration or error)",
                "operationId": f"{slug}_get_{what}",
                "responses": {"200": {"description": "The job", "content": job}, **error_responses(404)},
            },
            "delete": {
                "tags": tag,
                "summary": f"Cancel a queued or running {what} (a running training's process is stopped)",
                "operationId": f"{slug}_cancel_{what}",
                "responses": {
                    "200": {"description": "The cancelled job", "content": job},
                    **error_responses(404, 409),
                },
            },
        },
    }
    if training:
        paths[base + "{uuid}/log"] = {
            "parameters": [uuid_param],
            "get": {
                "tags": tag,
                "summary": "The training's output so far (stdout, stderr and logging)",
                "operationId": f"{slug}_training_log",
                "parameters": [{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
                "responses": {
                    "200": {
                        "description": "Text; X-Log-Size is the log's size",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **error_responses(404, 422),
                },
            },
        }
    else:
        result_content: dict[str, Any] = {
            "application/json": {"schema": model.response_schema or {"$ref": "#/components/schemas/Prediction"}}
        }
        for choice in model.predict_args.accept_choices or []:
            if isinstance(choice, str) and choice not in ("application/json", "*/*"):
                result_content[choice] = {"schema": {"type": "string", "format": "binary"}}
        paths[base + "{uuid}/result"] = {
            "parameters": [uuid_param],
            "get": {
                "tags": tag,
                "summary": "The finished prediction's body, as a synchronous predict answers it",
                "operationId": f"{slug}_prediction_result",
                "responses": {
                    "200": {"description": "The prediction", "content": result_content},
                    **error_responses(404, 409),
                },
            },
        }
    return paths


def plugin_paths(spec: APISpec, model: ServedModel, settings: Settings) -> None:
    """A plugin's paths: metadata and readiness, and what it does of predict and train."""
    spec.path(
        f"/v2/models/{model.name}/",
        operations={
            "get": {
                "tags": [model.name],
                "summary": f"Metadata of {model.name}",
                "operationId": f"{_slug(model.name)}_metadata",
                "responses": {
                    "200": {
                        "description": "The model's metadata",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelMeta"}}},
                    },
                    **error_responses(404),
                },
            }
        },
    )
    spec.path(
        f"/v2/models/{model.name}/ready",
        operations={
            "get": {
                "tags": [model.name],
                "summary": f"Readiness of {model.name}",
                "operationId": f"{_slug(model.name)}_ready",
                "responses": {
                    "200": {
                        "description": "Warm, with a live worker",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "503": {
                        "description": "Not ready",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **error_responses(404),
                },
            }
        },
    )
    jobs: dict[str, dict[str, Any]] = {}
    if settings.predict_endpoint and model.can_predict:
        spec.path(f"/v2/models/{model.name}/predict/", operations={"post": _predict_operation(model)})
        spec.path(
            f"/v2/models/{model.name}/infer",
            operations={"post": openapi_oip.infer_operation(model.name, _slug(model.name), error_responses)},
        )
        jobs.update(_job_paths(model, "prediction"))
        jobs.update(_quality_paths(model, rows_required=True))
        row = model.predict_args.schema_class if not model.predict_args.has_files else None
        jobs.update(openapi_explain.explain_paths(model.name, _slug(model.name), error_responses, row))
    if settings.train_endpoint and model.can_train:
        jobs.update(_job_paths(model, "training"))
    for path, operations in jobs.items():
        parameters = operations.pop("parameters", None)
        spec.path(path, operations=operations, parameters=parameters)


def _quality_paths(model: ServedModel, rows_required: bool) -> dict[str, dict[str, Any]]:
    """Tests and feature impact of a model: each row is what its predict takes as JSON."""
    row = model.predict_args.schema_class if not model.predict_args.has_files else None
    return openapi_quality.quality_paths(model.name, _slug(model.name), error_responses, row, rows_required)


def _extra_model_paths(model: ServedModel, has_dataset: bool) -> dict[str, dict[str, Any]]:
    """The inference protocol's and the quality jobs' paths of an uploaded model (without rows,
    its tests and feature impact use the reference dataset, if it has one)."""
    name = model.name
    return {
        f"/v2/models/{name}/infer": {"post": openapi_oip.infer_operation(name, _slug(name), error_responses)},
        **_quality_paths(model, rows_required=not has_dataset),
    }


def uploaded_model_paths(
    spec: APISpec,
    registry: Registry,
    predict_endpoint: bool = True,
    public_only: bool = False,
    train_endpoint: bool = True,
) -> None:
    """Each uploaded model's own paths, like a plugin's: its form is its input columns.

    ``public_only`` (with --auth: the document is open to all): a private model's name and
    columns are not shown; it is called through the generic ``/v2/models/{name}/...`` routes."""
    for record in registry.models():
        if public_only and not record.is_public:
            continue
        name = record.name
        spec.path(
            f"/v2/models/{name}/",
            operations={
                "get": {
                    "tags": [name],
                    "summary": f"Metadata of {name} (uploaded)",
                    "operationId": f"{_slug(name)}_metadata",
                    "responses": {"200": json_response(UPLOADED, "The model"), **error_responses(404)},
                }
            },
        )
        served = registry.described(name) if predict_endpoint else None
        if served is None:
            continue
        operation = _predict_operation(served)
        operation["description"] = (
            f"Version {record.current_version}. One row as the inputs below (a form, the "
            f'query string or JSON), or up to {MAX_ROWS} rows as JSON {{"rows": [...]}}.'
        )
        operation["responses"].update(error_responses(404, 409))
        content = operation.setdefault("requestBody", {"content": {}})["content"]
        single = content.get("application/json", {}).get("schema")
        width = served.rows_args.width if served.rows_args is not None else None
        as_list = {
            "type": "array",
            "description": "The values in the inputs' order",
            **({"minItems": width, "maxItems": width} if width is not None else {}),
        }
        row = {"anyOf": [single or {"type": "object"}, as_list]}  # one row: an object of the inputs, or a list
        rows = {
            "type": "object",
            "required": ["rows"],
            "additionalProperties": False,
            "properties": {
                "rows": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ROWS,
                    "items": row,
                }
            },
        }
        content["application/json"] = {"schema": {"oneOf": [single, rows]} if single else rows}
        operation["requestBody"]["required"] = True
        spec.path(f"/v2/models/{name}/predict/", operations={"post": operation})
        current = registry.current(name)
        has_dataset = bool(current is not None and current.config.get("dataset"))
        more = {**_job_paths(served, "prediction"), **_extra_model_paths(served, has_dataset)}
        more.update(openapi_explain.explain_paths(name, _slug(name), error_responses, row))
        if train_endpoint and served.metadata.get("library") == "sklearn":
            more.update(_retrain_paths(served))
        for path, operations in more.items():
            parameters = operations.pop("parameters", None)
            for item in operations.values():  # archived, purged or made private since
                item["responses"].update(error_responses(404))
            spec.path(path, operations=operations, parameters=parameters)


def _retrain_paths(model: ServedModel) -> dict[str, dict[str, Any]]:
    """The trainings of an uploaded scikit-learn model: a retraining on the rows sent (see
    :mod:`deepaas_like.registry.retrain`), listed, followed and cancelled as a plugin's trainings."""
    paths = _job_paths(model, "training")
    submit = paths[f"/v2/models/{model.name}/train/"]["post"]
    submit["summary"] = f"Retrain {model.name}: a clone of a version's estimator fitted on new rows"
    submit["description"] = (
        "Fits a clone of the current version's estimator (`sklearn.base.clone`: the same hyper-parameters) on "
        "the rows sent, in a contained process of its own, and records the fitted model as the next version "
        "(current once ready, as an upload; its `training` names the job, the parent version, the rows and "
        "the target; the rows' features become its reference dataset). Follow it with GET .../train/{uuid}; "
        "its result names the new version. Needs `models:write` and the EDITOR role, as an upload does. "
        f"1 to {MAX_SAMPLE_ROWS} rows: JSON, a CSV body (`text/csv`, the options in the query string) or a "
        "multipart form with the CSV as its `file` part."
    )
    options = {
        "target": {"type": "string", "minLength": 1, "description": "The column to learn"},
        "version": {"type": "integer", "minimum": 1, "description": "The version to start from (default: current)"},
    }
    scalar = {"anyOf": [{"type": "number"}, {"type": "string", "nullable": True}, {"type": "boolean"}]}
    row = {"type": "object", "minProperties": 1, "additionalProperties": scalar}
    rows = {"type": "array", "minItems": 1, "maxItems": MAX_SAMPLE_ROWS, "items": row}
    submit["parameters"] = [{"name": k, "in": "query", "schema": v} for k, v in options.items()]
    submit["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["rows", "target"], "properties": {"rows": rows, **options}}
            },
            "text/csv": {"schema": {"type": "string", "description": "A header line, then one line per row"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}, **options},
                }
            },
        },
    }
    submit["responses"].update(error_responses(403, 404, 409))
    return paths
