"""Model tests: checks that tell whether a model can be trusted, before users find out.

Each check runs against a :class:`~deepaas_like.quality.predictor.Predictor` with sample
rows and ends ``succeeded`` or, when it finds a problem, ``failed`` or ``warning`` as its
configured level (``fail``, ``warn``) says; ``skip`` skips it::

    errorCheck           every sample row predicts without error
    sideEffects          the rows predicted together and one by one agree
    nullValueImputation  each feature set to null in turn does not crash the model
    longRunningService   a sustained run of sequential requests: no failure, no memory growth
    performance          single-row p50/p95 latency and batch throughput

The result has DataRobot's shape: ``overallStatus`` and ``testingStatus.{check}.{status,
message}`` with statuses ``not_tested, queued, failed, canceled, succeeded, in_progress,
aborted, warning, skipped``. Every check has its own time limit.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..errors import ArgumentError, DeepaasError
from .predictor import Predictor
from .samples import Row, features_of

CHECKS = ("errorCheck", "sideEffects", "nullValueImputation", "longRunningService", "performance")
LEVELS = ("fail", "warn", "skip")
DEFAULTS = {
    "errorCheck": "fail",
    "sideEffects": "warn",
    "nullValueImputation": "warn",
    "longRunningService": "skip",
    "performance": "warn",
}
STATUSES = ("not_tested", "queued", "failed", "canceled", "succeeded", "in_progress", "aborted", "warning", "skipped")
CHECK_TIMEOUT = 120.0
NULL_ROWS = 10  # rows tried per feature set to null
LONG_RUN_REQUESTS = 200
LONG_RUN_SECONDS = 60.0
MEMORY_GROWTH = 64 * 1024 * 1024  # more than this after the warm-up: a leak
PERFORMANCE_CALLS = 50
BATCH_ROWS = 100
FLOAT_TOLERANCE = 1e-6
IGNORED = ("pid",)  # leaves that name the serving process, not the prediction
Log = Callable[[str], None]


class Problem(Exception):
    """What a check found wrong (its message becomes the check's)."""


@dataclass
class TestRun:
    """The configuration and the live status of one run of the checks."""

    configuration: dict[str, str]
    ignore: tuple[str, ...] = IGNORED
    timeout: float = CHECK_TIMEOUT
    testing_status: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for check in CHECKS:
            level = self.configuration[check]
            self.testing_status[check] = {"status": "skipped" if level == "skip" else "queued", "message": ""}

    def document(self) -> dict[str, Any]:
        return {
            "overallStatus": self.overall_status(),
            "testingStatus": self.testing_status,
            "configuration": self.configuration,
        }

    def overall_status(self) -> str:
        statuses = [s["status"] for s in self.testing_status.values()]
        for status in ("failed", "aborted", "canceled", "in_progress", "queued", "warning"):
            if status in statuses:
                return status
        return "succeeded"

    def failed(self) -> bool:
        return any(s["status"] in ("failed", "aborted") for s in self.testing_status.values())


def configuration_of(value: Any) -> dict[str, str]:
    """A full configuration: the defaults, with what the request sets (422 for anything else)."""
    if not isinstance(value, dict):
        raise ArgumentError(
            "configuration must be an object of check: fail|warn|skip", {"configuration": ["Must be an object."]}
        )
    errors = {}
    for key, level in value.items():
        if key not in CHECKS:
            errors[key] = [f"Unknown check; one of: {', '.join(CHECKS)}."]
        elif level not in LEVELS:
            errors[key] = [f"Must be one of: {', '.join(LEVELS)}."]
    if errors:
        raise ArgumentError(f"Invalid configuration: {', '.join(errors)}", {"configuration": errors})
    return {**DEFAULTS, **value}


async def run_checks(
    predictor: Predictor, rows: list[Row], run: TestRun, log: Log, on_change: Callable[[TestRun], None] | None = None
) -> TestRun:
    """Run every check that is not skipped, in order; ``run.testing_status`` shows progress
    (and ``on_change`` hears of each change)."""
    changed = on_change or (lambda run: None)
    for name in CHECKS:
        level = run.configuration[name]
        status = run.testing_status[name]
        if level == "skip":
            continue
        status["status"] = "in_progress"
        changed(run)
        log(f"{name}: started ({level} on a problem)")
        started = time.monotonic()
        try:
            message = await asyncio.wait_for(CHECK_FUNCTIONS[name](predictor, rows, run, log), run.timeout)
            status.update(status="succeeded", message=message)
        except Problem as exc:
            status.update(status="failed" if level == "fail" else "warning", message=str(exc))
        except asyncio.TimeoutError:
            status.update(status="aborted", message=f"did not finish within {run.timeout:g} s")
        except asyncio.CancelledError:
            status.update(status="canceled", message="the test was cancelled")
            for later in CHECKS[CHECKS.index(name) + 1 :]:
                if run.testing_status[later]["status"] == "queued":
                    run.testing_status[later]["status"] = "canceled"
            changed(run)
            raise
        except DeepaasError as exc:  # the model could not be asked at all (not ready, not tabular)
            status.update(status="aborted", message=exc.message)
        log(f"{name}: {status['status']} in {time.monotonic() - started:.2f} s: {status['message']}")
        changed(run)
    log(f"overall: {run.overall_status()}")
    return run


# --- the checks ------------------------------------------------------------------------------


async def error_check(predictor: Predictor, rows: list[Row], run: TestRun, log: Log) -> str:
    errors: list[str] = []
    for index, row in enumerate(rows):
        try:
            await predictor.one(row)
        except DeepaasError as exc:
            errors.append(f"row {index}: {exc.message}")
    if errors:
        raise Problem(f"{len(errors)} of {len(rows)} rows failed; first: {errors[0]}")
    return f"all {len(rows)} rows predicted without error"


async def side_effects(predictor: Predictor, rows: list[Row], run: TestRun, log: Log) -> str:
    together = await predictor.batch(rows)
    alone = [await predictor.one(row) for row in rows]
    different = [i for i, (a, b) in enumerate(zip(together, alone)) if not same(a, b, run.ignore)]
    if different:
        first = different[0]
        raise Problem(
            f"{len(different)} of {len(rows)} rows differ between a batch and one by one; row {first}: "
            f"{_short(together[first])} against {_short(alone[first])}"
        )
    return f"{len(rows)} rows: the batch and one by one agree"


async def null_value_imputation(predictor: Predictor, rows: list[Row], run: TestRun, log: Log) -> str:
    crashes: list[str] = []
    refused: set[str] = set()
    tried = 0
    for feature in features_of(rows):
        for row in rows[:NULL_ROWS]:
            tried += 1
            try:
                await predictor.one({**row, feature: None})
            except ArgumentError:  # the model's declaration refuses a null: a clear 422, not a crash
                refused.add(feature)
            except DeepaasError as exc:
                crashes.append(f"{feature}: {exc.message}")
                break
    if crashes:
        raise Problem(f"the model fails when a feature is null; {len(crashes)} features: {crashes[0]}")
    note = f"; refused by validation (422) for {', '.join(sorted(refused))}" if refused else ""
    return f"{tried} predictions with one feature null, no failure{note}"


async def long_running_service(predictor: Predictor, rows: list[Row], run: TestRun, log: Log) -> str:
    for row in rows[:20]:  # warm-up: caches, lazy imports
        await predictor.one(row)
    before = predictor.memory()
    deadline = time.monotonic() + LONG_RUN_SECONDS
    done = failures = 0
    while done < LONG_RUN_REQUESTS and time.monotonic() < deadline:
        try:
            await predictor.one(rows[done % len(rows)])
        except DeepaasError as exc:
            failures += 1
            if failures == 1:
                log(f"longRunningService: request {done} failed: {exc.message}")
        done += 1
    after = predictor.memory()
    if failures:
        raise Problem(f"{failures} of {done} sequential requests failed")
    if before is not None and after is not None and after - before > MEMORY_GROWTH:
        raise Problem(
            f"memory grew by {(after - before) / 2**20:.0f} MiB over {done} requests "
            f"({before / 2**20:.0f} -> {after / 2**20:.0f} MiB): a leak"
        )
    growth = f", memory {before / 2**20:.0f} -> {after / 2**20:.0f} MiB" if before and after else ""
    return f"{done} sequential requests without failure{growth}"


async def performance(predictor: Predictor, rows: list[Row], run: TestRun, log: Log) -> str:
    latencies = []
    for index in range(PERFORMANCE_CALLS):
        started = time.perf_counter()
        await predictor.one(rows[index % len(rows)])
        latencies.append((time.perf_counter() - started) * 1000)
    batch = [rows[i % len(rows)] for i in range(BATCH_ROWS)]
    started = time.perf_counter()
    await predictor.batch(batch)
    rate = BATCH_ROWS / (time.perf_counter() - started)
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[max(0, math.ceil(0.95 * len(latencies)) - 1)]
    return f"single row p50 {p50:.2f} ms, p95 {p95:.2f} ms; batch of {BATCH_ROWS}: {rate:,.0f} rows/s"


CHECK_FUNCTIONS: dict[str, Callable[[Predictor, list[Row], TestRun, Log], Awaitable[str]]] = {
    "errorCheck": error_check,
    "sideEffects": side_effects,
    "nullValueImputation": null_value_imputation,
    "longRunningService": long_running_service,
    "performance": performance,
}


def same(a: Any, b: Any, ignore: tuple[str, ...] = IGNORED) -> bool:
    """Two predictions agree: equal, numbers within a tolerance, ``ignore`` keys left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - set(ignore)
        return all(k in a and k in b and same(a[k], b[k], ignore) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, ignore) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
    return a == b


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
