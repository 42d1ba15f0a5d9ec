"""Prometheus metrics at ``/metrics``, in a registry owned by the application.

Request counts and latencies are recorded by a middleware; model state (readiness,
workers, queue depth, restarts, batch sizes, trainings) is read from the models when
``/metrics`` is scraped, so the hot path does no extra work for it.
"""

from __future__ import annotations

import time
from typing import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..models import ModelRegistry
from ..jobs.manager import JobManager
from ..jobs.model import JobKind, JobStatus

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ModelStateCollector:
    """Gauges and counters read from the served models at scrape time."""

    def __init__(self, models: ModelRegistry, jobs: JobManager) -> None:
        self._models = models
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily("deepaas_model_ready", "1 when the model is warm and has a live worker", labels=["model"])
        workers = GaugeMetricFamily("deepaas_model_workers", "Live workers of the model", labels=["model"])
        busy = GaugeMetricFamily("deepaas_model_workers_busy", "Workers running a call now", labels=["model"])
        queue = GaugeMetricFamily("deepaas_queue_depth", "Predictions waiting for a worker", labels=["model"])
        restarts = CounterMetricFamily("deepaas_worker_restarts", "Workers replaced after they died or overran a timeout", labels=["model"])
        batches = HistogramMetricFamily("deepaas_batch_size", "Predictions per batched call", labels=["model"])
        jobs = GaugeMetricFamily("deepaas_jobs", "Trainings and asynchronous predictions known to the server",
                                 labels=["model", "kind", "status"])
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


class Metrics:
    def __init__(self, models: ModelRegistry, jobs: JobManager) -> None:
        self.registry = CollectorRegistry()
        self._models = models
        self._children: dict[tuple, tuple] = {}
        self.requests = Counter(
            "deepaas_http_requests", "HTTP requests answered", ["model", "route", "method", "status"],
            registry=self.registry)
        self.errors = Counter(
            "deepaas_http_errors", "HTTP error responses (4xx and 5xx)", ["model", "route", "status"],
            registry=self.registry)
        self.latency = Histogram(
            "deepaas_http_request_duration_seconds", "Time to answer an HTTP request", ["model", "route", "method"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(ModelStateCollector(models, jobs))

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        name = request.match_info.get("name", "")
        model = name if name in self._models else ""  # never a label per arbitrary path
        key = (model, route, request.method, status)
        children = self._children.get(key)
        if children is None:  # label lookups once per combination, not per request
            children = self._children[key] = (
                self.requests.labels(model, route, request.method, str(status)),
                self.latency.labels(model, route, request.method),
                self.errors.labels(model, route, str(status)) if status >= 400 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def middleware(self) -> web.middleware:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self.observe(request, status, time.perf_counter() - started)

        return record

    def render(self) -> bytes:
        return generate_latest(self.registry)
