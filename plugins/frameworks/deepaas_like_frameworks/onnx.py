"""ONNX graphs, run by onnxruntime on the CPU with one thread per session.

Recognised by name (``.onnx``) unless the first bytes are plainly another format (a zip
archive, a pickle, an HDF5 file)::

    >>> OnnxFramework().check(b"\\x80\\x05...", "onnx")
    'an ONNX file is a protobuf message; these bytes are a pickle'

The signature, from the graph:

* ``columns``: a graph with several inputs, each of shape ``[N, 1]`` (input names,
  their element types as column types); or, for one ``[N, k]`` input, the columns
  written into the graph's metadata (``deepaas_like.columns``) by
  :meth:`SklearnFramework.to_onnx`; else ``n_inputs`` ``k``;
* ``classification`` when the outputs are a label tensor then probabilities, as
  skl2onnx writes classifiers: a ``[N, k]`` float tensor (``zipmap=False``) or a
  sequence of maps (ZipMap); classes from the graph's ``classlabels_*`` attributes;
* ``regression`` for the one float output of a skl2onnx/onnxmltools graph; every other
  graph is a ``tensor`` model;
* ``library_versions``: ``{producer_name: producer_version}``; ``details``: producer,
  IR version and opsets.

A graph whose tensors live in external files is refused: an upload is one file, and
such a file could name any path.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from deepaas_like.frameworks import Column, Framework, FrameworkMissing, LoadedModel, Signature

from .answers import InputsRefused, classified, tensors, valued
from .file_head import describe, is_hdf5, is_pickle, is_zip

COLUMNS_METADATA = "deepaas_like.columns"
REGRESSION_PRODUCERS = ("skl2onnx", "onnxmltools")
ELEMENT_TYPES = {  # onnxruntime's type name -> (numpy dtype name, column type)
    "tensor(float)": ("float32", "number"),
    "tensor(double)": ("float64", "number"),
    "tensor(float16)": ("float16", "number"),
    "tensor(int64)": ("int64", "integer"),
    "tensor(int32)": ("int32", "integer"),
    "tensor(int8)": ("int8", "integer"),
    "tensor(uint8)": ("uint8", "integer"),
    "tensor(bool)": ("bool", "boolean"),
    "tensor(string)": ("object", "string"),
}
CLASS_LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")


class OnnxFramework(Framework):
    """ONNX graphs (``onnx`` files), run with onnxruntime's CPU provider only."""

    library = "onnx"
    extra = "onnx"
    filetypes = ("onnx",)
    safe_filetypes = ("onnx",)
    extensions = {".onnx": "onnx"}

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads

    def preload(self) -> None:
        """onnxruntime (well under a second to import)."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError:  # the library is missing: loading will say which extra to install
            pass

    def sniff(self, head: bytes, filename: str) -> str | None:
        filetype = super().sniff(head, filename)
        return filetype if filetype is not None and self.check(head, filetype) is None else None

    def check(self, head: bytes, filetype: str) -> str | None:
        if filetype != "onnx":
            return f"{filetype} is not an ONNX filetype"
        if not head or is_zip(head) or is_pickle(head) or is_hdf5(head):
            return f"an ONNX file is a protobuf message; these bytes are {describe(head)}"
        return None

    def load(self, path: str, filetype: str) -> LoadedModel:
        """An onnxruntime session on the CPU, ``intra_op_num_threads=1``.

        >>> OnnxFramework().load("iris.onnx", "onnx").signature.classes
        ['setosa', 'versicolor', 'virginica']
        """
        try:
            import numpy  # noqa: F401
            import onnx
            import onnxruntime
        except ImportError as exc:
            raise FrameworkMissing(self.library, self.extra, exc) from exc
        with open(path, "rb") as file:
            data = file.read()
        graph = onnx.load_from_string(data)
        external = _external_tensors(graph.graph, onnx.TensorProto.EXTERNAL)
        if external:
            raise ValueError(
                "the graph keeps tensors in external files, which an upload cannot bring: " + ", ".join(external[:5])
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return OnnxModel(session, _facts(graph))


class OnnxModel(LoadedModel):
    """An onnxruntime session answering rows."""

    def __init__(self, session: Any, facts: dict[str, Any]) -> None:
        import numpy as np

        self.session = session
        self._np = np
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self._inputs = [(i.name, np.dtype(ELEMENT_TYPES.get(i.type, ("float32",))[0])) for i in inputs]
        self._shape = _shape(inputs[0].shape) if len(inputs) == 1 and inputs[0].shape is not None else None
        self._outputs = [o.name for o in outputs]
        self._per_column = len(inputs) > 1
        if self._per_column and not all(_shape(i.shape) == [None, 1] for i in inputs):
            raise ValueError(
                "several inputs are served only when each has shape [N, 1] (one per column); "
                f"this graph's: {[(i.name, i.shape) for i in inputs]}"
            )
        self.signature = _signature(inputs, outputs, facts)
        self._width = len(self.signature.columns) if self.signature.columns is not None else self.signature.n_inputs
        self._all_numeric = all(dtype.kind in "fiub" for _, dtype in self._inputs)

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """One answer per row, as the signature's task says."""
        if not rows:
            return []
        results = self.session.run(self._outputs, self._feeds(rows))
        task = self.signature.task
        if task == "classification":
            labels, probabilities = results[0], results[1]
            labels = labels.reshape(-1).tolist()
            classes = self.signature.classes
            if isinstance(probabilities, list):  # ZipMap: one {class: probability} per row
                return [
                    {"label": label, "probabilities": {str(k): float(v) for k, v in row.items()}}
                    for label, row in zip(labels, probabilities)
                ]
            probabilities = probabilities.astype(self._np.float64).tolist()
            return classified(
                classes or list(range(len(probabilities[0]) if probabilities else 0)), labels, probabilities
            )
        if task == "regression":
            return valued(results[0].astype(self._np.float64).tolist())
        if len(results) == 1:
            return tensors(_tolist(results[0]))
        lists = {name: _tolist(value) for name, value in zip(self._outputs, results)}
        return tensors([{name: values[i] for name, values in lists.items()} for i in range(len(rows))])

    def _feeds(self, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
        np = self._np
        if not self._per_column:
            name, dtype = self._inputs[0]
            x = np.asarray(rows, dtype=dtype)
            if self._width is not None and (x.ndim != 2 or x.shape[1] != self._width):
                raise InputsRefused(f"each row needs {self._width} values; got rows of shape {list(x.shape[1:])}")
            shape = self._shape
            if shape and (
                x.ndim != len(shape) or any(d is not None and d != n for d, n in zip(shape[1:], x.shape[1:]))
            ):
                wanted = ", ".join(["N", *("?" if d is None else str(d) for d in shape[1:])])
                raise InputsRefused(f"input '{name}' takes shape [{wanted}]; got {list(x.shape)}")
            return {name: x}
        if self._all_numeric:
            columns = np.asarray(rows, dtype=np.float64)
            if columns.ndim != 2 or columns.shape[1] != len(self._inputs):
                raise InputsRefused(
                    f"each row needs {len(self._inputs)} values; got rows of shape {list(columns.shape[1:])}"
                )
            columns = columns.T
            return {name: columns[j].astype(dtype).reshape(-1, 1) for j, (name, dtype) in enumerate(self._inputs)}
        for index, row in enumerate(rows):
            if len(row) != len(self._inputs):
                raise ValueError(f"row {index} has {len(row)} values; the model takes {len(self._inputs)}")
        return {
            name: np.array([row[j] for row in rows], dtype=dtype).reshape(-1, 1)
            for j, (name, dtype) in enumerate(self._inputs)
        }


def _tolist(value: Any) -> list[Any]:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _shape(shape: Any) -> list[Any]:
    return [d if isinstance(d, int) else None for d in (shape or [])]


def _signature(inputs: Any, outputs: Any, facts: dict[str, Any]) -> Signature:
    columns: list[Column] | None = None
    n_inputs = None
    if len(inputs) > 1:
        columns = [Column(name=i.name, type=ELEMENT_TYPES.get(i.type, ("", "number"))[1]) for i in inputs]
    else:
        shape = _shape(inputs[0].shape) if inputs else []
        if len(shape) == 2 and shape[1] is not None:
            n_inputs = shape[1]
            named = facts["metadata"].get(COLUMNS_METADATA)
            if named:
                found = [Column(**c) for c in json.loads(named)]
                if len(found) == n_inputs:
                    columns, n_inputs = found, None
    task, classes = "tensor", None
    if _classifier_outputs(outputs):
        task, classes = "classification", facts["classes"]
    elif (
        len(outputs) == 1
        and outputs[0].type in ("tensor(float)", "tensor(double)")
        and facts["producer_name"] in REGRESSION_PRODUCERS
    ):
        task = "regression"
    producer = {facts["producer_name"]: facts["producer_version"]} if facts["producer_name"] else {}
    details = {k: facts[k] for k in ("producer_name", "producer_version", "ir_version", "opsets") if facts[k]}
    details["inputs"] = [{"name": i.name, "type": i.type, "shape": _shape(i.shape)} for i in inputs]
    details["outputs"] = [{"name": o.name, "type": o.type} for o in outputs]
    return Signature(
        task=task, columns=columns, n_inputs=n_inputs, classes=classes, library_versions=producer, details=details
    )


def _classifier_outputs(outputs: Any) -> bool:
    """A label tensor (int64 or string) then probabilities (float ``[N, k]`` or ``seq(map(...))``)."""
    if len(outputs) != 2:
        return False
    label, probabilities = outputs
    return label.type in ("tensor(int64)", "tensor(string)") and (
        probabilities.type.startswith("seq(map(")
        or (probabilities.type == "tensor(float)" and len(probabilities.shape or []) == 2)
    )


def _facts(model: Any) -> dict[str, Any]:
    """What the graph's proto says: producer, IR version, opsets, metadata, class labels."""
    classes = None
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name in CLASS_LABEL_ATTRIBUTES:
                values = attribute.strings or attribute.ints
                if values:
                    classes = [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    return {
        "producer_name": model.producer_name,
        "producer_version": model.producer_version,
        "ir_version": model.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "metadata": {p.key: p.value for p in model.metadata_props},
        "classes": classes,
    }


def _external_tensors(graph: Any, external: int) -> list[str]:
    """The names of the tensors of ``graph`` (and its subgraphs) stored outside the file."""
    found = [t.name for t in graph.initializer if t.data_location == external]
    for node in graph.node:
        for attribute in node.attribute:
            tensors_ = [attribute.t] if attribute.HasField("t") else []
            found += [t.name or node.name for t in [*tensors_, *attribute.tensors] if t.data_location == external]
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                found += _external_tensors(subgraph, external)
    return found
