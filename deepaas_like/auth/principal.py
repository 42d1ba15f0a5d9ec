"""Who is calling, and what they may do: principals, scopes, per-model roles.

A request is made by one :class:`Principal`: an API token's holder, a user named by a
JWT, nobody (anonymous), or, with authentication off, the local operator. Scopes say
what kind of thing a principal may do at all; per-model roles (uploaded models) say on
which models::

    token = Principal.for_token("ab12cd34", {"models:predict"}, user_id="alice")
    token.allows("models:predict")      # True
    token.allows("models:write")        # False
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import ArgumentError
from ..scopes import SCOPES as SCOPES  # the scope names auth hands on to its callers
from ..scopes import Scope as Scope

TOKEN_IDENTITY = "token:"  # the identity of an API token without a user; no user id may look like one


class Role(enum.StrEnum):
    """A user's role on one uploaded model (DataRobot's names), strongest first."""

    OWNER = "OWNER"
    EDITOR = "EDITOR"  # new versions, config
    CONSUMER = "CONSUMER"  # predict
    OBSERVER = "OBSERVER"  # metadata
    READ_ONLY = "READ_ONLY"  # the same as OBSERVER

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: "Role") -> bool:
        return self.rank >= other.rank


_RANK = {Role.OWNER: 3, Role.EDITOR: 2, Role.CONSUMER: 1, Role.OBSERVER: 0, Role.READ_ONLY: 0}


class Kind(enum.StrEnum):
    LOCAL = "local"  # authentication off: the operator, on a loopback address
    REMOTE = "remote"  # authentication off, on another address: no writes, no admin
    TOKEN = "token"
    JWT = "jwt"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    kind: Kind
    scopes: frozenset[str] = frozenset()
    user_id: str | None = None
    username: str | None = None
    token_id: str | None = None
    models: frozenset[str] | None = None  # a token limited to these models
    roles_apply: bool = True  # per-model roles are checked (not when authentication is off)
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def for_token(
        cls,
        token_id: str,
        scopes: set[str] | frozenset[str],
        user_id: str | None = None,
        models: frozenset[str] | None = None,
    ) -> "Principal":
        return cls(Kind.TOKEN, frozenset(scopes), user_id=user_id, token_id=token_id, models=models)

    @property
    def authenticated(self) -> bool:
        """Known to the server (with authentication off, every caller is)."""
        return self.kind is not Kind.ANONYMOUS

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def identity(self) -> str | None:
        """Who owns what this principal creates (jobs, uploaded models): a user, else a token."""
        if self.user_id is not None:
            return self.user_id
        return f"{TOKEN_IDENTITY}{self.token_id}" if self.token_id else None

    def allows(self, scope: str) -> bool:
        scopes = self.scopes
        return scope in scopes or Scope.ADMIN in scopes or (scope == Scope.WRITE and Scope.WRITE_CODE in scopes)

    def may_use_model(self, name: str) -> bool:
        """A token limited to some models (``--model``) may use only those."""
        return self.models is None or name in self.models


LOCAL = Principal(Kind.LOCAL, frozenset(SCOPES), roles_apply=False)
REMOTE = Principal(Kind.REMOTE, frozenset({Scope.READ, Scope.PREDICT, Scope.TRAIN}), roles_apply=False)
ANONYMOUS = Principal(Kind.ANONYMOUS)


def check_user_id(user_id: str | None) -> None:
    """A user id may not pose as an API token's identity (422)."""
    if user_id is not None and user_id.startswith(TOKEN_IDENTITY):
        raise ArgumentError(
            f"A user id may not start with {TOKEN_IDENTITY!r} (API tokens are named so)",
            {"userId": [f"Must not start with {TOKEN_IDENTITY!r}."]},
        )
