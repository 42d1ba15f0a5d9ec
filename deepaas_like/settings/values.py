"""Option values as text (a config file, the environment) and what they become: booleans,
sizes, durations, lists; the error every settings layer raises."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

MIB = 1024 * 1024


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


def is_shared_store(url: str) -> bool:
    """Whether a --store URL is one that several servers share: any but SQLite (empty: the
    SQLite file in --data-dir)."""
    return bool(url) and url.split(":", 1)[0].split("+", 1)[0] != "sqlite"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": MIB,
    "mib": MIB,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 1048576, 512KiB or 100MiB, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text).lower())
    if not match:
        raise ValueError(f"expected a duration such as 3600, 90s, 30m, 12h or 7d, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(text).split(",") if part.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "str": lambda text: str(text).strip(),
    "int": lambda text: int(str(text).strip()),
    "float": lambda text: float(str(text).strip()),
    "bool": parse_bool,
    "size": parse_size,
    "duration": parse_duration,
    "list": parse_list,
}


def convert(f: dataclasses.Field, raw: Any, origin: str) -> Any:
    kind = f.metadata["kind"]
    try:
        value = _PARSERS[kind](raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise SettingsError(f"{origin}: invalid value for {f.name}: {exc}") from None
    choices = f.metadata["choices"]
    if choices:
        value = value.upper() if f.name == "log_level" else value
        if value not in choices:
            raise SettingsError(f"{origin}: {f.name} must be one of {', '.join(choices)}, got {raw!r}")
    return value
