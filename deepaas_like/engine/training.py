"""A training runs in a worker process of its own, beside the model's runner.

Its own process means it can be cancelled for real (the process is killed) and that
nothing it does in ``train()`` reaches the workers that serve predictions. The process
imports the plugin, runs ``warm()`` and then ``train(**kwargs)``; what it prints goes to
the training's log file, and ``report_progress()`` reaches ``on_progress``::

    run = TrainingRun(launcher, log_file="/data/jobs/ab12/train.log", on_progress=show)
    outcome = await run.run({"epochs": 5})     # Ok(train's return value), or why not
    run.kill()                                 # from elsewhere: cancel it
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Mapping

from ..errors import ModelUnavailable
from .calls import Outcome, Unserved
from .process import WorkerLauncher, WorkerLost, WorkerStartFailed

STOP_TIMEOUT = 2.0


class TrainingStartFailed(ModelUnavailable):
    """The training process could not import or warm the plugin."""


class TrainingRun:
    """One training of one model, in a process that lives only for it."""

    def __init__(
        self,
        launcher: WorkerLauncher,
        *,
        log_file: str | None = None,
        on_progress: Callable[[float, str | None], None] | None = None,
    ) -> None:
        self._worker = launcher.worker(log_file=log_file, on_progress=on_progress)
        self.killed = False

    async def run(self, kwargs: Mapping[str, Any]) -> Outcome:
        """Start the process, run ``train(**kwargs)``, stop the process; the call's outcome.

        The process is gone when this returns, whatever happened (cancellation too).
        """
        try:
            try:
                await self._worker.start()
            except WorkerStartFailed as exc:
                return Unserved(TrainingStartFailed(f"the training process could not load the model: {exc}"))
            return await self._worker.call("train", dict(kwargs))
        finally:
            await asyncio.shield(self._worker.stop(timeout=0 if self.killed else STOP_TIMEOUT))

    def kill(self) -> None:
        """Stop the training now (cancel): its process is killed."""
        self.killed = True
        self._worker.kill()


def describe_failure(outcome: Outcome) -> str:
    """Why a training that did not return ended, in words for its document."""
    if isinstance(outcome, Unserved):
        error = outcome.error
        if isinstance(error, WorkerLost):
            return f"the training process died (exit code {error.exitcode})"
        return error.message
    text = getattr(outcome, "text", None)
    return text if isinstance(text, str) else "the training did not finish"
