"""API tokens: random, shown once, stored only as a keyed hash, checked in constant time.

A token reads ``dlk_<id>_<secret>``: ``id`` (12 hex characters) names it in lists and
revocations; ``secret`` is 256 random bits. The database keeps HMAC-SHA256(key,
secret), where ``key`` is the server's own random key (``--auth-key-file``, by default
``<data-dir>/auth.key``, readable by its owner only): a copy of the database alone does
not let anyone use a token::

    issued = issue_token(key, name="ci", scopes={"models:predict"})
    issued.token          # 'dlk_3f9a...'  (give it to the client; it is not stored)
    issued.record.hash    # what the database keeps
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

from ..database import Database, bump_revision
from ..errors import ArgumentError
from ..tables import tokens
from .principal import SCOPES

PREFIX = "dlk_"
TOKEN_FORMAT = re.compile(r"dlk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# A token's lifetime: a number of a unit (seconds without one), each with the most digits it
# may have, so that an expiry stays a few centuries ahead, well inside what a date can hold.
# The parser and the OpenAPI document both read this table.
DURATION_UNITS = {"s": (1, 10), "m": (60, 8), "h": (3600, 7), "d": (86400, 5), "w": (604800, 4)}
DURATION_PATTERN = (
    "^("
    + "|".join(f"[0-9]{{1,{digits}}}{unit}{'?' if unit == 's' else ''}" for unit, (_, digits) in DURATION_UNITS.items())
    + ")$"
)
# A token's name has something visible in it: a character that is white space neither to Python
# (str.strip) nor to JavaScript's \s (how the document's pattern is read by most clients).
VISIBLE = "[^\\s\\u001c-\\u001f\\u0085\\ufeff]"
_DURATION = re.compile(DURATION_PATTERN, re.ASCII)


@dataclass
class TokenRecord:
    id: str
    name: str
    hash: str
    scopes: list[str]
    models: list[str] | None = None
    user_id: str | None = None
    created: float = field(default_factory=time.time)
    expires: float | None = None
    last_used: float | None = None
    revoked: float | None = None

    def usable(self, now: float) -> str | None:
        """Why the token may not be used now (None: it may)."""
        if self.revoked is not None:
            return "the token was revoked"
        if self.expires is not None and now >= self.expires:
            return "the token has expired"
        return None

    def document(self) -> dict[str, Any]:
        """What lists show: everything but the hash."""
        from ..jsonutil import stamp

        return {
            "id": self.id,
            "name": self.name,
            "scopes": self.scopes,
            "models": self.models,
            "user_id": self.user_id,
            "created_at": stamp(self.created),
            "expires_at": stamp(self.expires),
            "last_used_at": stamp(self.last_used),
            "revoked_at": stamp(self.revoked),
        }


@dataclass
class IssuedToken:
    token: str
    record: TokenRecord


def audit_detail(record: TokenRecord) -> dict[str, object]:
    """What the audit log keeps of a token's creation: for whom, which scopes and models, until when."""
    return {
        "name": record.name,
        "scopes": record.scopes,
        "user": record.user_id,
        "models": record.models,
        "expires": record.expires,
    }


def server_key(path: str | os.PathLike[str]) -> bytes:
    """The server's HMAC key (``--auth-key-file``), created on first use (mode 0600)."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # created meanwhile by another process: use theirs
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def keyed_hash(key: bytes, secret: str) -> str:
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``2w``, ``45s`` or ``3600`` (at most a few centuries)::

    parse_duration("2w")     # 1209600.0
    parse_duration("1e9")    # ValueError
    """
    if not _DURATION.fullmatch(text):
        raise ValueError(
            f"expected a duration such as 30d, 12h, 90m, 2w or seconds, at most "
            f"{', '.join('9' * digits + unit for unit, (_, digits) in DURATION_UNITS.items())}; "
            f"got {text!r}"
        )
    unit = text[-1] if text[-1] in DURATION_UNITS else "s"
    return float(text.rstrip(unit)) * DURATION_UNITS[unit][0]


def check_scopes(scopes: Iterable[str]) -> list[str]:
    scopes = list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ArgumentError(
            f"Unknown scopes: {', '.join(unknown)}; known: {', '.join(SCOPES)}"
            if unknown
            else f"Give at least one scope: {', '.join(SCOPES)}",
            {"scopes": [f"Each must be one of: {', '.join(SCOPES)}."]},
        )
    return scopes


def issue_token(
    key: bytes,
    *,
    name: str,
    scopes: Iterable[str],
    models: list[str] | None = None,
    user_id: str | None = None,
    expires_in: float | None = None,
) -> IssuedToken:
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    record = TokenRecord(
        token_id,
        name,
        keyed_hash(key, secret),
        check_scopes(scopes),
        models or None,
        user_id,
        now,
        now + expires_in if expires_in is not None else None,
    )
    return IssuedToken(f"{PREFIX}{token_id}_{secret}", record)


def split_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None."""
    match = TOKEN_FORMAT.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


FIELDS = ["id", "name", "hash", "scopes", "models", "user_id", "created", "expires", "last_used", "revoked"]


class TokenTable:
    """The ``tokens`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self) -> list[TokenRecord]:
        def load(conn: sa.Connection) -> list[TokenRecord]:
            records = []
            for row in conn.execute(sa.select(*(tokens.c[f] for f in FIELDS)).order_by(tokens.c.created)):
                values = dict(zip(FIELDS, row))
                values["scopes"] = json.loads(values["scopes"])
                values["models"] = json.loads(values["models"]) if values["models"] else None
                records.append(TokenRecord(**values))
            return records

        return await self._db.run(load)

    async def insert(self, record: TokenRecord) -> None:
        values = {
            f: json.dumps(getattr(record, f))
            if f in ("scopes", "models") and getattr(record, f) is not None
            else getattr(record, f)
            for f in FIELDS
        }

        def insert(conn: sa.Connection) -> None:
            conn.execute(sa.insert(tokens).values(values))
            bump_revision(conn)

        await self._db.run(insert)

    async def revoke(self, token_id: str, when: float) -> bool:
        def revoke(conn: sa.Connection) -> bool:
            result = conn.execute(
                sa.update(tokens).where(tokens.c.id == token_id, tokens.c.revoked.is_(None)).values(revoked=when)
            )
            bump_revision(conn)
            return result.rowcount == 1

        return await self._db.run(revoke)

    async def save_last_used(self, used: dict[str, float]) -> None:
        if not used:
            return
        await self._db.run(
            lambda conn: conn.execute(
                sa.update(tokens).where(tokens.c.id == sa.bindparam("token_id")).values(last_used=sa.bindparam("when")),
                [{"token_id": token_id, "when": when} for token_id, when in used.items()],
            )
        )
