"""Trainings and asynchronous predictions: queued, run, cancelled, kept, recovered.

Every job is written to the :class:`JobStore` when it is created and whenever its
status changes, so a restart finds every job again; one that was queued or running
when the server stopped becomes ``interrupted``, with the reason.

* A training runs in a process of its own (it can be cancelled for real), after
  ``warm()``; its stdout, stderr and logging go to the job's log file; it may report
  progress. At most ``--max-concurrent-trainings`` run at once; the others wait, in
  order. A successful training of a plugin is recorded as a version of its storage_dir
  (:mod:`.versions`), then reloads the model's workers, before it is ``done``.
* An asynchronous prediction goes through the model's queue like a synchronous one,
  as a background call: it runs when no synchronous call is waiting, so that it never
  crowds out synchronous traffic. Its response body is kept for
  ``--prediction-retention``.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import functools
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from ..background import Background
from ..database import Database, StoreOutage
from ..engine.calls import Ok
from ..engine.process import WorkerStartFailed
from ..engine.training import describe_failure
from ..errors import Conflict, DeepaasError, NotFound
from ..jsonutil import to_jsonable
from ..models import ModelSet, ServedModel
from ..node import node_id
from ..outputs import prediction_output
from ..settings.sections import JobsSection
from .callbacks import PENDING, CallbackSender
from .files import JobFiles
from .model import Job, JobKind, JobStatus, describe_arguments
from .outbox import OUTBOX_NAME
from .replicas import Replicas
from .store import JobStore
from .versions import PluginVersions
from .writer import JobWriter

LOG = logging.getLogger(__name__)
PROGRESS_SAVE_INTERVAL = 1.0
CANCEL_WAIT = 10.0  # seconds a cancel on one replica waits for the replica that runs the job


class JobNotFound(NotFound):
    pass


class JobManager:
    def __init__(self, settings: JobsSection, models: ModelSet, db: Database) -> None:
        self._settings = settings
        self._models = models
        self._store = JobStore(db)
        self._jobs: dict[str, Job] = {}
        self._training_queue: collections.deque[Job] = collections.deque()
        self._trainings_running: set[Job] = set()
        self._background = Background("jobs")
        self._progress_saved: dict[str, float] = {}
        self._writer = JobWriter(
            self._store, Path(settings.data_dir) / OUTBOX_NAME, self._jobs.get, self._stop_overruled
        )
        self._callbacks = CallbackSender(
            settings.callback_attempts, settings.callback_backoff, self.document, self._writer.save_callback
        )
        self._shared = db.shared
        self.files = JobFiles(Path(settings.data_dir), settings.artifacts_dir, db.shared)
        self.node: str | None = None  # known once the data directory is ours (start)
        self._replicas: Replicas | None = None  # replicas on one store (see jobs/replicas.py)
        self._started_at = time.time()
        self.versions = PluginVersions(
            models, settings.models_dir, settings.keep_training_versions, self._training_runs
        )

    # --- documents and lookups ----------------------------------------------------

    def base(self, model: str) -> str:
        return f"{self._settings.base_path}/v2/models/{model}"

    def document(self, job: Job) -> dict[str, Any]:
        if job.kind in (JobKind.TEST, JobKind.IMPACT):
            return job.task_document(self.base(job.model))
        if job.kind is JobKind.TRAINING:
            doc = job.training_document(self.base(job.model))
            if job.status is JobStatus.QUEUED and job in self._training_queue:
                doc["queue_position"] = self._training_queue.index(job) + 1
            return doc
        return job.prediction_document(self.base(job.model))

    def job_dir(self, job_id: str) -> Path:
        return self.files.job_dir(job_id)

    def new_id(self) -> str:
        return uuid.uuid4().hex

    async def find(self, kind: JobKind, model: str, job_id: str, visible: Callable[[Job], bool] | None = None) -> Job:
        """:meth:`get`, asking the store first when the job is not known here: with replicas
        behind a balancer, one submitted on another replica a moment ago is found at once."""
        if job_id not in self._jobs and self._replicas is not None and len(job_id) <= 64:
            row = await self._store.load_one(job_id)
            if row is not None:
                self.mirror(row)
        return self.get(kind, model, job_id, visible)

    def get(self, kind: JobKind, model: str, job_id: str, visible: Callable[[Job], bool] | None = None) -> Job:
        """The job (404 if it does not exist, or ``visible`` says the caller may not see it)."""
        job = self._jobs.get(job_id)
        if job is None or job.kind != kind or job.model != model or (visible is not None and not visible(job)):
            what = kind.replace("_", " ").capitalize()
            raise JobNotFound(
                f"{what} '{job_id}' of model '{model}' not found", details={"model": model, "uuid": job_id}
            )
        return job

    def list(self, kind: JobKind, model: str, status: JobStatus | None = None) -> list[Job]:
        """Oldest first."""
        return [
            j
            for j in self._jobs.values()
            if j.kind == kind and j.model == model and (status is None or j.status == status)
        ]

    def counts(self) -> dict[tuple[str, JobKind, JobStatus], int]:
        counts: dict[tuple[str, JobKind, JobStatus], int] = collections.Counter()
        for job in self._jobs.values():
            counts[(job.model, job.kind, job.status)] += 1
        return counts

    @property
    def trainings_queued(self) -> int:
        return len(self._training_queue)

    def log_path(self, job: Job) -> Path:
        return self.files.log_path(job)

    def result_path(self, job: Job) -> Path:
        return self.files.result_path(job)

    # --- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Read the jobs back; those that were queued or running become interrupted (on a
        shared store: those whose replica's lease ran out; the others run elsewhere)."""
        self.node = await asyncio.to_thread(node_id, self._settings.data_dir)
        await self.versions.start()  # before the workers warm: the storage_dirs as their versions say
        if self._shared:
            self._replicas = Replicas(self, self._store, self.node, self._settings.job_lease)
        await self._writer.load()  # what the last run could not write before it stopped: first
        loaded = await self._store.load()
        self._jobs.update((job.id, job) for job in loaded)
        if self._replicas is not None:
            for job in await self._replicas.adopt([j for j in loaded if self._foreign(j)]):
                self._callbacks.schedule(job)
        for job in loaded:
            if self._foreign(job):
                continue
            if not job.is_finished:
                was = job.status
                job.status, job.finished = JobStatus.INTERRUPTED, time.time()
                job.message = f"the server stopped unexpectedly (crash or kill) while the job was {was}"
                await self._persist(job, "status", "finished", "message")
                self.files.remove_inputs(job.id)
                LOG.warning("job %s (%s of %s) %s", job.id, job.kind, job.model, job.message)
            self._callbacks.schedule(job)
        if self._jobs:
            LOG.info("job store %s: %d jobs", self._store.path, len(self._jobs))
        if self._replicas is not None:
            self._spawn(self._replicas.run())
            self._spawn(self.versions.watch())
        self._spawn(self._expire_loop())
        self._spawn(self._writer.run())

    async def close(self) -> None:
        """Server shutdown: queued and running jobs end as interrupted (this server's own)."""
        for job in self.own_unfinished():
            where = "before it started" if job.status is JobStatus.QUEUED else "while it was running"
            await self._finish(
                job,
                JobStatus.INTERRUPTED,
                result=job.result,  # what a test had done, kept
                message=f"the server was stopped {where}",
            )
        self._training_queue.clear()
        for job in self._jobs.values():
            if job.training is not None:
                job.training.kill()
        tasks = [t for t in self._background if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._callbacks.close()

    # --- replicas --------------------------------------------------------------------

    def local(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def own_unfinished(self) -> builtins.list[Job]:
        return [j for j in self._jobs.values() if not j.is_finished and j.node in (None, self.node)]

    def _foreign(self, job: Job) -> bool:
        """Whether another replica runs ``job``."""
        return self._replicas is not None and job.node not in (None, self.node)

    def mirror(self, row: Job) -> None:
        """Another replica's job as the store has it now (its copy here is replaced). A
        training that has just ended well there re-warms the model's workers here too: they
        load what it saved in the shared storage_dir(), the version it recorded (a plugin whose
        current version is already served here is left as it is: see PluginVersions.follow)."""
        if row.node == self.node:
            return
        before = self._jobs.get(row.id)
        self._jobs[row.id] = row
        if (
            row.kind is JobKind.TRAINING
            and row.status is JobStatus.DONE
            and (before is None or not before.is_finished)
            and (row.finished or 0) >= self._started_at
        ):
            model = self._models.get(row.model)
            if model is not None:
                self._spawn(self._reload_trained(model, row))

    def ended_elsewhere(self, job: Job) -> None:
        """Another replica's job that this one ended (its replica was gone): its callback."""
        self._callbacks.schedule(job)

    async def _reload_trained(self, model: ServedModel, job: Job) -> None:
        if self.versions.tracks(model):
            await self.versions.follow(model)
            return
        try:
            await model.reload()
        except WorkerStartFailed as exc:
            LOG.error(
                "model %s: training %s ended on replica %s, but the model could not be warmed again here: %s",
                model.name,
                job.id,
                job.node,
                exc,
            )
        else:
            LOG.info("model %s: workers re-warmed after training %s on replica %s", model.name, job.id, job.node)

    async def read_log(self, job: Job, offset: int = 0) -> bytes:
        """The job's log from byte ``offset`` on: its file here, or what its replica shipped."""
        if self._foreign(job):
            return await self._store.read_log(job.id, offset)
        return await asyncio.to_thread(self.files.read_log, job, offset)

    def _spawn(self, coro: Any) -> asyncio.Task:
        return self._background.spawn(coro)

    async def _finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        result: Any = None,
        message: str | None = None,
        result_type: str | None = None,
        error_status: int | None = None,
    ) -> None:
        """Record a job's end (once), clean its inputs, send its callback."""
        if job.is_finished:
            return
        job.status, job.finished, job.message = status, time.time(), message
        job.result, job.result_type, job.error_status = result, result_type, error_status
        if status is JobStatus.DONE and job.progress is not None:
            job.progress = 1.0
        job.kwargs = None
        self.files.remove_inputs(job.id)
        if self._replicas is not None:
            try:
                await self._replicas.ship_logs(job)  # complete before the others see it ended
            except StoreOutage:
                pass  # the log stays here; the end waits in the outbox, and the log is shipped with it
        await self._persist(job)
        LOG.info("%s %s of %s: %s%s", job.kind, job.id, job.model, status, f" ({message})" if message else "")
        self._callbacks.schedule(job)

    # --- writing to the store (see jobs/writer.py) -------------------------------------

    async def _persist(self, job: Job, *names: str) -> None:
        await self._writer.persist(job, *names)

    async def follow_store(self, job: Job) -> None:
        """Take the store's word for a job it has ended already (see :meth:`JobWriter.follow_store`)."""
        await self._writer.follow_store(job)

    def _stop_overruled(self, job: Job) -> None:
        """What still runs here of a job the store has ended elsewhere stops."""
        self._training_queue = collections.deque(j for j in self._training_queue if j is not job)
        if job.training is not None:
            job.training.kill()
        if job.task is not None and not job.task.done() and job.task is not asyncio.current_task():
            job.task.cancel()

    async def _create(self, job: Job, callback_url: str | None) -> Job:
        job.node, job.heartbeat = self.node, time.time()
        if callback_url:
            job.callback_url, job.callback_status = callback_url, PENDING
        await self._store.insert(job)  # durable before the client hears of the job
        self._jobs[job.id] = job
        return job

    # --- cancel -----------------------------------------------------------------

    async def cancel(self, kind: JobKind, model: str, job_id: str, visible: Callable[[Job], bool] | None = None) -> Job:
        job = self.get(kind, model, job_id, visible)
        if not job.is_finished and self._foreign(job):
            return await self._cancel_elsewhere(job)
        if job.is_finished:
            raise Conflict(
                f"{kind.replace('_', ' ').capitalize()} '{job_id}' already finished "
                f"({job.status}); only a queued or running job can be cancelled",
                details={"model": model, "uuid": job_id, "status": job.status},
            )
        if job in self._training_queue:
            self._training_queue.remove(job)
        started = job.status is JobStatus.RUNNING
        if job.kind in (JobKind.TEST, JobKind.IMPACT) and job.task is not None and not job.task.done():
            job.task.cancel()  # the task records what it had done, then ends cancelled
            await asyncio.wait({job.task}, timeout=10)
        await self._finish(
            job,
            JobStatus.CANCELLED,
            result=job.result,
            message="cancelled by request" + ("" if started else " before it started"),
        )
        if job.training is not None:
            job.training.kill()
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.wait({job.task}, timeout=10)
        return job

    async def _cancel_elsewhere(self, job: Job) -> Job:
        """Ask the replica that runs ``job`` to cancel it; the job once it did (or as it is after 10 s)."""
        assert self._replicas is not None
        await self._store.request_cancel(job.id)
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            current = self._jobs.get(job.id, job)
            if current.is_finished:
                return current
        return self._jobs.get(job.id, job)

    # --- trainings --------------------------------------------------------------

    async def submit_training(
        self,
        model: ServedModel,
        job_id: str,
        kwargs: Mapping[str, Any],
        inputs_dir: Path | None,
        callback_url: str | None = None,
        owner: str | None = None,
    ) -> Job:
        job = Job(job_id, JobKind.TRAINING, model.name, describe_arguments(kwargs), inputs_dir=inputs_dir, owner=owner)
        job.kwargs = dict(kwargs)
        await self._create(job, callback_url)
        self._training_queue.append(job)
        self._start_trainings()
        return job

    def _start_trainings(self) -> None:
        while self._training_queue and len(self._trainings_running) < self._settings.max_concurrent_trainings:
            job = self._training_queue.popleft()
            self._trainings_running.add(job)
            job.status, job.started = JobStatus.RUNNING, time.time()  # already in the answer to the POST
            job.task = self._spawn(self._run_training(job) if job.work is None else self._run_queued_task(job))

    def _training_runs(self, model: str) -> bool:
        """Whether a training of ``model`` runs, here or on another replica."""
        return any(
            j.kind is JobKind.TRAINING and j.model == model and j.status is JobStatus.RUNNING
            for j in self._jobs.values()
        )

    async def _run_training(self, job: Job) -> None:
        model = self._models[job.model]
        await self._persist(job, "status", "started")
        self.job_dir(job.id).mkdir(mode=0o700, parents=True, exist_ok=True)
        ending: tuple[JobStatus, Any, str | None] = (JobStatus.ERROR, None, "the training did not finish")
        try:
            if self.versions.tracks(model):
                await self.versions.before_training(model)  # version 1, the storage_dir before any training
            job.training = model.new_training(
                log_file=str(self.log_path(job)), on_progress=lambda fraction, note: self._progress(job, fraction, note)
            )
            ending = await self._train(model, job)
        except asyncio.CancelledError:
            ending = (JobStatus.CANCELLED, None, "cancelled")
            raise
        except Exception as exc:  # keep the server alive whatever happens here
            LOG.exception("training %s of %s failed", job.id, model.name)
            ending = (JobStatus.ERROR, None, f"{type(exc).__name__}: {exc}")
        finally:
            job.training = None
            status, result, message = ending
            await asyncio.shield(self._finish(job, status, result=result, message=message))
            self._trainings_running.discard(job)
            self._start_trainings()

    async def _train(self, model: ServedModel, job: Job) -> tuple[JobStatus, Any, str | None]:
        outcome = await job.training.run(job.kwargs or {})  # its process is gone when this returns
        if not isinstance(outcome, Ok):
            return JobStatus.ERROR, None, describe_failure(outcome)
        try:
            output = to_jsonable(outcome.value)
        except (TypeError, ValueError) as exc:
            return JobStatus.ERROR, None, f"train() returned a value that is not JSON: {exc}"
        if self.versions.tracks(model):
            try:
                snap = await self.versions.after_training(
                    model, job, output, f"{self.base(model.name)}/train/{job.id}/log"
                )
            except OSError as exc:
                return JobStatus.ERROR, None, f"training finished, but its version could not be recorded: {exc}"
            model.serve_version(snap.number)  # what the storage_dir holds; the workers follow below
        try:
            await model.reload()
        except WorkerStartFailed as exc:
            return JobStatus.ERROR, None, f"training finished, but the model could not be warmed again: {exc}"
        return JobStatus.DONE, output, None

    def _progress(self, job: Job, fraction: float, message: str | None) -> None:
        job.progress, job.progress_message = fraction, message
        now = time.monotonic()
        if now - self._progress_saved.get(job.id, 0.0) >= PROGRESS_SAVE_INTERVAL:
            self._progress_saved[job.id] = now
            self._spawn(self._persist(job, "progress", "progress_message"))

    # --- tasks: model tests, feature impact ----------------------------------------------

    async def submit_task(
        self,
        kind: JobKind,
        model: ServedModel,
        job_id: str,
        args: dict[str, Any],
        work: Callable[[Job, Callable[[str], None]], Awaitable[Any]],
        owner: str | None = None,
        *,
        as_training: bool = False,
        callback_url: str | None = None,
    ) -> Job:
        """A job that runs ``work(job, log)`` in the server (it asks the model through its queue).

        ``work`` may update ``job.result`` as it goes (the document shows it live) and
        returns the final result; ``log`` appends a line to the job's log. ``as_training``:
        it waits its turn in the trainings' queue (``--max-concurrent-trainings``), as a
        plugin's training does (an uploaded model's retraining).
        """
        job = Job(job_id, kind, model.name, args, owner=owner)
        await self._create(job, callback_url)
        if as_training:
            job.work = work
            self._training_queue.append(job)
            self._start_trainings()
        else:
            job.task = self._spawn(self._run_task(job, work))
        return job

    async def _run_queued_task(self, job: Job) -> None:
        try:
            await self._run_task(job, job.work)
        finally:
            self._trainings_running.discard(job)
            self._start_trainings()

    async def _run_task(self, job: Job, work: Callable[[Job, Callable[[str], None]], Awaitable[Any]]) -> None:
        log = functools.partial(self.files.log_line, job)

        job.status, job.started = JobStatus.RUNNING, time.time()
        await self._persist(job, "status", "started")
        try:
            result = await work(job, log)
        except asyncio.CancelledError:
            log("cancelled")
            if not job.is_finished:
                await asyncio.shield(self._finish(job, JobStatus.CANCELLED, result=job.result, message="cancelled"))
            raise
        except DeepaasError as exc:
            log(f"failed: {exc.message}")
            await self._finish(job, JobStatus.ERROR, result=job.result, message=exc.message, error_status=exc.status)
        except Exception as exc:  # keep the server alive whatever happens here
            LOG.exception("%s %s of %s failed", job.kind, job.id, job.model)
            log(f"failed: {type(exc).__name__}: {exc}")
            await self._finish(job, JobStatus.ERROR, result=job.result, message=f"{type(exc).__name__}: {exc}")
        else:
            await self._finish(job, JobStatus.DONE, result=result)

    def report_progress(self, job: Job, fraction: float, message: str | None) -> None:
        self._progress(job, fraction, message)

    # --- asynchronous predictions -------------------------------------------------

    async def submit_prediction(
        self,
        model: ServedModel,
        job_id: str,
        kwargs: Mapping[str, Any],
        inputs_dir: Path | None,
        callback_url: str | None = None,
        owner: str | None = None,
    ) -> Job:
        job = Job(
            job_id, JobKind.PREDICTION, model.name, describe_arguments(kwargs), inputs_dir=inputs_dir, owner=owner
        )
        job.kwargs = dict(kwargs)
        await self._create(job, callback_url)
        job.task = self._spawn(self._run_prediction(job, model))
        return job

    def _prediction_started(self, job: Job) -> None:
        if not job.is_finished:
            job.status, job.started = JobStatus.RUNNING, time.time()
            self._spawn(self._persist(job, "status", "started"))

    async def _run_prediction(self, job: Job, model: ServedModel) -> None:
        kwargs = job.kwargs or {}
        try:
            try:
                value = await model.predict(
                    kwargs, admit=False, background=True, on_start=lambda: self._prediction_started(job)
                )
                output = prediction_output(model, value, kwargs.get("accept"))
            except DeepaasError as exc:
                await self._finish(job, JobStatus.ERROR, message=exc.message, error_status=exc.status)
                return
            if output.is_json:
                await self._finish(job, JobStatus.DONE, result=output.json)
            else:
                await asyncio.to_thread(self.files.keep_result, job, output)
                await self._finish(
                    job, JobStatus.DONE, result={"filename": output.filename}, result_type=output.content_type
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the server alive whatever happens here
            LOG.exception("prediction %s of %s failed", job.id, model.name)
            await self._finish(job, JobStatus.ERROR, message=f"{type(exc).__name__}: {exc}", error_status=500)

    # --- retention ---------------------------------------------------------------

    async def expire(self) -> int:
        """Remove asynchronous predictions finished longer than the retention ago."""
        cutoff = time.time() - self._settings.prediction_retention
        old = [
            j
            for j in self._jobs.values()
            if j.kind is JobKind.PREDICTION
            and j.is_finished
            and j.finished is not None
            and j.finished <= cutoff
            and j.callback_status != PENDING
        ]
        if not old:
            return 0
        await self._store.delete([j.id for j in old])
        for job in old:
            del self._jobs[job.id]
            await asyncio.to_thread(self.files.remove, job)
        LOG.info("removed %d asynchronous predictions older than %ss", len(old), self._settings.prediction_retention)
        return len(old)

    async def _expire_loop(self) -> None:
        interval = min(60.0, max(0.5, self._settings.prediction_retention / 10))
        while True:
            try:
                await self.expire()
            except Exception:  # the next round tries again
                LOG.exception("removing expired predictions failed")
            await asyncio.sleep(interval)
