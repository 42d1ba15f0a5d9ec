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
What a credential names is checked in :mod:`~deepaas_like.auth.credentials`; what a change
of an access list may say, in :mod:`~deepaas_like.auth.sharing`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any, Callable, Protocol, TypeVar

from ..background import Background
from ..database import Database, StoreOutage
from ..errors import Conflict, Forbidden, NotFound, Unauthorized
from ..settings.sections import AuthSection
from .access import AccessTables, Grant, User
from .credentials import Credentials
from .policy import Policy, Target
from .principal import ANONYMOUS, LOCAL, REMOTE, Kind, Principal, Role, Scope, check_user_id
from .sharing import changed_access, check_size
from .tokens import IssuedToken, TokenRecord, TokenTable, audit_detail, issue_token

LOG = logging.getLogger(__name__)
LAST_USED_SAVE_INTERVAL = 5.0


class UploadedRecord(Protocol):
    """What the gate reads of an uploaded model's record."""

    @property
    def owner(self) -> str | None: ...

    @property
    def is_public(self) -> bool: ...


Record = TypeVar("Record", bound=UploadedRecord)


class Uploads(Protocol[Record]):
    """What the gate asks of the registry: which models are uploaded, their owners and public flags."""

    def __contains__(self, name: str) -> bool: ...

    def record(self, name: str, *, archived_ok: bool = ...) -> Record: ...

    def not_found(self, name: str) -> Exception: ...

    async def set_owner(self, record: Record, owner: str | None) -> None: ...


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
        self._credentials = Credentials(settings, self._remember_user)
        self._tokens = TokenTable(db)
        self._tables = AccessTables(db)
        self._users: dict[str, User] = {}
        self._usernames: dict[str, str] = {}
        self._grants: dict[str, dict[str, Grant]] = {}
        self._background = Background("keys and access")
        self._access_locks: dict[str, asyncio.Lock] = {}
        # A reload reads the store while this process may be changing it: it waits for a change
        # here to be written, and a change waits for it, or the reload would put back what the
        # store held before (a token just created unknown, a revoked one usable again).
        self._changing = asyncio.Lock()
        self.public_plugins = frozenset(settings.public_models)
        self.plugins: frozenset[str] = frozenset()  # every plugin served
        # The registry (its own record type): owners and public flags of uploaded models.
        self.uploads: Uploads[Any] | None = None
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
        await self._credentials.read_keys()
        await self.reload()
        if self.enabled:
            self._background.spawn(self._save_loop())
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

    async def reload(self) -> None:
        """Read tokens, users and roles back (at start, and when another process changed them)."""
        async with self._changing:
            await self._reload()

    async def _reload(self) -> None:
        tokens = await self._tokens.load()
        users, grants = await self._tables.load()
        self._credentials.replace(tokens)
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
        used = self._credentials.take_used()
        if used:
            await self._tokens.save_last_used(used)

    # --- who is calling ---------------------------------------------------------------

    def identify(self, authorization: str | None) -> Principal:
        """The caller named by an ``Authorization`` header (401 for a bad credential)."""
        if not self.enabled:
            return self.open_principal
        if not authorization:
            return ANONYMOUS
        return self._credentials.principal(authorization)

    def _remember_user(self, user_id: str, username: str | None, email: str | None) -> None:
        """Keep (and save) the user a JWT names, as it names them now."""
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
        detail: dict[str, object] = {"username": username, "email": email, "source": "jwt"}
        if known is not None:
            detail["was"] = {"username": known.username, "email": known.email}
        self._background.spawn(self._save_user(user, "user.rename" if known is not None else "user.create", detail))

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
        issued = issue_token(
            self._credentials.key, name=name, scopes=scopes, models=models, user_id=user_id, expires_in=expires_in
        )
        async with self._changing:
            await self._tokens.insert(issued.record)
            self._credentials.add(issued.record)
        await self.audit(actor, "token.create", issued.record.id, audit_detail(issued.record))
        return issued

    def tokens(self) -> list[TokenRecord]:
        return self._credentials.records()

    async def revoke_token(self, actor: Principal, token_id: str) -> TokenRecord:
        async with self._changing:
            record = self._credentials.record(token_id)
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

    async def change_access(self, actor: Principal, name: str, changes: object) -> None:
        """Apply a PATCH of the access list (DataRobot's rules: 400, 409, 422 as they answer;
        see :mod:`~deepaas_like.auth.sharing`)."""
        entries = check_size(changes)
        async with self._access_locks.setdefault(name, asyncio.Lock()):  # one change of a list at a time
            async with self._changing:
                await self._change_access(actor, name, entries)

    async def _change_access(self, actor: Principal, name: str, changes: list[Any]) -> None:
        uploads = self.uploads
        if uploads is None:  # only uploaded models have access lists
            raise self.not_found(name)
        record = uploads.record(name, archived_ok=True)
        mine = self.role(name, actor)  # OWNER, or a sharer's own role (as the list is now)
        if mine is not Role.OWNER and not self._can_share(name, actor):
            raise Forbidden(f"You may not share model '{name}'", details={"model": name})
        owner, grants = changed_access(
            name, record.owner, self._grants.get(name, {}), mine, changes, self._users, self._usernames
        )
        if owner != record.owner:
            await uploads.set_owner(record, owner)
        await self._tables.replace_grants(name, list(grants.values()))
        self._grants[name] = grants
        await self.audit(actor, "access.change", name, {"changes": changes})

    async def audit(self, actor: Principal, action: str, target: str | None, detail: dict[str, Any]) -> None:
        """Record a write: who, what, when."""
        who = actor.identity or str(actor.kind)
        await self._tables.record(who, action, target, detail)

    async def audit_entries(self, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        return await self._tables.entries(limit, offset)


Authorizer = Callable[[Principal, Policy, "str | None"], None]
