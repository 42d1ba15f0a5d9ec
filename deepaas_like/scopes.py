"""The scopes a key or token may hold (what ``--jwt-scopes`` and the token routes name)."""

from __future__ import annotations

import enum


class Scope(enum.StrEnum):
    READ = "models:read"
    PREDICT = "models:predict"
    TRAIN = "models:train"
    WRITE = "models:write"  # upload, new versions, archive, config
    WRITE_CODE = "models:write-code"  # models:write, and uploads of formats whose loading runs code
    ADMIN = "admin"  # tokens, users, access control, audit


SCOPES = tuple(Scope)
