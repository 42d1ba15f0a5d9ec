"""Fuzzing: requests generated from /swagger.json, sent to a real `deepaas-run` over HTTP.

schemathesis reads the OpenAPI document the server publishes for the demo and the benchmark
plugins (echobench, irisbench) and an uploaded model (iris, with a reference dataset),
generates valid and invalid requests for every operation in it and sends them; each
answer must

* not be a 5xx, unless it is the plugin's own failure: a 500 ``ModelError`` ("Model 'x' failed in
  predict(): ...", with ``error_type``), a 503 for the request whose ``mode=crash`` made
  echobench kill its own worker, a 504 of a plugin slower than ``--predict-timeout``;
* have a status, a content type, headers and a body that the document declares for it;
* refuse invalid data with a 4xx and not refuse valid data.

Then the jobs the fuzzing created (asynchronous predictions, trainings) are followed by their
real ids: status, result, log, list and cancel are checked the same way, and the result of a
failed prediction must be a 409 carrying its error.

Twice: the server as it runs by default, and with ``--auth`` and a typical client's token
(read, predict, train), where the write and admin routes answer 403 and schemathesis's own
variations of the credential 401, each declared by the document.

Bounded: ``FUZZ_EXAMPLES`` examples per operation and mode (default 6, which keeps ``make test``
near its 20 minutes; ``FUZZ_EXAMPLES=20`` for a deeper run), no shrinking, a time budget;
``FUZZ_SEED`` picks another sequence. ``pytest -s tests/test_fuzz.py`` prints the counts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.config import GenerationConfig
from schemathesis.errors import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.openapi.checks import UndefinedStatusCode
from schemathesis.specs.openapi import checks

from support.processes import Server

MODELS = ("demo", "echobench", "irisbench")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
SEED = int(os.environ.get("FUZZ_SEED", "20261123"))
BUDGET_S = float(os.environ.get("FUZZ_BUDGET_S", "150"))  # stop generating requests after this
FOLLOW_UP_S = 30  # then at most this long to follow the jobs
REQUEST_TIMEOUT_S = 10
CHECKS = [  # schemathesis's own; not_a_server_error is replaced by _server_error_cause
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.positive_data_acceptance,
    checks.unsupported_method,
]
# What is valid beyond what a schema states skips the acceptance check only: any bytes are a
# "valid" upload to the fuzzer but not a loadable model; rows of any features, or tensors of any
# names, are "valid" to the generic schema but not to a given model (a 422 or 400 that names why);
# an explanation needs a tabular model and a class the model has (the same 422s as feature impact);
# a retraining of the upload needs its target among the rows' columns, and its columns.
CONTENT_CHECKED = re.compile(
    r"PUT /v2/models/\{name\}$|PUT /ml-models/\{name\}$|POST .*/(tests|feature-impact|explanations-initialization)/$"
    r"|POST /v2/models/iris/train/$"
    r"|POST .*/(infer|explain)$|PUT .*/dataset$"
)
MODEL_ERROR = re.compile(r"^Model '[^']+' failed in \w+\(\)")
# Arguments that make a plugin wait (echobench's sleep_ms, trainings' delay_s, the demo's
# epochs * epoch_seconds): generated values are capped so that the run stays short. Negative
# ones are kept (the plugin's own error).
WAITS = {"sleep_ms": 50, "delay_s": 0.05, "epoch_seconds": 0.01, "epochs": 5}


@dataclass
class Finding:
    count: int = 0
    example: str = ""


@dataclass
class Tally:
    """What was sent and what came back; printed at the end, asserted empty of findings."""

    requests: Counter = field(default_factory=Counter)  # operation -> requests
    seconds: Counter = field(default_factory=Counter)  # operation -> seconds spent on it
    statuses: Counter = field(default_factory=Counter)  # (operation, status) -> responses
    server_errors: Counter = field(default_factory=Counter)  # cause -> 5xx responses
    findings: dict[tuple[str, str], Finding] = field(default_factory=lambda: defaultdict(Finding))
    jobs: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # list path -> ids
    job_statuses: Counter = field(default_factory=Counter)  # (list path, status) -> jobs followed
    deadline: float = float("inf")  # no request is sent after it
    skipped: int = 0  # requests not sent: past the deadline
    same_as_valid: int = 0  # negative cases not sent: see _valid_on_the_wire

    def find(self, operation: str, what: str, example: str) -> None:
        finding = self.findings[(operation, what)]
        finding.count += 1
        finding.example = finding.example or example

    def report(self, elapsed: float) -> str:
        total = sum(self.requests.values())
        lines = [
            f"fuzzing: {total} requests to {len(self.requests)} operations in {elapsed:.1f} s "
            f"(seed {SEED}, {EXAMPLES} examples per operation with arguments and mode, {self.skipped} not sent "
            f"over the time budget, {self.same_as_valid} negative form cases not sent: valid on the wire)"
        ]
        by_status = Counter()
        for (_, status), n in self.statuses.items():
            by_status[status] += n
        lines.append("  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items(), key=str)))
        lines.append(
            "  5xx by cause: " + (", ".join(f"{c}: {n}" for c, n in self.server_errors.most_common()) or "none")
        )
        lines.append(
            "  jobs created and followed: "
            + (
                ", ".join(
                    f"{path.split('/')[3]} {path.split('/')[4]} {status}: {n}"
                    for (path, status), n in sorted(self.job_statuses.items())
                )
                or "none"
            )
        )
        lines.append(
            "  slowest operations: "
            + ", ".join(f"{op} {t:.1f} s / {self.requests[op]}" for op, t in self.seconds.most_common(4))
        )
        lines.append(f"  findings: {len(self.findings)}")
        for (operation, what), finding in sorted(self.findings.items()):
            lines.append(f"  - {operation}: {what} ({finding.count}x)\n      {finding.example}")
        return "\n".join(lines)


class LoggedServer(Server):
    """A `Server` whose log (stderr) is read while it runs, into ``log_path``: the fuzzing makes it
    log hundreds of tracebacks, and a full pipe would block it."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        super().__init__(args)
        self.log_path = log_path
        self._log_reader = threading.Thread(target=self._read_log, daemon=True)
        self._log_reader.start()

    def _read_log(self) -> None:
        with open(self.log_path, "w") as log:
            try:
                for line in self.process.stderr:
                    log.write(line)
            except (OSError, ValueError):  # closed by kill()
                pass


IRIS_CSV = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.3,2.9,5.6,1.8\n5.8,2.7,4.1,1.0\n"


def _upload_iris(server: Server, path: Path, token: str | None) -> None:
    """An uploaded model (public, with a reference dataset): its own operations are fuzzed too."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with requests.Session() as session:
        uploaded = session.put(
            f"{server.base}/v2/models/iris",
            headers=headers,
            timeout=120,
            files={"file": (path.name, path.read_bytes())},
            data={"is_public": "true"},
        )
        assert uploaded.status_code == 201, uploaded.text
        kept = session.put(
            f"{server.base}/v2/models/iris/versions/1/dataset",
            data=IRIS_CSV.encode(),
            timeout=60,
            headers={**headers, "Content-Type": "text/csv"},
        )
        assert kept.status_code == 200, kept.text


@pytest.fixture(scope="module", params=["open", "auth"])
def server(request, tmp_path_factory, iris_models):
    """The server fuzzed: as it runs by default, and with --auth, every request carrying the
    token of a typical client (read, predict, train: the write and admin routes answer 403,
    which the document must declare)."""
    work = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    models = [arg for name in MODELS for arg in ("--model-name", name)]
    data = work / "data"
    extra, token = [], None
    admin = None
    if request.param == "auth":

        def mint(*scopes: str) -> str:
            made = subprocess.run(
                [
                    str(Path(sys.executable).parent / "deepaas-token"),
                    "--data-dir",
                    str(data),
                    "create",
                    "--name",
                    "fuzz",
                    *(a for s in scopes for a in ("--scope", s)),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            )
            return made.stdout.strip().splitlines()[-1]

        extra, token = ["--auth"], mint("models:read", "models:predict", "models:train")
        admin = mint("admin")
    # process executor (the default): echobench's mode=crash kills a worker, not the server.
    running = LoggedServer(
        [*models, "--data-dir", str(data), "--predict-timeout", "5", "--shutdown-timeout", "5", *extra],
        log_path=work / "server.log",
    )
    running.token = token
    try:
        running.wait_banner()
        running.wait_ready()
        _upload_iris(running, iris_models["skops"], admin)
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"deepaas-run exited with {code}; its log: {running.log_path}"


def _content_type(response: schemathesis.Response) -> str:
    values = {name.lower(): value for name, value in response.headers.items()}.get("content-type") or [""]
    return values[0]


def _json(response: schemathesis.Response) -> Any:
    try:
        return response.json() if "json" in _content_type(response) else None
    except ValueError:
        return None


def _summary(response: schemathesis.Response) -> str:
    text = response.text_lossy() if "json" in _content_type(response) or response.status_code >= 400 else ""
    return f"{response.status_code} {text[:300]}".strip()


def _bounded(case: schemathesis.Case) -> None:
    if isinstance(case.body, dict):
        for name, cap in WAITS.items():
            value = case.body.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
                case.body[name] = type(value)(cap)


def _server_error_cause(case: schemathesis.Case, response: schemathesis.Response) -> str | None:
    """Why a 5xx is allowed (the plugin's own doing), or None for a framework 5xx."""
    body = _json(response)
    body = body if isinstance(body, dict) else {}
    if response.status_code == 500 and "error_type" in body and MODEL_ERROR.match(str(body.get("message", ""))):
        return f"plugin exception ({body['error_type']})"
    if response.status_code == 503 and isinstance(case.body, dict) and case.body.get("mode") == "crash":
        return "echobench mode=crash killed its worker"
    if response.status_code == 504:
        return "plugin slower than --predict-timeout"
    return None


def _exchange(
    tally: Tally, server: Server, session: requests.Session, case: schemathesis.Case, extra_check: Any = None
) -> schemathesis.Response | None:
    """Send one case, record it, run every check on the answer."""
    if time.monotonic() > tally.deadline:
        tally.skipped += 1
        return None
    label = case.operation.label
    curl = case.as_curl_command(base_url=server.base)
    curl = curl if len(curl) < 800 else curl[:800] + "..."
    tally.requests[label] += 1
    try:
        response = case.call(base_url=server.base, session=session, timeout=REQUEST_TIMEOUT_S)
    except requests.RequestException as exc:
        tally.statuses[(label, "no answer")] += 1
        tally.find(label, f"no answer: {type(exc).__name__}", curl)
        return None
    tally.statuses[(label, response.status_code)] += 1
    framework_error = False
    if response.status_code >= 500:
        cause = _server_error_cause(case, response)
        tally.server_errors[cause or f"framework {response.status_code}"] += 1
        if cause is None:
            framework_error = True
            tally.find(label, f"framework {response.status_code}", f"{curl}\n      -> {_summary(response)}")
    try:
        case.validate_response(
            response,
            checks=[c for c in CHECKS if not (c is checks.positive_data_acceptance and CONTENT_CHECKED.search(label))],
        )
    except FailureGroup as exc:
        for failure in exc.exceptions:
            if framework_error and isinstance(failure, UndefinedStatusCode):
                continue  # the 5xx itself is the finding
            lines = failure.message.strip().splitlines() or [""]
            detail = "".join(f"\n      | {line}" for line in lines[1:])
            tally.find(label, f"{failure.title}: {lines[0]}", f"{curl}\n      -> {_summary(response)}{detail}")
    if extra_check is not None:
        problem = extra_check(response)
        if problem:
            tally.find(label, problem, f"{curl}\n      -> {_summary(response)}")
    return response


FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def _valid_on_the_wire(case: schemathesis.Case) -> bool:
    """A negative form case that is a valid request once sent, where a form has only text:

    * an array is its field repeated (``style: form, explode: true``): a scalar where an array is
      declared is a one-element array, and an empty optional array is no field, i.e. its default;
    * ``0`` and ``1`` are spellings of false and true (as ``on`` is, for a checkbox).
    """
    if (
        case.media_type not in FORMS
        or not isinstance(case.body, dict)
        or case.meta is None
        or not case.meta.generation.mode.is_negative
    ):
        return False
    content = case.operation.definition.raw.get("requestBody", {}).get("content", {}).get(case.media_type, {})
    schema = content.get("schema", {})
    types = {name: prop.get("type") for name, prop in schema.get("properties", {}).items()}
    required = set(schema.get("required", []))

    def same_as_valid(name: str, value: Any) -> bool:
        if types.get(name) == "array":
            return (value == [] and name not in required) or (value is not None and not isinstance(value, (list, dict)))
        if types.get(name) == "boolean":
            return value in (0, 1) and not isinstance(value, bool)
        return False

    return any(same_as_valid(name, value) for name, value in case.body.items())


def _send(tally: Tally, server: Server, session: requests.Session, case: schemathesis.Case) -> None:
    """Send a generated case (its waits capped); remember the jobs it created."""
    if _valid_on_the_wire(case):
        tally.same_as_valid += 1
        return
    _bounded(case)
    response = _exchange(tally, server, session, case)
    if response is not None and response.status_code in (200, 202) and case.method == "POST":
        body = _json(response)
        job_id = (body.get("id") or body.get("uuid")) if isinstance(body, dict) else None
        if job_id:
            tally.jobs[case.path].append(job_id)


def _cover_operation(tally: Tally, server: Server, session: requests.Session, schema: Any, operation: Any) -> None:
    """schemathesis's coverage phase: a fixed set of boundary values, each argument missing or of
    the wrong type, unknown ones, other methods, bad content types."""
    for case in schema.iter_coverage_cases(
        operation, generation_modes=list(GenerationMode), generation_config=GenerationConfig()
    ):
        _send(tally, server, session, case)


def _fuzz_operation(
    tally: Tally, server: Server, session: requests.Session, operation: Any, mode: GenerationMode
) -> None:
    """Random requests, valid (positive) or not (negative); fewer where only a path id varies."""
    raw = operation.definition.raw
    has_arguments = "requestBody" in raw or any(p.get("in") == "query" for p in raw.get("parameters", []))

    @settings(
        max_examples=EXAMPLES if has_arguments else max(1, EXAMPLES // 3),
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.seed(SEED)
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        _send(tally, server, session, case)

    try:
        fuzz()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # an operation without arguments has no invalid request


def _follow_jobs(tally: Tally, server: Server, session: requests.Session, schema: Any) -> None:
    """Status, result or log, cancel and list of the jobs the fuzzing created, by their ids.

    Every queued or running job but the first two of each list is cancelled (trainings queue one
    at a time); those two are waited for, then a few jobs of each final status are fetched.
    """

    def fetch(path: str, method: str = "GET", job_id: str | None = None, **kwargs: Any) -> Any:
        case = schema[path][method].Case(path_parameters={"uuid": job_id} if job_id else None, **kwargs)
        return _exchange(tally, server, session, case)

    deadline = time.monotonic() + FOLLOW_UP_S / 2  # for the jobs to finish
    for list_path, ids in sorted(tally.jobs.items()):
        item = list_path + "{uuid}"
        for job_id in ids[2:]:
            fetch(item, "DELETE", job_id)
        jobs: list[dict] = []
        for job_id in ids:
            while True:
                response = fetch(item, "GET", job_id)
                job = (_json(response) if response is not None else None) or {}
                if job.get("status") not in ("queued", "running") or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            jobs.append(job)
        by_status: dict[str, list[dict]] = defaultdict(list)
        for job in jobs:
            by_status[str(job.get("status"))].append(job)
        for status, same in sorted(by_status.items()):
            tally.job_statuses[(list_path, status)] += len(same)
            if status == "None":  # its GET failed, which is a finding already
                continue
            for job in same[:3]:
                job_id = job.get("uuid") or job.get("id")
                if list_path.endswith("/predictions/"):
                    case = schema[item + "/result"]["GET"].Case(path_parameters={"uuid": job_id})
                    _exchange(tally, server, session, case, extra_check=_result_matches(job))
                else:  # trainings, model tests, feature impacts: the result is in the job; its log
                    fetch(item + "/log", "GET", job_id)
            fetch(list_path, "GET", query={"status": status})
            fetch(item, "DELETE", same[0].get("uuid") or same[0].get("id"))  # 409 once finished


def _result_matches(job: dict) -> Any:
    """The result of a done prediction is its body; that of a failed one is a 409 that carries
    its error (and the status a synchronous predict would have answered), not a 404."""

    def check(response: schemathesis.Response) -> str | None:
        if job.get("status") == "done" and response.status_code != 200:
            return f"result of a done prediction answers {response.status_code}"
        if job.get("status") == "error":
            body = _json(response) if response.status_code == 409 else None
            if not isinstance(body, dict) or body.get("error_status") != job.get("error_status"):
                return (
                    f"result of a failed prediction answers {response.status_code}, not a 409 with "
                    f"its error_status {job.get('error_status')}"
                )
        return None

    return check


def test_fuzz_every_operation_of_the_demo_and_benchmark_plugins(server):
    started = time.monotonic()
    status, spec = server.request("GET", "/swagger.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(spec, config=schemathesis.Config())
    tally = Tally(deadline=started + BUDGET_S)
    with requests.Session() as session:
        if server.token:
            session.headers["Authorization"] = f"Bearer {server.token}"
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {
            op.path.split("/")[3] for op in operations if op.path.startswith("/v2/models/") and op.path.count("/") > 3
        } == {*MODELS, "iris", "{name}"}  # {name}: the registry's routes
        for operation in operations:
            begun = time.monotonic()
            _cover_operation(tally, server, session, schema, operation)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(tally, server, session, operation, mode)
            tally.seconds[operation.label] += time.monotonic() - begun
        tally.deadline = max(tally.deadline, time.monotonic()) + FOLLOW_UP_S
        _follow_jobs(tally, server, session, schema)
    report = tally.report(time.monotonic() - started) + f"\n  server log: {server.log_path}"
    print("\n" + report)
    assert not tally.findings, report
