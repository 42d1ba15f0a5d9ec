"""``deepaas.model.v2.base.BaseModel`` is :class:`deepaas_like.BaseModel`."""

from deepaas_like.base import BaseModel

__all__ = ["BaseModel"]
