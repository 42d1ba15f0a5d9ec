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
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_browser() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("DEEPAAS_LIKE_CI"):
            pytest.fail(f"no chromium at {CHROMIUM}: .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium); CI always runs these")


@pytest.fixture
async def page(tmp_path) -> AsyncIterator[Any]:
    """A fresh page of a headless chromium; everything it asked the network for is in
    ``page.requested`` (the server is the only host it may reach)."""
    require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 1000})
        new_page = await context.new_page()
        new_page.requested = []
        new_page.on("request", lambda request: new_page.requested.append(request.url))
        new_page.screenshots = tmp_path
        try:
            yield new_page
        finally:
            await context.close()
            await browser.close()
