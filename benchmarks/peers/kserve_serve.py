"""KServe's Python model server (``kserve.ModelServer``) serving the iris forest over V2
(Open Inference Protocol) with a ``kserve.Model`` that loads the joblib file.

KServe 0.21 binds its REST server to 0.0.0.0 with no option to change it (uvicorn's
``host`` is fixed in ``kserve.protocol.rest.server.RESTServer``): here every
``uvicorn.Config`` is made with 127.0.0.1 instead, before KServe builds one. gRPC off,
no log line per request (access and latency logs: off, as ours and MLServer's are by
default); an answer's ``id`` is the request's, or a new UUID (as MLServer's);
``--workers`` is KServe's (uvicorn processes, each loading the model). KServe's Python
server has no adaptive batching (that is its Go agent's, a sidecar in a cluster), so
``--max-batch-size`` must be 1.
"""

from __future__ import annotations

import uuid

import joblib
import kserve.logging
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from serve_args import HOST, MODEL_NAME, parse

for _name in ("uvicorn.access", "kserve.trace"):  # no log line per request (KServe's default has two)
    kserve.logging.KSERVE_LOG_CONFIG["loggers"][_name]["level"] = "WARNING"
_config_init = uvicorn.Config.__init__


def _loopback_config(self, *args, **kwargs) -> None:
    kwargs["host"] = HOST
    _config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config


class IrisForest(Model):
    """The forest from a joblib file; ``predict`` answers the first input's rows' class probabilities."""

    def __init__(self, path: str) -> None:
        super().__init__(MODEL_NAME)
        self.path = path
        self.forest = None

    def load(self) -> bool:
        self.forest = joblib.load(self.path)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        rows = payload.inputs[0].as_numpy().reshape(-1, 4)
        proba = self.forest.predict_proba(rows)
        output = InferOutput(name="predict_proba", shape=list(proba.shape), datatype="FP64", data=proba)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or str(uuid.uuid4()))


def main() -> None:
    args = parse(__doc__.splitlines()[0])
    if args.max_batch_size > 1:
        raise SystemExit("KServe's Python model server has no adaptive batching")
    model = IrisForest(str(args.model))
    model.load()
    ModelServer(http_port=args.port, workers=args.workers, enable_grpc=False, enable_latency_logging=False).start(
        [model]
    )


if __name__ == "__main__":
    main()
