"""Learning what an uploaded version is, and serving it faster: its signature from one load
in a worker (the probe), and ``optimize=onnx`` (convert, compare on a probe set, serve
the graph if they agree)."""

from __future__ import annotations

import base64
import dataclasses
import random
from typing import Any, Callable

from ..engine.calls import Ok, unwrap
from ..errors import DeepaasError
from ..frameworks import Column
from ..models import ServedModel
from .artifacts import ArtifactStore
from .host import ROWS
from .records import VersionRecord, VersionStatus

PROBE_ROWS = 64
AGREEMENT_TOLERANCE = 1e-4  # largest difference of a class probability that counts as agreement


async def probe(served: ServedModel, version: VersionRecord) -> None:
    """Load the version once in a worker: its signature, or why it does not load."""
    try:
        await served.start()
        outcome = await served.dispatcher.call("describe", {}, admit=False)
        if not isinstance(outcome, Ok):
            raise unwrap_error(outcome, served.name)
        version.signature = outcome.value
        version.status, version.error = VersionStatus.READY, None
    except DeepaasError as exc:
        version.status, version.error = VersionStatus.ERROR, exc.message
    finally:
        await served.stop(0)


async def optimize(
    build: Callable[[VersionRecord], ServedModel],
    artifacts: ArtifactStore,
    version: VersionRecord,
    columns: list[Column] | None,
) -> None:
    """``optimize=onnx``: convert, compare on a probe set, serve the graph if they agree
    (``build``: a served model of a version; its report goes to ``version.optimization``)."""
    width = len(columns) if columns is not None else None
    report: dict[str, Any] = {"requested": "onnx", "serving": "original"}
    if not width:
        report["reason"] = "the model's input width is unknown, so no probe set can be made"
        version.optimization = report
        return
    rng = random.Random(int(version.sha256[:8], 16))
    probe = [[round(rng.gauss(0, 3), 4) for _ in range(width)] for _ in range(PROBE_ROWS)]
    original = build(version)
    try:
        await original.start()
        outcome = await original.dispatcher.call("to_onnx", {"probe": probe}, admit=False)
        if not isinstance(outcome, Ok):
            raise unwrap_error(outcome, version.model)
        graph = outcome.value.get("onnx") if isinstance(outcome.value, dict) else None
        if not isinstance(graph, str):
            raise DeepaasError("the worker answered no ONNX graph")
        try:
            converted = await artifacts.save(chunks_of(base64.b64decode(graph, validate=True)))
        except ValueError:
            raise DeepaasError("the worker answered an ONNX graph that is not base64") from None
        report["onnx_sha256"] = converted.sha256
        onnx_version = dataclasses.replace(version, optimization={"serving": "onnx", "onnx_sha256": converted.sha256})
        candidate = build(onnx_version)
        try:
            await candidate.start()
            answer = await candidate.dispatcher.call("predict", {ROWS: probe}, admit=False)
            if not isinstance(answer, Ok):
                raise unwrap_error(answer, version.model)
        finally:
            await candidate.stop(0)
        try:  # what the worker answered is checked here, not trusted
            report.update(agreement(outcome.value["original"], answer.value))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise DeepaasError(f"the answers cannot be compared: {type(exc).__name__}") from None
        if report["labels_agree"] == 1.0 and report["max_probability_difference"] <= AGREEMENT_TOLERANCE:
            report["serving"] = "onnx"
        else:
            report["reason"] = (
                f"the ONNX graph disagrees with the original on the probe set (tolerance {AGREEMENT_TOLERANCE:g})"
            )
    except DeepaasError as exc:
        report["reason"] = f"conversion failed: {exc.message}"
    finally:
        await original.stop(0)
    version.optimization = report


def agreement(original: list[dict[str, Any]], converted: list[dict[str, Any]]) -> dict[str, Any]:
    """How far two models' answers on the same rows agree: labels, and probabilities."""
    same = sum(
        1 for a, b in zip(original, converted) if a.get("label", a.get("value")) == b.get("label", b.get("value"))
    )
    worst = 0.0
    for a, b in zip(original, converted):
        for cls, p in (a.get("probabilities") or {}).items():
            worst = max(worst, abs(p - (b.get("probabilities") or {}).get(cls, float("nan"))))
        if "value" in a and "value" in b:
            worst = max(worst, abs(a["value"] - b["value"]))
    return {
        "probe_rows": len(original),
        "labels_agree": same / max(1, len(original)),
        "max_probability_difference": worst,
        "tolerance": AGREEMENT_TOLERANCE,
    }


def unwrap_error(outcome: Any, name: str) -> DeepaasError:
    try:
        unwrap(outcome, name, "load")
    except DeepaasError as exc:
        return exc
    return DeepaasError("unexpected outcome")


async def chunks_of(data: bytes) -> Any:
    yield data
