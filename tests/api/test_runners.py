"""The execution layer on its own: typed outcomes, timeouts that requeue what never ran,
one queue with background calls behind the others, trainings beside the runners."""

import asyncio
import os
import selectors
import socket
import threading
import time

import pytest

from deepaas_like.api import create_app
from deepaas_like.engine.adapter import ModelAdapter
from deepaas_like.engine.calls import NOT_STARTED, CallFailure, Ok, Unserved, unwrap
from deepaas_like.engine.dispatch import Dispatcher
from deepaas_like.engine.polling import AWAITED, PollingSelector, PollWindow, new_event_loop
from deepaas_like.engine.process import WorkerLauncher, WorkerLost, mp_context
from deepaas_like.engine.runners import ProcessRunner
from deepaas_like.engine.threads import ThreadRunner
from deepaas_like.engine.training import TrainingRun, describe_failure
from deepaas_like.engine.worker import CallWaiter, WorkerConfig, library_threads
from deepaas_like.errors import ModelError, ModelUnavailable, NotImplementedByModel, PredictTimeout
from deepaas_like.loading import PluginRef
from deepaas_like.settings import Settings
from support.helpers import wait_ready


class Sleeper:
    """predict(seconds) sleeps; every call that started is recorded."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.lock = threading.Lock()

    def predict(self, seconds: float = 0.0) -> dict:
        with self.lock:
            self.started.append(seconds)
        time.sleep(seconds)
        return {"slept": seconds}


def test_unwrap_turns_each_outcome_into_a_value_or_its_error():
    assert unwrap(Ok(3), "m", "predict") == 3
    with pytest.raises(ModelError, match="Model 'm' failed in predict\\(\\): ValueError: bad"):
        unwrap(CallFailure("ValueError", "bad"), "m", "predict")
    with pytest.raises(NotImplementedByModel):
        unwrap(CallFailure("MethodMissing", "train", missing_method=True), "m", "train")
    with pytest.raises(PredictTimeout):
        unwrap(Unserved(PredictTimeout("m", 1.0)), "m", "predict")
    with pytest.raises(ModelUnavailable, match="went away"):
        unwrap(NOT_STARTED, "m", "predict")


async def test_thread_group_after_a_timeout_never_starts_the_rest():
    model = Sleeper()
    runner = ThreadRunner("sleeper", ModelAdapter("sleeper", model), size=1, warm=False)
    await runner.start()
    try:
        slot = runner.take_idle()
        outcomes = await runner.run_group(slot, "predict", [{"seconds": 0.6}, {"seconds": 0}, {"seconds": 0}], 0.2)
        assert isinstance(outcomes[0], Unserved) and isinstance(outcomes[0].error, PredictTimeout)
        assert outcomes[1:] == [NOT_STARTED, NOT_STARTED]  # the dispatcher runs these elsewhere
        assert runner.take_idle() is None  # the late thread still holds its slot...
        await asyncio.sleep(0.7)
        assert runner.take_idle() == slot  # ...until its call returns
        assert model.started == [0.6]
    finally:
        await runner.stop()


async def test_process_group_after_a_timeout_kills_the_worker_and_requeues_the_rest(plugins):
    plugins.install("slow")
    launcher = WorkerLauncher(PluginRef("slow", "fixture_slow"), WorkerConfig(model="slow"), mp_context("spawn"))
    runner = ProcessRunner("slow", launcher, size=1)
    await runner.start()
    try:
        worker = runner.take_idle()
        first_pid = worker.pid
        outcomes = await runner.run_group(worker, "predict", [{"seconds": 0}, {"seconds": 5}, {"seconds": 0}], 0.5)
        assert isinstance(outcomes[0], Ok) and outcomes[0].value["slept"] == 0
        assert isinstance(outcomes[1], Unserved) and isinstance(outcomes[1].error, PredictTimeout)
        assert outcomes[2] is NOT_STARTED
        replacement = await asyncio.wait_for(runner.next_slot(), 30)
        assert replacement.pid != first_pid and runner.restarts == 1
        (after,) = await runner.run_group(replacement, "predict", [{"seconds": 0}], None)
        assert isinstance(after, Ok)
    finally:
        await runner.stop()


async def test_a_worker_that_dies_answers_worker_lost_then_not_started():
    launcher = WorkerLauncher(
        PluginRef("echobench", "echobench.api"), WorkerConfig(model="echobench"), mp_context("spawn")
    )
    runner = ProcessRunner("echobench", launcher, size=1)
    await runner.start()
    try:
        worker = runner.take_idle()
        row = {
            "sepal_length": 1.0,
            "sepal_width": 1.0,
            "petal_length": 1.0,
            "petal_width": 1.0,
            "top_k": 1,
            "sleep_ms": 0,
        }
        outcomes = await runner.run_group(worker, "predict", [{**row, "mode": "crash"}, {**row, "mode": "echo"}], None)
        assert isinstance(outcomes[0], Unserved) and isinstance(outcomes[0].error, WorkerLost)
        assert "died while running predict()" in outcomes[0].error.message
        assert outcomes[1] is NOT_STARTED
    finally:
        await runner.stop()


async def test_background_calls_wait_behind_synchronous_ones(make_settings):
    model = Sleeper()
    runner = ThreadRunner("sleeper", ModelAdapter("sleeper", model), size=1, warm=False)
    options = make_settings().for_model("sleeper")
    dispatcher = Dispatcher(runner, options, has_predict_batch=False)
    await runner.start()
    dispatcher.start()
    try:
        busy = asyncio.ensure_future(dispatcher.call("predict", {"seconds": 0.3}))
        await asyncio.sleep(0.05)
        order = []
        background = asyncio.ensure_future(
            dispatcher.call(
                "predict", {"seconds": 0.01}, admit=False, background=True, on_start=lambda: order.append("background")
            )
        )
        await asyncio.sleep(0.01)
        foreground = [asyncio.ensure_future(dispatcher.call("predict", {"seconds": 0.02})) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert dispatcher.waiting == 4 and dispatcher.expected_wait() > 0
        results = await asyncio.gather(busy, background, *foreground)
        assert all(isinstance(r, Ok) for r in results)
        assert model.started == [0.3, 0.02, 0.02, 0.02, 0.01]  # the background call ran last
        assert order == ["background"]
    finally:
        await dispatcher.stop()
        await runner.stop()


async def test_training_runs_in_its_own_process_and_can_be_killed(plugins, tmp_path):
    plugins.install("slow")
    launcher = WorkerLauncher(PluginRef("slow", "fixture_slow"), WorkerConfig(model="slow"), mp_context("spawn"))
    quick = TrainingRun(launcher, log_file=str(tmp_path / "train.log"))
    assert await quick.run({"seconds": 0}) == Ok({"slept": 0})
    long = TrainingRun(launcher)
    task = asyncio.ensure_future(long.run({"seconds": 30}))
    await asyncio.sleep(2)
    long.kill()
    outcome = await asyncio.wait_for(task, 10)
    assert isinstance(outcome, Unserved) and isinstance(outcome.error, WorkerLost)
    assert describe_failure(outcome) == "the training process died (exit code -9)"


def test_every_per_model_option_is_a_server_option():
    from deepaas_like.settings import PER_MODEL, ModelSettings, settings_fields

    names = {f.name for f in settings_fields()}
    assert set(PER_MODEL) <= names
    assert Settings().for_model("x") == ModelSettings(**{n: getattr(Settings(), n) for n in PER_MODEL})


PROBE = """
import os

def get_metadata():
    return {"name": "probe", "description": "says which worker answered and its thread-pool variables"}

def get_predict_args():
    return {}

def predict():
    import gc
    return {"pid": os.getpid(), "frozen": gc.get_freeze_count(),
            **{name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
"""


async def test_serving_workers_share_the_cpus_and_the_last_one_used_serves_next(
    aiohttp_client, make_settings, plugins, monkeypatch
):
    plugins.install("probe", source=PROBE)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the operator's own choice stays
    client = await aiohttp_client(create_app(make_settings(model_name="probe", workers=2)))
    await wait_ready(client)
    answers = []
    for _ in range(6):
        response = await client.post("/v2/models/probe/predict/")
        assert response.status == 200
        answers.append((await response.json())["predictions"])
    assert {a["OMP_NUM_THREADS"] for a in answers} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    assert {a["MKL_NUM_THREADS"] for a in answers} == {"3"}
    # One request at a time: the worker that answered last (its caches warm) takes the next.
    assert len({a["pid"] for a in answers}) == 1
    # What warm() and the imports built is out of the cyclic collector's sight.
    assert all(a["frozen"] > 1000 for a in answers)


def test_library_threads_give_each_worker_its_share():
    cpus = len(os.sched_getaffinity(0))
    assert dict(library_threads(1, environ={}))["OMP_NUM_THREADS"] == str(cpus)
    assert dict(library_threads(cpus * 4, environ={}))["OPENBLAS_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in dict(library_threads(2, environ={"OMP_NUM_THREADS": "8"}))


def test_a_worker_polls_for_close_calls_and_sleeps_through_far_ones():
    server, worker = socket.socketpair()
    waiter = CallWaiter(worker.fileno(), 0.002)

    def next_call(delay: float) -> None:
        if delay:
            threading.Timer(delay, server.send, (b"x",)).start()
        else:
            server.send(b"x")
        waiter.wait()
        assert worker.recv(1) == b"x"

    try:
        assert waiter.window == 0.002
        for _ in range(8):  # 20 ms apart: polling 2 ms would never catch them
            next_call(0.02)
        assert waiter.window == 0.0  # so it sleeps at once
        next_call(0)  # a call that came at once: polling would have caught it
        assert waiter.window == PollWindow.GROW_FROM
        for _ in range(3):  # calls that come within the window: it stays
            next_call(0)
        assert waiter.window == PollWindow.GROW_FROM
        next_call(0.02)
        assert waiter.window == 0.0
    finally:
        server.close()
        worker.close()


def test_without_a_poll_window_a_worker_sleeps_at_once():
    server, worker = socket.socketpair()
    waiter = CallWaiter(worker.fileno(), 0.0)
    try:
        server.send(b"x")
        waiter.wait()
        assert waiter.window == 0.0 and worker.recv(1) == b"x"
    finally:
        server.close()
        worker.close()


class _CountingEpoll(selectors.EpollSelector):
    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout=None):
        self.timeouts.append(timeout)
        return super().select(timeout)


class _ProbedSelector(PollingSelector, _CountingEpoll):
    """PollingSelector whose underlying epoll waits are recorded (polls are timeout 0)."""


def test_the_event_loop_polls_for_a_workers_answer_only_while_a_cpu_is_free(monkeypatch):
    server, worker = socket.socketpair()
    selector = _ProbedSelector(0.002, cpus=2)
    selector.register(server, selectors.EVENT_READ)

    def wait(delay: float | None, awaited: int, timeout: float | None = None) -> list:
        monkeypatch.setattr(AWAITED, "count", awaited)
        selector.timeouts.clear()
        if delay is not None:
            threading.Timer(delay, worker.send, (b"x",)).start()
        events = selector.select(timeout)
        if events:
            assert server.recv(1) == b"x"
        return events

    try:
        assert wait(None, 0, 0.02) == [] and selector.timeouts == [0.02]  # nothing awaited: it sleeps at once
        assert wait(None, 2, 0.02) == [] and selector.timeouts == [0.02]  # both CPUs are the workers'
        assert selector.window.window == 0.002
        assert wait(0.02, 1)  # an answer awaited, a CPU free: it polls its window, then sleeps
        polls = selector.timeouts[:-1]
        assert len(polls) > 1 and set(polls) == {0} and selector.timeouts[-1] is None
        assert selector.window.window == 0.001  # 20 ms: polling would not have caught it
        for _ in range(8):
            wait(0.02, 1)
        assert selector.window.window == 0.0
        assert wait(0.02, 1) and selector.timeouts == [None]  # no window left: it sleeps at once
        worker.send(b"x")
        assert wait(None, 1) and selector.window.window == PollWindow.GROW_FROM  # a close one: it grows
        worker.send(b"x")
        assert wait(None, 1) and selector.timeouts == [0]  # already there: the first poll has it
    finally:
        selector.close()
        server.close()
        worker.close()


def test_the_servers_event_loop_polls_unless_worker_poll_us_is_0():
    for poll_us, polling in ((2000, True), (0, False)):
        loop = new_event_loop(poll_us)
        try:
            assert isinstance(loop._selector, PollingSelector) is polling
        finally:
            loop.close()
