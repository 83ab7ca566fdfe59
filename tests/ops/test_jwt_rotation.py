"""Rotating ``COLAFLOW_JWT_SECRET``: with the old secret in
``COLAFLOW_JWT_PREVIOUS_SECRETS`` its tokens keep working while new ones are signed with
the new secret; once it is dropped, they stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from colaflow_mcp.config import Settings
from colaflow_mcp.domain import admin
from tests.harness import fast_settings, in_process

pytestmark = pytest.mark.anyio

OLD, NEW, OTHER = "old-secret-" + "a" * 32, "new-secret-" + "b" * 32, "other-" + "c" * 32


async def _token(settings: Settings) -> str:
    async with in_process(settings) as h:
        tenant = await admin.get_or_create_tenant(h.runtime.db, "acme")
        return h.runtime.tokens.issue(tenant, "rita")


async def test_tokens_of_a_previous_secret_work_until_it_is_dropped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rotate.db'}"
    old_token = await _token(fast_settings(url, jwt_secret=OLD))
    stranger = await _token(fast_settings(url, jwt_secret=OTHER))
    rotating = fast_settings(url, jwt_secret=NEW, jwt_previous_secrets=(OLD,))
    new_token = await _token(rotating)
    async with in_process(rotating) as h:
        for token in (old_token, new_token):
            r = await h.client.get("/api/audit", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
        r = await h.client.get("/api/audit", headers={"Authorization": f"Bearer {stranger}"})
        assert r.status_code == 401
        # New tokens are signed with the new secret only.
        assert h.runtime.tokens.keys[0] == NEW
    async with in_process(fast_settings(url, jwt_secret=NEW)) as h:
        old = await h.client.get("/api/audit",
                                 headers={"Authorization": f"Bearer {old_token}"})
        new = await h.client.get("/api/audit",
                                 headers={"Authorization": f"Bearer {new_token}"})
        assert (old.status_code, new.status_code) == (401, 200)


def test_previous_secrets_are_read_from_the_environment_and_never_shown() -> None:
    s = Settings.from_env({"COLAFLOW_JWT_SECRET": NEW,
                           "COLAFLOW_JWT_PREVIOUS_SECRETS": f"{OLD}, {OTHER}",
                           "COLAFLOW_METRICS_TOKEN": "m-token"})
    assert s.jwt_previous_secrets == (OLD, OTHER)
    shown = repr(s)
    assert NEW not in shown and OLD not in shown and "m-token" not in shown
