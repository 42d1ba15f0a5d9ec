"""PyTorch models saved as TorchScript (``torch.jit.save``) or torch.export (``torch.export.save``).

Recognised by name and first bytes (``.pt``/``.pth``/``.torchscript``/``.pt2``: a zip
archive, told apart by its first entry's name)::

    >>> TorchFramework().sniff(b"PK\\x03\\x04...m/data/0...", "net.pt")
    'torchscript'
    >>> TorchFramework().check(b"PK\\x03\\x04...sd/data.pkl...collections\\nOrderedDict...", "torchscript")
    'a torch.save checkpoint (a state_dict or a pickled module), not a TorchScript archive: ...'

Never ``torch.load(..., weights_only=False)``: a TorchScript archive is loaded with
``torch.jit.load(path, map_location="cpu")``; a ``.pt2`` archive with
``torch.export.load`` only after checking that nothing in it is stored as a pickle
(pickled weights or constants, custom or opaque objects: ``torch.export.load`` would
unpickle them), and with ``torch.load`` forced to ``weights_only`` while it runs.

Signature: a ``tensor`` model; ``n_inputs`` for a ``.pt2`` whose one input has shape
``[batch, k]`` (a static batch size is honoured by calling the model per batch of that
size, padding the last); ``library_versions`` from the ``.pt2``'s ``torch_version``
(TorchScript archives do not record it).
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from deepaas_like.frameworks import Framework, FrameworkMissing, LoadedModel, Signature

from .answers import InputsRefused, tensors
from .file_head import describe, is_zip, zip_first_payload, zip_names

CHECKPOINT = (
    "a torch.save checkpoint (a state_dict or a pickled module), not a {what}: "
    "save the model with torch.jit.script(model).save(path) or torch.export.save(program, path)"
)
PICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"


class TorchFramework(Framework):
    """PyTorch: ``torchscript`` and ``pt2`` (torch.export) archives, run on the CPU."""

    library = "pytorch"
    extra = "torch"
    filetypes = ("torchscript", "pt2")
    safe_filetypes = ("pt2",)
    extensions = {".pt2": "pt2", ".pt": "torchscript", ".pth": "torchscript", ".torchscript": "torchscript"}

    def sniff(self, head: bytes, filename: str) -> str | None:
        filetype = super().sniff(head, filename)
        if filetype is None or not is_zip(head):
            return None
        kind = archive_kind(head)
        return filetype if kind is None else (kind if kind in self.filetypes else None)

    def check(self, head: bytes, filetype: str) -> str | None:
        if filetype not in self.filetypes:
            return f"{filetype} is not a PyTorch filetype"
        what = "TorchScript archive" if filetype == "torchscript" else "torch.export (.pt2) archive"
        if not is_zip(head):
            return f"a {what} is a zip archive; these bytes are {describe(head)}"
        kind = archive_kind(head)
        if kind == "checkpoint":
            return CHECKPOINT.format(what=what)
        if kind == "foreign":
            return f"a zip archive whose first entry {zip_names(head)[0]!r} was not written by PyTorch"
        if kind is not None and kind != filetype:
            named = "TorchScript" if kind == "torchscript" else "torch.export (.pt2)"
            return f"this is a {named} archive: filetype {kind}"
        return None

    def load(self, path: str, filetype: str) -> LoadedModel:
        """Load on the CPU, in eval mode.

        >>> TorchFramework().load("net.pt2", "pt2").signature.n_inputs
        4
        """
        try:
            import numpy  # noqa: F401
            import torch
        except ImportError as exc:
            raise FrameworkMissing(self.library, self.extra, exc) from exc
        if filetype == "torchscript":
            with warnings.catch_warnings():
                # PyTorch 2.13 deprecates TorchScript; the files people have are still served.
                warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
                module = torch.jit.load(path, map_location="cpu")
            module.eval()
            details = {
                **_loaded_with(torch),
                "note": "TorchScript is deprecated by PyTorch: prefer torch.export (.pt2)",
            }
            return TorchModel(module, Signature(task="tensor", details=details))
        if filetype != "pt2":
            raise ValueError(f"{filetype} is not a PyTorch filetype")
        saved = _screen_pt2(path)
        with _weights_only():
            program = torch.export.load(path)
        n_inputs, batch, shapes = _input_shape(program)
        details = {**_loaded_with(torch), "input_shapes": shapes, "batch": batch if batch is not None else "dynamic"}
        signature = Signature(
            task="tensor", n_inputs=n_inputs, library_versions={"torch": saved} if saved else {}, details=details
        )
        return TorchModel(program.module(), signature, batch)


class TorchModel(LoadedModel):
    """A TorchScript module or an exported program's module, answering rows of float32 values."""

    def __init__(self, module: Any, signature: Signature, batch: int | None = None) -> None:
        import numpy as np
        import torch

        self.module = module
        self.signature = signature
        self._batch = batch
        self._np, self._torch = np, torch

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """``{"output": [...]}`` per row (a dict of them, or a list, for several outputs). A row
        may be a nested list or a numpy array (an image ``[3, H, W]``); inputs the module refuses
        raise :class:`~.answers.InputsRefused` (a 422)."""
        if not rows:
            return []
        np, torch = self._np, self._torch
        x = np.asarray(rows, dtype=np.float32)
        width = self.signature.n_inputs
        if width is not None and (x.ndim != 2 or x.shape[1] != width):
            raise InputsRefused(f"each row needs {width} numbers; got rows of shape {list(x.shape[1:])}")
        with torch.no_grad():
            try:
                return self._run(x)
            except RuntimeError as exc:  # the module's own check of its input (a shape, a channel count)
                # TorchScript's message is its interpreter's traceback: the reason is its last line
                said = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].removeprefix("RuntimeError: ")
                raise InputsRefused(f"the model cannot take inputs of shape {list(x.shape)}: {said}") from exc

    def _run(self, x: Any) -> list[dict[str, Any]]:
        np, torch = self._np, self._torch
        if self._batch is None or len(x) == self._batch:
            return tensors(_rows(self.module(torch.from_numpy(x)), len(x)))
        answers: list[dict[str, Any]] = []
        for start in range(0, len(x), self._batch):
            chunk = x[start : start + self._batch]
            n = len(chunk)
            if n < self._batch:
                chunk = np.concatenate([chunk, np.zeros((self._batch - n, *chunk.shape[1:]), np.float32)])
            answers.extend(tensors(_rows(self.module(torch.from_numpy(chunk)), self._batch)[:n]))
        return answers


def _rows(out: Any, n: int) -> list[Any]:
    """One JSON-ready value per row from a tensor, or a tuple/list/dict of them."""
    if isinstance(out, dict):
        lists = {name: _rows(value, n) for name, value in out.items()}
        return [{name: rows[i] for name, rows in lists.items()} for i in range(n)]
    if isinstance(out, (list, tuple)):
        if len(out) == 1:
            return _rows(out[0], n)
        lists = [_rows(value, n) for value in out]
        return [[rows[i] for rows in lists] for i in range(n)]
    return out.detach().cpu().numpy().tolist()


def archive_kind(head: bytes) -> str | None:
    """``torchscript``, ``pt2``, ``checkpoint`` (torch.save), ``foreign`` (not PyTorch's) or None
    (cannot tell), by the first zip entry."""
    names = zip_names(head)
    if not names:
        return None
    if "/" not in names[0]:
        return "foreign"  # PyTorch writes every entry under one root folder
    first = names[0].split("/", 1)[-1]
    if first == "data.pkl":
        payload = zip_first_payload(head)
        if len(payload) < 16:
            return None
        return "torchscript" if b"__torch__" in payload else "checkpoint"
    if first.startswith(("code/", "constants.pkl")) or (first.startswith("data/") and first[5:].isdigit()):
        return "torchscript"
    if first.startswith(("data/weights/", "data/constants/", "data/sample_inputs/", "models/", "archive_format")):
        return "pt2"
    return None


def _loaded_with(torch: Any) -> dict[str, Any]:
    return {"loaded_with": {"torch": str(torch.__version__)}}


def _screen_pt2(path: str) -> str | None:
    """Refuse a .pt2 archive that stores anything as a pickle; its torch_version if recorded."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        roots = [n[: -len("archive_format")] for n in names if n.rsplit("/", 1)[-1] == "archive_format"]
        if len(roots) != 1 or archive.read(roots[0] + "archive_format").strip() != b"pt2":
            raise ValueError(
                "not a torch.export archive of this format (no archive_format 'pt2'): "
                "save it with torch.export.save from PyTorch 2.6 or later"
            )
        root = roots[0]
        refused = []
        for name in names:
            inner = name[len(root) :] if name.startswith(root) else name
            if inner.startswith(("data/weights/", "data/constants/")) and inner.endswith(".pt"):
                refused.append(f"{inner} (a legacy pickled state)")
            if inner.startswith(("data/weights/", "data/constants/")) and inner.endswith("_config.json"):
                config = json.loads(archive.read(name)).get("config") or {}
                for fqn, payload in config.items():
                    if payload.get("use_pickle") or str(payload.get("path_name", "")).startswith(PICKLED_PREFIXES):
                        refused.append(f"{fqn} (stored as a pickle)")
        if refused:
            raise ValueError(
                "the .pt2 archive stores objects as pickles, which loading would run: " + ", ".join(refused)
            )
        model_json = root + "models/model.json"
        if model_json in names:
            version = json.loads(archive.read(model_json)).get("torch_version")
            return str(version) if version else None
    return None


@contextmanager
def _weights_only() -> Iterator[None]:
    """Make every ``torch.load`` inside load weights only, whatever its caller asks."""
    before = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = before


def _input_shape(program: Any) -> tuple[int | None, int | None, list[list[Any]]]:
    """``(n_inputs, static batch or None, shapes)`` from the program's user inputs."""
    users = set(program.graph_signature.user_inputs)
    shapes: list[list[Any]] = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in users:
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            shapes.append([d if isinstance(d, int) else str(d) for d in shape] if shape is not None else [])
    if len(shapes) == 1 and len(shapes[0]) == 2 and isinstance(shapes[0][1], int):
        batch = shapes[0][0]
        return shapes[0][1], batch if isinstance(batch, int) else None, shapes
    return None, None, shapes
