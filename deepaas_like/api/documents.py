"""The documents of a model: a plugin's or an upload's DEEPaaS document, and the Open
Inference Protocol's metadata merged into them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__
from ..jsonutil import stamp
from ..models import ServedModel
from ..oip import input_metadata, output_metadata
from ..registry.records import ModelRecord
from ..registry.service import Registry
from .readers import base, registry

EXTENSIONS = ["binary_tensor_data", "model_repository"]


def server_metadata() -> dict[str, Any]:
    """The protocol's server metadata (merged into ``GET /v2``)."""
    return {"name": "deepaas_like", "server_version": __version__, "extensions": EXTENSIONS}


def plugin_metadata(model: ServedModel) -> dict[str, Any]:
    """The protocol's model metadata of a plugin (merged into its DEEPaaS document)."""
    return {
        "versions": [str(model.version)],  # the one it serves (its kept ones: GET .../versions/)
        "platform": "deepaas_like_plugin",
        "inputs": input_metadata(model.predict_args),
        "outputs": [],
    }


def uploaded_metadata(request: web.Request, name: str, number: int | None = None) -> dict[str, Any]:
    """The protocol's model metadata of an uploaded model (its current version, or ``number``)."""
    reg = registry(request)
    ready = [str(v.number) for v in reg.versions(name) if v.status == "ready"]
    version = reg.version(name, number) if number is not None else reg.current(name)
    if version is None:
        return {"versions": ready, "platform": "", "inputs": [], "outputs": []}
    served = reg.described(name) if number is None else None
    inputs = input_metadata(served.predict_args) if served is not None else []
    signature = version.signature or {}
    if not inputs or not signature.get("columns"):
        width = signature.get("n_inputs") or (len(inputs) if inputs else -1)
        inputs = [{"name": "input", "datatype": "FP64", "shape": [-1, width]}, *inputs]
    return {
        "versions": ready,
        "platform": f"{version.library}_{version.filetype}",
        "inputs": inputs,
        "outputs": output_metadata(signature),
    }


def uploaded_document(request: web.Request, name: str) -> dict[str, Any]:
    reg = registry(request)
    model = reg.record(name, archived_ok=True)
    return model_document(reg, model, base(request))


def model_document(reg: Registry, model: ModelRecord, base_path: str) -> dict[str, Any]:
    href = f"{base_path}/v2/models/{model.name}"
    current = reg.current(model.name) if model.name in reg else None
    doc: dict[str, Any] = {
        "id": model.name,
        "name": model.name,
        "source": "upload",
        "description": model.description,
        "is_public": model.is_public,
        "current_version": model.current_version,
        "version_count": len(reg.versions(model.name)),
        "library": current.library if current else None,
        "filetype": current.filetype if current else None,
        "created_at": stamp(model.created),
        "updated_at": stamp(model.updated),
        "last_predict_at": stamp(model.last_predict),
        "archived": model.archived is not None,
    }
    if model.archived is not None:
        doc["archived_at"] = stamp(model.archived)
    if current is not None and current.signature:
        doc["signature"] = current.signature
    doc["links"] = [
        {"rel": "self", "href": href},
        {"rel": "versions", "href": f"{href}/versions/"},
        {"rel": "predict", "href": f"{href}/predict/"},
    ]
    return doc
