"""A job, as the server keeps it and as the API shows it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..files import UploadedFile


class JobKind(enum.StrEnum):
    TRAINING = "training"
    PREDICTION = "prediction"
    TEST = "test"  # model tests (deepaas_like.quality.checks)
    IMPACT = "feature_impact"
    EXPLANATIONS = "explanations_initialization"  # background rows of explanations (quality/explanations.py)
    BUILD = "dependency_build"  # an uploaded version's environment (deepaas_like.registry)

    @property
    def path(self) -> str:
        """The segment of the model's URL its jobs live under."""
        return {
            "training": "train",
            "prediction": "predictions",
            "test": "tests",
            "feature_impact": "feature-impact",
            "explanations_initialization": "explanations-initialization",
            "dependency_build": "dependencyBuild",
        }[self.value]


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def is_finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


STATUSES = tuple(JobStatus)
_RUNTIME = {"runtime": True}  # field metadata: exists only while the server runs the job


def _stamp(epoch: float | None) -> str | None:
    """DEEPaaS's date format: ``2026-11-22 11:13:42.574455`` (server local time)."""
    return str(datetime.datetime.fromtimestamp(epoch)) if epoch is not None else None


def _duration(start: float | None, end: float | None) -> str | None:
    if start is None or end is None:
        return None
    return str(datetime.timedelta(seconds=end - start))


@dataclass(eq=False)
class Job:
    """One training or asynchronous prediction of one model.

    Every field is persisted in the job store except those marked runtime, which
    only exist while the server runs the job.
    """

    id: str
    kind: JobKind
    model: str
    args: dict[str, Any]
    status: JobStatus = JobStatus.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    result_type: str | None = None  # content type of a non-JSON prediction result (a file)
    error_status: int | None = None  # HTTP status the error would have had (predictions)
    message: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    callback_url: str | None = None
    callback_status: str | None = None  # pending, delivered, failed
    callback_attempts: int = 0
    callback_error: str | None = None
    owner: str | None = None  # who started it (a user or a token): they, admins and the model's owner see it
    node: str | None = None  # the server that runs it (replicas on one store)
    heartbeat: float | None = None  # when that server last said it still runs it
    updated: float | None = None  # the last write
    cancel_requested: int | None = None  # another replica asked the one that runs it to cancel it
    # --- runtime only -----------------------------------------------------------
    task: asyncio.Task | None = field(default=None, repr=False, metadata=_RUNTIME)
    training: Any = field(default=None, repr=False, metadata=_RUNTIME)  # its TrainingRun while it runs
    inputs_dir: Path | None = field(default=None, repr=False, metadata=_RUNTIME)
    kwargs: dict[str, Any] | None = field(default=None, repr=False, metadata=_RUNTIME)
    work: Any = field(default=None, repr=False, metadata=_RUNTIME)  # a queued task's work (see submit_task)

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @classmethod
    def persisted_fields(cls) -> list[str]:
        """The names of the fields the job store keeps."""
        return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("runtime")]

    def _common(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.started is not None:
            doc["started"] = _stamp(self.started)
        if self.finished is not None:
            doc["finish_date"] = _stamp(self.finished)
            doc["duration"] = _duration(self.started or self.created, self.finished)
        if self.message:
            doc["message"] = self.message
        if self.progress is not None:
            doc["progress"] = self.progress
        if self.progress_message:
            doc["progress_message"] = self.progress_message
        if self.callback_url:
            doc["callback"] = {
                "url": self.callback_url,
                "status": self.callback_status,
                "attempts": self.callback_attempts,
                **({"error": self.callback_error} if self.callback_error else {}),
            }
        return doc

    def training_document(self, base: str) -> dict[str, Any]:
        """DEEPaaS's training document, plus queue, progress, log and callback fields."""
        doc: dict[str, Any] = {
            "date": _stamp(self.created),
            "args": self.args,
            "uuid": self.id,
            "status": self.status,
            "model": self.model,
        }
        if self.status is JobStatus.DONE:
            doc["result"] = {
                "output": self.result,
                "finish_date": _stamp(self.finished),
                "duration": _duration(self.started or self.created, self.finished),
            }
        doc.update(self._common())
        doc["links"] = {"self": f"{base}/train/{self.id}", "log": f"{base}/train/{self.id}/log"}
        return doc

    def task_document(self, base: str) -> dict[str, Any]:
        """A model test or a feature impact: its status, and its result (live for tests)."""
        url = f"{base}/{self.kind.path}/{self.id}"
        doc: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "kind": self.kind,
            "status": self.status,
            "date": _stamp(self.created),
            "args": self.args,
        }
        doc.update(self._common())
        if isinstance(self.result, dict):
            doc.update(self.result)
        links = {"self": url, "log": f"{url}/log"}
        if self.kind is JobKind.IMPACT and self.status is JobStatus.DONE:
            links["plot"] = f"{url}/plot.png"
        doc["links"] = links
        return doc

    def prediction_document(self, base: str) -> dict[str, Any]:
        """An asynchronous prediction: status, and when done the synchronous body."""
        url = f"{base}/predictions/{self.id}"
        doc: dict[str, Any] = {
            "id": self.id,
            "uuid": self.id,
            "model": self.model,
            "status": self.status,
            "date": _stamp(self.created),
            "args": self.args,
        }
        if self.status is JobStatus.DONE:
            if self.result_type is None:
                doc["result"] = self.result
            else:
                doc["result_type"] = self.result_type
        if self.status is JobStatus.ERROR and self.error_status is not None:
            doc["error_status"] = self.error_status
        doc.update(self._common())
        doc["links"] = {"self": url, **({"result": f"{url}/result"} if self.status is JobStatus.DONE else {})}
        return doc


def describe_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-friendly copy of validated arguments (files shown by their metadata)."""
    return {key: _describe(value) for key, value in values.items()}


def _describe(value: Any) -> Any:
    if isinstance(value, UploadedFile):
        return {"name": value.name, "content_type": value.content_type, "original_filename": value.original_filename}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {k: _describe(v) for k, v in value.items()}
    return value
