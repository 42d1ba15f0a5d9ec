"""A change of an uploaded model's access list (DataRobot's rules): what each entry must
say (400, 422), what a user who may share without owning may grant (403), and the owner
and grants the change leaves (409 when it would leave none)."""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import ArgumentError, Conflict, Forbidden
from .access import Grant, User
from .principal import Role

MAX_ACCESS_ITEMS = 100


def check_size(changes: object) -> list[Any]:
    """``changes`` as the list of entries it must be: not empty, at most :data:`MAX_ACCESS_ITEMS`."""
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
    return changes


def changed_access(
    name: str,
    owner: str | None,
    grants: Mapping[str, Grant],
    mine: Role | None,
    changes: list[Any],
    users: Mapping[str, User],
    usernames: Mapping[str, str],
) -> tuple[str, dict[str, Grant]]:
    """The owner and grants of model ``name`` once ``changes`` are made by a caller whose
    role is ``mine`` (OWNER, or a sharer's own role); ``users`` and ``usernames`` are
    everyone an entry may name."""
    grants = dict(grants)
    for index, item in enumerate(changes):
        user_id, role, can_share = _parse_change(index, item, users, usernames)
        if mine is not Role.OWNER:
            current = Role.OWNER if user_id == owner else (grants[user_id].role if user_id in grants else None)
            _check_sharer(name, mine, index, current, role)
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
    return owner, grants


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


def _parse_change(
    index: int, item: object, users: Mapping[str, User], usernames: Mapping[str, str]
) -> tuple[str, Role | None, bool]:
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
    named = item[key]
    if not isinstance(named, str):
        raise ArgumentError(f"data[{index}]: {key} must be a string", {f"data.{index}": ["Not a string."]})
    user_id = named if key == "userId" else usernames.get(named, "")
    if user_id not in users:
        raise ArgumentError(
            f"data[{index}]: unknown {'user' if key == 'userId' else 'username'} {named!r}",
            {f"data.{index}": ["Unknown user."]},
        )
    if "role" not in item:  # left out, it would read as null: removing the user
        raise ArgumentError(
            f"data[{index}] gives no role (null removes the user)", {f"data.{index}": ["role is required."]}
        )
    role: Role | None = None
    if item["role"] is not None:
        try:
            role = Role(item["role"])
        except ValueError:
            raise ArgumentError(
                f"data[{index}]: unknown role {item['role']!r}; one of: {', '.join(Role)} or null",
                {f"data.{index}": ["Unknown role."]},
            ) from None
    can_share = item.get("canShare", role is Role.OWNER)
    if not isinstance(can_share, bool):
        raise ArgumentError(f"data[{index}]: canShare must be true or false", {f"data.{index}": ["Not a boolean."]})
    return user_id, role, can_share


class _BothGiven(ArgumentError):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message, {"data": [message]})
