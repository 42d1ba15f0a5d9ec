"""A version's reference dataset: a CSV of sample rows kept with it (by content, as uploaded
files are), which model tests and feature impact use by default and whose ranges the
version's arguments document."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from ..errors import NotFound
from .artifacts import ArtifactStore
from .catalog import Catalog
from .optimize import chunks_of
from .records import RegistryStore, VersionRecord
from .rows import ranges


class Datasets:
    """The reference datasets of uploaded versions. ``lock(name)``: the registry's lock of a
    model's writes; ``retire(name, number)``: a version's serving must start afresh."""

    def __init__(
        self,
        catalog: Catalog,
        store: RegistryStore,
        artifacts: ArtifactStore,
        lock: Callable[[str], asyncio.Lock],
        retire: Callable[[str, int], None],
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._artifacts = artifacts
        self._lock = lock
        self._retire = retire

    async def save(self, name: str, number: int, data: bytes, rows: list[dict[str, Any]]) -> VersionRecord:
        """Keep a CSV of sample rows with a version: model tests and feature impact use it by default."""
        self._catalog.record(name)
        version = self._catalog.version(name, number)
        artifact = await self._artifacts.save(chunks_of(data))
        async with self._lock(name):
            version.config = {
                **version.config,
                "dataset": {
                    "sha256": artifact.sha256,
                    "rows": len(rows),
                    "columns": list(rows[0]) if rows else [],
                    "ranges": ranges(rows),
                },
            }
            await self._store.save_version(version, "config")
            self._retire(name, number)  # its arguments now say what range the dataset covers
            self._catalog.changed()
        return version

    def path(self, name: str, number: int) -> Path:
        """Where a version's dataset is (404 when it has none)."""
        dataset = self._catalog.version(name, number).config.get("dataset")
        if not dataset:
            raise NotFound(
                f"Version {number} of model '{name}' has no reference dataset",
                details={"model": name, "version": number},
            )
        return self._artifacts.path(dataset["sha256"])

    def rows(self, name: str) -> list[dict[str, Any]] | None:
        """The rows of the current version's reference dataset, if it has one."""
        from ..quality.samples import rows_from_csv

        current = self._catalog.current(name)
        dataset = current.config.get("dataset") if current is not None else None
        return rows_from_csv(self._artifacts.path(dataset["sha256"]).read_bytes()) if dataset else None
