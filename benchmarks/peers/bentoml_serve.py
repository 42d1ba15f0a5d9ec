"""BentoML serving the iris forest (bentoml_service.py): becomes ``bentoml serve`` on
127.0.0.1, with usage tracking off. ``--workers`` is the service's ``workers``; batching
makes ``predict`` batchable with ``max_batch_size`` (BentoML picks the wait itself, within
its ``max_latency_ms``; ``--max-batch-time-ms`` is not BentoML's and is not used)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from serve_args import HOST, parse

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse(__doc__.splitlines()[0])
    os.environ.update(
        PEER_MODEL=str(args.model.resolve()),
        PEER_WORKERS=str(args.workers),
        PEER_MAX_BATCH_SIZE=str(args.max_batch_size),
        BENTOML_DO_NOT_TRACK="true",
        BENTOML_HOME=str(args.workdir / "bentoml-home"),
    )
    bentoml = str(Path(sys.executable).parent / "bentoml")
    command = ["serve", "bentoml_service:IrisForest", "--working-dir", str(HERE), "--host", HOST]
    os.execv(bentoml, [bentoml, *command, "--port", str(args.port)])


if __name__ == "__main__":
    main()
