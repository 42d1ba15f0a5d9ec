"""The model registry: uploaded model files served without code, with versions.

A user uploads a persisted model (``PUT /v2/models/{name}``); the file is stored by its
SHA-256, recorded as the next version of the model, loaded once in a worker of the
shared pool to learn its signature (a file that does not load is recorded as an
``error`` version, and the current one keeps serving), and served at once by the same
engine as plugins: a queue, batching, timeouts, async predictions. Versions can be
rolled back and forward, archived and restored, downloaded byte for byte.

An upload may carry requirements: its version is ``building`` while a durable job (the
caller submits it, with :meth:`Registry.build` as its work) builds an environment of its
own with uv (:mod:`.environment_pools`), then is loaded there and settles as any upload.

Nothing here loads a model file: the server process only records, streams and sniffs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlalchemy as sa

from ..database import Database
from ..engine.shared import LoadStats
from ..environments import BuildFailed
from ..errors import ArgumentError, Conflict, DeepaasError, NotFound
from ..frameworks import Framework, discover_frameworks
from ..models import ModelState, ServedModel
from ..node import node_id
from ..settings.sections import RegistrySection
from .artifacts import Artifact, ArtifactStore
from .catalog import Catalog, ModelArchived, files_of
from .datasets import Datasets
from .environment_pools import EnvironmentPools
from .intake import (
    OPTIMIZATIONS,
    SAFE_FORMATS,
    Upload,
    check_batching,
    check_name,
    check_requirements,
    check_schema,
    identify,
)
from .optimize import optimize, probe
from .records import BuildStatus, DependencyBuild, ModelRecord, RegistryStore, VersionRecord, VersionStatus
from .serving import CodeRefused, Pool, Serving, registry_pool

LOG = logging.getLogger(__name__)
LOADED = ("status", "error", "signature", "optimization")  # what loading a version finds


class Registry:
    """Uploaded models: their records, files, and servable versions."""

    def __init__(self, settings: RegistrySection, db: Database, plugin_names: set[str], pool: Pool) -> None:
        """``pool``: the shared hosts that serve the versions (:func:`.serving.registry_pool`),
        started with the first upload (or at start when there are some)."""
        self._settings = settings
        self._plugins = plugin_names
        self.store = RegistryStore(db)
        self._shared = db.shared  # replicas share the store: another may be loading a version right now
        self.artifacts = ArtifactStore(settings.artifacts_dir, settings.max_upload_size)
        self.frameworks: dict[str, Framework] = {}
        self.broken_frameworks: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._node = "local"  # with replicas, this one's id (known at start): who builds an environment
        self.catalog = Catalog(self.store, self._shared, plugin_names, self._busy_names, self._retire)
        self.datasets = Datasets(self.catalog, self.store, self.artifacts, self._lock, self._retire)
        # versions uploaded with requirements: their environments live where the plugins' do
        # (see deepaas_like.environments.environments_root), their hosts' runtime in the data directory
        self.environments = EnvironmentPools(
            (settings.artifacts_dir if self._shared else Path(settings.data_dir)) / "environments",
            Path(settings.data_dir) / "registry-runtime",
            lambda launch: registry_pool(settings, launch),
        )
        self.serving = Serving(
            settings, pool, self.catalog, self.store, self.artifacts, self.runs_code, self._shared, self.environments
        )

    @property
    def section(self) -> RegistrySection:
        """The settings it runs with."""
        return self._settings

    # --- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.frameworks, self.broken_frameworks = discover_frameworks()
        for reason in self.broken_frameworks.values():
            LOG.error("registry: %s", reason)
        from ..containment.landlock import abi

        version = abi()
        if self._settings.engine.executor == "ray" or version < 4:
            why = (
                "--executor ray runs them as Ray actors"
                if self._settings.engine.executor == "ray"
                else f"this kernel offers {'no Landlock' if not version else f'Landlock ABI {version} (4 needed)'}"
            )
            LOG.warning(
                "registry: the workers that load uploaded files cannot be contained (%s): %s",
                why,
                "formats whose loading runs code (pickle, joblib, TorchScript) are served uncontained "
                "(--allow-unconfined-code)"
                if self._settings.allow_unconfined_code
                else f"uploads of formats whose loading runs code (pickle, joblib, TorchScript) are refused; "
                f"{SAFE_FORMATS} are served",
            )
        self._node = await asyncio.to_thread(node_id, self._settings.data_dir) if self._shared else "local"
        await asyncio.to_thread(self.artifacts.prepare, self._node)
        models, versions = await self.store.load()
        self.catalog.load(models, versions)
        for kept in versions:
            if kept.status is VersionStatus.LOADING and not self._shared:  # we stopped during its first load
                kept.status, kept.error = VersionStatus.ERROR, "the server stopped while loading it; upload again"
                await self.store.save_version(kept, "status", "error")
            build = kept.build
            if kept.status is VersionStatus.BUILDING and build is not None and build.node in (self._node, None):
                kept.status = VersionStatus.ERROR  # we stopped during its build (its job is interrupted)
                kept.error = build.error = "the server stopped while building its environment; upload again"
                build.status, build.finished = BuildStatus.FAILED, time.time()
                kept.build = build
                await self.store.save_version(kept, "status", "error", "config")
        if self.catalog or (self._settings.registry_preload and self.frameworks):
            self.ensure_pool()  # else the shared workers start with the first upload
            LOG.info("registry: %d uploaded models", len(models))

    def ensure_pool(self) -> None:
        """Start the shared workers, once (in the background)."""
        self.serving.ensure_pool()

    async def close(self) -> None:
        await self.serving.close()

    def _retire(self, name: str, number: int) -> None:
        self.serving.retire(name, number)

    # --- reading (the catalog's) -------------------------------------------------------

    @property
    def revision(self) -> int:
        return self.catalog.revision

    def __contains__(self, name: str) -> bool:
        return name in self.catalog

    def models(self, deleted: bool = False) -> Iterator[ModelRecord]:
        return self.catalog.models(deleted)

    def not_found(self, name: str) -> NotFound:
        return self.catalog.not_found(name)

    def record(self, name: str, *, archived_ok: bool = False) -> ModelRecord:
        return self.catalog.record(name, archived_ok=archived_ok)

    def versions(self, name: str) -> list[VersionRecord]:
        return self.catalog.versions(name)

    def version(self, name: str, number: int) -> VersionRecord:
        return self.catalog.version(name, number)

    def current(self, name: str) -> VersionRecord | None:
        return self.catalog.current(name)

    async def refresh(self) -> None:
        """Take in what other replicas wrote (see :meth:`Catalog.refresh`)."""
        if await self.catalog.refresh() and self.catalog:
            self.ensure_pool()

    async def catch_up(self, name: str, also_known: bool = False) -> bool:
        return await self.catalog.catch_up(name, also_known)

    def _busy_names(self) -> set[str]:
        return {name for name, lock in self._locks.items() if lock.locked()}

    async def served(self, name: str, number: int | None = None) -> ServedModel:
        """The servable model of a version (the current one by default; see :meth:`Serving.served`)."""
        return await self.serving.served(name, number)

    def job_model(self, model: ModelRecord, version: VersionRecord) -> ServedModel:
        """A version as the model a job of it names (its environment's build), not started."""
        return self.serving.build(model, version)

    def described(self, name: str) -> ServedModel | None:
        """The current version of ``name`` as the API documents it (not started), if any."""
        model = self.catalog.record(name, archived_ok=True)
        current = self.current(name)
        return self.serving.build(model, current) if current is not None else None

    # --- writing ----------------------------------------------------------------------

    def discard(self, artifact: Artifact) -> None:
        """Drop the file of a refused upload: staged, or committed and used by no version."""
        if artifact.staged is not None:
            self.artifacts.discard(artifact)
        else:
            self.discard_unused(artifact.sha256)

    def discard_unused(self, sha256: str) -> None:
        """Remove a stored file that no version refers to (an upload refused after it was stored).

        Not with a shared store: another replica may be recording the same bytes right now,
        and its version would lose its file. Uploads are committed only once they are
        checked, so what stays is a race's loser (two uploads of one name at once)."""
        if self._shared:
            return
        if sha256 not in self.catalog.files_in_use():
            self.artifacts.delete(sha256)

    def check_writable(self, name: str) -> None:
        """The registry changes uploaded models only: a plugin's name is a 409."""
        if name in self._plugins:
            raise Conflict(
                f"'{name}' is the name of a plugin served here; the registry manages uploaded models "
                "only (upload under another name)",
                details={"model": name, "source": "plugin"},
            )

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def runs_code(self, library: str, filetype: str) -> bool:
        """Whether loading a file of this library and type may run code its author wrote."""
        framework = self.frameworks.get(library)
        return framework is None or framework.runs_code(filetype)

    def identify(self, upload: Upload) -> tuple[str, str]:
        """The upload's library and filetype (see :func:`.intake.identify`)."""
        return identify(upload, self.frameworks, self.broken_frameworks)

    async def upload(
        self,
        name: str,
        upload: Upload,
        owner: str | None = None,
        may_publish: bool = False,
        may_add_version: Callable[[], None] | None = None,
        config: dict[str, Any] | None = None,
    ) -> tuple[bool, ModelRecord, VersionRecord]:
        """Record the stored file as the next version of ``name`` and load it once.

        Returns whether the model was created. A version that does not load is kept,
        with status ``error`` and the reason, and the current version stays. ``is_public``
        is the new model's; an existing model's changes only with ``may_publish`` (its
        owner uploads). ``may_add_version`` raises if the caller may not add a version to the
        model as it is when the version is recorded (someone else may have created it meanwhile).
        ``config``: the version's besides the upload's (a retrained one's provenance, see :mod:`.retrain`).
        """
        check_name(name)
        self.check_writable(name)
        library, filetype = self.identify(upload)
        await self.serving.check_code_servable(name, library, filetype)
        if upload.optimize is not None and upload.optimize not in OPTIMIZATIONS:
            raise ArgumentError(
                f"optimize must be one of: {', '.join(OPTIMIZATIONS)}",
                {"optimize": [f"Must be one of: {', '.join(OPTIMIZATIONS)}."]},
            )
        now = time.time()
        async with self._lock(name):
            model = self.catalog.peek(name)
            created = model is None
            if model is None:
                model = ModelRecord(
                    name,
                    created=now,
                    updated=now,
                    is_public=bool(upload.is_public),
                    description=upload.description or "",
                    owner=owner,
                )
                try:
                    await self.store.insert_model(model)
                except sa.exc.IntegrityError:
                    raise _raced(name) from None
                self.catalog.add_model(model)
            elif may_add_version is not None:
                may_add_version()
            if not created and model.archived is not None:
                raise ModelArchived(
                    f"Model '{name}' is archived; restore it before uploading a new version",
                    details={"model": name, "archived": True},
                )
            versions = self.catalog.versions_of(name)
            upload.artifact = await asyncio.to_thread(self.artifacts.commit, upload.artifact)
            config = dict(config or {}) | {
                k: v
                for k, v in (
                    ("input_schema", upload.input_schema),
                    ("output_schema", upload.output_schema),
                    ("requirements", upload.requirements),
                )
                if v is not None
            }
            version = VersionRecord(
                name,
                max(versions, default=0) + 1,
                upload.artifact.sha256,
                upload.artifact.size,
                library,
                filetype,
                upload.filename,
                now,
                config=config,
            )
            if upload.requirements:  # its environment first (see build), in a job the caller submits
                version.status = VersionStatus.BUILDING
                version.build = DependencyBuild(uuid.uuid4().hex, now, node=self._node, optimize=upload.optimize)
            try:
                await self.store.insert_version(version)
            except sa.exc.IntegrityError:
                raise _raced(name) from None
            versions[version.number] = version
        staged = version
        if version.status is not VersionStatus.BUILDING:
            staged = await self._load(model, version, upload.optimize)
        changes: dict[str, Any] = {}
        if not created:
            changes = {
                field_name: value
                for field_name, value in (
                    ("is_public", upload.is_public if may_publish else None),
                    ("description", upload.description),
                )
                if value is not None
            }
        await self._settle(model, version, staged, changes)
        LOG.info(
            "model %s: version %d uploaded (%s, %s, %d bytes): %s%s",
            name,
            version.number,
            library,
            filetype,
            version.size,
            version.status,
            f" ({version.error})" if version.error else "",
        )
        return created, model, version

    async def _load(self, model: ModelRecord, version: VersionRecord, optimization: str | None) -> VersionRecord:
        """Load the version once in a worker (its signature, or why it does not load) and
        optimize it as asked; on a copy of the version, which :meth:`_settle` makes seen."""
        staged = dataclasses.replace(version)
        self.serving.start_pool_of(staged)
        await probe(self.serving.build(model, staged), staged)
        if staged.status is VersionStatus.READY and optimization:
            await optimize(lambda v: self.serving.build(model, v), self.artifacts, staged, self.serving.columns(staged))
        return staged

    async def _settle(
        self,
        model: ModelRecord,
        version: VersionRecord,
        staged: VersionRecord,
        changes: dict[str, Any],
        build: DependencyBuild | None = None,
    ) -> None:
        """Make what loading the version found (``staged``) the version's, with its finished
        ``build`` if it had one, and save it; it serves if it is ready and newer than the
        current version. ``changes``: the model's fields the upload changes besides. The
        version's status and the model's current version change in one step (no await
        between): a client that sees the version ready (or its build done) sees it current."""
        async with self._lock(model.name):
            for field_name in LOADED:
                setattr(version, field_name, getattr(staged, field_name))
            if build is not None:
                version.build = build
            model.updated = time.time()
            if version.status is VersionStatus.READY and (model.current_version or 0) < version.number:
                changes["current_version"] = version.number
            for field_name, value in changes.items():
                setattr(model, field_name, value)
            await self.store.save_version(version, *LOADED, "config")
            await self.store.save_model(model, "updated", *changes)
            self.catalog.changed()

    async def build(self, name: str, number: int, log: Callable[[str], None]) -> dict[str, Any]:
        """Build the environment of a version uploaded with requirements, load the version in
        it as an upload is loaded, and settle it: ``ready`` (and current, if newer than the
        current version, which serves meanwhile) or ``error`` with the reason (a failed build
        names the requirement that failed). The work of a durable job (``log``: its log);
        answers the version's status."""
        model = self.catalog.record(name, archived_ok=True)
        version = self.catalog.version(name, number)
        build, requirements = version.build, version.requirements
        if build is None or requirements is None or version.status is not VersionStatus.BUILDING:
            raise Conflict(f"Version {number} of model '{name}' has no environment to build", details={"model": name})
        build.status, build.started = BuildStatus.PROCESSING, time.time()
        version.build = build
        await self.store.save_version(version, "config")
        log(f"building the environment of version {number} of model '{name}': {' '.join(requirements)}")
        staged: VersionRecord  # what it comes to, seen once settled
        try:
            environment = await self.environments.build(requirements, log)
        except (BuildFailed, ValueError) as exc:
            build.error = exc.message if isinstance(exc, BuildFailed) else str(exc)
            build.requirement = exc.requirement if isinstance(exc, BuildFailed) else None
            error = f"its environment could not be built: {build.error}"
            staged = dataclasses.replace(version, status=VersionStatus.ERROR, error=error)
        except asyncio.CancelledError:  # the server stops: the version does not stay building
            version.status, version.error = VersionStatus.ERROR, "the server stopped while building its environment"
            build.status, build.error, build.finished = BuildStatus.FAILED, version.error, time.time()
            version.build = build
            await asyncio.shield(self.store.save_version(version, "status", "error", "config"))
            raise
        else:
            build.environment = environment.key
            version.build = build
            await asyncio.to_thread(self.environments.record, name, number, environment.key)
            log(f"loading version {number} in environment {environment.key[:12]}")
            staged = await self._load(model, version, build.optimize)
            build.error = staged.error
        build.status = BuildStatus.SUCCESS if staged.status is VersionStatus.READY else BuildStatus.FAILED
        build.finished = time.time()
        if self.catalog.peek(name) is not model:  # purged meanwhile
            await asyncio.to_thread(self.environments.drop, name, number)
            raise NotFound(f"Model '{name}' was deleted while its version {number} was building")
        await self._settle(model, version, staged, {}, build)
        log(f"version {number}: {version.status}{f' ({version.error})' if version.error else ''}")
        if version.error:
            raise DeepaasError(version.error)
        return {"version": number, "status": version.status, "environment": build.environment}

    async def set_owner(self, record: ModelRecord, owner: str | None) -> None:
        """A model's new owner (the access list's change, decided by the gate)."""
        record.owner = owner
        await self.store.save_model(record, "owner")

    def load_stats(self) -> tuple[LoadStats, int]:
        """The shared workers' loads, evictions and load times, and how many models they hold now."""
        return self.serving.load_stats()

    async def update(
        self,
        name: str,
        *,
        current_version: int | None = None,
        is_public: bool | None = None,
        description: str | None = None,
    ) -> ModelRecord:
        model = self.record(name)
        async with self._lock(name):
            changes = []
            if current_version is not None:
                version = self.version(name, current_version)
                if version.status is not VersionStatus.READY:
                    raise Conflict(
                        f"Version {current_version} of model '{name}' is {version.status}"
                        f"{f': {version.error}' if version.error else ''}; only a ready version can serve",
                        details={"model": name, "version": current_version, "status": version.status},
                    )
                model.current_version = current_version
                changes.append("current_version")
            if is_public is not None:
                model.is_public = is_public
                changes.append("is_public")
            if description is not None:
                model.description = description
                changes.append("description")
            model.updated = time.time()
            await self.store.save_model(model, "updated", *changes)
            self.catalog.changed()
        return model

    async def set_config(self, name: str, number: int, config: dict[str, Any]) -> VersionRecord:
        """Replace a version's input schema, output schema and batching; the next calls use them."""
        self.record(name)
        version = self.version(name, number)
        checked = {
            "input_schema": check_schema("input_schema", config.get("input_schema")),
            "output_schema": check_schema("output_schema", config.get("output_schema")),
            "batching": check_batching(config.get("batching")),
        }
        if "requirements" in config and check_requirements(config["requirements"]) != version.requirements:
            raise Conflict(
                f"The requirements of version {number} of model '{name}' are those its environment was built "
                "with; upload the file again with the new requirements (a new version)",
                details={"model": name, "version": number, "requirements": version.requirements},
            )
        unknown = sorted(set(config) - set(checked) - {"requirements"})
        if unknown:
            raise ArgumentError(
                f"Unknown config keys: {', '.join(unknown)}; known: {', '.join(checked)}",
                {k: ["Unknown key."] for k in unknown},
            )
        async with self._lock(name):
            kept = {
                k: version.config[k] for k in ("dataset", "requirements", "build", "source") if version.config.get(k)
            }
            version.config = {**{k: v for k, v in checked.items() if v}, **kept}
            await self.store.save_version(version, "config")
            self._retire(name, number)
            self.catalog.changed()
        return version

    async def archive(self, name: str) -> ModelRecord:
        model = self.record(name)
        model.archived = model.updated = time.time()
        await self.store.save_model(model, "archived", "updated")
        self.catalog.changed()
        return model

    async def restore(self, name: str) -> ModelRecord:
        model = self.record(name, archived_ok=True)
        if model.archived is None:
            raise Conflict(f"Model '{name}' is not archived", details={"model": name})
        model.archived, model.updated = None, time.time()
        await self.store.save_model(model, "archived", "updated")
        self.catalog.changed()
        return model

    async def purge(self, name: str) -> None:
        """Delete the model, its versions, and the files no other version uses."""
        self.record(name, archived_ok=True)
        async with self._lock(name):
            versions = self.catalog.remove(name)
            await self.store.purge(name)
            for number, version in versions.items():
                self._retire(name, number)
                if version.requirements:  # its environment is no longer used by it
                    await asyncio.to_thread(self.environments.drop, name, number)
            still_used = self.catalog.files_in_use()
            for version in versions.values():
                for sha in files_of(version):
                    if sha not in still_used:
                        await asyncio.to_thread(self.artifacts.delete, sha)
            self.catalog.changed()


def _raced(name: str) -> Conflict:
    """Another replica created the model, or its next version, at the same moment."""
    return Conflict(
        f"Model '{name}' was being written by another replica at the same moment; upload again", details={"model": name}
    )


__all__ = ["CodeRefused", "Registry", "ModelArchived", "ModelState"]
