"""One JSON-ready answer per row, from what a model returned for all of them.

Every framework answers in the same three shapes (see :mod:`deepaas_like.frameworks`);
values are plain Python (``tolist()`` turns numpy scalars into ``float``/``int``/``str``)::

    >>> classified(["a", "b"], ["b"], [[0.25, 0.75]])
    [{'label': 'b', 'probabilities': {'a': 0.25, 'b': 0.75}}]
    >>> valued([[1.5], [2.0]])
    [{'value': 1.5}, {'value': 2.0}]
"""

from __future__ import annotations

from typing import Any, Sequence


class InputsRefused(ValueError):
    """Inputs the model cannot take (a tensor of another shape or kind): a 422 that says why."""

    status = 422


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds; anything else unchanged."""
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "shape", None) == () else value


def classified(
    classes: Sequence[Any], labels: Sequence[Any], probabilities: Sequence[Sequence[float]] | None
) -> list[dict[str, Any]]:
    """``{"label", "probabilities"}`` per row; ``probabilities`` is one list per row, ordered as ``classes``
    (``None``: a classifier that gives labels only)."""
    if probabilities is None:
        return [{"label": label} for label in labels]
    keys = [str(c) for c in classes]
    return [{"label": label, "probabilities": dict(zip(keys, row))} for label, row in zip(labels, probabilities)]


def valued(values: Sequence[Any]) -> list[dict[str, Any]]:
    """``{"value": x}`` per row for one output (``[x]`` or ``x``), ``{"values": [...]}`` for several."""
    answers: list[dict[str, Any]] = []
    for row in values:
        if isinstance(row, list):
            answers.append({"value": float(row[0])} if len(row) == 1 else {"values": [float(v) for v in row]})
        else:
            answers.append({"value": float(row)})
    return answers


def tensors(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """``{"output": row}`` per row (a nested list, or a dict of them for a model with several outputs)."""
    return [{"output": row} for row in rows]
