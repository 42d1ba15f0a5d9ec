"""Changes of this server's jobs that the store could not take yet.

When the store cannot be reached (a PostgreSQL restarting, a network blip), a job still
starts, runs and ends here; its changes wait in the outbox, a file in ``--data-dir``
written atomically at each change, and are written to the store, in order, as soon as it
answers again. Each is the job's whole row, written only while the store still has the job
unfinished, so writing it twice does nothing more, and a final status once in the store is
never changed by it. A server that stops (or crashes) during an outage finds the outbox at
its next start and writes it first::

    outbox = Outbox(data_dir / "outbox.json")
    outbox.keep(row, version)   # the store was away: kept, on disk (the latest version wins)
    for kept in outbox.rows():  # later: written, then dropped
        ...
        outbox.drop(kept["id"])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

OUTBOX_NAME = "outbox.json"
VERSION = "_version"  # kept with each row: the order of the server's changes of the job


def row_of(kept: dict[str, Any]) -> dict[str, Any]:
    """The row as the store takes it (without the outbox's own key)."""
    return {k: v for k, v in kept.items() if k != VERSION}


class Outbox:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._rows: dict[str, dict[str, Any]] = {}  # job id -> its latest row, in the order of first change

    def load(self) -> None:
        try:
            rows = json.loads(self._path.read_text())
        except FileNotFoundError:
            return
        except ValueError:  # a file cut short by a crash in its first write: the old one was replaced atomically
            rows = []
        self._rows = {row["id"]: row for row in rows if isinstance(row, dict) and "id" in row}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows.values())

    def keep(self, row: dict[str, Any], version: int) -> None:
        """Keep a job's row, on disk, unless a later one of the same job is kept already
        (``version``: the order in which the server made them; writes may fail out of order)."""
        kept = self._rows.get(row["id"])
        if kept is not None and kept.get(VERSION, -1) > version:
            return
        self._rows[row["id"]] = {**row, VERSION: version}
        self._save()

    def drop(self, job_id: str, up_to: int | None = None) -> None:
        """Forget a job's row (``up_to``: only if it is not later than that version)."""
        kept = self._rows.get(job_id)
        if kept is not None and (up_to is None or kept.get(VERSION, -1) <= up_to):
            del self._rows[job_id]
            self._save()

    def _save(self) -> None:
        if not self._rows:
            self._path.unlink(missing_ok=True)
            return
        temporary = self._path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(list(self._rows.values()), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, self._path)
