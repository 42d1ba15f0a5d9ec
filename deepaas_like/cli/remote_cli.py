"""The model behind a running server, for ``deepaas-cli --url URL``: :class:`RemoteModel`.

Its flags come from the server's ``/swagger.json`` (open even with ``--auth``): each
model's predict and train request bodies there are the JSON Schemas the server derived
from the plugin's own declarations, so the plugin need not be installed where the
command runs::

    served = ServedModels(ServerClient("http://127.0.0.1:5000", token=None))
    model = served.model("demo")         # flags as LocalModel has them
    model.predict({"bins": 3}, {})       # POST /v2/models/demo/predict/ (JSON, or multipart with files)
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, Mapping, TextIO

from .. import __version__
from .arguments_cli import ArgumentFlag, flags_from_schema
from .models_cli import JSON, CommandFailed, ModelOutput, Progress, TrainingReport, guess_type

FINISHED = ("done", "error", "cancelled", "interrupted")
PREDICTION_ENVELOPE = {"$ref": "#/components/schemas/Prediction"}
READ_TIMEOUT = 60.0


@dataclass
class Reply:
    status: int
    content_type: str
    data: bytes
    headers: Message = field(default_factory=Message)

    def json(self) -> Any:
        return json.loads(self.data)


class ServerClient:
    """Plain HTTP to one server (``url`` includes its ``--base-path``), with a bearer token."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = READ_TIMEOUT,
    ) -> Reply:
        """The reply; an error status ends the command with the server's message."""
        headers = {"User-Agent": f"deepaas-cli/{__version__}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(response.status, response.headers.get_content_type(), response.read(), response.headers)
        except urllib.error.HTTPError as exc:
            raise _http_error(Reply(exc.code, exc.headers.get_content_type(), exc.read(), exc.headers)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandFailed(f"cannot reach the server at {self.url}: {reason}") from None

    def get_json(self, path: str) -> Any:
        reply = self.call("GET", path)
        try:
            return reply.json()
        except ValueError:
            raise CommandFailed(f"{self.url}{path} did not answer JSON ({reply.content_type})") from None


def _http_error(reply: Reply) -> CommandFailed:
    """The server's JSON message; 422 is a usage error (exit 2), anything else exit 1."""
    message = ""
    if reply.content_type == JSON:
        try:
            body = reply.json()
            message = str(body.get("message", "")) if isinstance(body, dict) else ""
        except ValueError:
            pass
    message = message or reply.data.decode("utf-8", "replace").strip()[:500] or "no message"
    if reply.status == 401:
        message += " (pass a token with --token or the DEEPAAS_TOKEN environment variable)"
    elif reply.status == 403:
        message += " (pass a token whose scopes allow this with --token: deepaas-token create --scope ...)"
    return CommandFailed(f"{message} (HTTP {reply.status})", 2 if reply.status == 422 else 1)


class ServedModels:
    """The models a server serves, as its OpenAPI document describes them."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client
        self.document = client.get_json("/swagger.json")
        paths = self.document.get("paths") or {}
        self.names = sorted({m.group(1) for p in paths if (m := re.fullmatch(r"/v2/models/([^/{}]+)/", p))})

    def model(self, name: str) -> RemoteModel:
        if name not in self.names:
            raise CommandFailed(
                f"the server at {self.client.url} serves no model '{name}' (served: {', '.join(self.names) or 'none'})",
                2,
            )
        return RemoteModel(self.client, name, self.document)


class RemoteModel:
    """A model served by a running server; the methods of :class:`~.models_cli.LocalModel`."""

    def __init__(self, client: ServerClient, name: str, document: Mapping[str, Any]) -> None:
        self.client = client
        self.name = name
        self.base = f"/v2/models/{name}"
        self._document = document
        paths = document.get("paths") or {}
        self._predict = (paths.get(f"{self.base}/predict/") or {}).get("post")
        self._train = (paths.get(f"{self.base}/train/") or {}).get("post")

    def can(self, method: str) -> bool:
        return {"predict": self._predict, "train": self._train}.get(method) is not None

    @property
    def predict_flags(self) -> list[ArgumentFlag]:
        if self._predict is None:
            return []
        content = ((self._predict.get("responses") or {}).get("200") or {}).get("content") or {}
        return flags_from_schema(self._body_schema(self._predict), list(content))

    @property
    def train_flags(self) -> list[ArgumentFlag]:
        return flags_from_schema(self._body_schema(self._train)) if self._train is not None else []

    def _body_schema(self, operation: Mapping[str, Any]) -> dict[str, Any] | None:
        content = (operation.get("requestBody") or {}).get("content") or {}
        media = content.get(JSON) or content.get("multipart/form-data") or {}
        return self._resolve(media.get("schema"))

    def _resolve(self, schema: Any, depth: int = 0) -> Any:
        """``schema`` with every ``$ref`` into the document's components replaced by its target."""
        if depth > 32:  # a recursive schema: leave the rest as it is
            return schema
        if isinstance(schema, list):
            return [self._resolve(item, depth + 1) for item in schema]
        if not isinstance(schema, dict):
            return schema
        if isinstance(schema.get("$ref"), str):
            node: Any = self._document
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            return self._resolve(node, depth + 1)
        return {key: self._resolve(value, depth + 1) for key, value in schema.items()}

    def close(self) -> None:
        pass

    # --- the commands ----------------------------------------------------------------

    def warm(self, force: bool = False) -> None:
        raise CommandFailed(
            "warm runs a plugin in this process; a server warms its models itself "
            f"(see {self.client.url}{self.base}/ready)",
            2,
        )

    def metadata(self) -> Any:
        return self.client.get_json(f"{self.base}/")

    def predict(self, values: Mapping[str, Any], files: Mapping[str, str]) -> ModelOutput:
        self._require("predict")
        body, content_type = request_body(values, files)
        reply = self.client.call("POST", f"{self.base}/predict/", body=body, content_type=content_type, timeout=None)
        if reply.content_type != JSON:
            return ModelOutput(data=reply.data, content_type=reply.content_type)
        answer = reply.json()
        content = ((self._predict or {}).get("responses", {}).get("200") or {}).get("content") or {}
        enveloped = (content.get(JSON) or {}).get("schema") == PREDICTION_ENVELOPE
        if enveloped and isinstance(answer, dict) and "predictions" in answer:
            answer = answer["predictions"]
        return ModelOutput(json=answer)

    def train(
        self, values: Mapping[str, Any], files: Mapping[str, str], progress: Progress, log: TextIO | None = None
    ) -> TrainingReport:
        """Start a training, follow it to its end with ``progress``; its log comes with the report."""
        self._require("train")
        body, content_type = request_body(values, files)
        reply = self.client.call("POST", f"{self.base}/train/", body=body, content_type=content_type, timeout=None)
        document = reply.json()
        job = f"{self.base}/train/{document['uuid']}"
        started = time.monotonic()
        try:
            while document.get("status") not in FINISHED:
                progress(document.get("progress"), _progress_message(document))
                time.sleep(min(1.0, 0.1 + (time.monotonic() - started) / 20))
                document = self.client.get_json(job)
        except KeyboardInterrupt:
            raise CommandFailed(
                f"stopped following training {document['uuid']}: it goes on on the server "
                f"(cancel it with DELETE {self.client.url}{job})",
                130,
            ) from None
        fraction = document.get("progress")
        progress(1.0 if document.get("status") == "done" else fraction, _progress_message(document))
        text = self.client.call("GET", f"{job}/log").data.decode("utf-8", "replace")
        return TrainingReport(document, text)

    def explain(
        self, values: Mapping[str, Any], background: list[dict[str, Any]] | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One prediction explained by the server; with ``background``, the model's explanations
        initialization is made from those rows first (a job, followed to its end)."""
        self._require("predict")
        if background:
            init = f"{self.base}/explanations-initialization/"
            reply = self.client.call("POST", init, body=json.dumps({"rows": background}).encode(), content_type=JSON)
            document = reply.json()
            while document.get("status") not in FINISHED:
                time.sleep(0.2)
                document = self.client.get_json(init + str(document["id"]))
            if document.get("status") != "done":
                raise CommandFailed(f"the explanations initialization ended {document.get('status')}: {document}")
        body = json.dumps({**values, **{k: v for k, v in options.items() if v is not None}}).encode()
        answer = self.client.call("POST", f"{self.base}/explain", body=body, content_type=JSON, timeout=None).json()
        return dict(answer)

    def _require(self, method: str) -> None:
        if not self.can(method):
            raise CommandFailed(
                f"the server at {self.client.url} serves no {method} for model '{self.name}' "
                f"(the model has no {method}(), or the server runs with --no-{method}-endpoint)"
            )


def _progress_message(document: Mapping[str, Any]) -> str:
    status = str(document.get("status"))
    if status == "queued" and document.get("queue_position"):
        return f"queued (position {document['queue_position']})"
    note = document.get("progress_message")
    if status == "running":
        return str(note or "running")
    return f"{status}: {note}" if note else status


def request_body(values: Mapping[str, Any], files: Mapping[str, str]) -> tuple[bytes, str]:
    """A JSON object of the values; multipart/form-data when there are files."""
    if not files:
        return json.dumps(dict(values)).encode(), JSON
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            parts.append(_part(boundary, key, None, None) + _form_text(item).encode() + b"\r\n")
    for key, path in files.items():
        with open(path, "rb") as fh:
            data = fh.read()
        parts.append(_part(boundary, key, os.path.basename(path), guess_type(path)) + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _part(boundary: str, name: str, filename: str | None, content_type: str | None) -> bytes:
    def quoted(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")

    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted(name)}"'
    if filename is not None:
        head += f'; filename="{quoted(filename)}"\r\nContent-Type: {content_type}'
    return (head + "\r\n\r\n").encode()


def _form_text(value: Any) -> str:
    """One form field's text, as a browser form or curl -F sends it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value)
