"""The docs' screenshots come from scripts/screenshots.py: it must keep working."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.harness import absent
from tests.web.conftest import CHROMIUM, HAVE_CHROMIUM

pytestmark = pytest.mark.anyio
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshots.py"


async def test_screenshot_script_photographs_the_queue_and_a_diff(tmp_path: Path) -> None:
    if not HAVE_CHROMIUM:
        absent(f"chromium is not installed at {CHROMIUM}")
    spec = importlib.util.spec_from_file_location("screenshots", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    await module.main(tmp_path)
    _check(tmp_path)


def _check(folder: Path) -> None:
    shots = sorted(p.name for p in folder.glob("*.png"))
    assert shots == ["console-diff-desktop.png", "console-diff-phone.png", "console-queue.png"]
    for p in folder.glob("*.png"):
        assert p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 10_000
