"""Trainings become versions: every plugin's storage_dir() kept as numbered versions, and
served at the version one chooses.

* **Version 1** is the storage_dir as the plugin had it before its first training (what it
  was installed with, or what ``warm()`` downloaded): it is recorded when that training
  starts. Until then a plugin has that one version, 1, unrecorded.
* **A training that ends done** records the next version (a snapshot, see
  :mod:`.snapshots`: files by content, an unchanged one stored once) with the training's
  id, arguments, result, times and a link to its log, before the model's workers re-warm
  and before the job is ``done``; it becomes the current version.
* **A switch** (``PATCH /v2/models/{name} {"current_version": n}``) builds version ``n``'s
  tree beside the storage_dir, swaps it in (two renames, journalled), records ``n`` as
  current and re-warms the workers, rolling (:meth:`ServedModel.reload`: the old workers
  serve until fresh ones are warm, so no request fails). A worker that cannot warm from it
  puts the previous tree back. Refused (409) while a training of the model runs: the
  training writes into the storage_dir that a switch replaces, and its version would be
  recorded from a tree it did not start from.
* **Retention** (``--keep-training-versions N``): after each training the oldest versions
  beyond the N newest go, never the current one nor version 1 (the state before any
  training, which no training can make again); blobs no version names are collected.
* **Replicas** on a shared artifact directory share ``<models_dir>/.versions``: the one that
  ran the training or the switch writes, under a file lock, and the current version is the
  ``current`` file there. Every other replica re-warms when that file names another version
  than its workers serve: when it sees a training end there (``JobManager.mirror``) and when
  it looks, every :data:`FOLLOW_INTERVAL` seconds (:meth:`PluginVersions.watch`).

Only plugins served here have versions here; an uploaded model's trainings are versions of
the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Generator

from ..engine.process import WorkerStartFailed
from ..errors import ArgumentError, Conflict, DeepaasError, NotFound
from ..jsonutil import stamp
from ..models import ModelSet, ModelState, ServedModel
from .model import Job
from .snapshots import Snapshot, SnapshotStore, remove_tree

LOG = logging.getLogger(__name__)
VERSIONS_DIR = ".versions"
FOLLOW_INTERVAL = 1.0  # seconds between two looks at the current versions other replicas chose
INSTALLED = {"kind": "installed", "description": "the storage_dir before the first training"}


class VersionDoesNotWarm(DeepaasError):
    """The model's workers could not warm from the version asked for (the previous serves on)."""

    status = 422


class PluginVersions:
    """The versions of every plugin served here (see the module's docstring)."""

    def __init__(self, models: ModelSet, models_dir: Path, keep: int, training_runs: Callable[[str], bool]) -> None:
        self._models = models
        self._models_dir = models_dir
        self._keep = keep
        self._training_runs = training_runs
        self._locks: dict[str, asyncio.Lock] = {}

    def tracks(self, model: ServedModel) -> bool:
        """Whether ``model`` is a plugin served here (an upload's versions are the registry's)."""
        return self._models.get(model.name) is model

    def store(self, name: str) -> SnapshotStore:
        return SnapshotStore(self._models_dir / VERSIONS_DIR / name, name)

    def _storage(self, name: str) -> Path:
        return self._models_dir / name

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _writing(self, name: str) -> AsyncIterator[SnapshotStore]:
        """The plugin's store, held: its lock here, then its file lock (other processes,
        other replicas), kept across the awaits of a switch."""
        async with self._lock(name):
            store = self.store(name)
            taking = asyncio.ensure_future(asyncio.to_thread(store.acquire))
            try:
                fd = await asyncio.shield(taking)
            except asyncio.CancelledError:  # the thread takes it all the same: let it go then
                taking.add_done_callback(lambda t: t.cancelled() or t.exception() or store.release(t.result()))
                raise
            try:
                yield store
            finally:
                store.release(fd)

    # --- start, and what other replicas chose ---------------------------------------------

    async def start(self) -> None:
        """Before the workers warm: finish what a crash left (a switch half done), and learn
        the version each plugin's storage_dir holds."""
        for model in self._models.values():
            if self.store(model.name).root.is_dir():
                async with self._writing(model.name) as store:
                    await asyncio.to_thread(store.recover, self._storage(model.name))
            model.serve_version(self.current(model.name))

    def current(self, name: str) -> int:
        """The version the plugin's storage_dir holds (1 before any training)."""
        store = self.store(name)
        current = store.current()
        if current is None:
            numbers = store.numbers()
            current = numbers[-1] if numbers else 1
        return current

    async def follow(self, model: ServedModel) -> None:
        """Re-warm ``model``'s workers if another replica made another version current (once
        they have started: while they warm, the next look catches up)."""
        if model.state is not ModelState.READY:
            return
        async with self._lock(model.name):
            wanted = await asyncio.to_thread(self.current, model.name)
            if wanted == model.version:
                return
            try:
                await model.reload()
            except WorkerStartFailed as exc:
                LOG.error("model %s: version %s, chosen elsewhere, does not warm here: %s", model.name, wanted, exc)
                return
            model.serve_version(wanted)
            LOG.info("model %s: workers re-warmed at version %s, chosen on another replica", model.name, wanted)

    async def watch(self) -> None:
        """Replicas: follow the current versions other replicas choose (see :meth:`follow`)."""
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL)
            for model in list(self._models.values()):
                if self._lock(model.name).locked():
                    continue  # a training or a switch of it runs here
                try:
                    await self.follow(model)
                except OSError as exc:
                    LOG.warning("model %s: its current version could not be read: %s", model.name, exc)

    # --- trainings ---------------------------------------------------------------------

    async def before_training(self, model: ServedModel) -> None:
        """Record version 1 (the storage_dir as it is) if no version is recorded yet; wait
        while a switch of the model runs (here or on another replica)."""
        async with self._writing(model.name) as store:
            snap = await asyncio.to_thread(self._record_installed, store, self._storage(model.name))
        if snap is not None:
            LOG.info("model %s: version %s recorded before its first training", model.name, snap.number)

    @staticmethod
    def _record_installed(store: SnapshotStore, storage: Path) -> Snapshot | None:
        if store.numbers():
            return None
        snap = store.record(storage, dict(INSTALLED))
        store.set_current(snap.number)
        return snap

    async def after_training(self, model: ServedModel, job: Job, result: Any, log_href: str) -> Snapshot:
        """Record what the training left in the storage_dir as the next version, now current;
        the oldest beyond the retention go. Before the workers re-warm."""
        source = {
            "kind": "training",
            "training": job.id,
            "arguments": job.args,
            "result": result,
            "started": job.started,
            "log": log_href,
        }
        async with self._writing(model.name) as store:
            snap, removed = await asyncio.to_thread(self._record_training, store, self._storage(model.name), source)
        LOG.info(
            "model %s: training %s recorded as version %s (%d files, %d bytes)%s",
            model.name,
            job.id,
            snap.number,
            snap.file_count,
            snap.size,
            f"; versions {removed} removed (--keep-training-versions {self._keep})" if removed else "",
        )
        return snap

    def _record_training(
        self, store: SnapshotStore, storage: Path, source: dict[str, Any]
    ) -> tuple[Snapshot, list[int]]:
        snap = store.record(storage, source)
        store.set_current(snap.number)
        return snap, store.prune(self._keep, {snap.number, 1})

    # --- a switch ------------------------------------------------------------------------

    async def switch(self, model: ServedModel, number: int) -> int:
        """Serve version ``number`` (see the module's docstring), once the workers are warm
        from it; the version served before."""
        if self._training_runs(model.name):
            raise self._busy(model.name, number)
        async with self._writing(model.name) as store:
            if self._training_runs(model.name):  # started while this waited for the lock
                raise self._busy(model.name, number)
            storage = self._storage(model.name)
            await asyncio.to_thread(store.recover, storage)
            previous = self.current(model.name)
            snap = self.snapshot(model.name, number)
            if snap is None or number == previous:
                return previous  # served already
            outgoing = await asyncio.to_thread(lambda: store.swap(storage, store.build(snap), number))
            try:
                await model.reload()
            except WorkerStartFailed as exc:
                back = await asyncio.to_thread(store.swap, storage, outgoing, previous)
                await asyncio.to_thread(remove_tree, back)
                raise VersionDoesNotWarm(
                    f"Version {number} of model '{model.name}' does not warm, so version {previous} serves on: {exc}",
                    details={"model": model.name, "version": number, "current_version": previous},
                ) from None
            model.serve_version(number)
            await asyncio.to_thread(remove_tree, outgoing)
        LOG.info("model %s: version %s serves (was %s)", model.name, number, previous)
        return previous

    def _busy(self, name: str, number: int) -> Conflict:
        return Conflict(
            f"A training of model '{name}' is running: it writes into the storage_dir that a switch would "
            "replace. Switch once it has ended (or cancel it)",
            details={"model": name, "version": number},
        )

    # --- reading ---------------------------------------------------------------------------

    def not_found(self, name: str, number: int) -> NotFound:
        numbers = self.store(name).numbers()
        kept = f"its versions: {', '.join(map(str, numbers))}" if numbers else "its one version is 1 (never trained)"
        return NotFound(
            f"Model '{name}' has no version {number}; {kept}",
            details={"model": name, "version": number, "versions": numbers or [1]},
        )

    def not_recorded(self, name: str) -> NotFound:
        return NotFound(
            f"Version 1 of model '{name}' is its storage_dir before any training: it is recorded when the "
            "first training starts, so there is nothing to download yet",
            details={"model": name, "version": 1},
        )

    def snapshots(self, name: str) -> list[Snapshot]:
        return self.store(name).snapshots()

    def snapshot(self, name: str, number: int) -> Snapshot | None:
        """Version ``number``; None for version 1 of a plugin never trained (not recorded yet)."""
        store = self.store(name)
        snap = store.snapshot(number)
        if snap is None and not (number == 1 and not store.numbers()):
            raise self.not_found(name, number)
        return snap

    def document(self, name: str, snap: Snapshot | None, href: str, current: int) -> dict[str, Any]:
        """A version's document (``GET .../versions/``): the keys an upload's has where they
        mean the same (``version``, ``created_at``, ``status``, ``size``, ``links``), and
        what made it (``source``)."""
        if snap is None:  # version 1, before any training
            return {
                "model": name,
                "version": 1,
                "status": "ready",
                "current": current == 1,
                "recorded": False,
                "source": dict(INSTALLED),
                "links": {"self": href},
            }
        source = dict(snap.source)
        if source.get("kind") == "training":  # it ended as its version was recorded
            source["started"], source["finished"] = stamp(source.get("started")), stamp(snap.created)
        links = {"self": href, "download": f"{href}/download"}
        if source.get("log"):
            links["log"] = source["log"]
        return {
            "model": name,
            "version": snap.number,
            "created_at": stamp(snap.created),
            "status": "ready",
            "current": current == snap.number,
            "recorded": True,
            "source": source,
            "file_count": snap.file_count,
            "size": snap.size,
            "links": links,
        }

    def tar(self, name: str, snap: Snapshot) -> tuple[int, Generator[bytes, None, None]]:
        """Version ``snap`` as a tar: its length, and its pieces (read them in a thread)."""
        store = self.store(name)
        return store.tar_size(snap), store.tar_chunks(snap)


def check_version_number(value: Any) -> int:
    """``current_version`` of a PATCH: a positive integer (422 otherwise)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArgumentError(
            "current_version must be a version number", {"current_version": ["Must be a version number."]}
        )
    return value
