"""The Open Inference Protocol (KServe V2, Triton, MLServer): tensors in, tensors out.

An inference request names input tensors; here each tensor is one argument of the model,
and a tensor of shape ``[N]`` (or ``[N, 1]``) is that argument's value in N rows. A model
whose inputs have no names (an uploaded model with ``x0, x1...`` columns, or none at all)
also takes a single 2-D tensor ``[N, k]``: N rows of k values. The rows go through the
model's batching path; each row's answer (a JSON object) becomes one row of each output
tensor: numbers, strings and booleans as they are, an object of numbers (class
probabilities) as ``[N, k]`` with its keys in the output's parameters, anything else as
JSON text::

    request  {"inputs": [{"name": "petal_length", "shape": [2], "datatype": "FP32", "data": [1.4, 5.4]}, ...]}
    response {"model_name": "iris", "outputs": [{"name": "label", "datatype": "BYTES", "shape": [2],
                                                 "data": ["setosa", "virginica"]}, ...]}

Tensors arrive as JSON data or, as tritonclient sends them by default, as binary buffers
after the JSON header (the binary tensor extension). A tensor of more than two dimensions
(images: ``[N, 3, 224, 224]``) goes to a model whose inputs have no names as N rows, each
a numpy array of the rest of the shape; binary data then stays where the request body put
it (``numpy.frombuffer`` over the body: no copy), and so does a large binary tensor's until
it becomes values.
"""

from __future__ import annotations

import math
import numbers
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from marshmallow import fields as ma_fields

from .arguments import ArgumentSpec, field_kind
from .jsonutil import dumps, loads

INTS = {
    "INT8": (1, "b"),
    "INT16": (2, "h"),
    "INT32": (4, "i"),
    "INT64": (8, "q"),
    "UINT8": (1, "B"),
    "UINT16": (2, "H"),
    "UINT32": (4, "I"),
    "UINT64": (8, "Q"),
}
FLOATS = {"FP16": (2, "e"), "FP32": (4, "f"), "FP64": (8, "d")}
DATATYPES = ("BOOL", *INTS, *FLOATS, "BYTES")
HEADER_LENGTH = "Inference-Header-Content-Length"
ARRAY_FROM = 4096  # a numeric binary tensor of at least this many values is read by numpy


class ProtocolError(ValueError):
    """A request the protocol does not allow; answered 400 ``{"error": ...}``."""


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: Any  # flat and row-major (a list); a tensor of more than two dimensions: a numpy array of its shape

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


# --- reading a request ----------------------------------------------------------------------


def parse_request(body: bytes | bytearray, header_length: str | None) -> tuple[dict[str, Any], list[Tensor]]:
    """The request's JSON and its input tensors (JSON data or binary buffers: views of ``body``,
    which must not change while they are used)."""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be a number of bytes") from None
        if not 0 < size <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {size} does not fit the body of {len(body)} bytes")
        head, buffers = bytes(body[:size]), memoryview(body)[size:]
    else:
        head, buffers = bytes(body), memoryview(b"")  # (no copy of bytes; the JSON is parsed anyway)
    try:
        request = loads(head)
    except ValueError as exc:
        raise ProtocolError(f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise ProtocolError("the request must be an object with a non-empty list 'inputs'")
    tensors, offset = [], 0
    for index, item in enumerate(request["inputs"]):
        tensor, used = _tensor(item, index, buffers[offset:])
        tensors.append(tensor)
        offset += used
    if offset != len(buffers):
        raise ProtocolError(f"{len(buffers) - offset} bytes of binary data belong to no input")
    return request, tensors


def _tensor(item: Any, index: int, buffers: memoryview) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise ProtocolError(f"inputs[{index}] must be an object")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"inputs[{index}] has no name")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input '{name}': datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not _is_shape(shape):
        raise ProtocolError(f"input '{name}': shape must be a list of non-negative integers")
    count = math.prod(shape)
    parameters = item.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"input '{name}': parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(buffers):
            raise ProtocolError(f"input '{name}': binary_data_size {size!r} is more than the body holds")
        return Tensor(name, datatype, shape, _from_binary(buffers[:size], datatype, shape, name)), size
    if item.get("data") is None:
        raise ProtocolError(f"input '{name}' has no data")
    data = _flatten(item["data"])
    if len(data) != count:
        raise ProtocolError(f"input '{name}': shape {shape} holds {count} values, data has {len(data)}")
    values = [_checked(v, datatype, name) for v in data]
    return Tensor(name, datatype, shape, _shaped(values, datatype, shape) if len(shape) > 2 else values), 0


def _is_shape(shape: list[Any]) -> bool:
    for d in shape:
        if not isinstance(d, int) or isinstance(d, bool) or d < 0:
            return False
    return True


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    for item in data:
        if isinstance(item, list):
            break
    else:  # flat already (the usual case)
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _checked(value: Any, datatype: str, name: str) -> Any:
    if datatype == "BOOL":
        if isinstance(value, bool):
            return value
    elif datatype == "BYTES":
        if isinstance(value, str):
            return value
    elif datatype in INTS:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ProtocolError(f"input '{name}': {value!r} is not a {datatype} value")


def _from_binary(raw: memoryview, datatype: str, shape: list[int], name: str) -> Any:
    """A binary tensor's values: a list, or (more than two dimensions) an array of its shape.
    A numeric tensor that numpy reads is a view of ``raw``, not a copy."""
    count = math.prod(shape)
    values: list[str | bool | int | float]
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then its bytes
        values, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ProtocolError(f"input '{name}': truncated BYTES element")
            (length,) = struct.unpack_from("<I", raw, offset)
            values.append(bytes(raw[offset + 4 : offset + 4 + length]).decode("utf-8", errors="replace"))
            offset += 4 + length
    elif datatype == "BOOL":
        values = [bool(b) for b in raw]
    else:
        width, code = INTS.get(datatype) or FLOATS[datatype]
        if len(raw) != width * count:
            raise ProtocolError(f"input '{name}': {len(raw)} bytes for {count} {datatype} values")
        np = _numpy() if len(shape) > 2 or count >= ARRAY_FROM else None
        if np is not None:
            array = np.frombuffer(raw, dtype=np.dtype(f"<{code}"), count=count)
            return array.reshape(shape) if len(shape) > 2 else array.tolist()
        values = list(struct.unpack(f"<{count}{code}", raw))
    if len(values) != count:
        raise ProtocolError(f"input '{name}': {len(values)} values for shape of {count}")
    values = [float(v) if datatype in FLOATS else v for v in values]
    return _shaped(values, datatype, shape) if len(shape) > 2 else values


def _numpy() -> Any:
    """numpy, when it is installed (the server itself does not need it)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _shaped(values: list[Any], datatype: str, shape: list[int]) -> Any:
    """Flat values in ``shape``: a numpy array, or nested lists without numpy."""
    np = _numpy()
    if np is not None and datatype != "BYTES":
        width, code = INTS.get(datatype) or FLOATS.get(datatype) or (1, "?")
        return np.asarray(values, dtype=np.dtype(code)).reshape(shape)
    nested: list[Any] = values
    if 0 in shape[1:]:
        raise ProtocolError(f"a tensor of shape {shape} holds no values")
    for size in reversed(shape[1:]):
        nested = [nested[i : i + size] for i in range(0, len(nested), size)]
    return nested


# --- tensors to rows ----------------------------------------------------------------------------


def rows_from_tensors(
    tensors: list[Tensor], arguments: Sequence[str], unnamed_width: int | None, parameters: dict[str, Any]
) -> tuple[list[dict[str, Any]] | list[list[Any]], bool]:
    """The rows the tensors carry: objects by argument, or (one 2-D tensor) lists of values.

    Returns the rows and whether they are lists. Request ``parameters`` that name an
    argument apply to every row.
    """
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ProtocolError("an input is given twice")
    if all(name in arguments for name in names):
        counts = {t.rows for t in tensors}
        if len(counts) != 1:
            raise ProtocolError(f"the inputs have different numbers of rows: {sorted(counts)}")
        for tensor in tensors:
            if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
                raise ProtocolError(f"input '{tensor.name}' must have shape [N] or [N, 1], not {tensor.shape}")
        shared = {k: v for k, v in parameters.items() if k in arguments and k not in names}
        rows = [{**shared, **{t.name: t.data[i] for t in tensors}} for i in range(counts.pop())]
        return rows, False
    unknown = [n for n in names if n not in arguments]
    if len(tensors) == 1 and len(tensors[0].shape) > 2 and unnamed_width == 0:
        if tensors[0].datatype == "BYTES":
            raise ProtocolError(f"input '{tensors[0].name}': a tensor of {len(tensors[0].shape)} dimensions is numeric")
        return list(tensors[0].data), True  # N rows, each of the tensor's other dimensions
    if len(tensors) == 1 and len(tensors[0].shape) == 2 and unnamed_width is not None:
        tensor = tensors[0]
        width = tensor.shape[1]
        if unnamed_width and width != unnamed_width:
            raise ProtocolError(f"input '{tensor.name}' has {width} values per row; the model takes {unnamed_width}")
        return [tensor.data[i * width : (i + 1) * width] for i in range(tensor.shape[0])], True
    raise ProtocolError(
        f"unknown inputs: {', '.join(unknown)}; the model's inputs are "
        f"{', '.join(arguments) or '(none)'}"
        + (
            " (or one [N, k] tensor of rows)"
            if unnamed_width
            else " (or one [N, ...] tensor of rows)"
            if unnamed_width == 0
            else ""
        )
    )


# --- answers to tensors -----------------------------------------------------------------------------


def output_tensors(answers: list[Any], wanted: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One output tensor per key of the rows' answers (see the module documentation)."""
    rows = [a if isinstance(a, dict) else {"output": a} for a in answers]
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    if wanted is not None:
        missing = [name for name in wanted if name not in keys]
        if missing:
            raise ProtocolError(f"unknown outputs: {', '.join(missing)}; the model answers {', '.join(keys)}")
        keys = dict.fromkeys(wanted)
    return [_output(key, [row.get(key) for row in rows]) for key in keys]


def _output(name: str, values: list[Any]) -> dict[str, Any]:
    """The tensor of one output: its values' kind, the same in every row, says its datatype."""
    n = len(values)
    kinds = {_kind(v) for v in values}
    if kinds == {"bool"}:
        return {"name": name, "datatype": "BOOL", "shape": [n], "data": values}
    if kinds == {"int"}:
        return {"name": name, "datatype": "INT64", "shape": [n], "data": [int(v) for v in values]}
    if kinds <= {"int", "float"}:
        return {"name": name, "datatype": "FP64", "shape": [n], "data": [float(v) for v in values]}
    if kinds == {"str"}:
        return {"name": name, "datatype": "BYTES", "shape": [n], "data": values}
    if kinds == {"map"}:  # {label: number}, the same labels in every row
        keys = list(values[0])
        if all(list(v) == keys for v in values):
            return {
                "name": name,
                "datatype": "FP64",
                "shape": [n, len(keys)],
                "data": [float(v[k]) for v in values for k in keys],
                "parameters": {"keys": keys},
            }
    elif kinds == {"vector"} and len({len(v) for v in values}) == 1:
        return {
            "name": name,
            "datatype": "FP64",
            "shape": [n, len(values[0])],
            "data": [float(x) for v in values for x in v],
        }
    return {
        "name": name,
        "datatype": "BYTES",
        "shape": [n],
        "data": [dumps(v) for v in values],
        "parameters": {"content_type": "application/json"},
    }


def _kind(value: Any) -> str:
    """What one answer value is, as far as a tensor goes (``bool`` is not a number; numpy's
    numbers are, as models often answer with them)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "map" if value and _numbers(value.values()) else "other"
    if isinstance(value, list):
        return "vector" if value and _numbers(value) else "other"
    if isinstance(value, numbers.Integral):  # numpy's integers
        return "int"
    if isinstance(value, numbers.Real):  # numpy's other floats (float64 is a float)
        return "float"
    return "other"


def _numbers(values: Iterable[Any]) -> bool:
    for x in values:  # numbers.Real: numpy's too (its bool_ is not one)
        if isinstance(x, bool) or not isinstance(x, (int, float, numbers.Real)):
            return False
    return True


# --- metadata ---------------------------------------------------------------------------------------


DATATYPE_OF_KIND = {"boolean": "BOOL", "integer": "INT64", "number": "FP64", "string": "BYTES"}


def datatype_of(field: ma_fields.Field) -> str | None:
    """The tensor datatype of a scalar argument (None: not a tensor input)."""
    return DATATYPE_OF_KIND.get(field_kind(field))


def input_metadata(spec: ArgumentSpec) -> list[dict[str, Any]]:
    inputs = []
    for name, field in spec.body_fields.items():
        datatype = datatype_of(field)
        if datatype is not None:
            inputs.append(
                {
                    "name": field.data_key or name,
                    "datatype": datatype,
                    "shape": [-1],
                    **({"parameters": {"optional": True}} if not field.required else {}),
                }
            )
    return inputs


def output_metadata(signature: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What an uploaded model answers, from its signature (plugins: only known once answered)."""
    if not signature:
        return []
    task = signature.get("task")
    classes = signature.get("classes") or []
    if task == "classification":
        label = "INT64" if classes and all(isinstance(c, int) for c in classes) else "BYTES"
        return [
            {"name": "label", "datatype": label, "shape": [-1]},
            {
                "name": "probabilities",
                "datatype": "FP64",
                "shape": [-1, len(classes)],
                "parameters": {"keys": [str(c) for c in classes]},
            },
        ]
    if task == "regression":
        return [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    return [{"name": "output", "datatype": "FP64", "shape": [-1, -1]}]
