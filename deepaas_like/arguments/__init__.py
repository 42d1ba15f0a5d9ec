"""Arguments of a model's predict/train: declaration, request sources, validation.

A plugin declares its arguments as a dict of webargs/marshmallow fields. One request
may carry them in the query string, an urlencoded or multipart form (files only
there) and a JSON object body; for each argument the first place that has it wins,
in that order (DEEPaaS 2.x behaves the same way). Unknown arguments are refused
with 422 so that a typo never passes silently.

Integer arguments take integral values only (``2``, ``"2"``, ``2.0``): marshmallow's
``Int`` would truncate ``2.7`` to ``2`` without a word, which is refused here instead.
An empty form part for an optional file (what a browser form sends for a file input
left empty) means the file was not given.

Its parts: what a declared field is (:mod:`.fields`), what a request sent as the values
its fields take (:mod:`.values`), and the arguments of one method and one request's
sources of them (:mod:`.spec`).
"""

from .fields import File, field_choices, field_kind, is_file_field
from .spec import ArgumentSources, ArgumentSpec

__all__ = [
    "ArgumentSources",
    "ArgumentSpec",
    "File",
    "field_choices",
    "field_kind",
    "is_file_field",
]
