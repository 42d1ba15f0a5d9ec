"""``deepaas.model.v2.wrapper`` file types are deepaas_like's own (``isinstance`` works)."""

from deepaas_like.files import ReturnedFile, UploadedFile

__all__ = ["ReturnedFile", "UploadedFile"]
