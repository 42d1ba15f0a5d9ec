"""Content negotiation: which of a model's ``accept`` choices an ``Accept`` header prefers."""

from __future__ import annotations

from typing import Sequence

from ..arguments import ArgumentSpec


def negotiated_accept(spec: ArgumentSpec, header: str | None) -> str | None:
    """The choice of ``spec``'s ``accept`` argument that ``header`` picks, if any."""
    if spec.accept is None or not header:
        return None
    return negotiate(header, spec.accept_choices or [], spec.default_accept)


def negotiate(header: str, choices: Sequence[str], default: str | None) -> str | None:
    """Pick the choice an ``Accept`` header prefers; ``default`` for ``*/*``.

    Browsers and tools send ranges the plugin never declared (``text/html,...``);
    those simply fall back to the default rather than failing the request::

        negotiate("image/*;q=0.9, text/html", ["application/json", "image/png"], "application/json")
        # -> "image/png"
    """
    ranges = []
    for position, item in enumerate(header.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        q = 1.0
        for param in parts[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media and q > 0:
            ranges.append((-q, position, media))
    lowered = {c.lower(): c for c in choices if isinstance(c, str)}
    for _, _, media in sorted(ranges):
        if media == "*/*":
            return default
        if media in lowered:
            return lowered[media]
        major, _, minor = media.partition("/")
        for low, original in lowered.items():
            c_major, _, c_minor = low.partition("/")
            if c_major == major and (minor == "*" or c_minor == "*"):
                return original
    return None
