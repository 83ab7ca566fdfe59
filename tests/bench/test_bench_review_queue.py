"""A smoke-sized run of the review-queue benchmark (`python -m benchmarks.review_queue`),
so it never rots: a real server, a reviewers' process, a few proposals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.runner import bench_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.bench


def test_review_queue_smoke_brings_every_proposal_to_every_reviewer_once(
    tmp_path: Path,
) -> None:
    env = bench_env()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.review_queue", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "review-queue-smoke.json").read_text())
    assert data["missing"] == 0 and data["duplicates"] == 0
    assert data["after_return_ms"]["count"] == data["reviewers"] * data["proposals"] > 0
