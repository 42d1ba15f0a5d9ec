"""A training's progress bar on stderr, for ``deepaas-cli train``.

Fed by ``report_progress()`` in process, or by the training document's ``progress`` and
``progress_message`` from a server::

    bar = ProgressBar(sys.stderr)
    bar.update(0.5, "epoch 1/2")     # [###############...............]  50% epoch 1/2
    bar.close()
"""

from __future__ import annotations

import shutil
from typing import Any, TextIO, cast


class ProgressBar:
    """A training's progress on stderr: one redrawn line on a terminal, a line per change elsewhere.

    ``stream`` is where the training's own output goes meanwhile: on a terminal it clears
    the bar before each write and draws it again after a whole line.
    """

    WIDTH = 30

    def __init__(self, terminal: TextIO) -> None:
        self.terminal = terminal
        self.tty = terminal.isatty()
        self._last: str | None = None
        self._shown = False
        # _AroundBar hands every attribute it lacks on to the terminal: a TextIO too
        self.stream = cast(TextIO, _AroundBar(self)) if self.tty else terminal

    def update(self, fraction: float | None, message: str | None = None) -> None:
        text = self.render(fraction, message)
        if text == self._last:
            return
        self._last = text
        self.draw()

    def draw(self) -> None:
        if self._last is None:
            return
        if self.tty:
            self.terminal.write("\r\x1b[2K" + self._last[: shutil.get_terminal_size().columns - 1])
            self._shown = True
        else:
            self.terminal.write(self._last + "\n")
        self.terminal.flush()

    def clear(self) -> None:
        if self._shown:
            self.terminal.write("\r\x1b[2K")
            self._shown = False

    def close(self) -> None:
        if self._shown:
            self.terminal.write("\n")
            self.terminal.flush()
            self._shown = False

    @classmethod
    def render(cls, fraction: float | None, message: str | None) -> str:
        """``[###############...............]  50% epoch 1/2``"""
        if fraction is None:
            bar, percent = "." * cls.WIDTH, "   ?"
        else:
            fraction = min(max(float(fraction), 0.0), 1.0)
            filled = round(fraction * cls.WIDTH)
            bar, percent = "#" * filled + "." * (cls.WIDTH - filled), f"{fraction * 100:3.0f}%"
        return f"[{bar}] {percent}" + (f" {message}" if message else "")


class _AroundBar:
    """A text stream that keeps a terminal's progress bar below what is written."""

    def __init__(self, bar: ProgressBar) -> None:
        self._bar = bar

    def write(self, text: str) -> int:
        self._bar.clear()
        written = self._bar.terminal.write(text)
        if text.endswith("\n"):
            self._bar.draw()
        return written

    def flush(self) -> None:
        self._bar.terminal.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar.terminal, name)
