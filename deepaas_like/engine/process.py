"""The server's end of one worker process (see :mod:`deepaas_like.engine.worker`).

All I/O with the worker is asyncio-native over a socketpair, so the event loop never
blocks on a worker, and a worker that dies is noticed at once (end of stream).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import socket
import struct
from dataclasses import dataclass
from typing import Any, Callable, cast

from ..errors import ModelUnavailable
from ..loading import PluginRef
from .calls import NOT_STARTED, CallFailure, Outcome, Unserved
from .forking import Starter, starter
from .interpreter import ChildProcess, IsolatedProcess, scratch_dir
from .polling import AWAITED
from .replies import Message, UnsafeReply, decode
from .worker import WorkerConfig, frames, worker_main

LOG = logging.getLogger(__name__)
_HEADER = struct.Struct("!i")
_LONG_HEADER = struct.Struct("!Q")


class WorkerLost(ModelUnavailable):
    """The worker process ended while it ran a call (503; the runner replaces it)."""

    def __init__(self, model: str, method: str, exitcode: int | None) -> None:
        super().__init__(
            f"The worker of model '{model}' died while running {method}() (exit code {exitcode}); "
            "a replacement is starting, retry shortly",
            model=model,
        )
        self.exitcode = exitcode


class WorkerStartFailed(Exception):
    """The worker could not import or warm the plugin."""

    def __init__(self, failure: CallFailure | None, exitcode: int | None = None) -> None:
        text = (
            failure.text if failure is not None else f"the worker process ended during start-up (exit code {exitcode})"
        )
        super().__init__(text)
        self.failure = failure
        self.exitcode = exitcode


def mp_context(start_method: str) -> Starter:
    """How worker processes start (see :mod:`deepaas_like.engine.forking`)."""
    return starter(start_method)


@dataclass
class _Group:
    method: str
    futures: list[asyncio.Future[Outcome]]
    together: bool
    target: Any = None


def _decode_trusted(data: bytes) -> Message:
    return cast(Message, pickle.loads(data))  # a trusted worker pickles only its messages


# What a contained worker's environment holds: enough to run, nothing of the server's
# (its store URL, keys, tokens, agents' sockets).
class WorkerProcess:
    """One worker process: start it, call methods on its model, stop it."""

    def __init__(
        self,
        ref: PluginRef,
        config: WorkerConfig,
        context: Starter,
        on_exit: Callable[["WorkerProcess"], None] | None = None,
        on_progress: Callable[[float, str | None], None] | None = None,
        on_event: Callable[["WorkerProcess", str, Any], None] | None = None,
    ) -> None:
        self.ref = ref
        self._on_event = on_event
        self.config = config
        self._context = context
        self._on_exit = on_exit
        self._on_progress = on_progress
        self.process: ChildProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, _Group] = {}
        self._ready: asyncio.Future[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._call_ids = itertools.count(1)
        self.dead = False
        self.killed = False
        self.exitcode: int | None = None
        self.pid: int | None = None
        self.serving_pid: int | None = None  # the process that runs the model (a contained worker forks it)
        self.containment: dict[str, Any] | None = None  # what the worker's sandbox applied
        self.recycled: str | None = None  # why the worker ended by itself, when it did on purpose
        self._files: socket.socket | None = None  # a contained worker's file channel (our end)
        self._scratch: str | None = None
        sandbox = config.sandbox
        self._decode = decode if sandbox is not None else _decode_trusted
        self._reply_limit = sandbox.reply_limit if sandbox is not None else 0

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    @property
    def accepting(self) -> bool:
        """Alive and not being killed: may take a call."""
        return not self.dead and not self.killed

    async def start(self) -> None:
        """Start the process and wait until the plugin is imported and warm."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        _widen(ours, theirs)
        child_conn = multiprocessing.connection.Connection(theirs.detach())
        args: tuple[Any, ...] = (child_conn, self.ref, self.config)
        files_conn = None
        if self.config.sandbox is not None:  # a scratch directory and a file channel of its own
            self._scratch = scratch_dir(self.config.sandbox.user)
            self._files, theirs_files = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._files.setblocking(False)
            files_conn = multiprocessing.connection.Connection(theirs_files.detach())
            config = dataclasses.replace(
                self.config, sandbox=dataclasses.replace(self.config.sandbox, scratch=self._scratch)
            )
            args = (child_conn, self.ref, config, files_conn)
        process: ChildProcess
        if self.config.sandbox is not None or self.config.environment is not None:
            process = IsolatedProcess(args)
        else:
            process = self._context.Process(
                target=worker_main,
                args=args,
                name=f"deepaas-like {self.config.model} worker",
                daemon=False,  # plugins may start processes of their own
            )
        self.process = process
        self._ready = loop.create_future()
        try:
            # Synchronous on purpose (a few ms): a start that a cancellation could
            # interrupt half-way would leave an orphan process behind.
            process.start()
        finally:
            child_conn.close()
            if files_conn is not None:
                files_conn.close()
        self.pid = process.pid
        reader, self._writer = await asyncio.open_connection(sock=ours)
        self._reader_task = asyncio.create_task(self._read_loop(reader))
        try:
            await self._ready
        except BaseException:
            self.kill()
            raise

    def submit(
        self, method: str, payloads: list[Any], *, together: bool = False, target: Any = None
    ) -> list[asyncio.Future[Outcome]]:
        """Send a group of calls; one future per call, resolved with its outcome as it arrives.

        If the worker dies, the call it was running ends :class:`Unserved` (a
        :class:`WorkerLost`) and the calls queued behind it :data:`NOT_STARTED`
        (``together``: every call was running, as in a batch). A worker that is already
        gone answers every call :data:`NOT_STARTED` at once.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outcome]] = [loop.create_future() for _ in payloads]
        if not self.accepting or self._writer is None or self._writer.is_closing():
            for future in futures:
                future.set_result(NOT_STARTED)
            return futures
        call_id = next(self._call_ids)
        self._pending[call_id] = _Group(method, futures, together, target)
        AWAITED.count += 1
        self._write(("group", call_id, method, payloads, target))
        return futures

    async def call(self, method: str, payload: Any) -> Outcome:
        """Run one call in the worker and return its outcome."""
        (future,) = self.submit(method, [payload if payload is not None else {}])
        return await future

    def _write(self, message: Message) -> None:
        """Send a message (see :func:`~deepaas_like.engine.worker.frames`: a large buffer, such as a
        tensor of the request's body, is handed to the transport as it lies, never pickled)."""
        assert self._writer is not None
        for piece in frames(message):
            self._writer.write(piece)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decode, limit = self._decode, self._reply_limit
        try:
            while True:
                (size,) = _HEADER.unpack(await reader.readexactly(4))
                if size == -1:
                    (size,) = _LONG_HEADER.unpack(await reader.readexactly(8))
                if limit and size > limit:
                    raise UnsafeReply(f"a message of {size} bytes (the limit is {limit})")
                self._dispatch(decode(await reader.readexactly(size)))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except UnsafeReply as exc:  # a contained worker that misbehaves: it is stopped, nothing more is read
            LOG.error(
                "model %s: worker %s sent what the server refuses (%s); stopping it",
                self.config.model,
                self.pid,
                str(exc)[:200],
            )
            self.kill()
        except Exception as exc:  # a reply that cannot be read or used: treat the worker as broken
            LOG.error(
                "model %s: unusable message from worker %s (%s); stopping it",
                self.config.model,
                self.pid,
                type(exc).__name__,
            )
            self.kill()
        finally:
            await self._mark_dead()

    def _dispatch(self, message: Message) -> None:
        kind = message[0]
        if kind == "ready":
            if self._ready is not None and not self._ready.done():
                self.serving_pid = message[1] if len(message) > 1 else self.pid
                self.containment = message[2] if len(message) > 2 else None
                if len(message) > 3 and self.config.sandbox is None:
                    self._context.learn(message[3])
                self._ready.set_result(None)
        elif kind == "need_file":
            self._send_file(message[1])
        elif kind == "failed":
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(WorkerStartFailed(message[1]))
        elif kind == "progress":
            if self._on_progress is not None:
                self._on_progress(message[1], message[2])
        elif kind == "event":
            if self._on_event is not None:
                self._on_event(self, message[1], message[2])
        else:
            _, call_id, index, outcome = message  # a "row"
            group = self._pending.get(call_id)
            if group is None:
                return
            future = group.futures[index]
            if not future.done():
                future.set_result(outcome)
            if index == len(group.futures) - 1:
                del self._pending[call_id]
                AWAITED.count -= 1

    def _send_file(self, key: str) -> None:
        """Answer a contained worker's request for the file of ``key``: an open descriptor,
        only for the target of a call it is running (the files it serves, no other)."""
        sock = self._files
        if sock is None:
            raise UnsafeReply("a file request from a worker that has no file channel")
        target = next((g.target for g in self._pending.values() if getattr(g.target, "key", None) == key), None)
        fd = -1
        try:
            if target is None:
                sock.send(b"no running call of this worker serves that file")
                return
            try:
                fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                sock.send(f"the file cannot be opened: {exc.strerror}".encode())
                return
            socket.send_fds(sock, [b"ok"], [fd])
        except OSError:  # it asks without reading the answers, or closed its end
            raise UnsafeReply("file requests it does not read") from None
        finally:
            if fd >= 0:
                os.close(fd)

    async def _mark_dead(self) -> None:
        self.dead = True
        if self._writer is not None:
            self._writer.close()
        self.exitcode = await self._wait_exit(2.0)
        if self.exitcode is None and self.config.sandbox is not None:
            self.kill()  # it closed its pipe but lives on: a contained worker that is not read is not kept
            self.exitcode = await self._wait_exit(2.0)
        self._release_sandbox()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerStartFailed(None, self.exitcode))
        for group in self._pending.values():
            lost = Unserved(WorkerLost(self.config.model, group.method, self.exitcode))
            # The first unanswered call was running, the later ones waited; a worker that ended on
            # purpose (recycled) ran none of them.
            running = self.recycled is None
            for future in group.futures:
                if future.done():
                    continue
                future.set_result(lost if running or (group.together and self.recycled is None) else NOT_STARTED)
                running = False
        AWAITED.count -= len(self._pending)
        self._pending.clear()
        if self._on_exit is not None:
            self._on_exit(self)

    async def _wait_exit(self, timeout: float) -> int | None:
        process = self.process
        if process is None or self.exitcode is not None:
            return self.exitcode
        deadline = asyncio.get_running_loop().time() + timeout
        while process.exitcode is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return process.exitcode

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to stop; terminate, then kill it if it does not."""
        process = self.process
        if process is None or self.pid is None:
            return
        if not self.dead and self._writer is not None and not self._writer.is_closing():
            try:
                self._write(("stop", 0, None, None, None))
            except (ConnectionError, RuntimeError):
                pass
        if await self._wait_exit(timeout if not self.busy else 0.0) is None:
            process.terminate()
            if await self._wait_exit(2.0) is None:
                process.kill()
                await self._wait_exit(2.0)
        await self._finish()

    def kill(self) -> None:
        """Kill the worker now (cancel a training, recycle a stuck worker)."""
        self.killed = True
        if self.process is not None and self.pid is not None and self.exitcode is None:
            if self.process.exitcode is None:
                self.process.kill()

    async def _finish(self) -> None:
        if self._reader_task is not None and not self._reader_task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._reader_task), 2.0)
            except asyncio.TimeoutError:
                self._reader_task.cancel()
        if self.process is not None and self.exitcode is None:
            self.exitcode = self.process.exitcode
        if self.exitcode is not None and self.process is not None:
            self.process.close()
            self.process = None
        self._release_sandbox()

    def _release_sandbox(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None
        if self._scratch is not None and self.exitcode is not None:  # (inside, a tmpfs of its own held its files)
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


@dataclass(frozen=True)
class WorkerLauncher:
    """How to start worker processes of one model: the plugin, its config, the start method."""

    ref: PluginRef
    config: WorkerConfig
    context: Starter

    def worker(
        self,
        *,
        log_file: str | None = None,
        on_exit: Callable[[WorkerProcess], None] | None = None,
        on_progress: Callable[[float, str | None], None] | None = None,
        on_event: Callable[[WorkerProcess, str, Any], None] | None = None,
    ) -> WorkerProcess:
        config = dataclasses.replace(self.config, log_file=log_file) if log_file else self.config
        return WorkerProcess(
            self.ref, config, self.context, on_exit=on_exit, on_progress=on_progress, on_event=on_event
        )


SOCKET_BUFFER = 4 << 20  # bytes in flight to a worker (Linux caps it at net.core.wmem_max)


def _widen(*sockets: socket.socket) -> None:
    """Let a large message (a tensor of megabytes) travel in a few writes instead of a write
    per default buffer (about 200 kB): a 10 MB tensor cost the server 2.5 ms of CPU with the
    default, 1.3-1.6 ms with 4 MB (measured over a socketpair and asyncio's transport). The
    memory is the kernel's only while bytes are in flight."""
    for sock in sockets:
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            except OSError:  # a kernel that refuses: the default serves
                pass
