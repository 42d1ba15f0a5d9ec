"""MLServer with mlserver-sklearn serving the iris forest over V2 (Open Inference Protocol):
writes settings.json and model-settings.json into --workdir, then becomes ``mlserver start``.

``--workers`` is MLServer's ``parallel_workers`` (inference processes beside the HTTP one);
batching is its ``max_batch_size`` / ``max_batch_time`` (seconds). No access log
(``debug: false``); gRPC and metrics on free loopback ports (MLServer's defaults otherwise).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from serve_args import HOST, MODEL_NAME, free_port, parse


def main() -> None:
    args = parse(__doc__.splitlines()[0])
    settings = {
        "debug": False,
        "host": HOST,
        "http_port": args.port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": args.workers,
        "model_repository_root": str(args.workdir),
        "environments_dir": str(args.workdir / ".envs"),
        "metrics_dir": str(args.workdir / ".metrics"),
    }
    model = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(args.model.resolve())},
    }
    if args.max_batch_size > 1:
        model.update(max_batch_size=args.max_batch_size, max_batch_time=args.max_batch_time_ms / 1000)
    (args.workdir / "settings.json").write_text(json.dumps(settings))
    (args.workdir / "model-settings.json").write_text(json.dumps(model))
    os.chdir(args.workdir)
    mlserver = str(Path(sys.executable).parent / "mlserver")
    os.execv(mlserver, [mlserver, "start", str(args.workdir)])


if __name__ == "__main__":
    main()
