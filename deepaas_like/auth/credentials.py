"""Who a bearer credential names: one of the server's API tokens (kept in memory, checked
by its keyed hash in constant time) or, with ``--jwt-secret-file``, an HS256 JWT naming a
user. A missing, malformed, expired or revoked credential is answered 401."""

from __future__ import annotations

import asyncio
import collections
import hmac
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigurationError, Unauthorized
from ..settings.sections import AuthSection
from .principal import TOKEN_IDENTITY, Kind, Principal
from .tokens import TokenRecord, keyed_hash, server_key, split_token

JWT_CACHE = 1024
CHECKED_TOKENS = 4096  # API tokens remembered as checked (forgotten all at once past it)
JWT_TIME_CLAIMS = ("exp", "nbf", "iat")
# Told of the user a JWT names (id, username, email), each time one is decoded.
UserNamed = Callable[[str, "str | None", "str | None"], None]


class Credentials:
    """The API tokens and the JWT secret this server accepts, and who each credential names.

    The tokens are read back from the store by the gate (:meth:`replace`); when each was
    last used is noted here, and saved by the gate now and then (:meth:`take_used`)."""

    def __init__(self, settings: AuthSection, user_named: UserNamed) -> None:
        self._settings = settings
        self._user_named = user_named
        self.key = b""  # the server's HMAC key for API tokens
        self._jwt_secret: bytes | None = None
        self._by_id: dict[str, TokenRecord] = {}
        self._principals: dict[str, Principal] = {}  # token id -> its principal (built on each reload)
        self._checked: dict[str, str] = {}  # tokens whose hash matched -> their id (cleared on each reload)
        self._used: dict[str, float] = {}
        self._jwt_cache: collections.OrderedDict[str, tuple[Principal, float | None]] = collections.OrderedDict()

    async def read_keys(self) -> None:
        """Read the JWT secret (if any) and the server's key (made on first use)."""
        if self._settings.jwt_secret_file:
            self._jwt_secret = await asyncio.to_thread(_read_secret, self._settings.jwt_secret_file)
        self.key = await asyncio.to_thread(server_key, self._settings.auth_key_path)

    # --- the API tokens ------------------------------------------------------------

    def replace(self, tokens: list[TokenRecord]) -> None:
        """Hold ``tokens`` (read back from the store) instead; this process's newer last-used times win."""
        for record in tokens:
            record.last_used = max(record.last_used or 0, self._used.get(record.id, 0)) or None
        self._by_id, self._principals, self._checked = {}, {}, {}
        for record in tokens:
            self.add(record)

    def add(self, record: TokenRecord) -> None:
        self._by_id[record.id] = record
        self._principals[record.id] = Principal.for_token(
            record.id, frozenset(record.scopes), record.user_id, frozenset(record.models) if record.models else None
        )

    def record(self, token_id: str) -> TokenRecord | None:
        return self._by_id.get(token_id)

    def records(self) -> list[TokenRecord]:
        return list(self._by_id.values())

    def take_used(self) -> dict[str, float]:
        """When each token was last used since the last call (token id -> time)."""
        used, self._used = self._used, {}
        return used

    # --- who a credential names ---------------------------------------------------------

    def principal(self, authorization: str) -> Principal:
        """The caller an ``Authorization`` header names (401 for a bad credential)."""
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthorized("Send the credential as 'Authorization: Bearer <token>'", error="invalid_request")
        if credential.startswith("dlk_"):
            return self._token_principal(credential)
        if credential.count(".") == 2 and self._jwt_secret is not None:
            return self._jwt_principal(credential, self._jwt_secret)
        raise Unauthorized("The bearer credential is neither an API token (dlk_...) nor a JWT this server accepts")

    def _token_principal(self, token: str) -> Principal:
        record = self._by_id.get(self._checked.get(token, ""))
        if record is None:  # not seen since the last reload: check its hash
            parts = split_token(token)
            record = self._by_id.get(parts[0]) if parts is not None else None
            if parts is None or record is None or not hmac.compare_digest(keyed_hash(self.key, parts[1]), record.hash):
                raise Unauthorized("Invalid API token")
            if len(self._checked) >= CHECKED_TOKENS:
                self._checked.clear()
            self._checked[token] = record.id
        now = time.time()
        reason = record.usable(now)  # revoked (in this process) or expired: checked every time
        if reason is not None:
            raise Unauthorized(f"Invalid API token: {reason}")
        self._used[record.id] = record.last_used = now
        return self._principals[record.id]

    def _jwt_principal(self, token: str, secret: bytes) -> Principal:
        cached = self._jwt_cache.get(token)
        if cached is not None:
            principal, expires = cached
            if expires is None or time.time() < expires + self._settings.jwt_leeway:
                self._jwt_cache.move_to_end(token)
                return principal
        import jwt

        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                options={"require": [] if self._settings.jwt_allow_no_exp else ["exp"]},
                leeway=self._settings.jwt_leeway,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The JWT has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"Invalid JWT: {exc}") from None
        user_id, username, email = _jwt_identity(claims)
        self._user_named(user_id, username, email)
        principal = Principal(Kind.JWT, frozenset(self._settings.jwt_scopes), user_id=user_id, username=username)
        self._jwt_cache[token] = (principal, claims.get("exp"))
        if len(self._jwt_cache) > JWT_CACHE:
            self._jwt_cache.popitem(last=False)
        return principal


def _jwt_identity(claims: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """The user a JWT names (id, username, email); 401 for claims of the wrong type."""
    for name in JWT_TIME_CLAIMS:
        value = claims.get(name)
        if value is not None and (type(value) not in (int, float) or value != value):
            raise Unauthorized(f"Invalid JWT: the {name} claim must be a number (seconds since the epoch)")
    user_id = claims.get("userId", claims.get("sub"))
    if user_id in (None, ""):
        raise Unauthorized("The JWT names no user (userId)")
    if type(user_id) not in (str, int):
        raise Unauthorized("Invalid JWT: userId must be a string or an integer")
    user_id = str(user_id)
    if user_id.startswith(TOKEN_IDENTITY):
        raise Unauthorized(f"Invalid JWT: a userId may not start with {TOKEN_IDENTITY!r}")
    email, username = claims.get("email"), claims.get("username")
    for name, value in (("email", email), ("username", username)):
        if value is not None and type(value) is not str:
            raise Unauthorized(f"Invalid JWT: {name} must be a string")
    return user_id, username or email, email


def _read_secret(path: str) -> bytes:
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigurationError(f"--jwt-secret-file {path}: cannot read it: {exc.strerror}") from None
    if len(data) < 32:
        raise ConfigurationError(
            f"--jwt-secret-file {path}: the secret is {len(data)} bytes; use at least 32 "
            "random bytes (for example: head -c 48 /dev/urandom | base64 > FILE)"
        )
    return data
