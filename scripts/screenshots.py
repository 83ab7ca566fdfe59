"""Screenshots of the reviewer console for docs/reviewers.md, taken from the real thing.

    .venv/bin/python scripts/screenshots.py [--out docs/images]

Starts a server on a scratch SQLite database, has two agents propose a few changes,
signs a reviewer in with a login link and photographs, in Debian's chromium (through
Playwright), the live queue and one change's diff at 1280x800, and the queue at phone
width. Re-run it after changing the console so the pictures stay true.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness import Harness, fast_settings, live_server  # noqa: E402
from tests.web.console import login_url  # noqa: E402

CHROMIUM = os.environ.get("COLAFLOW_TEST_CHROMIUM") or shutil.which("chromium") or \
    "/usr/bin/chromium"


async def _propose(h: Harness) -> str:
    """A believable queue; the id of the update to photograph."""
    await h.project("acme", "WEB", "Website")
    triage = await h.agent_key("acme", "triage-bot")
    release = await h.agent_key("acme", "release-bot")
    first = await h.propose(triage, arguments={
        "project_key": "WEB", "title": "Login loops for SSO users", "type": "Bug",
        "priority": "High"})
    token = await h.reviewer_token("acme", "alice")
    await h.approve(token, first["id"])
    await h.propose(release, arguments={"project_key": "WEB", "title": "Ship 2.4 notes",
                                        "description": "Changelog and upgrade notes."})
    await h.propose(triage, "add_comment", {
        "issue_key": "WEB-1", "body": "Reproduced on Chrome and Firefox with Okta."})
    r = await h.client.post("/api/mcp/pending-changes", json={
        "tool": "update_issue", "arguments": {
            "issue_key": "WEB-1", "priority": "Critical", "assignee": "dana",
            "title": "Login loops for SSO users (Okta)"},
        "rationale": "Three customers reported it today; support asked to escalate and "
                     "Dana owns the SSO code."},
        headers={"Authorization": f"Bearer {triage}"})
    change_id: str = r.json()["id"]
    return change_id


async def main(out: Path) -> None:
    """Take the screenshots into ``out``."""
    from playwright.async_api import async_playwright, expect

    await anyio.Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = fast_settings(f"sqlite:///{Path(tmp) / 'shots.db'}")
        async with live_server(settings) as h, async_playwright() as pw:
            update_id = await _propose(h)
            browser = await pw.chromium.launch(executable_path=CHROMIUM)
            try:
                for name, viewport in (("desktop", {"width": 1280, "height": 800}),
                                       ("phone", {"width": 390, "height": 844})):
                    page = await browser.new_page(viewport=viewport)
                    await page.goto(await login_url(h))
                    await expect(page.locator("#live")).to_have_text("Live")
                    if name == "desktop":
                        await page.screenshot(path=str(out / "console-queue.png"))
                    await page.goto(f"{h.base_url}/inbox/changes/{update_id}")
                    await expect(page.locator("#live")).to_have_text("Live")
                    await page.screenshot(path=str(out / f"console-diff-{name}.png"),
                                          full_page=name == "phone")
                    await page.close()
            finally:
                await browser.close()
    print(f"wrote console-queue.png, console-diff-desktop.png, console-diff-phone.png to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    anyio.run(main, parser.parse_args().out)
