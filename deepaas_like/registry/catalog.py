"""What uploaded models and versions exist, as this server knows them: read from the
store at start, kept in step with what other replicas write (:meth:`Catalog.refresh`,
:meth:`Catalog.catch_up`), and what every reader asks (records, versions, the current one).
Writing a model is the registry's (:mod:`.service`); it tells the catalog what it wrote."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Callable, Iterator

from ..errors import NotFound
from ..jsonutil import stamp
from ..models import ModelNotFound
from .intake import NAME_RULE
from .records import MODEL_FIELDS, ModelRecord, RegistryStore, VersionRecord, VersionStatus

CATCH_UP_INTERVAL = 0.05  # seconds between reads of the store for names not known here


class ModelArchived(NotFound):
    pass


class Catalog:
    """Uploaded models and their versions by name. ``busy()``: the names being written here
    now (a refresh leaves them as they are); ``on_retired(name, number)``: a version's
    serving must end (it changed or went elsewhere); ``plugins``: the names a 404 lists too."""

    def __init__(
        self,
        store: RegistryStore,
        shared: bool,
        plugins: set[str],
        busy: Callable[[], set[str]],
        on_retired: Callable[[str, int], None],
    ) -> None:
        self.store = store
        self._shared = shared
        self._plugins = plugins
        self._busy = busy
        self._on_retired = on_retired
        self._models: dict[str, ModelRecord] = {}
        self._versions: dict[str, dict[int, VersionRecord]] = {}
        self.revision = 0  # grows at every change that the OpenAPI document shows
        self._catching: asyncio.Task[bool] | None = None  # a read of the store for a name not known here
        self._caught_at = 0.0

    # --- what this server writes ------------------------------------------------------

    def load(self, models: list[ModelRecord], versions: list[VersionRecord]) -> None:
        """What the store held at start."""
        self._models = {m.name: m for m in models}
        for version in versions:
            self._versions.setdefault(version.model, {})[version.number] = version
        self.revision += 1

    def add_model(self, model: ModelRecord) -> None:
        self._models[model.name] = model

    def versions_of(self, name: str) -> dict[int, VersionRecord]:
        """``name``'s versions by number, for the registry to add to (an upload)."""
        return self._versions.setdefault(name, {})

    def remove(self, name: str) -> dict[int, VersionRecord]:
        """A model purged here: gone, with its versions (which this returns)."""
        versions = self._versions.pop(name, {})
        del self._models[name]
        return versions

    def changed(self) -> None:
        self.revision += 1

    def peek(self, name: str) -> ModelRecord | None:
        """A model's record, archived or not, or None (no 404)."""
        return self._models.get(name)

    def files_in_use(self) -> set[str]:
        """Every stored file a version here refers to."""
        return {sha for versions in self._versions.values() for v in versions.values() for sha in files_of(v)}

    def __bool__(self) -> bool:
        return bool(self._models)

    # --- what other replicas write ----------------------------------------------------

    async def refresh(self) -> bool:
        """Take in what other replicas wrote to the store: models and versions created,
        changed (current version, public flag, archive, config, load status) or purged.
        What this server is writing itself (a name whose lock is held, a version it is
        loading or building) stays as it is here; the next refresh sees it settled."""
        for _ in range(5):
            before = self.store.writes
            models, versions = await self.store.load()
            if self.store.writes == before:  # no write of ours overlapped the read: apply it, without a pause
                break
        else:
            return False  # writes all along: the next round
        changed = False
        busy = self._busy()
        theirs = {m.name: m for m in models if m.name not in busy}
        for name in [n for n in self._models if n not in theirs and n not in busy]:
            self._forget(name)
            changed = True
        for name, record in theirs.items():
            mine = self._models.get(name)
            if mine is None:
                self._models[name] = record
                changed = True
                continue
            last_predict = max(mine.last_predict or 0, record.last_predict or 0) or None
            if dataclasses.astuple(dataclasses.replace(record, last_predict=None)) != dataclasses.astuple(
                dataclasses.replace(mine, last_predict=None)
            ):
                changed = True
            for field_name in MODEL_FIELDS:
                setattr(mine, field_name, getattr(record, field_name))
            mine.last_predict = last_predict
        for version in versions:
            if version.model not in theirs:
                continue
            mine_versions = self._versions.setdefault(version.model, {})
            known = mine_versions.get(version.number)
            if known is None:
                mine_versions[version.number] = version
                changed = True
            elif version.status not in (VersionStatus.LOADING, VersionStatus.BUILDING) and version != known:
                if (version.config, version.optimization, version.sha256) != (
                    known.config,
                    known.optimization,
                    known.sha256,
                ):
                    self._retire(version.model, version.number)
                mine_versions[version.number] = version
                changed = True
        if changed:
            self.revision += 1
        return changed

    async def catch_up(self, name: str, also_known: bool = False) -> bool:
        """A model this replica does not know (or, ``also_known``, knows as it was a moment
        ago) may have been created or changed on another one (behind a balancer, the next
        request of its uploader lands here): read the store now rather than at the next poll.
        At most one read per CATCH_UP_INTERVAL, shared by every request that waits for it.
        Whether a read was made."""
        if not self._shared or (name in self._models and not also_known) or not NAME_RULE.fullmatch(name):
            return False
        now = time.monotonic()
        if self._catching is None or (self._catching.done() and now - self._caught_at >= CATCH_UP_INTERVAL):
            self._caught_at = now
            self._catching = asyncio.get_running_loop().create_task(self.refresh())
        try:
            await asyncio.shield(self._catching)
        except Exception:  # the store is away, or the read failed: the name is answered as it is known
            return False
        return True

    def _forget(self, name: str) -> None:
        """A model purged elsewhere: drop it here (its files went with the purge)."""
        self._models.pop(name, None)
        for number in self._versions.pop(name, {}):
            self._retire(name, number)

    def _retire(self, name: str, number: int) -> None:
        self._on_retired(name, number)

    # --- reading ----------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._models

    def models(self, deleted: bool = False) -> Iterator[ModelRecord]:
        """Uploaded models by name; archived ones only (``deleted``) or only the others."""
        return (m for name, m in sorted(self._models.items()) if (m.archived is not None) == deleted)

    def not_found(self, name: str) -> NotFound:
        """The answer for a model that is not served: the same on every route (it names the
        served models; the front door leaves out those the caller may not know of)."""
        return ModelNotFound(name, [*self._plugins, *(m.name for m in self.models())])

    def record(self, name: str, *, archived_ok: bool = False) -> ModelRecord:
        model = self._models.get(name)
        if model is None:
            raise self.not_found(name)
        if model.archived is not None and not archived_ok:
            raise ModelArchived(
                f"Model '{name}' is archived (since {stamp(model.archived)}); POST .../{name}/restore brings it back",
                details={"model": name, "archived": True},
            )
        return model

    def versions(self, name: str) -> list[VersionRecord]:
        self.record(name, archived_ok=True)
        return [v for _, v in sorted(self._versions.get(name, {}).items())]

    def version(self, name: str, number: int) -> VersionRecord:
        self.record(name, archived_ok=True)
        version = self._versions.get(name, {}).get(number)
        if version is None:
            raise NotFound(f"Model '{name}' has no version {number}", details={"model": name, "version": number})
        return version

    def current(self, name: str) -> VersionRecord | None:
        model = self._models[name]
        return self._versions.get(name, {}).get(model.current_version) if model.current_version else None


def files_of(version: VersionRecord) -> list[str]:
    optimized = (version.optimization or {}).get("onnx_sha256")
    dataset = (version.config.get("dataset") or {}).get("sha256")
    return [version.sha256, *([optimized] if optimized else []), *([dataset] if dataset else [])]
