"""deepaas_like: serve machine-learning models behind a validated, documented REST API.

The public model API, for plugin authors::

    from deepaas_like import BaseModel, File, UploadedFile, ReturnedFile, report_progress, storage_dir

Everything else (the server, the CLI) is used through ``deepaas-run``.
"""

from typing import TYPE_CHECKING, Any

from .base import BaseModel
from .files import ReturnedFile, UploadedFile
from .runtime import report_progress, storage_dir

if TYPE_CHECKING:
    from .arguments import File

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``File`` on first use: importing the package does not import marshmallow and webargs,
    so that a worker in a model's own environment (its own marshmallow) can import it."""
    if name == "File":
        from .arguments import File

        return File
    raise AttributeError(f"module 'deepaas_like' has no attribute {name!r}")


__all__ = ["BaseModel", "File", "ReturnedFile", "UploadedFile", "report_progress", "storage_dir", "__version__"]
