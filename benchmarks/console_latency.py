"""Proposal → the reviewer console's queue shows it, in Chromium.

``python -m benchmarks.console_latency [--pages 1] [--proposals 100] [--rate 5]
[--out benchmarks/results]``

A `colaflow-mcp serve` (SQLite, production timings) in its own process; ``--pages``
console pages open on ``/inbox`` in Debian's chromium (each its own browser context,
signed in with its own `colaflow-mcp login-link`); the orchestrator proposes
``create_issue`` over REST as an agent, open-loop at ``--rate``. Each page records, with a
MutationObserver added by this benchmark (not part of the console), the wall-clock time a
queue item with the change's id enters the list. Latency = that − the POST's answer
("after return") and − the POST sent ("from send"). Browser and orchestrator share the
machine's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.miniclient import MiniHttp
from benchmarks.server import COLAFLOW, HOST, running_server, summary_cpu
from benchmarks.stats import summarize_ms

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("COLAFLOW_TEST_CHROMIUM") or shutil.which("chromium") or \
    "/usr/bin/chromium"

OBSERVE = """() => {
  window.__arrivals = {};
  const queue = document.getElementById("queue");
  new MutationObserver((records) => {
    const now = performance.timeOrigin + performance.now();
    for (const r of records) for (const n of r.addedNodes) {
      if (n.dataset && n.dataset.id && !(n.dataset.id in window.__arrivals)) {
        window.__arrivals[n.dataset.id] = now;
      }
    }
  }).observe(queue, { childList: true });
}"""


def _login_link(database_url: str, port: int, user: str) -> str:
    out = subprocess.run(
        [COLAFLOW, "--database-url", database_url, "login-link", "--tenant", "bench",
         "--user", user, "--base-url", f"http://{HOST}:{port}"],
        check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


async def _propose_all(port: int, key: str, count: int, rate: float
                       ) -> list[tuple[str, float, float]]:
    """(change id, wall time sent, wall time answered) per proposal, open-loop at rate."""
    http = MiniHttp(HOST, port)
    sent: list[tuple[str, float, float]] = []
    start = time.monotonic()
    try:
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            body = {"tool": "create_issue", "arguments": {
                "project_key": "WEB", "title": f"Console latency {i}"}}
            t_sent = time.time()
            status, raw = await http.request("POST", "/api/mcp/pending-changes", body, {
                "Authorization": f"Bearer {key}"})
            t_answered = time.time()
            assert status == 201, raw
            sent.append((json.loads(raw)["id"], t_sent, t_answered))
    finally:
        await http.close()
    return sent


async def run(pages: int, proposals: int, rate: float, out: Path) -> dict[str, Any]:
    """One run; the summary (also written to ``out``)."""
    from playwright.async_api import async_playwright, expect

    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        pw = await async_playwright().start()
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            opened = []
            for i in range(pages):
                page = await (await browser.new_context()).new_page()
                await page.goto(_login_link(server.database_url, server.port, f"r{i}"))
                await expect(page.locator("#live")).to_have_text("Live")
                await page.evaluate(OBSERVE)
                opened.append(page)
            await _propose_all(server.port, server.creds.api_key, 5, rate)  # warm-up
            meter = server.meter()
            before = meter.read()
            sent = await _propose_all(server.port, server.creds.api_key, proposals, rate)
            await asyncio.sleep(1.0)  # the last arrivals
            after = meter.read()
            meter.stop()
            arrivals = [await p.evaluate("window.__arrivals") for p in opened]
        finally:
            await browser.close()
            await pw.stop()
    after_return, from_send, missing = [], [], 0
    for cid, t_sent, t_answered in sent:
        for seen in arrivals:
            if cid not in seen:
                missing += 1
                continue
            at = seen[cid] / 1000.0
            after_return.append(at - t_answered)
            from_send.append(at - t_sent)
    result = {
        "scenario": "console-latency", "pages": pages, "proposals": proposals, "rate": rate,
        "after_return_ms": summarize_ms(after_return), "from_send_ms": summarize_ms(from_send),
        "missing": missing, "server_cpu": summary_cpu(before, after),
        "loadavg": os.getloadavg()[0],
    }
    _write(out / f"console-latency-{pages}.json", result)
    return result


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=1)
    p.add_argument("--proposals", type=int, default=100)
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "console")
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.pages, a.proposals, a.rate, a.out)), indent=2))


if __name__ == "__main__":
    main()
