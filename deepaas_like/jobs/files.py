"""Where a job's files live: its directory under the data directory (its inputs, its log),
and a prediction's file answer (with replicas, in the shared artifact directory, so that
every replica serves it)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..outputs import PredictionOutput
from .model import Job, JobKind

LOG_NAME = "train.log"
TASK_LOG_NAME = "job.log"
RESULT_NAME = "result"
SHARED_RESULTS = "results"  # with replicas: <artifact-dir>/results/<job id>, seen by all
INPUTS = "inputs"


class JobFiles:
    """The files of jobs under ``data_dir`` (results under ``artifacts_dir`` when ``shared``).
    Blocking: call from a thread where it matters."""

    def __init__(self, data_dir: Path, artifacts_dir: Path, shared: bool) -> None:
        self._root = data_dir / "jobs"
        self._results = artifacts_dir / SHARED_RESULTS
        self._shared = shared

    def job_dir(self, job_id: str) -> Path:
        return self._root / job_id

    def inputs_dir(self, job_id: str) -> Path:
        """Where a job's uploaded files wait for it (removed when it ends)."""
        return self.job_dir(job_id) / INPUTS

    def log_path(self, job: Job) -> Path:
        return self.job_dir(job.id) / (LOG_NAME if job.kind is JobKind.TRAINING else TASK_LOG_NAME)

    def result_path(self, job: Job) -> Path:
        """Where a prediction's file answer is kept: with replicas, in the shared artifact
        directory (every replica serves it); else in the job's own directory."""
        if self._shared:
            return self._results / job.id
        return self.job_dir(job.id) / RESULT_NAME

    def remove_inputs(self, job_id: str) -> None:
        shutil.rmtree(self.inputs_dir(job_id), ignore_errors=True)

    def read_log(self, job: Job, offset: int) -> bytes:
        """The job's log from byte ``offset`` on (empty when it has none yet)."""
        try:
            with open(self.log_path(job), "rb") as fh:
                fh.seek(offset)
                return fh.read()
        except FileNotFoundError:
            return b""

    def log_line(self, job: Job, line: str) -> None:
        """Append a time-stamped line to the job's log."""
        path = self.log_path(job)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def keep_result(self, job: Job, output: PredictionOutput) -> None:
        """Keep a prediction's file answer (see :meth:`result_path`)."""
        path = self.result_path(job)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if output.path is not None:
            shutil.copyfile(output.path, path)
        else:
            path.write_bytes(output.body or b"")

    def remove(self, job: Job) -> None:
        """Every file of an expired job: its directory, and its answer where it is elsewhere."""
        shutil.rmtree(self.job_dir(job.id), ignore_errors=True)
        if self._shared and job.result_type is not None:
            self.result_path(job).unlink(missing_ok=True)
