"""The reviewer console's fixtures: a live server and Debian's Chromium through Playwright
(never a downloaded browser); without chromium the browser tests skip, or fail in CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.harness import Harness, absent, fast_settings, live_server

CHROMIUM = os.environ.get("COLAFLOW_TEST_CHROMIUM") or shutil.which("chromium") or \
    "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Harness]:
    """A real uvicorn server on an ephemeral port (the browser needs a socket)."""
    async with live_server(fast_settings(database_url)) as h:
        yield h


@pytest.fixture
async def browser(server: Harness) -> AsyncIterator[Any]:
    """Chromium, headless (closed before the server stops)."""
    if not HAVE_CHROMIUM:
        absent("chromium is not installed (apt-get install chromium; scripts/test does)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        absent("the playwright package is not installed (pip install -e '.[test]')")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            yield b
        finally:
            await b.close()
