"""Uploaded model files, content-addressed under ``<data-dir>/artifacts``.

A file is streamed to a temporary file while it is hashed (it is *staged*), checked, and
only then renamed to ``artifacts/sha256/ab/abcdef...`` (its SHA-256, *committed*): an
upload refused on its contents never touches the content-addressed files, which other
replicas sharing the directory may be using, and a crash mid-upload leaves at most a
temporary file, which the next start removes, never a half-written artifact. Each server
stages under its own ``tmp/<node>`` so that a replica starting does not remove another's
upload in flight. The same bytes uploaded twice are stored once; a download returns
exactly what was uploaded::

    store = ArtifactStore(Path("/data/artifacts"), max_size=1 << 30)
    store.prepare(node="host:1a2b")              # at start: this server's staging directory
    artifact = await store.stage(chunks)         # chunks: an async iterator of bytes
    artifact = store.commit(artifact)            # or store.discard(artifact)
    store.path(artifact.sha256).read_bytes()     # the exact bytes
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from ..errors import PayloadTooLarge
from ..files import PRIVATE_DIR, private_dir

HEAD_SIZE = 4096


@dataclass(frozen=True)
class Artifact:
    sha256: str
    size: int
    head: bytes  # the first bytes, to recognise the file type without reading it again
    staged: Path | None = None  # the temporary file until it is committed


class UploadTooLarge(PayloadTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.message = f"Model file too large: the limit is {limit} bytes (--max-upload-size)"


class ArtifactStore:
    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size
        self._tmp = root / "tmp" / "local"

    def prepare(self, node: str = "local") -> None:
        """Create the directories; remove what an interrupted upload of this server (``node``,
        its name among replicas sharing the directory) left."""
        self._tmp = self.root / "tmp" / re.sub(r"[^A-Za-z0-9_.-]", "_", node)
        shutil.rmtree(self._tmp, ignore_errors=True)
        private_dir(self.root)
        self._tmp.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    async def save(self, chunks: AsyncIterator[bytes]) -> Artifact:
        """:meth:`stage` and :meth:`commit` at once (for files the server makes itself)."""
        return self.commit(await self.stage(chunks))

    async def stage(self, chunks: AsyncIterator[bytes]) -> Artifact:
        """Stream ``chunks`` to a temporary file while hashing; 413 beyond ``max_size``
        (nothing kept)."""
        digest = hashlib.sha256()
        size = 0
        head = b""
        fd, temp = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_size:
                        raise UploadTooLarge(self.max_size)
                    if len(head) < HEAD_SIZE:
                        head += chunk[: HEAD_SIZE - len(head)]
                    digest.update(chunk)
                    fh.write(chunk)
                await asyncio.to_thread(os.fsync, fh.fileno())
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return Artifact(digest.hexdigest(), size, head, Path(temp))

    def commit(self, artifact: Artifact) -> Artifact:
        """Move a staged file to its content address (atomic; the same bytes twice: one file)."""
        if artifact.staged is None:
            return artifact
        final = self.path(artifact.sha256)
        final.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        os.replace(artifact.staged, final)
        return dataclasses.replace(artifact, staged=None)

    def discard(self, artifact: Artifact) -> None:
        """Remove a staged file (an upload refused before it was committed)."""
        if artifact.staged is not None:
            artifact.staged.unlink(missing_ok=True)

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
