"""deploy/nginx/colaflow.conf, as shipped, in a real nginx in front of two instances."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.core.releasedb import MANIFEST
from tests.scale.lb import balanced
from tests.scale.nginx import SHIPPED, SHIPPED_CERT, SHIPPED_CERT_KEY, nginx_binary, self_signed

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.redis]

DEBIAN_CONF = Path("/etc/nginx/nginx.conf")


def test_shipped_config_is_clean_in_debians_own_nginx_conf(tmp_path: Path) -> None:
    # The file dropped into conf.d of Debian's stock nginx.conf, only the certificate paths
    # changed (nginx -t opens them): no error, no warning.
    binary = nginx_binary()
    if not DEBIAN_CONF.is_file():
        pytest.skip("no /etc/nginx/nginx.conf (Debian's nginx package) to test the file in")
    cert, key = self_signed(tmp_path)
    site = tmp_path / "colaflow.conf"
    site.write_text(SHIPPED.read_text().replace(SHIPPED_CERT, str(cert))
                    .replace(SHIPPED_CERT_KEY, str(key)))
    stock = DEBIAN_CONF.read_text()
    assert "include /etc/nginx/conf.d/*.conf;" in stock
    conf = tmp_path / "nginx.conf"
    conf.write_text(stock.replace("include /etc/nginx/conf.d/*.conf;", f"include {site};")
                    .replace("include /etc/nginx/sites-enabled/*;", "")
                    .replace("pid /run/nginx.pid;", f"pid {tmp_path}/nginx.pid;"))
    out = subprocess.run([binary, "-t", "-c", str(conf), "-e", str(tmp_path / "error.log")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr
    assert "[warn]" not in out.stderr and "[emerg]" not in out.stderr, out.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("database", ["empty", "release-0.1.0"])
async def test_two_instances_started_together_serve_through_nginx_over_tls(
    tmp_path: Path, database: str,
) -> None:
    # Both instances started at the same moment on an empty database, or on one release
    # 0.1.0 wrote (balanced() does), each migrating under the lock; both then answer
    # through nginx.
    async with balanced(tmp_path, release=database != "empty") as b:
        if database != "empty":
            kept = MANIFEST["postgres"]["changes"]["pendingCreate"]
            r = await b.http.get(f"/api/mcp/pending-changes/{kept}",
                                 headers={"Authorization": f"Bearer {b.token}"})
            assert r.status_code == 200 and r.json()["status"] == "Pending", r.text
        seen = set()
        for _ in range(4):
            r = await b.http.get("/health")
            assert r.status_code == 200, r.text
            seen.add(r.json()["instance"])
        assert seen == {"a", "b"}  # REST spreads over both
        assert (await b.http.get("/health/ready")).status_code == 200
        # Metrics are scraped per instance, never through the balancer.
        assert (await b.http.get("/metrics")).status_code == 404
        # The TLS server of the shipped file (a self-signed certificate in the test).
        tls = ssl.create_default_context(cafile=str(b.nginx.cert))
        async with httpx.AsyncClient(base_url=b.nginx.https_url, verify=tls) as https:
            r = await https.get("/api/mcp/pending-changes",
                                headers={"Authorization": f"Bearer {b.token}"})
            assert r.status_code == 200, r.text
        # Plain HTTP on the public port is sent to https, path and query intact.
        async with httpx.AsyncClient() as plain:
            r = await plain.get(f"http://127.0.0.1:{b.nginx.ports.http}/health?x=1")
        assert r.status_code == 301
        assert r.headers["location"] == "https://127.0.0.1/health?x=1"
