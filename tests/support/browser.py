"""A real browser for the tests: Debian's chromium driven by Playwright (nothing downloaded).

Browser tests are skipped only outside CI when no chromium is installed; in CI
(``DEEPAAS_LIKE_CI`` set by ``.ci/run``, which installs chromium) a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, AsyncIterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("DEEPAAS_LIKE_CI"):
            pytest.fail(f"no chromium at {CHROMIUM}: .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium); CI always runs these")


PHONE = {"width": 390, "height": 844}  # a phone held upright, in CSS pixels


@pytest.fixture
async def page(tmp_path) -> AsyncIterator[Any]:
    """A fresh page of a headless chromium; everything it asked the network for is in
    ``page.requested`` (the server is the only host it may reach)."""
    async for new_page in _page(tmp_path, {"width": 1280, "height": 1000}):
        yield new_page


@pytest.fixture
async def phone(tmp_path) -> AsyncIterator[Any]:
    """The same on a phone's screen (390×844, touch, 3 device pixels per CSS pixel)."""
    async for new_page in _page(tmp_path, PHONE, is_mobile=True, has_touch=True, device_scale_factor=3):
        yield new_page


async def _page(tmp_path, viewport: dict[str, int], **context_options: Any) -> AsyncIterator[Any]:
    require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = await browser.new_context(viewport=viewport, **context_options)
        new_page = await context.new_page()
        new_page.requested = []
        new_page.on("request", lambda request: new_page.requested.append(request.url))
        new_page.screenshots = tmp_path
        try:
            yield new_page
        finally:
            await context.close()
            await browser.close()
