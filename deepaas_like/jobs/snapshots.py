"""A plugin's ``storage_dir()`` kept version by version: each file's bytes once, by content,
and one manifest per version. Synchronous file work (callers run it in a thread).

Layout, under ``<models_dir>/.versions/<model>/`` (beside the storage dirs, so on the same
file system: a switch is two renames)::

    lock                   flock: one writer at a time (replicas on a shared directory too)
    blobs/ab/ab12...       a file's bytes by SHA-256: an unchanged file is stored once
    versions/000003.json   a version: path -> sha256, size, mode; links; empty folders;
                           and what made it (``source``: the training, its arguments, result, times)
    current                the number of the version the storage_dir holds
    switch.json            a switch under way: what to finish if the process dies in it
    incoming-* outgoing-*  the trees of a switch

What a crash leaves: blobs are written (temporary name, fsync, rename) before the manifest
that names them, and a manifest is written to a temporary file and renamed, so a version is
either listed whole or not at all; a blob no manifest names is collected later. A switch
builds the version's tree beside the storage_dir, writes its journal (``switch.json``),
then renames the storage_dir out and the tree in; :meth:`SnapshotStore.recover` (under the
lock, before anything else writes) finishes a switch its journal names and removes the
trees of any other. Every write happens under :meth:`SnapshotStore.locked`.

    store = SnapshotStore(models_dir / ".versions" / "trainer")
    with store.locked():
        snap = store.record(models_dir / "trainer", {"kind": "training", "training": job_id})
        store.set_current(snap.number)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator, Iterator

CHUNK = 1024 * 1024
JOURNAL = "switch.json"
CURRENT = "current"
TEMPORARY = ".tmp-"  # a file being written: its name once complete has no such prefix
TREE_PREFIXES = ("incoming-", "outgoing-")


@dataclass
class Snapshot:
    """One version of a plugin's storage_dir: what it held, and what made it."""

    model: str
    number: int
    created: float
    source: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> sha256, size, mode
    links: dict[str, str] = field(default_factory=dict)  # path -> target (symbolic links, kept as links)
    dirs: list[str] = field(default_factory=list)  # every folder, so that empty ones come back too

    @property
    def file_count(self) -> int:
        return len(self.files)

    @property
    def size(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())

    def blobs(self) -> set[str]:
        return {f["sha256"] for f in self.files.values()}

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.number,
            "created": self.created,
            "source": self.source,
            "files": self.files,
            "links": self.links,
            "dirs": self.dirs,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Snapshot:
        return cls(
            doc["model"],
            int(doc["version"]),
            float(doc["created"]),
            dict(doc.get("source") or {}),
            dict(doc.get("files") or {}),
            dict(doc.get("links") or {}),
            list(doc.get("dirs") or []),
        )


class SnapshotStore:
    """The versions of one plugin's storage_dir (see the module's docstring)."""

    def __init__(self, root: Path, model: str) -> None:
        self.root = root
        self.model = model
        self.blob_dir = root / "blobs"
        self.version_dir = root / "versions"

    # --- reading (no lock needed: every file is complete when it has its name) -----------

    def numbers(self) -> list[int]:
        """The recorded versions, oldest first."""
        try:
            names = os.listdir(self.version_dir)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def snapshot(self, number: int) -> Snapshot | None:
        try:
            text = (self.version_dir / f"{number:06d}.json").read_text()
        except FileNotFoundError:
            return None
        return Snapshot.from_json(json.loads(text))

    def snapshots(self) -> list[Snapshot]:
        found = (self.snapshot(n) for n in self.numbers())
        return [s for s in found if s is not None]  # one pruned meanwhile is left out

    def current(self) -> int | None:
        """The version the storage_dir holds, as the last writer recorded it."""
        try:
            return int((self.root / CURRENT).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / sha256

    # --- writing (under locked()) -----------------------------------------------------

    def acquire(self) -> int:
        """Take the store's lock, waiting while another writer holds it (threads, processes
        and replicas on a shared directory alike); the descriptor to :meth:`release` it with."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # the lock goes with the descriptor

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fd = self.acquire()
        try:
            yield
        finally:
            self.release(fd)

    def record(self, source_dir: Path, source: dict[str, Any], created: float | None = None) -> Snapshot:
        """Keep what ``source_dir`` holds now as the next version (its number: one past the
        highest kept). A missing ``source_dir`` is an empty version."""
        numbers = self.numbers()
        snap = Snapshot(self.model, (numbers[-1] if numbers else 0) + 1, created or time.time(), source)
        if source_dir.is_dir():
            for path, entry in _walk(source_dir):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    snap.links[path] = os.readlink(entry.path)
                elif stat.S_ISDIR(info.st_mode):
                    snap.dirs.append(path)
                elif stat.S_ISREG(info.st_mode):  # sockets, pipes and devices are not kept
                    sha256, size = self._keep(Path(entry.path))
                    snap.files[path] = {"sha256": sha256, "size": size, "mode": stat.S_IMODE(info.st_mode)}
        snap.dirs.sort()
        _write_atomically(self.version_dir / f"{snap.number:06d}.json", json.dumps(snap.to_json()).encode())
        return snap

    def set_current(self, number: int) -> None:
        _write_atomically(self.root / CURRENT, f"{number}\n".encode())

    def _keep(self, path: Path) -> tuple[str, int]:
        """The file's blob (copied only when no version has these bytes yet): sha256, size."""
        sha256, size = _hash(path)
        target = self.blob_path(sha256)
        if target.exists():
            return sha256, size
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f"{TEMPORARY}{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as src, open(temporary, "wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            sha256 = digest.hexdigest()  # the bytes copied (the file changed if they differ)
            target = self.blob_path(sha256)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        return sha256, size

    def prune(self, keep: int, protected: set[int]) -> list[int]:
        """Remove the oldest versions beyond the ``keep`` newest (0: keep all), never those in
        ``protected`` nor the newest; then the blobs no kept version names. The removed numbers."""
        numbers = self.numbers()
        if keep <= 0 or len(numbers) <= keep:
            return []
        newest = set(numbers[-keep:]) | {numbers[-1]}
        removed = [n for n in numbers if n not in newest and n not in protected]
        for number in removed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.version_dir / f"{number:06d}.json")
        if removed:
            self.collect()
        return removed

    def collect(self) -> int:
        """Remove blobs no version names, and files a crash left half written. How many."""
        named: set[str] = set()
        for snap in self.snapshots():
            named |= snap.blobs()
        removed = 0
        for folder in self.blob_dir.glob("*") if self.blob_dir.is_dir() else ():
            for blob in folder.iterdir():
                if blob.name not in named:
                    with contextlib.suppress(FileNotFoundError):
                        blob.unlink()
                    removed += 1
        for stray in self.version_dir.glob(f"{TEMPORARY}*") if self.version_dir.is_dir() else ():
            stray.unlink(missing_ok=True)
        return removed

    # --- switching the storage_dir --------------------------------------------------------

    def build(self, snap: Snapshot) -> Path:
        """The version's tree, complete, beside the storage_dir (``incoming-*``): files copied
        from their blobs (never linked: a training that rewrites a file in place would change
        the blob)."""
        tree = self.root / f"incoming-{uuid.uuid4().hex[:12]}"
        tree.mkdir(mode=0o700)
        for path in snap.dirs:
            (tree / path).mkdir(parents=True, exist_ok=True)
        for path, meta in snap.files.items():
            target = tree / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.blob_path(meta["sha256"]), target)
            os.chmod(target, int(meta["mode"]))
        for path, link in snap.links.items():
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(link, tree / path)
        os.chmod(tree, 0o755)
        return tree

    def swap(self, storage: Path, tree: Path, number: int) -> Path:
        """Put ``tree`` in the storage_dir's place and record ``number`` as current; the
        storage_dir as it was, renamed aside (``outgoing-*``), which the caller removes once
        the workers serve the new one (or puts back with another swap)."""
        outgoing = self.root / f"outgoing-{uuid.uuid4().hex[:12]}"
        _write_atomically(
            self.root / JOURNAL,
            json.dumps({"version": number, "incoming": tree.name, "outgoing": outgoing.name}).encode(),
        )
        self._finish_swap(storage, tree, outgoing, number)
        return outgoing

    def _finish_swap(self, storage: Path, tree: Path, outgoing: Path, number: int) -> None:
        for _ in range(5):
            if storage.exists() or storage.is_symlink():
                target = outgoing if not outgoing.exists() else self.root / f"outgoing-{uuid.uuid4().hex[:12]}"
                os.rename(storage, target)
            try:
                os.rename(tree, storage)
                break
            except OSError as exc:  # made again meanwhile (a worker's storage_dir() call): aside, again
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        else:
            raise OSError(f"{storage} keeps being made again while it is switched")
        self.set_current(number)
        (self.root / JOURNAL).unlink(missing_ok=True)

    def recover(self, storage: Path) -> None:
        """After a crash: finish the switch the journal names (its tree complete), then remove
        the trees and half-written files of any other."""
        journal = self.root / JOURNAL
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            plan = json.loads(journal.read_text())
            tree = self.root / plan["incoming"]
            if tree.is_dir():
                self._finish_swap(storage, tree, self.root / plan["outgoing"], int(plan["version"]))
            else:  # renamed in already: only its number was left to write
                self.set_current(int(plan["version"]))
        journal.unlink(missing_ok=True)
        for tree in self.root.iterdir() if self.root.is_dir() else ():
            if tree.name.startswith(TREE_PREFIXES) or tree.name.startswith(TEMPORARY):
                remove_tree(tree)

    # --- a version as a tar -----------------------------------------------------------------

    def tar_size(self, snap: Snapshot) -> int:
        return sum(len(header) + _padded(size) for header, _, size in self._members(snap)) + 2 * tarfile.BLOCKSIZE

    def tar_chunks(self, snap: Snapshot) -> Generator[bytes, None, None]:
        """The version as an uncompressed tar (POSIX), in pieces: folders, files, links."""
        for header, blob, size in self._members(snap):
            yield header
            if blob is not None:
                with open(blob, "rb") as data:
                    while chunk := data.read(CHUNK):
                        yield chunk
                if size % tarfile.BLOCKSIZE:
                    yield bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)
        yield bytes(2 * tarfile.BLOCKSIZE)

    def _members(self, snap: Snapshot) -> Iterator[tuple[bytes, Path | None, int]]:
        def info(path: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
            member = tarfile.TarInfo(path)
            member.type, member.mode, member.size, member.mtime = kind, mode, size, int(snap.created)
            return member

        for path in snap.dirs:
            yield info(path, tarfile.DIRTYPE, 0o755).tobuf(tarfile.PAX_FORMAT), None, 0
        for path, meta in sorted(snap.files.items()):
            size = int(meta["size"])
            header = info(path, tarfile.REGTYPE, int(meta["mode"]), size).tobuf(tarfile.PAX_FORMAT)
            yield header, self.blob_path(meta["sha256"]), size
        for path, target in sorted(snap.links.items()):
            member = info(path, tarfile.SYMTYPE, 0o777)
            member.linkname = target
            yield member.tobuf(tarfile.PAX_FORMAT), None, 0


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _walk(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under ``root`` (its path relative to it), links not followed."""
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(root / relative if relative else root) as entries:
            for entry in entries:
                path = f"{relative}/{entry.name}" if relative else entry.name
                yield path, entry
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)


def _hash(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole, or what it held before (a temporary file, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f"{TEMPORARY}{path.name}.{uuid.uuid4().hex[:8]}"
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
