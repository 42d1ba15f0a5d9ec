"""deepaas_like: serve machine-learning models behind a validated, documented REST API.

The public model API, for plugin authors::

    from deepaas_like import BaseModel, File, UploadedFile, ReturnedFile, report_progress, storage_dir

Everything else (the server, the CLI) is used through ``deepaas-run``.
"""

from .arguments import File
from .base import BaseModel
from .files import ReturnedFile, UploadedFile
from .runtime import report_progress, storage_dir

__version__ = "0.1.0"

__all__ = ["BaseModel", "File", "ReturnedFile", "UploadedFile", "report_progress", "storage_dir", "__version__"]
