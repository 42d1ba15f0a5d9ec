"""The BentoML service of the iris forest (``bentoml serve bentoml_service:IrisForest``,
started by bentoml_serve.py, which passes the model, workers and batching in PEER_*
variables): ``POST /predict`` with ``{"input": [[4 floats]]}``, answered with the
probabilities, ``[[3 floats]]``. No access log (as ours and MLServer by default)."""

from __future__ import annotations

import os

import bentoml
import numpy as np

WORKERS = int(os.environ.get("PEER_WORKERS", "1"))
MAX_BATCH_SIZE = int(os.environ.get("PEER_MAX_BATCH_SIZE", "1"))


@bentoml.service(workers=WORKERS, logging={"access": {"enabled": False}})  # no log line per request
class IrisForest:
    def __init__(self) -> None:
        import joblib

        self.forest = joblib.load(os.environ["PEER_MODEL"])

    if MAX_BATCH_SIZE > 1:

        @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH_SIZE)
        def predict(self, input: np.ndarray) -> np.ndarray:
            return self.forest.predict_proba(input)

    else:

        @bentoml.api
        def predict(self, input: np.ndarray) -> np.ndarray:
            return self.forest.predict_proba(input)
