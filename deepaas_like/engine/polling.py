"""Polling a short while before sleeping, on both ends of a worker process's socket.

A process that sleeps while it waits pays for its CPU's wake-up when the message comes,
and on a virtual machine an idle CPU's wake-up costs tenths of a millisecond (the
hypervisor must schedule it again). When messages follow each other closely, polling
for the next one keeps the CPU awake and saves that, at the price of the polling's CPU
time. Two waits poll:

* a worker process waiting for its next call (:class:`deepaas_like.engine.worker.CallWaiter`);
* the server's event loop with nothing to do but wait for a worker's answer
  (:class:`PollingSelector`), only while a CPU is free for it: with as many answers
  awaited as there are CPUs, the workers need them all.

Both windows adapt (:class:`PollWindow`), so a quiet server, or one whose model takes
long, sleeps at once and costs nothing. ``--worker-poll-us`` is the longest window; 0
turns polling off (under a tight container CPU quota, which counts it).
"""

from __future__ import annotations

import asyncio
import os
import selectors
import time
from typing import Callable, TypeVar

T = TypeVar("T")


class PollWindow:
    """How long to poll before sleeping; it adapts as Linux's haltpoll does for an idle
    guest CPU: it grows when the message came within the longest window after a sleep
    (polling would have caught it) and shrinks to nothing when messages come further
    apart."""

    GROW_FROM = 50e-6  # the first window after a sleep that polling would have saved

    def __init__(self, longest: float) -> None:
        self.longest = longest
        self.window = longest

    def wait(
        self,
        poll: Callable[[], T],
        sleep: Callable[[float], T],
        *,
        limit: float | None = None,
        worth: Callable[[], bool] = lambda: True,
    ) -> T:
        """What ``poll()`` finds within the window (and ``limit``), polling while ``worth()``
        and yielding the CPU between polls; else what ``sleep(seconds_spent)`` waits for.
        A wait that ended in a sleep adapts the window."""
        started = time.perf_counter()
        window = self.window if limit is None else min(self.window, limit)
        while time.perf_counter() - started < window and worth():
            found = poll()
            if found:
                return found
            os.sched_yield()
        found = sleep(time.perf_counter() - started)
        self.slept(time.perf_counter() - started)
        return found

    def slept(self, waited: float) -> None:
        """The wait ended only after a sleep, ``waited`` seconds after it began."""
        if self.longest <= 0:
            return
        if waited <= self.longest:  # polling longer would have caught it
            self.window = min(self.longest, max(self.window * 2, self.GROW_FROM))
        else:
            self.window = self.window / 2 if self.window >= 2 * self.GROW_FROM else 0.0


class AnswersAwaited:
    """Groups of calls sent to worker processes and not yet fully answered (the server's
    :class:`~deepaas_like.engine.process.WorkerProcess` counts them; one event loop per process)."""

    def __init__(self) -> None:
        self.count = 0


AWAITED = AnswersAwaited()


class PollingSelector(selectors.EpollSelector):
    """The event loop's selector: while a worker computes an answer and a CPU is free for
    polling, it polls for up to its window before it sleeps."""

    def __init__(self, longest: float, cpus: int) -> None:
        super().__init__()
        self.window = PollWindow(longest)
        self._cpus = cpus

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        awaited = AWAITED.count
        epoll = super().select
        if not awaited or awaited >= self._cpus or (timeout is not None and timeout <= 0):
            return epoll(timeout)
        return self.window.wait(
            lambda: epoll(0),
            lambda spent: epoll(None if timeout is None else max(0.0, timeout - spent)),
            limit=timeout,
            worth=lambda: AWAITED.count > 0,
        )


def new_event_loop(poll_us: int) -> asyncio.AbstractEventLoop:
    """The server's event loop: polling for workers' answers unless ``poll_us`` is 0 (or the
    platform has no epoll)."""
    if poll_us <= 0 or not hasattr(selectors, "EpollSelector"):
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(PollingSelector(poll_us / 1e6, len(os.sched_getaffinity(0))))
