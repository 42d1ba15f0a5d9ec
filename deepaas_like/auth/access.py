"""Users, per-model roles and the audit log: their tables, kept in memory by the server."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..database import Database, bump_revision, insert_for
from ..tables import audit, model_access, users
from .principal import Role

MAX_OFFSET = 2**63 - 1


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
        def load(conn: sa.Connection) -> tuple[list[User], list[Grant]]:
            found = [
                User(*row)
                for row in conn.execute(sa.select(users.c.id, users.c.username, users.c.email, users.c.created))
            ]
            grants = [
                Grant(model, user, Role(role), bool(share))
                for model, user, role, share in conn.execute(
                    sa.select(
                        model_access.c.model, model_access.c.user_id, model_access.c.role, model_access.c.can_share
                    )
                )
            ]
            return found, grants

        return await self._db.run(load)

    async def save_user(self, user: User) -> None:
        def save(conn: sa.Connection) -> None:
            insert = insert_for(conn)(users).values(
                id=user.id, username=user.username, email=user.email, created=user.created
            )
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[users.c.id],
                    set_={"username": insert.excluded.username, "email": insert.excluded.email},
                )
            )
            bump_revision(conn)

        await self._db.run(save)

    async def replace_grants(self, model: str, grants: list[Grant]) -> None:
        """The model's whole access list, in one transaction."""

        def replace(conn: sa.Connection) -> None:
            conn.execute(sa.delete(model_access).where(model_access.c.model == model))
            if grants:
                conn.execute(
                    sa.insert(model_access),
                    [
                        {"model": g.model, "user_id": g.user_id, "role": str(g.role), "can_share": int(g.can_share)}
                        for g in grants
                    ],
                )
            bump_revision(conn)

        await self._db.run(replace)

    async def record(self, actor: str | None, action: str, target: str | None, detail: dict[str, Any]) -> None:
        await self._db.run(
            lambda conn: conn.execute(
                sa.insert(audit).values(
                    at=time.time(), actor=actor, action=action, target=target, detail=json.dumps(detail)
                )
            )
        )

    async def entries(self, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        from ..jsonutil import stamp

        offset = min(offset, MAX_OFFSET)  # past every row anyway; the stores' integers stop there

        def read(conn: sa.Connection) -> tuple[int, list[dict[str, Any]]]:
            total = conn.execute(sa.select(sa.func.count()).select_from(audit)).scalar_one()
            rows = conn.execute(
                sa.select(audit.c.seq, audit.c.at, audit.c.actor, audit.c.action, audit.c.target, audit.c.detail)
                .order_by(audit.c.seq.desc())
                .limit(limit)
                .offset(offset)
            )
            return total, [
                {
                    "id": seq,
                    "at": stamp(at),
                    "actor": actor,
                    "action": action,
                    "target": target,
                    "detail": json.loads(detail) if detail else {},
                }
                for seq, at, actor, action, target, detail in rows
            ]

        return await self._db.run(read)
