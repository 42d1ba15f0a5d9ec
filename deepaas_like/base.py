"""The plugin contract: what a model implements to be served.

A plugin is found through the ``deepaas.v2.model`` entry-point group. The entry point
may name a module, a class (instantiated once per worker) or an instance; all three
expose the methods below. Subclassing :class:`BaseModel` is optional, but it documents
the contract and makes a missing method an error at import time instead of at the
first request.

A complete plugin, registered with
``[project.entry-points."deepaas.v2.model"] adder = "adder:Adder"``::

    from webargs import fields, validate
    from deepaas_like import BaseModel

    class Adder(BaseModel):
        def get_metadata(self):
            return {"name": "adder", "description": "Adds two numbers", "version": "1.0"}

        def warm(self):
            self.offset = 0.0          # load weights here; kept for every call

        def get_predict_args(self):
            return {
                "a": fields.Float(required=True, metadata={"description": "first"}),
                "b": fields.Float(load_default=1.0, validate=validate.Range(min=0)),
            }

        def predict(self, a, b):
            return {"sum": a + b + self.offset}

        def get_train_args(self):
            return {"offset": fields.Float(load_default=0.0)}

        def train(self, offset):
            ...                         # save what you learned, see train()
            return {"offset": offset}
"""

from __future__ import annotations

import abc
from typing import Any, Mapping


def optional(method: Any) -> Any:
    """Marks a method of BaseModel that a plugin may leave out (it is then absent)."""
    method.__deepaas_like_placeholder__ = True
    return method


class BaseModel(metaclass=abc.ABCMeta):
    """Base class for models served by deepaas_like (and by DEEPaaS v2)."""

    schema: Any = None
    """Optional schema of a JSON predict response.

    ``None`` (the default): whatever ``predict`` returns is sent as
    ``{"status": "OK", "predictions": <value>}``.

    A ``marshmallow.Schema`` subclass, or a dict of fields that
    ``marshmallow.Schema.from_dict`` accepts: the response is sent as returned, after
    it has been validated against the schema (a mismatch is a JSON 500 naming the
    model), and the schema is the documented 200 response in ``/swagger.json``::

        from marshmallow import fields

        schema = {
            "label": fields.Str(required=True),
            "probability": fields.Float(required=True),
        }
    """

    @abc.abstractmethod
    def get_metadata(self) -> Mapping[str, Any]:
        """Describe the model; served at ``GET /v2/models/<name>/``.

        Usual keys: ``name``, ``description``, ``author``, ``license``, ``version``,
        ``url``. ``id``, ``name`` and ``links`` are filled in by the server unless
        given. Keep it cheap: it is read once at start and after each training::

            return {"name": "adder", "description": "Adds two numbers",
                    "author": "Ada", "license": "MIT", "version": "1.0"}
        """

    @abc.abstractmethod
    def warm(self) -> None:
        """Load and initialise the model, once per worker, before it serves requests.

        Whatever ``warm`` sets (weights on ``self``, module globals) stays in place for
        every later ``predict`` in the same worker. The server reports itself ready
        only when every worker of every model has finished ``warm``. After a
        successful training the workers are replaced and ``warm`` runs again, so
        ``warm`` should load the newest state that ``train`` saved.
        """

    @abc.abstractmethod
    def get_predict_args(self) -> Mapping[str, Any]:
        """Declare the arguments of ``predict`` as webargs/marshmallow fields.

        The same declaration validates requests (query string, form, multipart or
        JSON body), fills in defaults, and documents the route in OpenAPI::

            from webargs import fields, validate

            return {
                "text": fields.Str(required=True, metadata={"description": "input"}),
                "top_k": fields.Int(load_default=3, validate=validate.Range(1, 10)),
                "lang": fields.Str(load_default="en", validate=validate.OneOf(["en", "es"])),
                "image": fields.Field(metadata={"type": "file"}),   # a file upload
                "accept": fields.Str(load_default="application/json",
                                     validate=validate.OneOf(["application/json", "image/png"])),
            }

        The DEEPaaS vocabulary (``missing=``, ``description=``, ``enum=``,
        ``fields.Field(type="file", location="form")``) is accepted too. An argument
        named ``accept`` selects the response format: it is also read from the
        request's ``Accept`` header.
        """

    @abc.abstractmethod
    def predict(self, **kwargs: Any) -> Any:
        """Answer one request; ``kwargs`` are the validated ``get_predict_args``.

        Return something JSON-serialisable (dict, list, str, number; numpy values are
        converted), or, for a non-JSON ``accept`` choice, ``bytes``, an open binary
        file, or a :class:`deepaas_like.ReturnedFile`. File arguments arrive as
        :class:`deepaas_like.UploadedFile`. Raising an exception answers a JSON 500
        naming the model; the server keeps serving.
        """

    @optional
    def predict_batch(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Optional: predict several requests in one call (adaptive batching).

        Only used when the operator turns batching on for the model
        (``--max-batch-size NAME=32``). ``rows`` are the keyword arguments ``predict``
        would get, one dict per request; return one result per row, in order. An
        exception *instance* in the list fails only that row's request; if the call
        raises, the rows are run one by one through ``predict`` so that only the bad
        row fails::

            def predict_batch(self, rows):
                x = numpy.array([[r["a"], r["b"]] for r in rows])
                return [{"score": float(s)} for s in self.model.predict(x)]

        Not declaring it is fine: with batching on, requests are still grouped into
        one worker call and ``predict`` runs once per row.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def get_train_args(self) -> Mapping[str, Any]:
        """Declare the arguments of ``train``, exactly like :meth:`get_predict_args`."""

    @abc.abstractmethod
    def train(self, **kwargs: Any) -> Any:
        """Train; ``kwargs`` are the validated ``get_train_args``. Return a JSON value.

        Each training runs in a process of its own (so that it can be cancelled for
        real), after ``warm``. To make what it learned visible to predictions, save it
        where ``warm`` loads it from, for example under
        :func:`deepaas_like.storage_dir`::

            def train(self, epochs):
                weights = fit(epochs)
                save(weights, deepaas_like.storage_dir() / "weights.bin")
                return {"epochs": epochs}

        When ``train`` returns, the server starts fresh workers, waits for their
        ``warm``, and switches every prediction over to them before it reports the
        training ``done``.

        Whatever the training prints (stdout, stderr, ``logging``, native code) is kept
        as its log, readable at ``GET .../train/{uuid}/log`` while it runs; call
        :func:`deepaas_like.report_progress` to show how far it is.
        """
