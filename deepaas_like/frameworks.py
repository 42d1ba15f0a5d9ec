"""The contract of a *framework plugin*: how a persisted model file of one library is
recognised, loaded and called, so that an uploaded file is served without any code.

The built-in framework plugins (``plugins/frameworks``: scikit-learn, Keras, PyTorch,
ONNX) implement it; others may, registered in the ``deepaas_like.frameworks`` entry
point group. The server only *recognises* files (:meth:`Framework.sniff`, reading a few
bytes); loading happens in worker processes only, because loading a pickle runs code::

    from deepaas_like.frameworks import Framework, LoadedModel, Signature

    class MyFramework(Framework):
        library = "mylib"
        extra = "mylib"                       # pip install deepaas_like[mylib]
        filetypes = ("myfmt",)
        extensions = {".my": "myfmt"}
        safe_filetypes = ("myfmt",)           # loading it runs no code of the file's author

        def load(self, path, filetype):
            return MyLoaded(mylib.load(path))  # a LoadedModel

A :class:`LoadedModel` takes rows (one list of values per row, in the order of its
signature's columns) and answers one JSON-ready dict per row::

    {"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.1, ...}}  # classifier
    {"value": 3.2}                                                                # regressor
    {"output": [[0.1, 0.7], ...]}                                                # any tensor model
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

GROUP = "deepaas_like.frameworks"
TASKS = ("classification", "regression", "tensor")


class FrameworkMissing(Exception):
    """The library a framework needs is not installed; the message names the extra."""

    def __init__(self, library: str, extra: str, cause: BaseException | None = None) -> None:
        super().__init__(
            f"serving {library} models needs the '{extra}' extra: pip install 'deepaas_like[{extra}]'"
            + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")
        )
        self.library = library
        self.extra = extra


@dataclass(frozen=True)
class Column:
    """One named scalar input of a tabular model."""

    name: str
    type: str = "number"  # number | integer | string | boolean
    minimum: float | None = None
    maximum: float | None = None
    choices: list[Any] | None = None
    description: str | None = None
    #: the smallest and largest value of the version's reference dataset (a hint, not a bound)
    observed: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Signature:
    """What a loaded model takes and gives, as far as its file tells.

    ``columns``: its named inputs (``feature_names_in_``, ONNX input names); ``None``
    when the inputs are unnamed, then ``n_inputs`` is a row's width if known.
    ``classes``: a classifier's labels. ``library_versions``: the versions of the
    libraries the file says it was saved with (``{"scikit-learn": "1.5.2"}``).
    """

    task: str = "tensor"
    columns: list[Column] | None = None
    n_inputs: int | None = None
    classes: list[Any] | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # anything else worth showing (opset, producer)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"task": self.task, "library_versions": dict(self.library_versions)}
        if self.columns is not None:
            doc["columns"] = [c.to_json() for c in self.columns]
        if self.n_inputs is not None:
            doc["n_inputs"] = self.n_inputs
        if self.classes is not None:
            doc["classes"] = list(self.classes)
        if self.details:
            doc["details"] = dict(self.details)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Signature":
        columns = doc.get("columns")
        return cls(
            task=doc.get("task", "tensor"),
            columns=[Column(**c) for c in columns] if columns is not None else None,
            n_inputs=doc.get("n_inputs"),
            classes=doc.get("classes"),
            library_versions=dict(doc.get("library_versions") or {}),
            details=dict(doc.get("details") or {}),
        )


class LoadedModel:
    """A model file loaded in a worker process."""

    signature: Signature

    def predict(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """One JSON-ready dict per row (see the module documentation)."""
        raise NotImplementedError


class Framework:
    """Recognises and loads the model files of one library."""

    library: str = ""
    extra: str = ""
    filetypes: tuple[str, ...] = ()
    extensions: dict[str, str] = {}
    # The filetypes whose loading runs no code of the file's author (skops with its trusted
    # types, ONNX, ...). Every other filetype is treated as code: uploading it needs the
    # models:write-code scope, and it is served only from a contained worker.
    safe_filetypes: tuple[str, ...] = ()

    def sniff(self, head: bytes, filename: str) -> str | None:
        """The filetype of a file from its first bytes and name, or None if not ours.

        The default goes by the file name's extension; override it to look at the
        bytes too. Runs in the server process: it must not load anything.
        """
        lowered = filename.lower()
        for extension, filetype in self.extensions.items():
            if lowered.endswith(extension):
                return filetype
        return None

    def check(self, head: bytes, filetype: str) -> str | None:
        """Why a file cannot be of ``filetype`` judging by its first bytes (None: it may be)."""
        return None

    def runs_code(self, filetype: str) -> bool:
        """Whether loading a file of ``filetype`` may run code its author wrote."""
        return filetype not in self.safe_filetypes

    def load(self, path: str, filetype: str) -> LoadedModel:
        """Load the file (in a worker process; for uploads, a contained one: ``path`` is a
        private copy, removed once this returns). Raise :class:`FrameworkMissing` when the
        library is not installed, any other exception when the file is not usable."""
        raise NotImplementedError

    def preload(self) -> None:
        """Import, ahead of the first upload, what loading needs (in each shared worker at its
        start). Optional; only for libraries that import in a second or two and take little
        memory: the first upload of their models then answers at once."""

    def to_onnx(self, model: LoadedModel, probe: Sequence[Sequence[Any]]) -> bytes:
        """Convert a loaded model to an ONNX graph (optional; ``optimize=onnx``)."""
        raise NotImplementedError(f"{self.library} models cannot be converted to ONNX")


def discover_frameworks(
    declared: Mapping[str, str] | None = None,
) -> tuple[dict[str, Framework], dict[str, str]]:
    """The installed framework plugins by library name, and why others could not load.

    A framework plugin that fails to import costs only its own library (uploads of it
    are refused with the reason), not the server. ``declared``: entry points
    ``{name: "module:attr"}`` to load when no installed distribution declares any: a host
    in a model's own environment has the plugins' code on its path but not their
    metadata, and the server tells it what it has (:func:`declared_frameworks`)::

        discover_frameworks({"sklearn": "deepaas_like_frameworks.sklearn:SklearnFramework"})
    """
    found: dict[str, Framework] = {}
    broken: dict[str, str] = {}
    points = list(importlib.metadata.entry_points(group=GROUP))
    if not points and declared:
        points = [importlib.metadata.EntryPoint(name, value, GROUP) for name, value in sorted(declared.items())]
    for ep in points:
        try:
            target = ep.load()
            framework = target() if isinstance(target, type) else target
        except Exception as exc:
            broken[ep.name] = f"framework plugin {ep.value} failed to import: {type(exc).__name__}: {exc}"
            continue
        found[framework.library] = framework
    return found, broken


def declared_frameworks() -> dict[str, str]:
    """The framework plugins' entry points installed here, ``{name: "module:attr"}``."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=GROUP)}


def framework_packages() -> dict[str, str]:
    """Where the framework plugins' code is here: each one's top-level package and its
    directory, or a plain module and its file."""
    found = {}
    for value in declared_frameworks().values():
        top = value.split(":")[0].split(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            found[top] = list(spec.submodule_search_locations)[0]
        elif spec is not None and spec.origin:
            found[top] = spec.origin
    return found
