"""The registry's records (uploaded models and their versions) and their tables."""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import sqlalchemy as sa

from ..database import Database, bump_revision
from ..jsonutil import stamp
from ..tables import model_versions, uploaded_models


class VersionStatus(enum.StrEnum):
    LOADING = "loading"
    BUILDING = "building"  # its environment is being built (an upload with requirements)
    READY = "ready"
    ERROR = "error"


class BuildStatus(enum.StrEnum):
    """Where a version's environment build is (DataRobot's words for a dependency build)."""

    SUBMITTED = "submitted"
    PROCESSING = "processing"
    SUCCESS = "success"  # built, and the version loads in it
    FAILED = "failed"


@dataclass
class DependencyBuild:
    """The build of a version's own environment (an upload with requirements), kept in the
    version's config as ``build``; ``job``: the durable job that runs it (its log)."""

    job: str
    submitted: float
    status: BuildStatus = BuildStatus.SUBMITTED
    started: float | None = None
    finished: float | None = None
    environment: str | None = None  # the environment's key, once built
    error: str | None = None
    requirement: str | None = None  # the requirement that could not be resolved or installed
    optimize: str | None = None  # what the upload asked, done once the version loads
    node: str | None = None  # the server that builds it (with replicas: its restart ends the build)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DependencyBuild:
        return cls(**{**doc, "status": BuildStatus(doc.get("status", BuildStatus.SUBMITTED))})

    def document(self, href: str, requirements: list[str]) -> dict[str, Any]:
        """What ``GET .../dependencyBuild`` answers (``href``: the version's URL)."""
        return {
            "buildStatus": self.status,
            "buildStart": stamp(self.started),
            "buildEnd": stamp(self.finished),
            "buildLogLocation": f"{href}/dependencyBuildLog",
            "environment": self.environment,
            "requirements": requirements,
            "error": self.error,
            "failedRequirement": self.requirement,
        }


@dataclass
class VersionRecord:
    """One uploaded file of a model: its bytes (by SHA-256), what it is, whether it loads."""

    model: str
    number: int
    sha256: str
    size: int
    library: str
    filetype: str
    filename: str | None
    created: float
    status: VersionStatus = VersionStatus.LOADING
    error: str | None = None
    signature: dict[str, Any] | None = None  # Signature.to_json() once loaded
    config: dict[str, Any] = field(default_factory=dict)  # input_schema, output_schema, batching
    optimization: dict[str, Any] | None = None  # optimize=onnx: what was asked, agreement, outcome

    @property
    def requirements(self) -> list[str] | None:
        """What its own environment holds (an upload with requirements), else None."""
        requirements = self.config.get("requirements")
        return list(requirements) if requirements else None

    @property
    def build(self) -> DependencyBuild | None:
        """The build of its own environment, if it has requirements."""
        build = self.config.get("build")
        return DependencyBuild.from_json(build) if isinstance(build, dict) else None

    @build.setter
    def build(self, build: DependencyBuild) -> None:
        self.config = {**self.config, "build": build.to_json()}

    @property
    def source(self) -> dict[str, Any] | None:
        """What made a retrained version (see :mod:`.retrain`), as a plugin's version says it:
        ``{"kind": "training", "training": job id, "parent", "rows", "target", "features"}``;
        None for an uploaded file."""
        source = self.config.get("source")
        return dict(source) if isinstance(source, dict) else None

    @property
    def environment(self) -> str | None:
        """The key of the environment it is served in (None: the server's)."""
        build = self.build
        return build.environment if build is not None and self.requirements else None

    def document(self, href: str) -> dict[str, Any]:
        signature = self.signature or {}
        doc: dict[str, Any] = {
            "model": self.model,
            "version": self.number,
            "sha256": self.sha256,
            "size": self.size,
            "library": self.library,
            "filetype": self.filetype,
            "filename": self.filename,
            "library_versions": signature.get("library_versions", {}),
            "created_at": stamp(self.created),
            "status": self.status,
        }
        if self.error:
            doc["error"] = self.error
        if self.signature is not None:
            doc["signature"] = self.signature
        if self.optimization is not None:
            doc["optimization"] = self.optimization
        if self.requirements is not None:
            doc["requirements"] = self.requirements
            doc["environment"] = self.environment
        source = self.source
        if source is not None:
            doc["source"] = source
        doc["links"] = {
            "self": href,
            "download": f"{href}/download",
            "config": f"{href}/config",
            "predict": f"{href}/predict/",
        }
        if self.requirements is not None:
            doc["links"]["dependencyBuild"] = f"{href}/dependencyBuild"
        if source is not None:
            base = href.rsplit("/versions/", 1)[0]
            doc["links"]["parent"] = f"{base}/versions/{source.get('parent')}"
            doc["links"]["training"] = f"{base}/train/{source.get('training')}"
            doc["links"]["log"] = f"{base}/train/{source.get('training')}/log"
        return doc


@dataclass
class ModelRecord:
    """An uploaded model: its versions' common facts and which version serves."""

    name: str
    created: float
    updated: float
    last_predict: float | None = None
    current_version: int | None = None
    is_public: bool = False
    description: str = ""
    owner: str | None = None
    archived: float | None = None


_JSON_VERSION_FIELDS = {"signature", "config", "optimization"}
MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelRecord)]
VERSION_FIELDS = [f.name for f in dataclasses.fields(VersionRecord)]


class RegistryStore:
    """The ``uploaded_models`` and ``model_versions`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.writes = 0  # grows when a write starts and when it ends

    async def load(self) -> tuple[list[ModelRecord], list[VersionRecord]]:
        def load(conn: sa.Connection) -> tuple[list[ModelRecord], list[VersionRecord]]:
            models = [
                ModelRecord(**dict(zip(MODEL_FIELDS, row)))
                for row in conn.execute(
                    sa.select(*(uploaded_models.c[n] for n in MODEL_FIELDS)).order_by(uploaded_models.c.name)
                )
            ]
            for model in models:
                model.is_public = bool(model.is_public)
            versions = []
            for row in conn.execute(
                sa.select(*(model_versions.c[n] for n in VERSION_FIELDS)).order_by(
                    model_versions.c.model, model_versions.c.number
                )
            ):
                values = dict(zip(VERSION_FIELDS, row))
                for name in _JSON_VERSION_FIELDS:
                    values[name] = json.loads(values[name]) if values[name] is not None else None
                values["config"] = values["config"] or {}
                values["status"] = VersionStatus(values["status"])
                versions.append(VersionRecord(**values))
            return models, versions

        return await self._db.run(load)

    @staticmethod
    def _model_values(model: ModelRecord, names: Iterable[str]) -> dict[str, Any]:
        return {n: int(model.is_public) if n == "is_public" else getattr(model, n) for n in names}

    async def _write(self, fn: Callable[[sa.Connection], Any], *, announce: bool = True) -> None:
        """One write; ``announce``: replicas reload the registry (not for last-predict times)."""
        self.writes += 1  # a load that overlaps a write is read again (see Registry.refresh)

        def write(conn: sa.Connection) -> None:
            fn(conn)
            if announce:
                bump_revision(conn)

        try:
            await self._db.run(write)
        finally:
            self.writes += 1

    async def insert_model(self, model: ModelRecord) -> None:
        values = self._model_values(model, MODEL_FIELDS)
        await self._write(lambda conn: conn.execute(sa.insert(uploaded_models).values(values)))

    async def save_model(self, model: ModelRecord, *names: str) -> None:
        values = self._model_values(model, names or MODEL_FIELDS)
        await self._write(
            lambda conn: conn.execute(
                sa.update(uploaded_models).where(uploaded_models.c.name == model.name).values(values)
            ),
            announce=set(values) != {"last_predict"},
        )

    @staticmethod
    def _encode(version: VersionRecord, name: str) -> Any:
        value = getattr(version, name)
        return json.dumps(value) if name in _JSON_VERSION_FIELDS and value is not None else value

    async def insert_version(self, version: VersionRecord) -> None:
        values = {n: self._encode(version, n) for n in VERSION_FIELDS}
        await self._write(lambda conn: conn.execute(sa.insert(model_versions).values(values)))

    async def save_version(self, version: VersionRecord, *names: str) -> None:
        values = {n: self._encode(version, n) for n in (names or VERSION_FIELDS)}
        await self._write(
            lambda conn: conn.execute(
                sa.update(model_versions)
                .where(model_versions.c.model == version.model, model_versions.c.number == version.number)
                .values(values)
            )
        )

    async def purge(self, name: str) -> None:
        """Delete a model and every version of it, in one transaction."""

        def purge(conn: sa.Connection) -> None:
            conn.execute(sa.delete(model_versions).where(model_versions.c.model == name))
            conn.execute(sa.delete(uploaded_models).where(uploaded_models.c.name == name))

        await self._write(purge)
