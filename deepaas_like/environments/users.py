"""Who uses which environment: one small file per user, so that gc keeps what is in use.

A user is whatever runs in an environment: a plugin, an uploaded model's version. Whoever
registers it records it, and drops it when it goes; ``deepaas-env gc`` removes the
environments that no record names::

    record_user(root, "plugin:irisbench", env.key, name="irisbench")
    in_use(root)                      # {env.key, ...}
    drop_user(root, "plugin:irisbench")

Records are ``<root>/users/<user id, percent-encoded>.json``: ``{"environment": key,
"user": user_id, "recorded": epoch, ...details}``, each written whole (a temporary file
renamed), so that several processes may record at once.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

USERS_DIR = "users"


def record_user(root: Path, user_id: str, key: str, **details: Any) -> None:
    """Record that ``user_id`` runs in environment ``key`` (replacing what it used before)."""
    path = _user_file(root, user_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**details, "user": user_id, "environment": key, "recorded": time.time()}
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(record, out, indent=2)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def drop_user(root: Path, user_id: str) -> None:
    """Forget ``user_id``; one never recorded is already forgotten."""
    _user_file(root, user_id).unlink(missing_ok=True)


def users(root: Path) -> dict[str, dict[str, Any]]:
    """Each recorded user's record, by user id.

    Raises ValueError naming a file that is no record: gc must not guess what it keeps.
    """
    records = {}
    for path in sorted((Path(root) / USERS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("environment"), str):
                raise ValueError('no "environment" key')
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{path}: not an environment user's record ({exc}); fix or delete it, since what it keeps is unknown"
            ) from exc
        records[str(record.get("user", path.stem))] = record
    return records


def in_use(root: Path) -> set[str]:
    """The keys of the environments that some user records."""
    return {record["environment"] for record in users(root).values()}


def _user_file(root: Path, user_id: str) -> Path:
    name = quote(user_id, safe="")
    if not user_id or len(name) > 200:
        raise ValueError(f"user id {user_id!r}: give a non-empty name of at most 200 characters")
    return Path(root) / USERS_DIR / f"{name}.json"
