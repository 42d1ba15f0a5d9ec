"""Trainings: each runs in a process of its own, so that it can really be cancelled.

A training process imports the plugin, runs ``warm()`` (as DEEPaaS did) and then
``train(**args)``. When it succeeds the model's predict workers are reloaded (fresh
processes run ``warm()`` again) before the training is reported ``done``, so every
later prediction uses what the training saved.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .adapter import CallFailure
from .arguments import describe_arguments
from .errors import Conflict, NotFound
from .jsonutil import to_jsonable
from .models import ServedModel
from .process import WorkerDied, WorkerProcess, WorkerStartFailed
from .runners import mp_context
from .settings import Settings
from .worker import WorkerConfig

LOG = logging.getLogger(__name__)

RUNNING, DONE, ERROR, CANCELLED = "running", "done", "error", "cancelled"
FINISHED = {DONE, ERROR, CANCELLED}


class TrainingNotFound(NotFound):
    pass


def _now() -> datetime.datetime:
    return datetime.datetime.now()


@dataclass(eq=False)
class TrainingJob:
    """One training of one model."""

    id: str
    model: str
    args: dict[str, Any]
    created: datetime.datetime = field(default_factory=_now)
    status: str = RUNNING
    finished: datetime.datetime | None = None
    result: Any = None
    message: str | None = None
    inputs_dir: Path | None = None
    task: asyncio.Task | None = None
    worker: WorkerProcess | None = None

    def finish(self, status: str, *, result: Any = None, message: str | None = None) -> None:
        if self.status in FINISHED:
            return
        self.status, self.result, self.message = status, result, message
        self.finished = _now()

    def document(self) -> dict[str, Any]:
        """DEEPaaS's training document (``date``, ``args``, ``uuid``, ``status``...)."""
        doc: dict[str, Any] = {
            "date": str(self.created),
            "args": self.args,
            "uuid": self.id,
            "status": self.status,
            "model": self.model,
        }
        if self.status == DONE and self.finished is not None:
            doc["result"] = {
                "output": self.result,
                "finish_date": str(self.finished),
                "duration": str(self.finished - self.created),
            }
        elif self.finished is not None:
            doc["finish_date"] = str(self.finished)
            doc["duration"] = str(self.finished - self.created)
        if self.message:
            doc["message"] = self.message
        return doc


class TrainingManager:
    """Starts, lists and cancels the trainings of every served model."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._jobs: dict[str, TrainingJob] = {}
        self._context = mp_context(settings.start_method)

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def inputs_dir(self, job_id: str) -> Path:
        """Where the uploaded files of a training are kept while it runs."""
        return Path(self._settings.data_dir) / "trainings" / job_id / "inputs"

    def submit(
        self, model: ServedModel, job_id: str, kwargs: Mapping[str, Any], inputs_dir: Path | None
    ) -> TrainingJob:
        job = TrainingJob(job_id, model.name, describe_arguments(kwargs), inputs_dir=inputs_dir)
        self._jobs[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, model, dict(kwargs)))
        LOG.info("model %s: training %s started with %s", model.name, job.id, job.args)
        return job

    def count_by_status(self, model: str) -> dict[str, int]:
        counts = {status: 0 for status in (RUNNING, DONE, ERROR, CANCELLED)}
        for job in self._jobs.values():
            if job.model == model:
                counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    def list(self, model: str) -> list[TrainingJob]:
        return [job for job in self._jobs.values() if job.model == model]

    def get(self, model: str, job_id: str) -> TrainingJob:
        job = self._jobs.get(job_id)
        if job is None or job.model != model:
            raise TrainingNotFound(
                f"Training '{job_id}' of model '{model}' not found",
                details={"model": model, "uuid": job_id},
            )
        return job

    async def cancel(self, model: str, job_id: str) -> TrainingJob:
        job = self.get(model, job_id)
        if job.status in FINISHED:
            raise Conflict(
                f"Training '{job_id}' already finished ({job.status}); only a running training can be cancelled",
                details={"model": model, "uuid": job_id, "status": job.status},
            )
        job.finish(CANCELLED, message="cancelled by request")
        await self._stop_task(job)
        LOG.info("model %s: training %s cancelled", model, job_id)
        return job

    async def _stop_task(self, job: TrainingJob) -> None:
        if job.worker is not None:
            job.worker.kill()
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.wait({job.task}, timeout=10)

    async def _run(self, job: TrainingJob, model: ServedModel, kwargs: dict[str, Any]) -> None:
        settings = self._settings
        config = WorkerConfig(
            model=model.name,
            warm=settings.warm,
            storage_dir=str(settings.models_dir / model.name),
            log_level=settings.log_level,
        )
        worker = WorkerProcess(model.ref, config, self._context)
        job.worker = worker
        outcome: tuple[str, Any, str | None] = (ERROR, None, "the training did not finish")
        try:
            outcome = await self._train(worker, model, kwargs)
        except WorkerStartFailed as exc:
            outcome = (ERROR, None, f"the training process could not load the model: {exc}")
        except WorkerDied as exc:
            outcome = (ERROR, None, f"the training process died (exit code {exc.exitcode})")
        except asyncio.CancelledError:
            outcome = (CANCELLED, None, "cancelled")
            raise
        except Exception as exc:  # keep the server alive whatever happens here
            LOG.exception("model %s: training %s failed", model.name, job.id)
            outcome = (ERROR, None, f"{type(exc).__name__}: {exc}")
        finally:
            # Release everything before the status says the training is over.
            await asyncio.shield(worker.stop(timeout=0 if job.status == CANCELLED else 2.0))
            job.worker = None
            if job.inputs_dir is not None:
                shutil.rmtree(job.inputs_dir.parent, ignore_errors=True)
            status, result, message = outcome
            job.finish(status, result=result, message=message)
            LOG.info("model %s: training %s %s", model.name, job.id, job.status)

    async def _train(
        self, worker: WorkerProcess, model: ServedModel, kwargs: dict[str, Any]
    ) -> tuple[str, Any, str | None]:
        await worker.start()
        kind, value = await worker.call("train", kwargs)
        if kind == "err":
            return ERROR, None, _failure_text(value)
        try:
            output = to_jsonable(value)
        except (TypeError, ValueError) as exc:
            return ERROR, None, f"train() returned a value that is not JSON: {exc}"
        try:
            await model.runner.reload()
        except WorkerStartFailed as exc:
            return ERROR, None, f"training finished, but the model could not be warmed again: {exc}"
        await model.refresh_metadata()
        return DONE, output, None

    async def close(self) -> None:
        """Stop every running training (server shutdown)."""
        running = [job for job in self._jobs.values() if job.status not in FINISHED]
        for job in running:
            job.finish(CANCELLED, message="the server stopped")
        await asyncio.gather(*(self._stop_task(job) for job in running), return_exceptions=True)


def _failure_text(failure: CallFailure) -> str:
    return f"{failure.exc_type}: {failure.message}" if failure.message else failure.exc_type
