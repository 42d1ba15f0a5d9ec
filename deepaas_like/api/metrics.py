"""Prometheus metrics at ``/metrics``, in a registry owned by the application.

Request counts and latencies are recorded by the front door
(:mod:`deepaas_like.api.front_door`) as plain numbers (:class:`HttpStats`); model
state (readiness, workers, queue depth, restarts, batch sizes, trainings) is read from
the models when ``/metrics`` is scraped, so the hot path does no extra work for it.
"""

from __future__ import annotations

import bisect
import collections
import itertools
from typing import Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..engine.shared import LOAD_BUCKETS
from ..jobs.manager import JobManager
from ..jobs.model import JobKind, JobStatus
from ..models import ModelSet

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ModelStateCollector:
    """Gauges and counters read from the served models at scrape time."""

    def __init__(self, models: ModelSet, jobs: JobManager) -> None:
        self._models = models
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "deepaas_model_ready", "1 when the model is warm and has a live worker", labels=["model"]
        )
        workers = GaugeMetricFamily("deepaas_model_workers", "Live workers of the model", labels=["model"])
        busy = GaugeMetricFamily("deepaas_model_workers_busy", "Workers running a call now", labels=["model"])
        queue = GaugeMetricFamily("deepaas_queue_depth", "Predictions waiting for a worker", labels=["model"])
        restarts = CounterMetricFamily(
            "deepaas_worker_restarts", "Workers replaced after they died or overran a timeout", labels=["model"]
        )
        batches = HistogramMetricFamily("deepaas_batch_size", "Predictions per batched call", labels=["model"])
        jobs = GaugeMetricFamily(
            "deepaas_jobs",
            "Trainings and asynchronous predictions known to the server",
            labels=["model", "kind", "status"],
        )
        queued = GaugeMetricFamily("deepaas_training_queue_length", "Trainings waiting for a free training slot")
        queued.add_metric([], self._jobs.trainings_queued)
        counts = self._jobs.counts()
        for name, model in self._models.items():
            state = model.runner.describe()
            ready.add_metric([name], 1.0 if model.is_ready else 0.0)
            workers.add_metric([name], state["workers"])
            busy.add_metric([name], state["busy"])
            queue.add_metric([name], model.waiting)
            restarts.add_metric([name], model.runner.restarts)
            if model.dispatcher.batching:
                sizes = model.dispatcher.stats.sizes
                cumulative, buckets = 0, []
                for bound in BATCH_BUCKETS:
                    cumulative = sum(count for size, count in sizes.items() if size <= bound)
                    buckets.append((str(bound), cumulative))
                buckets.append(("+Inf", sum(sizes.values())))
                batches.add_metric([name], buckets, sum_value=sum(size * count for size, count in sizes.items()))
            for kind in JobKind:
                for status in JobStatus:
                    jobs.add_metric([name, kind, status], counts.get((name, kind, status), 0))
        yield from (ready, workers, busy, queue, restarts, batches, jobs, queued)
        yield from self._registry()

    def _registry(self) -> Iterator[Metric]:
        """The shared workers of uploaded models: loads, evictions, load times, loaded models."""
        uploads = self._models.uploads
        if uploads is None:
            return
        stats, loaded_now = uploads.load_stats()
        loads = CounterMetricFamily("deepaas_registry_loads", "Uploaded models loaded into a shared worker")
        loads.add_metric([], stats.loads)
        evictions = CounterMetricFamily(
            "deepaas_registry_evictions", "Uploaded models unloaded to make room (--max-loaded-models)"
        )
        evictions.add_metric([], stats.evictions)
        seconds = HistogramMetricFamily("deepaas_registry_load_seconds", "Time to load an uploaded model")
        cumulative = list(itertools.accumulate(stats.buckets))
        bounds = [*(format(b, "g") for b in LOAD_BUCKETS), "+Inf"]
        seconds.add_metric([], list(zip(bounds, cumulative)), sum_value=stats.seconds)
        loaded = GaugeMetricFamily("deepaas_registry_loaded_models", "Uploaded models loaded in the shared workers")
        loaded.add_metric([], loaded_now)
        uploaded = GaugeMetricFamily("deepaas_registry_models", "Uploaded models (archived ones apart)")
        uploaded.add_metric([], sum(1 for _ in uploads.models()))
        yield from (loads, evictions, seconds, loaded, uploaded)


class HttpStats:
    """Counts and latency histograms of answered requests, kept as plain numbers.

    Recording a request is a dict lookup, a bisection and three additions (no locks:
    only the event loop records); the Prometheus families are built when scraped.
    """

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self._bounds = list(buckets)
        self._rows: dict[tuple[str, str, str, int], list] = {}  # key -> [count, sum, bucket counts]

    def record(self, model: str, route: str, method: str, status: int, seconds: float) -> None:
        row = self._rows.get((model, route, method, status))
        if row is None:
            row = self._rows[(model, route, method, status)] = [0, 0.0, [0] * (len(self._bounds) + 1)]
        row[0] += 1
        row[1] += seconds
        row[2][bisect.bisect_left(self._bounds, seconds)] += 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "deepaas_http_requests", "HTTP requests answered", labels=["model", "route", "method", "status"]
        )
        errors = CounterMetricFamily(
            "deepaas_http_errors", "HTTP error responses (4xx and 5xx)", labels=["model", "route", "status"]
        )
        latency = HistogramMetricFamily(
            "deepaas_http_request_duration_seconds",
            "Time to answer an HTTP request",
            labels=["model", "route", "method"],
        )
        error_counts: dict[tuple[str, str, str], int] = collections.Counter()
        merged: dict[tuple[str, str, str], list] = {}
        for (model, route, method, status), (count, total, buckets) in list(self._rows.items()):
            requests.add_metric([model, route, method, str(status)], count)
            if status >= 400:
                error_counts[(model, route, str(status))] += count
            into = merged.setdefault((model, route, method), [0.0, [0] * len(buckets)])
            into[0] += total
            into[1] = [a + b for a, b in zip(into[1], buckets)]
        for labels, count in error_counts.items():
            errors.add_metric(list(labels), count)
        for labels, (total, buckets) in merged.items():
            cumulative = list(itertools.accumulate(buckets))
            bounds = [*(format(b, "g") for b in self._bounds), "+Inf"]
            latency.add_metric(list(labels), list(zip(bounds, cumulative)), sum_value=total)
        yield from (requests, errors, latency)


class Metrics:
    def __init__(self, models: ModelSet, jobs: JobManager) -> None:
        self.registry = CollectorRegistry()
        self._models = models
        self.http = HttpStats()
        self.registry.register(self.http)
        self.registry.register(ModelStateCollector(models, jobs))

    def observe(self, request: web.Request, route: str, status: int, seconds: float) -> None:
        """One answered request of ``route`` (its path template, or ``unmatched``)."""
        name = request.match_info.get("name", "")
        model = name if name in self._models else ""  # never a label per arbitrary path
        self.http.record(model, route, request.method, status, seconds)

    def observer(self, model: str) -> Callable[[web.Request, str, int, float], None]:
        """:meth:`observe` for a route whose requests all name ``model``, a served plugin."""
        record = self.http.record

        def observe(request: web.Request, route: str, status: int, seconds: float) -> None:
            record(model, route, request.method, status, seconds)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
