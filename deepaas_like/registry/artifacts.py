"""Uploaded model files, content-addressed under ``<data-dir>/artifacts``.

A file is streamed to a temporary file while it is hashed, then renamed to
``artifacts/sha256/ab/abcdef...`` (its SHA-256): a crash mid-upload leaves at most a
temporary file, which the next start removes, never a half-written artifact. The same
bytes uploaded twice are stored once; a download returns exactly what was uploaded::

    store = ArtifactStore(Path("/data/artifacts"), max_size=1 << 30)
    artifact = await store.save(chunks)          # chunks: an async iterator of bytes
    store.path(artifact.sha256).read_bytes()     # the exact bytes
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from ..errors import PayloadTooLarge

HEAD_SIZE = 4096


@dataclass(frozen=True)
class Artifact:
    sha256: str
    size: int
    head: bytes  # the first bytes, to recognise the file type without reading it again


class UploadTooLarge(PayloadTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.message = f"Model file too large: the limit is {limit} bytes (--max-upload-size)"


class ArtifactStore:
    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size
        self._tmp = root / "tmp"

    def prepare(self) -> None:
        """Create the directories; remove what an interrupted upload left."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    async def save(self, chunks: AsyncIterator[bytes]) -> Artifact:
        """Stream ``chunks`` to disk while hashing; 413 beyond ``max_size`` (nothing kept)."""
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
                        head += chunk[:HEAD_SIZE - len(head)]
                    digest.update(chunk)
                    fh.write(chunk)
                await asyncio.to_thread(os.fsync, fh.fileno())
            sha = digest.hexdigest()
            final = self.path(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)  # atomic; the same bytes twice: one file
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        return Artifact(sha, size, head)

    def delete(self, sha256: str) -> None:
        try:
            os.unlink(self.path(sha256))
        except FileNotFoundError:
            pass
