"""File values exchanged between the server and a plugin.

Both types are the ones DEEPaaS v2 plugins already use (they are re-exported as
``deepaas.model.v2.wrapper.UploadedFile`` / ``ReturnedFile``), so a plugin that tests
``isinstance(arg, UploadedFile)`` keeps working unchanged.
"""

from __future__ import annotations

import collections

UploadedFile = collections.namedtuple(
    "UploadedFile", ("name", "filename", "content_type", "original_filename")
)
UploadedFile.__new__.__defaults__ = (None, None, None, None)
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
    "ReturnedFile", ("name", "filename", "content_type", "original_filename")
)
ReturnedFile.__new__.__defaults__ = (None, None, None, None)
ReturnedFile.__doc__ = """A file a plugin's ``predict`` returns instead of JSON.

Only ``filename`` (the path of the file to send) is required. ``content_type`` is
used when set; otherwise the server uses the request's ``accept`` choice or guesses
from the file name. The server never deletes a returned file unless it lies in the
request's own temporary directory. Returning an open binary file object
(``open(path, "rb")``) or ``bytes`` works as well.
"""
