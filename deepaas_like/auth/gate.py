"""The gate every request passes: who is calling (:meth:`Gate.identify`), and whether the
route's policy lets them (:meth:`Gate.authorize`).

* ``--auth`` off: on a loopback address the caller is the local operator and may do
  anything (as before authentication existed); on any other address metadata, predict
  and train stay open (DEEPaaS users run ``--listen-ip 0.0.0.0`` in containers) while the
  registry's writes and the admin routes answer 403 saying how to turn authentication on.
* ``--auth`` on: a bearer API token (``deepaas-token``) or, with ``--jwt-secret-file``,
  an HS256 JWT naming a user. No credential reaches only the open routes and public
  models. 401 (with ``WWW-Authenticate: Bearer``) for a missing, malformed, expired or
  revoked credential; 403 for a valid one without the scope or role; 404 for a private
  model the caller may not see, so that its name does not leak.

Tokens, users and access lists live in the database and in memory here; changes another
process makes (``deepaas-token`` while the server runs) are read back within a second.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from pathlib import Path
from typing import Any, Callable

from ..background import Background
from ..database import Database, StoreOutage
from ..errors import ArgumentError, ConfigurationError, Conflict, Forbidden, NotFound, Unauthorized
from ..settings.sections import AuthSection
from .access import AccessTables, Grant, User
from .policy import Policy, Target
from .principal import ANONYMOUS, LOCAL, REMOTE, TOKEN_IDENTITY, Kind, Principal, Role, Scope, check_user_id
from .tokens import IssuedToken, TokenRecord, TokenTable, audit_detail, issue_token, keyed_hash, server_key, split_token

LOG = logging.getLogger(__name__)
LAST_USED_SAVE_INTERVAL = 5.0
JWT_CACHE = 1024
CHECKED_TOKENS = 4096  # API tokens remembered as checked (forgotten all at once past it)
MAX_ACCESS_ITEMS = 100


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class Gate:
    def __init__(self, settings: AuthSection, db: Database) -> None:
        self.enabled = settings.auth
        self._settings = settings
        self._db = db
        self._tokens = TokenTable(db)
        self._tables = AccessTables(db)
        self._key = b""
        self._by_id: dict[str, TokenRecord] = {}
        self._principals: dict[str, Principal] = {}  # token id -> its principal (built on each reload)
        self._checked: dict[str, str] = {}  # tokens whose hash matched -> their id (cleared on each reload)
        self._users: dict[str, User] = {}
        self._usernames: dict[str, str] = {}
        self._grants: dict[str, dict[str, Grant]] = {}
        self._used: dict[str, float] = {}
        self._jwt_secret: bytes | None = None
        self._jwt_cache: collections.OrderedDict[str, tuple[Principal, float | None]] = collections.OrderedDict()
        self._background = Background("keys and access")
        self._access_locks: dict[str, asyncio.Lock] = {}
        # A reload reads the store while this process may be changing it: it waits for a change
        # here to be written, and a change waits for it, or the reload would put back what the
        # store held before (a token just created unknown, a revoked one usable again).
        self._changing = asyncio.Lock()
        self.public_plugins = frozenset(settings.public_models)
        self.plugins: frozenset[str] = frozenset()  # every plugin served
        self.uploads: Any = None  # the registry: owners and public flags of uploaded models
        self.loopback = is_loopback(settings.listen_ip)
        self.open_principal = (
            LOCAL
            if self.loopback
            else (
                REMOTE
                if not settings.enable_uploads
                else Principal(Kind.REMOTE, REMOTE.scopes | {Scope.WRITE}, roles_apply=False)
            )
        )

    # --- life cycle ----------------------------------------------------------------

    async def start(self) -> None:
        if self._settings.jwt_secret_file:
            self._jwt_secret = await asyncio.to_thread(_read_secret, self._settings.jwt_secret_file)
        self._key = await asyncio.to_thread(server_key, self._settings.auth_key_path)
        await self.reload()
        if self.enabled:
            self._spawn(self._save_loop())
        elif not self.loopback:
            LOG.warning(
                "authentication is off (--auth) and the server listens on %s: uploads, changes of "
                "models and admin routes are refused; metadata, predict and train are open to anyone "
                "who can reach it",
                self._settings.listen_ip,
            )

    async def close(self) -> None:
        await self._background.cancel_all()
        try:
            await self._save_last_used()
        except StoreOutage:
            pass  # when the tokens were last used is a hint, not a state to keep at any cost

    def _spawn(self, coro: Any) -> asyncio.Task:
        return self._background.spawn(coro)

    async def reload(self) -> None:
        """Read tokens, users and roles back (at start, and when another process changed them)."""
        async with self._changing:
            await self._reload()

    async def _reload(self) -> None:
        tokens = await self._tokens.load()
        users, grants = await self._tables.load()
        for record in tokens:  # this process's newer last-used times win
            record.last_used = max(record.last_used or 0, self._used.get(record.id, 0)) or None
        self._by_id, self._principals, self._checked = {}, {}, {}
        for record in tokens:
            self._add_token(record)
        self._users = {u.id: u for u in users}
        self._usernames = {u.username: u.id for u in users if u.username}
        self._grants = {}
        for grant in grants:
            self._grants.setdefault(grant.model, {})[grant.user_id] = grant

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(LAST_USED_SAVE_INTERVAL)
            try:
                await self._save_last_used()
            except StoreOutage:  # logged once by the store; the next round tries again
                pass
            except Exception:  # the next round tries again
                LOG.exception("saving the tokens' last use failed")

    async def _save_last_used(self) -> None:
        if self._used:
            used, self._used = self._used, {}
            await self._tokens.save_last_used(used)

    # --- who is calling ---------------------------------------------------------------

    def identify(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization`` header (401 for a bad credential)."""
        if not self.enabled:
            return self.open_principal
        if not authorization:
            return ANONYMOUS
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthorized("Send the credential as 'Authorization: Bearer <token>'", error="invalid_request")
        if credential.startswith("dlk_"):
            return self._token_principal(credential)
        if credential.count(".") == 2 and self._jwt_secret is not None:
            return self._jwt_principal(credential)
        raise Unauthorized("The bearer credential is neither an API token (dlk_...) nor a JWT this server accepts")

    def _token_principal(self, token: str) -> Principal:
        record = self._by_id.get(self._checked.get(token, ""))
        if record is None:  # not seen since the last reload: check its hash
            parts = split_token(token)
            record = self._by_id.get(parts[0]) if parts is not None else None
            if record is None or not _same(keyed_hash(self._key, parts[1]), record.hash):  # type: ignore[index]
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

    def _jwt_principal(self, token: str) -> Principal:
        cached = self._jwt_cache.get(token)
        if cached is not None:
            principal, expires = cached
            if expires is None or time.time() < expires + self._settings.jwt_leeway:
                self._jwt_cache.move_to_end(token)
                return principal
        import jwt

        options = {"require": [] if self._settings.jwt_allow_no_exp else ["exp"]}
        try:
            claims = jwt.decode(
                token, self._jwt_secret, algorithms=["HS256"], options=options, leeway=self._settings.jwt_leeway
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The JWT has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"Invalid JWT: {exc}") from None
        user_id, username, email = _jwt_identity(claims)
        self._remember_user(user_id, username, email)
        principal = Principal(Kind.JWT, frozenset(self._settings.jwt_scopes), user_id=user_id, username=username)
        self._jwt_cache[token] = (principal, claims.get("exp"))
        if len(self._jwt_cache) > JWT_CACHE:
            self._jwt_cache.popitem(last=False)
        return principal

    def _remember_user(self, user_id: str, username: str | None, email: str | None) -> None:
        known = self._users.get(user_id)
        if username and self._usernames.get(username, user_id) != user_id:
            username = None  # another user has that name already; the id stays the key
        if known is not None and (known.username, known.email) == (username, email):
            return
        user = User(user_id, username, email, known.created if known else time.time())
        self._users[user_id] = user
        if known is not None and known.username and known.username != username:
            self._usernames.pop(known.username, None)
        if username:
            self._usernames[username] = user_id
        detail = {"username": username, "email": email, "source": "jwt"}
        if known is not None:
            detail["was"] = {"username": known.username, "email": known.email}
        self._spawn(self._save_user(user, "user.rename" if known is not None else "user.create", detail))

    async def _save_user(self, user: User, action: str, detail: dict[str, Any]) -> None:
        await self._tables.save_user(user)
        await self._tables.record(user.id, action, user.id, detail)

    # --- what they may do ------------------------------------------------------------------

    def checks(self, policy: Policy) -> bool:
        """Whether :meth:`authorize` can refuse anyone under ``policy`` (asked once per route):
        not on an open route, nor with authentication off on a loopback address."""
        return not (policy.open or (not self.enabled and self.open_principal is LOCAL))

    def authorize(self, principal: Principal, policy: Policy, name: str | None) -> None:
        """Raise 401/403/404 unless ``policy`` lets ``principal`` act (on model ``name``)."""
        if policy.open or principal is LOCAL:  # the local operator, authentication off: anything
            return
        if policy.target is Target.ADMIN or name is None:
            self._need_scope(principal, policy)
            return
        known, public = self._facts(name)
        if not principal.authenticated:
            if public and policy.public:
                return
            raise Unauthorized("This needs a credential: 'Authorization: Bearer <token>'", error="")
        # The scope first: a caller without it is refused alike for every name, and one with it
        # gets for a model it may not see the very answer a missing model gets, so that no
        # answer tells which private names exist.
        self._need_scope(principal, policy)
        if policy.target is Target.UPLOAD and not known:  # a new model: its uploader becomes its owner
            if not principal.may_use_model(name):
                raise self.not_found(name)  # as for a private model outside its list
            return
        if not known:
            return  # the route answers as for any missing model
        role = self.role(name, principal) or (Role.CONSUMER if public else None)
        if role is None or not principal.may_use_model(name):
            raise self.not_found(name)
        if policy.role is not None and not role.at_least(policy.role):
            if policy.target is Target.SHARING and self._can_share(name, principal):
                return
            raise Forbidden(
                f"This needs the {policy.role} role on model '{name}'; you have {role}",
                details={"model": name, "role": role, "needed": policy.role},
            )

    def require(self, principal: Principal, scope: Scope, what: str, hint: str = "") -> None:
        """403 unless ``principal`` has ``scope`` (``what`` needs it; ``hint`` says what needs less)."""
        if principal is LOCAL or principal.allows(scope):
            return
        refusal = self._refusal(principal, f"{what} needs the {scope} scope")
        if hint and isinstance(refusal, Forbidden):
            refusal = Forbidden(f"{refusal.message}. {hint}", details={"needed": str(scope)})
        raise refusal

    def _need_scope(self, principal: Principal, policy: Policy) -> None:
        if policy.scope is not None and not principal.allows(policy.scope):
            raise self._refusal(principal, f"this needs the {policy.scope} scope")

    def _refusal(self, principal: Principal, why: str) -> Exception:
        if principal.kind is Kind.REMOTE:
            return Forbidden(
                f"Refused: {why}, and authentication is off on this server (it listens on "
                f"{self._settings.listen_ip}). Start it with --auth and use a token "
                "(deepaas-token create), or listen on 127.0.0.1"
                + ("; --enable-uploads allows the registry's writes without it" if "write" in why else "")
            )
        if not principal.authenticated:
            return Unauthorized("This needs a credential: 'Authorization: Bearer <token>'", error="")
        return Forbidden(f"Refused: {why}; the credential has {', '.join(sorted(principal.scopes)) or 'none'}")

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a plugin or an uploaded model known here."""
        return name in self.plugins or (self.uploads is not None and name in self.uploads)

    def not_found(self, name: str) -> Exception:
        """What a request naming a missing model is answered (the front door narrows its list)."""
        if self.uploads is not None:
            return self.uploads.not_found(name)
        from ..models import ModelNotFound

        return ModelNotFound(name, list(self.plugins))

    def _facts(self, name: str) -> tuple[bool, bool]:
        """Whether ``name`` is a known model, and whether it is public."""
        if name in self.plugins:
            return True, name in self.public_plugins
        uploads = self.uploads
        if uploads is not None and name in uploads:
            return True, uploads.record(name, archived_ok=True).is_public
        return False, False

    def role(self, name: str, principal: Principal) -> Role | None:
        """The principal's role on model ``name``: OWNER for admins and plugins' users alike
        when roles do not apply; on uploaded models, its owner's or a grant's."""
        if not principal.roles_apply or principal.is_admin:
            return Role.OWNER
        uploads = self.uploads
        if uploads is None or name not in uploads:
            return Role.OWNER if principal.authenticated else None  # plugins: scopes decide
        identity = principal.identity
        if identity is not None and uploads.record(name, archived_ok=True).owner == identity:
            return Role.OWNER
        grant = self._grants.get(name, {}).get(identity or "")
        return grant.role if grant is not None else None

    def _can_share(self, name: str, principal: Principal) -> bool:
        grant = self._grants.get(name, {}).get(principal.identity or "")
        return grant is not None and grant.can_share

    def sees_model(self, principal: Principal, name: str) -> bool:
        """Whether the model list shows ``name`` to ``principal``."""
        if not self.enabled:
            return True
        _, public = self._facts(name)
        if public:
            return True
        if not principal.authenticated or not principal.may_use_model(name):
            return False
        return self.role(name, principal) is not None

    def sees_job(self, principal: Principal, owner: str | None, model: str) -> bool:
        """Jobs are seen by whoever started them, the (uploaded) model's owner and admins."""
        if not principal.roles_apply or principal.is_admin:
            return True
        if owner is not None and owner == principal.identity:
            return True
        uploads = self.uploads
        return uploads is not None and model in uploads and self.role(model, principal) is Role.OWNER

    # --- tokens, users, access lists, audit ---------------------------------------------------

    async def create_token(
        self,
        actor: Principal,
        *,
        name: str,
        scopes: list[str],
        models: list[str] | None,
        user_id: str | None,
        expires_in: float | None,
    ) -> IssuedToken:
        check_user_id(user_id)
        issued = issue_token(self._key, name=name, scopes=scopes, models=models, user_id=user_id, expires_in=expires_in)
        async with self._changing:
            await self._tokens.insert(issued.record)
            self._add_token(issued.record)
        await self.audit(actor, "token.create", issued.record.id, audit_detail(issued.record))
        return issued

    def _add_token(self, record: TokenRecord) -> None:
        self._by_id[record.id] = record
        self._principals[record.id] = Principal.for_token(
            record.id, frozenset(record.scopes), record.user_id, frozenset(record.models) if record.models else None
        )

    def tokens(self) -> list[TokenRecord]:
        return list(self._by_id.values())

    async def revoke_token(self, actor: Principal, token_id: str) -> TokenRecord:
        async with self._changing:
            record = self._by_id.get(token_id)
            if record is None:
                raise NotFound(f"Token '{token_id}' not found", details={"id": token_id})
            if record.revoked is not None:
                raise Conflict(f"Token '{token_id}' is already revoked", details={"id": token_id})
            revoked = time.time()
            await self._tokens.revoke(token_id, revoked)
            record.revoked = revoked
        await self.audit(actor, "token.revoke", token_id, {"name": record.name})
        return record

    def users(self) -> list[User]:
        return sorted(self._users.values(), key=lambda u: u.id)

    async def add_user(self, actor: Principal, user_id: str, username: str | None, email: str | None) -> User:
        check_user_id(user_id)
        async with self._changing:
            if username and self._usernames.get(username, user_id) != user_id:
                raise Conflict(f"Username '{username}' belongs to another user", details={"username": username})
            user = User(user_id, username, email, time.time())
            await self._tables.save_user(user)
            self._users[user_id] = user
            if username:
                self._usernames[username] = user_id
        await self.audit(actor, "user.create", user_id, {"username": username, "email": email})
        return user

    def access_list(self, name: str) -> list[dict[str, Any]]:
        """The model's access list in DataRobot's shape: its owner first, then the grants."""
        items = []
        owner = self.uploads.record(name, archived_ok=True).owner if self.uploads is not None else None
        if owner is not None:
            items.append(self._item(owner, Role.OWNER, True))
        for grant in self._grants.get(name, {}).values():
            if grant.user_id != owner:
                items.append(self._item(grant.user_id, grant.role, grant.can_share))
        return items

    def _item(self, user_id: str, role: Role, can_share: bool) -> dict[str, Any]:
        user = self._users.get(user_id)
        return {
            "userId": user_id,
            "username": user.username if user else None,
            "role": str(role),
            "canShare": can_share,
        }

    async def change_access(self, actor: Principal, name: str, changes: list[Any]) -> None:
        """Apply a PATCH of the access list (DataRobot's rules: 400, 409, 422 as they answer)."""
        if not isinstance(changes, list) or not changes:
            raise ArgumentError(
                "'data' must be a non-empty list of {userId or username, role, canShare}",
                {"data": ["Must be a non-empty list."]},
            )
        if len(changes) > MAX_ACCESS_ITEMS:
            raise ArgumentError(
                f"At most {MAX_ACCESS_ITEMS} entries per request, got {len(changes)}",
                {"data": [f"At most {MAX_ACCESS_ITEMS} entries."]},
            )
        async with self._access_locks.setdefault(name, asyncio.Lock()):  # one change of a list at a time
            async with self._changing:
                await self._change_access(actor, name, changes)

    async def _change_access(self, actor: Principal, name: str, changes: list[Any]) -> None:
        record = self.uploads.record(name, archived_ok=True)
        grants = dict(self._grants.get(name, {}))
        owner = record.owner
        mine = self.role(name, actor)  # OWNER, or a sharer's own role (as the list is now)
        if mine is not Role.OWNER and not self._can_share(name, actor):
            raise Forbidden(f"You may not share model '{name}'", details={"model": name})
        for index, item in enumerate(changes):
            user_id, role, can_share = self._parse_change(index, item)
            if mine is not Role.OWNER:
                current = Role.OWNER if user_id == owner else (grants[user_id].role if user_id in grants else None)
                self._check_sharer(name, mine, index, current, role)
            if role is None:
                grants.pop(user_id, None)
                if user_id == owner:
                    owner = None
            elif role is Role.OWNER and owner is None:
                owner = user_id
                grants.pop(user_id, None)
            else:
                grants[user_id] = Grant(name, user_id, role, can_share)
        owners = ([owner] if owner else []) + [g.user_id for g in grants.values() if g.role is Role.OWNER]
        if not owners:
            raise Conflict(f"The change would leave model '{name}' without an owner", details={"model": name})
        if owner is None:  # the first remaining OWNER grant becomes the owner
            owner = owners[0]
            grants.pop(owner, None)
        if owner != record.owner:
            await self.uploads.set_owner(record, owner)
        await self._tables.replace_grants(name, list(grants.values()))
        self._grants[name] = grants
        await self.audit(actor, "access.change", name, {"changes": changes})

    @staticmethod
    def _check_sharer(name: str, mine: Role | None, index: int, current: Role | None, role: Role | None) -> None:
        """A user who may share without owning grants at most its own role, and changes
        nobody whose role is above it: only an OWNER grants OWNER or removes an owner."""
        if mine is None:
            raise Forbidden(f"You have no role on model '{name}'")
        if role is not None and not mine.at_least(role):
            raise Forbidden(
                f"data[{index}]: you may grant at most your own role ({mine}) on model '{name}', "
                f"not {role}; only an OWNER grants {role}",
                details={"model": name, "role": mine},
            )
        if current is not None and not mine.at_least(current):
            raise Forbidden(
                f"data[{index}]: that user is {current} on model '{name}', above your role ({mine}); "
                "only an OWNER changes or removes them",
                details={"model": name, "role": mine},
            )

    def _parse_change(self, index: int, item: Any) -> tuple[str, Role | None, bool]:
        if not isinstance(item, dict):
            raise ArgumentError(f"data[{index}] must be an object", {f"data.{index}": ["Must be an object."]})
        if "userId" in item and "username" in item:
            raise _BothGiven(f"data[{index}] gives both userId and username; give one")
        key = "userId" if "userId" in item else "username" if "username" in item else None
        if key is None:
            raise ArgumentError(
                f"data[{index}] names no user (userId or username)",
                {f"data.{index}": ["userId or username is required."]},
            )
        if not isinstance(item[key], str):
            raise ArgumentError(f"data[{index}]: {key} must be a string", {f"data.{index}": ["Not a string."]})
        user_id = item[key] if key == "userId" else self._usernames.get(item[key], "")
        if user_id not in self._users:
            raise ArgumentError(
                f"data[{index}]: unknown {'user' if key == 'userId' else 'username'} {item[key]!r}",
                {f"data.{index}": ["Unknown user."]},
            )
        if "role" not in item:  # left out, it would read as null: removing the user
            raise ArgumentError(
                f"data[{index}] gives no role (null removes the user)", {f"data.{index}": ["role is required."]}
            )
        role = item["role"]
        if role is not None:
            try:
                role = Role(role)
            except ValueError:
                raise ArgumentError(
                    f"data[{index}]: unknown role {role!r}; one of: {', '.join(Role)} or null",
                    {f"data.{index}": ["Unknown role."]},
                ) from None
        can_share = item.get("canShare", role is Role.OWNER)
        if not isinstance(can_share, bool):
            raise ArgumentError(f"data[{index}]: canShare must be true or false", {f"data.{index}": ["Not a boolean."]})
        return user_id, role, can_share

    async def audit(self, actor: Principal, action: str, target: str | None, detail: dict[str, Any]) -> None:
        """Record a write: who, what, when."""
        who = actor.identity or str(actor.kind)
        await self._tables.record(who, action, target, detail)

    async def audit_entries(self, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        return await self._tables.entries(limit, offset)


class _BothGiven(ArgumentError):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message, {"data": [message]})


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a, b)


JWT_TIME_CLAIMS = ("exp", "nbf", "iat")


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


Authorizer = Callable[[Principal, Policy, "str | None"], None]
