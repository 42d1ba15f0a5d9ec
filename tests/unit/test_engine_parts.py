"""The engine's parts that need no process: the executor's choice, the worker set's start,
replacement with back-off and reload, the slot pool, and the ground floor's small helpers."""

from __future__ import annotations

import asyncio

import pytest

from deepaas_like.engine import runners
from deepaas_like.engine.calls import CallFailure
from deepaas_like.engine.executors import ExecutorSpec, make_executor, make_shared_pool
from deepaas_like.engine.process import WorkerStartFailed
from deepaas_like.engine.runners import ProcessRunner, WorkerSet
from deepaas_like.engine.shared import SharedPool
from deepaas_like.engine.threads import ThreadRunner
from deepaas_like.engine.worker import WorkerConfig
from deepaas_like.jsonutil import stamp
from deepaas_like.loading import PluginRef
from deepaas_like.node import node_id

ECHO = PluginRef("echobench", "echobench.api")


def test_make_executor_picks_the_kind_the_spec_names_and_refuses_others():
    config = WorkerConfig("echobench")
    process = make_executor("echobench", ECHO, config, ExecutorSpec(kind="process", workers=3, poll_us=50))
    assert isinstance(process, ProcessRunner) and process.size == 3 and process.kind == "process"
    assert dict(process._launcher.config.environ)["OMP_NUM_THREADS"]  # a serving worker's share of the CPUs
    assert process._launcher.config.poll_us == 50
    with pytest.raises(ValueError, match="needs its adapter"):
        make_executor("echobench", ECHO, config, ExecutorSpec(kind="thread"))
    with pytest.raises(ValueError, match="process, thread, ray"):
        make_executor("echobench", ECHO, config, ExecutorSpec(kind="fork"))
    pool = make_shared_pool(ECHO, config, ExecutorSpec(kind="thread", workers=2), capacity=7)
    assert isinstance(pool, SharedPool) and pool.size == 2  # uploads never run on the server's threads


class FakeSet(WorkerSet[int]):
    """A worker set whose workers are numbers; ``failures`` starts fail first."""

    def __init__(self, size: int, failures: int = 0) -> None:
        super().__init__("fake", size)
        self.failures = failures
        self.opened: list[int] = []
        self.closed: list[int] = []
        self._next = 0

    @property
    def ready(self) -> bool:
        return bool(self._current)

    def worker_pids(self) -> list[int]:
        return sorted(self._current)

    async def _open(self) -> int:
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise WorkerStartFailed(CallFailure("RuntimeError", "no room"))
        self._next += 1
        self.opened.append(self._next)
        return self._next

    async def _close(self, slot: int) -> None:
        self.closed.append(slot)

    def _usable(self, slot: int) -> bool:
        return slot in self._current

    def _discard(self, slot: int) -> None:
        self.closed.append(slot)


async def test_a_worker_set_that_cannot_start_all_its_workers_closes_those_that_did():
    workers = FakeSet(3, failures=1)
    with pytest.raises(WorkerStartFailed):
        await workers.start()
    assert sorted(workers.closed) == sorted(workers.opened) and len(workers.opened) == 2
    assert not workers.ready


async def test_a_lost_worker_is_replaced_after_back_off_and_counted(monkeypatch):
    monkeypatch.setattr(runners, "RESPAWN_BACKOFF", (0.01, 0.02))
    workers = FakeSet(2)
    await workers.start()
    assert workers.idle == 2
    lost = workers.take_idle()
    workers._current.discard(lost)
    workers.failures = 3  # the replacement fails three times, then starts
    workers._replace_lost()
    for _ in range(200):
        if len(workers._current) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(workers._current) == 2 and workers.restarts == 1 and workers.failures == 0
    assert workers.idle == 2  # the survivor and the replacement wait for calls


async def test_a_reload_swaps_the_idle_workers_and_lets_the_busy_one_finish():
    workers = FakeSet(2)
    await workers.start()
    busy = workers.take_idle()
    old = set(workers._current)
    await workers.reload()
    assert workers._current.isdisjoint(old) and workers.idle == 2
    assert set(workers.closed) == old - {busy}  # the idle one at once
    workers.release(busy)  # its call ended: it is let go, not handed out
    assert busy in workers.closed and workers.idle == 2


async def test_a_caller_waiting_for_a_slot_gets_the_next_one_released():
    workers = FakeSet(1)
    await workers.start()
    slot = workers.take_idle()
    waiting = asyncio.ensure_future(workers.next_slot())
    await asyncio.sleep(0)
    assert not waiting.done() and workers.take_idle() is None
    workers.release(slot)
    assert await asyncio.wait_for(waiting, 1) == slot


def test_thread_runner_counts_as_an_executor_of_its_own_kind():
    assert ThreadRunner.kind == "thread" and ProcessRunner.kind == "process"


def test_stamp_is_iso_8601_in_utc_and_none_stays_none():
    assert stamp(0) == "1970-01-01T00:00:00Z"
    assert stamp(1796588504.9) == "2026-12-06T20:21:44Z"
    assert stamp(None) is None


def test_a_node_id_is_made_once_and_kept_in_the_data_directory(tmp_path):
    first = node_id(tmp_path / "data")
    assert node_id(tmp_path / "data") == first and ":" in first
    assert node_id(tmp_path / "other") != first
