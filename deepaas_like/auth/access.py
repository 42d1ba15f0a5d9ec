"""Users, per-model roles and the audit log: their tables, kept in memory by the server."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from ..database import Database
from .principal import Role

SQLITE_MAX_INT = 2**63 - 1


@dataclass
class User:
    id: str
    username: str | None = None
    email: str | None = None
    created: float = 0.0

    def document(self) -> dict[str, Any]:
        return {"userId": self.id, "username": self.username, "email": self.email}


@dataclass
class Grant:
    """One user's role on one uploaded model."""

    model: str
    user_id: str
    role: Role
    can_share: bool


class AccessTables:
    """The ``users``, ``model_access`` and ``audit`` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self) -> tuple[list[User], list[Grant]]:
        def load(conn: sqlite3.Connection) -> tuple[list[User], list[Grant]]:
            users = [User(*row) for row in conn.execute("SELECT id, username, email, created FROM users")]
            grants = [Grant(model, user, Role(role), bool(share)) for model, user, role, share in conn.execute(
                "SELECT model, user_id, role, can_share FROM model_access")]
            return users, grants

        return await self._db.run(load)

    async def save_user(self, user: User) -> None:
        await self._db.run(lambda conn: conn.execute(
            "INSERT INTO users (id, username, email, created) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
            "SET username = excluded.username, email = excluded.email",
            (user.id, user.username, user.email, user.created)))

    async def replace_grants(self, model: str, grants: list[Grant]) -> None:
        """The model's whole access list, in one transaction."""
        def replace(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.execute("DELETE FROM model_access WHERE model = ?", (model,))
                conn.executemany("INSERT INTO model_access VALUES (?, ?, ?, ?)",
                                 [(g.model, g.user_id, str(g.role), int(g.can_share)) for g in grants])

        await self._db.run(replace)

    async def record(self, actor: str | None, action: str, target: str | None, detail: dict[str, Any]) -> None:
        await self._db.run(lambda conn: conn.execute(
            "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, json.dumps(detail))))

    async def entries(self, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        from ..registry.records import stamp

        offset = min(offset, SQLITE_MAX_INT)  # past every row anyway; SQLite's integers stop there

        def read(conn: sqlite3.Connection) -> tuple[int, list[dict[str, Any]]]:
            total = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
            rows = conn.execute("SELECT seq, at, actor, action, target, detail FROM audit ORDER BY seq DESC "
                                "LIMIT ? OFFSET ?", (limit, offset)).fetchall()
            return total, [{"id": seq, "at": stamp(at), "actor": actor, "action": action, "target": target,
                            "detail": json.loads(detail) if detail else {}}
                           for seq, at, actor, action, target, detail in rows]

        return await self._db.run(read)
