"""Compatibility package: the import names of DEEPaaS 2.x that plugins use.

deepaas_like installs this ``deepaas`` package so that DEEPaaS v2 plugins import and
run unchanged (``from deepaas.model.v2.wrapper import UploadedFile``,
``from deepaas.model.v2.base import BaseModel``). The classes are deepaas_like's own,
so ``isinstance`` checks hold. It replaces the real ``deepaas`` distribution, which
cannot be installed next to deepaas_like (it pins webargs<6): install plugins with
``deepaas-install-plugin``.
"""

__version__ = "2.6.0"
PROVIDED_BY = "deepaas_like"


def extract_version() -> str:
    """DEEPaaS's version helper; reports the API level this package emulates."""
    return __version__
