"""File values exchanged between the server and a plugin.

Both types are the ones DEEPaaS v2 plugins already use (they are re-exported as
``deepaas.model.v2.wrapper.UploadedFile`` / ``ReturnedFile``), so a plugin that tests
``isinstance(arg, UploadedFile)`` keeps working unchanged.
"""

from __future__ import annotations

import collections
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

UploadedFile = collections.namedtuple(
    "UploadedFile", ("name", "filename", "content_type", "original_filename"), defaults=(None, None, None, None)
)
UploadedFile.__doc__ = """A file the client uploaded, as a plugin's ``predict``/``train`` receives it.

``name``
    the argument the file was sent as (``image``);
``filename``
    absolute path of a temporary copy on local disk, readable for the whole call and
    removed by the server afterwards (for a training: when the training ends);
``content_type``
    the content type the client declared (``image/png``);
``original_filename``
    the file name on the client's side (``cat.png``).

Example::

    def predict(image, **kwargs):
        with open(image.filename, "rb") as fh:
            data = fh.read()
        return {"bytes": len(data), "sent_as": image.original_filename}
"""

ReturnedFile = collections.namedtuple(
    "ReturnedFile", ("name", "filename", "content_type", "original_filename"), defaults=(None, None, None, None)
)
ReturnedFile.__doc__ = """A file a plugin's ``predict`` returns instead of JSON.

Only ``filename`` (the path of the file to send) is required. ``content_type`` is
used when set; otherwise the server uses the request's ``accept`` choice or guesses
from the file name. The server never deletes a returned file unless it lies in the
request's own temporary directory. Returning an open binary file object
(``open(path, "rb")``) or ``bytes`` works as well.
"""


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a directory only its owner may enter, when it is created here (an existing
    one keeps the mode its owner gave it: it may be shared on purpose, or be a home)."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        _narrow(path, PRIVATE_DIR)  # whatever the umask
    return path


def private_file(path: str | os.PathLike[str]) -> Path:
    """``path`` as a file only its owner may read (created empty, or its mode narrowed)."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        _narrow(path, PRIVATE_FILE)
    return path


def _narrow(path: Path, mode: int) -> None:
    try:
        info = path.stat()
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & mode)
    except OSError:  # not ours to change (a shared directory): left as it is
        pass
