"""Where webhooks may not go: refused when added, and again when sent (a name that
resolves elsewhere by then, a server whose settings are stricter than the CLI's)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from colaflow_mcp.domain import admin, webhooks
from colaflow_mcp.domain.errors import InvalidArguments
from colaflow_mcp.domain.netguard import check_url, refusal
from tests.webhooks.receiver import receiver
from tests.webhooks.test_delivery import app, settled

pytestmark = pytest.mark.anyio


class Dns:
    """A DNS server the test controls: names map to addresses, changeable at any time."""

    def __init__(self, **names: str) -> None:
        self.names = {k.replace("_", "."): v for k, v in names.items()}

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        if host not in self.names:
            raise OSError(-2, "Name or service not known")
        return [self.names[host]]


@pytest.mark.parametrize("url", [
    "http://localhost:8080/hook", "http://127.0.0.1/hook", "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/",
    "http://10.1.2.3/", "http://192.168.0.10/", "http://172.16.0.1/", "http://0.0.0.0/",
    "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/",
    "http://internal.example/hook",  # resolves to 127.0.0.1 (below)
])
async def test_private_addresses_are_refused_when_added(url: str) -> None:
    dns = Dns(internal_example="127.0.0.1", localhost="127.0.0.1")
    with pytest.raises(InvalidArguments, match="COLAFLOW_WEBHOOK_ALLOW_PRIVATE_NETWORKS"):
        await check_url(url, allow_private=False, resolve=dns)
    assert (await check_url(url, allow_private=True, resolve=dns)).url == url


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/x", "http:// or https://"), ("file:///etc/passwd", "http"),
    ("http:///nohost", "no host"), ("not a url", "http"), ("", "required"),
    ("https://user:pw@hooks.example/x", "credentials"), ("http://a.example:99999/", "valid"),
    ("http://nowhere.example/", "cannot resolve"),
])
async def test_bad_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(InvalidArguments, match=message):
        await check_url(url, allow_private=True, resolve=Dns(hooks_example="93.184.215.14"))


def test_public_addresses_pass() -> None:
    assert refusal("93.184.215.14") is None and refusal("2606:4700::1111") is None
    assert refusal("127.0.0.2") is not None and refusal("fe80::1") is not None


async def test_a_name_rebound_to_loopback_is_refused_at_send_time(any_database_url: str
                                                                   ) -> None:
    """Public when added, 127.0.0.1 when sent: nothing reaches the receiver listening
    there, and the attempt says why."""
    async with receiver() as r, app(any_database_url,
                                    webhook_allow_private_networks=False) as h:
        port = r.base_url.rsplit(":", 1)[1]
        dns = Dns(hooks_example="93.184.215.14")
        t = await admin.get_or_create_tenant(h.runtime.db, "acme")
        ep = await webhooks.add_endpoint(h.runtime.db, t, f"http://hooks.example:{port}/in",
                                         resolve=dns)
        dns.names["hooks.example"] = "127.0.0.1"  # the rebinding
        h.runtime.webhooks.resolve = dns
        await h.propose(await h.agent_key())
        [item] = await settled(h, ep, 1)
        assert item["state"] == "failed" and r.received == []
        assert all("127.0.0.1" in a["error"] and "refused" in a["error"]
                   for a in item["attempts"])


async def test_a_server_without_private_networks_refuses_what_the_cli_allowed(
        any_database_url: str) -> None:
    async with receiver() as r, app(any_database_url,
                                    webhook_allow_private_networks=False) as h:
        t = await admin.get_or_create_tenant(h.runtime.db, "acme")
        ep = await webhooks.add_endpoint(h.runtime.db, t, r.url("/in"), allow_private=True)
        await h.propose(await h.agent_key())
        [item] = await settled(h, ep, 1)
        assert r.received == [] and item["state"] == "failed"
        assert "loopback" in item["attempts"][0]["error"]
