"""Keras models saved as ``.keras`` archives or legacy ``.h5`` files.

Recognised by name and first bytes (``.keras``: a zip archive; ``.h5``/``.hdf5``: the
HDF5 signature)::

    >>> KerasFramework().sniff(b"PK\\x03\\x04...", "net.keras")
    'keras'

Loaded with ``keras.saving.load_model(path, safe_mode=True, compile=False)``: a model
whose file holds Python code (a ``Lambda`` layer's lambda) is refused. The signature:

* ``n_inputs``: ``k`` when the model has one input of shape ``(None, k)``;
* ``classification`` when the last layer ends in a softmax over ``k >= 2`` units
  (classes ``0..k-1``) or a sigmoid on one unit (classes ``0``, ``1``: the label is 1
  when the output is at least 0.5); every other model is a ``tensor`` model;
* ``library_versions``: the Keras version in the ``.keras`` archive's ``metadata.json``
  or the ``.h5`` file's attributes.

With the TensorFlow backend, rows go through one traced ``tf.function`` of the model
(about twice as fast as ``predict_on_batch`` for a row); otherwise through
``predict_on_batch``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from typing import Any, Callable, Iterator, Sequence

from deepaas_like.frameworks import Framework, FrameworkMissing, LoadedModel, Signature

from .answers import classified, tensors
from .file_head import describe, is_hdf5, is_zip, zip_names

KERAS_ENTRIES = ("metadata.json", "config.json", "model.weights.h5")


class KerasFramework(Framework):
    """Keras 3 models (TensorFlow backend by default): ``keras`` and ``h5`` files."""

    library = "tensorflow"
    extra = "tensorflow"
    filetypes = ("keras", "h5")
    safe_filetypes = ("keras", "h5")
    extensions = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}

    def sniff(self, head: bytes, filename: str) -> str | None:
        filetype = super().sniff(head, filename)
        return filetype if filetype is not None and self.check(head, filetype) is None else None

    def check(self, head: bytes, filetype: str) -> str | None:
        if filetype == "keras":
            if not is_zip(head):
                return f"a .keras file is a zip archive; these bytes are {describe(head)}"
            names = zip_names(head)
            if names and names[0] not in KERAS_ENTRIES:
                return f"a .keras archive starts with metadata.json or config.json, not {names[0]!r}"
            return None
        if filetype == "h5":
            if is_hdf5(head):
                return None
            return f"an .h5 file starts with the HDF5 signature; these bytes are {describe(head)}"
        return f"{filetype} is not a Keras filetype"

    def load(self, path: str, filetype: str) -> LoadedModel:
        """Load with ``safe_mode=True``; a Lambda layer's Python code makes it raise ValueError.

        >>> KerasFramework().load("net.keras", "keras").signature.n_inputs
        4
        """
        try:
            import h5py  # noqa: F401 (the weights inside a .keras archive are HDF5 too)
            import keras
            import numpy as np
        except ImportError as exc:
            raise FrameworkMissing(self.library, self.extra, exc) from exc
        saved = _saved_with(path, filetype)
        with _named_for_keras(path, filetype) as named:
            model = keras.saving.load_model(named, safe_mode=True, compile=False)
        return KerasModel(model, saved, np)


@contextlib.contextmanager
def _named_for_keras(path: str, filetype: str) -> Iterator[str]:
    """``path``, or a link to it named with the extension Keras insists on (stored uploads have none)."""
    suffix = ".keras" if filetype == "keras" else ".h5"
    if path.endswith(suffix):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="deepaas-like-keras-") as folder:
        link = os.path.join(folder, "model" + suffix)
        os.symlink(os.path.abspath(path), link)
        yield link


class KerasModel(LoadedModel):
    """A loaded Keras model answering rows of float32 values."""

    def __init__(self, model: Any, saved: dict[str, str], np: Any) -> None:
        import keras

        self.model = model
        self._np = np
        self.signature = _signature(model, saved, keras.__version__, keras.backend.backend())
        self._width = self.signature.n_inputs
        self._call = _fast_call(model) or (lambda x: model.predict_on_batch(x))

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """``{"label", "probabilities"}`` per row for a classifier, else ``{"output": [...]}``."""
        if not rows:
            return []
        np = self._np
        x = np.asarray(rows, dtype=np.float32)
        if self._width is not None and (x.ndim != 2 or x.shape[1] != self._width):
            raise ValueError(f"each row needs {self._width} numbers; got rows of shape {list(x.shape[1:])}")
        out = self._call(x)
        if isinstance(out, (list, tuple, dict)):
            return _several(out, len(x))
        out = np.asarray(out)
        classes = self.signature.classes
        if classes is None:
            return tensors(out.tolist())
        if len(classes) == 2 and out.shape[-1] == 1:  # a sigmoid unit: P(class 1)
            p = out[:, 0].astype(np.float64)
            return classified(classes, (p >= 0.5).astype(int).tolist(), np.stack([1 - p, p], axis=1).tolist())
        return classified(classes, out.argmax(axis=1).tolist(), out.astype(np.float64).tolist())


def _several(out: Any, n: int) -> list[dict[str, Any]]:
    if isinstance(out, dict):
        lists = {name: _tolist(value) for name, value in out.items()}
        return tensors([{name: rows[i] for name, rows in lists.items()} for i in range(n)])
    lists = [_tolist(value) for value in out]
    return tensors([[rows[i] for rows in lists] for i in range(n)])


def _tolist(value: Any) -> list[Any]:
    import numpy as np

    return np.asarray(value).tolist()


def _fast_call(model: Any) -> Callable[[Any], Any] | None:
    """The model as one traced TensorFlow function of a float32 batch, if it has one input."""
    import keras

    inputs = _tensors(model, "inputs")
    if keras.backend.backend() != "tensorflow" or len(inputs) != 1:
        return None
    import tensorflow as tf

    shape = [None, *inputs[0].shape[1:]]
    traced = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)])
    concrete = traced.get_concrete_function()

    def call(x: Any) -> Any:
        out = concrete(x)
        return out.numpy() if hasattr(out, "numpy") else tf.nest.map_structure(lambda t: t.numpy(), out)

    return call


def _saved_with(path: str, filetype: str) -> dict[str, Any]:
    """What the file says about how it was saved: ``keras_version``, ``backend``, ``date_saved``."""
    if filetype == "keras":
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ValueError("not a Keras archive: it has no config.json")
            try:
                return dict(json.loads(archive.read("metadata.json")))
            except (KeyError, ValueError):
                return {}
    import h5py

    with h5py.File(path, "r") as file:
        return {
            k: (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in file.attrs.items()
            if k in ("keras_version", "backend")
        }


def _signature(model: Any, saved: dict[str, Any], keras_version: str, backend: str) -> Signature:
    inputs, outputs = _tensors(model, "inputs"), _tensors(model, "outputs")
    n_inputs = None
    if len(inputs) == 1:
        shape = tuple(inputs[0].shape)
        if len(shape) == 2 and isinstance(shape[1], int):
            n_inputs = shape[1]
    task, classes = "tensor", None
    if len(outputs) == 1:
        units = outputs[0].shape[-1]
        activation = _last_activation(model)
        if activation == "softmax" and isinstance(units, int) and units >= 2:
            task, classes = "classification", list(range(units))
        elif activation == "sigmoid" and units == 1:
            task, classes = "classification", [0, 1]
    details: dict[str, Any] = {
        "input_shapes": [list(i.shape) for i in inputs],
        "output_shapes": [list(o.shape) for o in outputs],
        "loaded_with": {"keras": keras_version, "backend": backend},
    }
    if "date_saved" in saved:
        details["date_saved"] = saved["date_saved"]
    if "backend" in saved:
        details["saved_with_backend"] = saved["backend"]
    return Signature(
        task=task,
        n_inputs=n_inputs,
        classes=classes,
        library_versions={"keras": str(saved["keras_version"])} if saved.get("keras_version") else {},
        details=details,
    )


def _tensors(model: Any, which: str) -> list[Any]:
    """The model's symbolic ``inputs`` or ``outputs`` (none for a subclassed model never built)."""
    try:
        return list(getattr(model, which) or [])
    except (AttributeError, ValueError):
        return []


def _last_activation(model: Any) -> str | None:
    """The name of the activation the model ends in (a layer's ``activation`` or a Softmax layer)."""
    if not model.layers:
        return None
    layer = model.layers[-1]
    if type(layer).__name__ == "Softmax":
        return "softmax"
    return getattr(getattr(layer, "activation", None), "__name__", None)
