"""What an upload may say, checked before anything is stored: the model's name, its
library and file type (in any of their spellings, checked against the file's first bytes),
its schemas, its batching config."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ArgumentError
from ..frameworks import Framework
from .artifacts import Artifact

NAME_RULE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
NAME_HELP = (
    "names of uploaded models are DNS labels: lower-case letters, digits and '-', at most 63 "
    "characters, starting and ending with a letter or digit"
)
LIBRARIES = {
    "sklearn": ("joblib", "pickle", "skops"),
    "tensorflow": ("keras", "h5"),
    "pytorch": ("torchscript", "pt2"),
    "onnx": ("onnx",),
}
FILETYPES = {filetype: library for library, types in LIBRARIES.items() for filetype in types}
# Other spellings, taken in any case: Neurodeploy's documented ones ("Scikit-learn", "TensorFlow",
# "Pytorch"; "H5", "Pickle", "Joblib") and the libraries' own names.
LIBRARY_ALIASES = {"scikit-learn": "sklearn", "scikit_learn": "sklearn", "keras": "tensorflow", "torch": "pytorch"}
FILETYPE_ALIASES = {"pkl": "pickle", "hdf5": "h5", "pt": "torchscript", "pth": "torchscript"}
NEURODEPLOY_LIBRARY = {"sklearn": "scikit-learn", "tensorflow": "tensorflow", "pytorch": "pytorch", "onnx": "onnx"}
OPTIMIZATIONS = ("onnx",)
BATCHING = ("max_batch_size", "max_batch_time_ms", "predict_timeout")
SAFE_FORMATS = "skops (skops.io.dump) or ONNX (skl2onnx, torch.onnx.export), Keras (.keras, .h5) or torch.export (.pt2)"


def canonical(value: str | None, aliases: dict[str, str]) -> str | None:
    """A library's or filetype's name as the registry spells it (``Scikit-learn`` -> ``sklearn``)."""
    if value is None:
        return None
    lowered = value.strip().lower()
    return aliases.get(lowered, lowered) or None


@dataclass
class Upload:
    """What ``PUT /v2/models/{name}`` carries, once the file is staged."""

    artifact: Artifact
    filename: str | None = None
    library: str | None = None
    filetype: str | None = None
    is_public: bool | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    optimize: str | None = None
    requirements: list[str] | None = None  # its own environment's (see check_requirements)


def check_requirements(value: Any) -> list[str] | None:
    """A version's requirements: a requirements.txt's text, or a list of requirement strings
    (normalised, duplicates dropped; None when there are none). A 422 names the line that is
    no requirement, or an option or local path, which an environment must not depend on::

        check_requirements("scikit-learn==1.6.1  # the model's\n")   # ["scikit-learn==1.6.1"]
    """
    from ..environments import check_requirement, read_requirements

    if value in (None, "", []):
        return None
    try:
        if isinstance(value, str):
            lines = read_requirements(value)
        elif isinstance(value, list) and all(isinstance(line, str) for line in value):
            lines = [check_requirement(line.strip()) for line in value]
        else:
            raise ValueError("requirements must be a requirements.txt's text or a list of strings")
    except ValueError as exc:
        raise ArgumentError(f"Invalid requirements: {exc}", {"requirements": [str(exc)]}) from None
    if not lines:
        raise ArgumentError(
            "The requirements list no package: give at least one (name==version), or leave them out",
            {"requirements": ["No requirement."]},
        )
    return list(dict.fromkeys(lines))


def check_name(name: str) -> str:
    if not NAME_RULE.fullmatch(name):
        raise ArgumentError(f"Invalid model name {name!r}: {NAME_HELP}", {"name": [NAME_HELP]})
    return name


def check_schema(name: str, value: Any) -> dict[str, Any] | None:
    """An input or output schema: a JSON Schema object (``input_schema`` with ``properties``)."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ArgumentError(f"{name} is not valid JSON: {exc}", {name: ["Not valid JSON."]}) from None
    if not isinstance(value, dict):
        raise ArgumentError(f"{name} must be a JSON object (a JSON Schema)", {name: ["Must be a JSON object."]})
    import jsonschema

    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as exc:
        raise ArgumentError(f"{name} is not a valid JSON Schema: {exc.message}", {name: [exc.message]}) from None
    if name == "input_schema" and not isinstance(value.get("properties"), dict):
        raise ArgumentError(
            "input_schema must have 'properties': one entry per input column, in order",
            {name: ["Must have 'properties'."]},
        )
    return value


def check_batching(value: Any) -> dict[str, Any] | None:
    if value in (None, {}):
        return None
    if not isinstance(value, dict):
        raise ArgumentError("batching must be an object", {"batching": ["Must be an object."]})
    errors = {}
    for key, item in value.items():
        if key not in BATCHING:
            errors[key] = [f"Unknown; one of: {', '.join(BATCHING)}."]
        elif (
            not isinstance(item, (int, float))
            or isinstance(item, bool)
            or item < 0
            or (key == "max_batch_size" and (item < 1 or int(item) != item))
        ):
            errors[key] = ["Must be a non-negative number (max_batch_size: an integer of at least 1)."]
    if errors:
        raise ArgumentError(f"Invalid batching config: {', '.join(errors)}", {"batching": errors})
    return value


def identify(upload: Upload, frameworks: dict[str, Framework], broken: dict[str, str]) -> tuple[str, str]:
    """The upload's library and filetype: as given, checked against the bytes, or inferred
    (``frameworks``: the installed framework plugins by library; ``broken``: why the others
    could not be loaded)."""
    head, name = upload.artifact.head, upload.filename or ""
    given, library = canonical(upload.filetype, FILETYPE_ALIASES), canonical(upload.library, LIBRARY_ALIASES)
    if library is not None and library not in LIBRARIES:
        raise ArgumentError(
            f"Unknown library {library!r}; one of: {', '.join(LIBRARIES)}",
            {"library": [f"Must be one of: {', '.join(LIBRARIES)}."]},
        )
    if given is not None and given not in FILETYPES:
        raise ArgumentError(
            f"Unknown filetype {given!r}; one of: {', '.join(FILETYPES)}",
            {"filetype": [f"Must be one of: {', '.join(FILETYPES)}."]},
        )
    filetype = given
    if filetype is None:
        found = {t for fw in frameworks.values() if (t := fw.sniff(head, name)) is not None}
        if library is not None:
            found &= set(LIBRARIES[library])
        if len(found) != 1:
            what = f"it could be {' or '.join(sorted(found))}" if found else "its name and first bytes say nothing"
            raise ArgumentError(
                f"Cannot tell the file's type ({what}); give filetype: one of "
                f"{', '.join(LIBRARIES.get(library or '', FILETYPES))}",
                {"filetype": ["Required for this file."]},
            )
        filetype = found.pop()
    expected = FILETYPES[filetype]
    if library is not None and library != expected:
        raise ArgumentError(
            f"filetype {filetype} is a {expected} format, not {library}",
            {"library": [f"{filetype} files are {expected} models."]},
        )
    framework = frameworks.get(expected)
    if framework is None:
        reason = broken.get(expected) or (
            f"no framework plugin for {expected} is installed (pip install -e plugins/frameworks)"
        )
        raise ArgumentError(f"{filetype} files cannot be served here: {reason}", {"library": [reason]})
    wrong = framework.check(head, filetype)
    if wrong:
        raise ArgumentError(f"The file is not a {filetype} file: {wrong}", {"filetype": [wrong]})
    return expected, filetype
