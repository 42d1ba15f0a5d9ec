"""What each route requires: one policy per route, declared in the route table.

A policy names the scope a caller needs, what the route acts on (nothing, a model, a
model's jobs, the registry, the server's administration), the least role on an uploaded
model it needs, and whether a public model lets anyone through without a credential::

    PREDICT = Policy(Scope.PREDICT, Target.MODEL, Role.CONSUMER, public=True)

A test walks the application's router and fails for any route without one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .principal import Role, Scope


class Target(enum.StrEnum):
    NONE = "none"  # the server itself (versions, health, docs)
    LIST = "list"  # the model list: anyone; each caller sees what they may see
    MODEL = "model"  # one model, by {name}
    JOBS = "jobs"  # a model's jobs: visible to whoever started them, the model's owner, admins
    UPLOAD = "upload"  # a new model, or a new version of one (EDITOR)
    SHARING = "sharing"  # a model's access list (its OWNER, a user who may share, admins)
    ADMIN = "admin"  # tokens, users, audit


@dataclass(frozen=True)
class Policy:
    scope: Scope | None = None
    target: Target = Target.NONE
    role: Role | None = None
    public: bool = False  # a public model answers this without a credential

    @property
    def open(self) -> bool:
        return self.scope is None and self.target in (Target.NONE, Target.LIST)

    def describe(self) -> str:
        """For the OpenAPI document."""
        if self.open:
            return "No credential needed."
        parts = [f"Needs the `{self.scope}` scope"] if self.scope else []
        if self.role is not None:
            parts.append(f"on an uploaded model, the {self.role} role or stronger")
        if self.public:
            parts.append("a public model needs no credential")
        return "; ".join(parts) + "."


OPEN = Policy()
LIST = Policy(target=Target.LIST)
METADATA = Policy(Scope.READ, Target.MODEL, Role.OBSERVER, public=True)
READ = Policy(Scope.READ, Target.MODEL, Role.OBSERVER)
PREDICT = Policy(Scope.PREDICT, Target.MODEL, Role.CONSUMER, public=True)
PREDICT_LATER = Policy(Scope.PREDICT, Target.MODEL, Role.CONSUMER)  # asynchronous: a job, owned by its caller
PREDICTIONS = Policy(Scope.PREDICT, Target.JOBS, Role.OBSERVER)
TRAIN = Policy(Scope.TRAIN, Target.MODEL, Role.EDITOR)
TRAININGS = Policy(Scope.TRAIN, Target.JOBS, Role.OBSERVER)
UPLOAD = Policy(Scope.WRITE, Target.UPLOAD, Role.EDITOR)
EDIT = Policy(Scope.WRITE, Target.MODEL, Role.EDITOR)
OWN = Policy(Scope.WRITE, Target.MODEL, Role.OWNER)
SHARING = Policy(Scope.READ, Target.SHARING, Role.OBSERVER)
SHARE = Policy(Scope.WRITE, Target.SHARING, Role.OWNER)
ADMIN = Policy(Scope.ADMIN, Target.ADMIN)
