"""LitServe serving the iris forest: ``POST /predict`` with ``{"input": [[4 floats]]}``,
answered ``{"probabilities": [[3 floats]]}``.

``--workers`` is ``workers_per_device`` on the CPU (inference processes; LitServe's
default then starts as many API server processes); batching is LitAPI's
``max_batch_size`` / ``batch_timeout`` (seconds).
"""

from __future__ import annotations

import os

import joblib
import litserve as ls
import numpy as np
from serve_args import HOST, parse


class IrisForest(ls.LitAPI):
    """The forest from a joblib file (``path``): rows in, class probabilities out, one request or a batch."""

    def __init__(self, path: str, **batching) -> None:
        super().__init__(**batching)
        self.path = path

    def setup(self, device) -> None:
        self.forest = joblib.load(self.path)

    def decode_request(self, request):
        return np.asarray(request["input"], dtype=np.float64).reshape(-1, 4)

    def batch(self, inputs):
        return np.concatenate(inputs)

    def predict(self, rows):
        return self.forest.predict_proba(rows)

    def unbatch(self, output):
        return [row.reshape(1, -1) for row in output]

    def encode_response(self, output):
        return {"probabilities": output.tolist()}


def main() -> None:
    args = parse(__doc__.splitlines()[0])
    os.chdir(args.workdir)
    batching = {"max_batch_size": args.max_batch_size, "batch_timeout": args.max_batch_time_ms / 1000}
    api = IrisForest(str(args.model), **(batching if args.max_batch_size > 1 else {}))
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers)
    server.run(host=HOST, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
