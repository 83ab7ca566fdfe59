"""A real nginx in front of test instances, configured from the shipped deploy/nginx/colaflow.conf.

The test configuration is the shipped file with its placeholders replaced (instance
addresses, listen sockets, certificate paths, log folder); each replacement must match
exactly as often as expected, so the shipped file cannot drift away from what is tested.
The file is wrapped in a minimal nginx.conf with its own prefix, pid file and temp paths.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness import absent
from tests.procs import ServerProcess, spawn

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "nginx" / "colaflow.conf"
# The shipped file's placeholders for instance a and b.
SHIPPED_INSTANCES = {"a": "10.0.0.11:8000", "b": "10.0.0.12:8000"}
SHIPPED_CERT = "/etc/letsencrypt/live/colaflow.example.com/fullchain.pem"
SHIPPED_CERT_KEY = "/etc/letsencrypt/live/colaflow.example.com/privkey.pem"


def free_port() -> int:
    """A port free now (nginx cannot tell which port it bound for port 0; a port taken in
    between makes it fail to start, and it is started again on others)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nginx_binary() -> str:
    """The nginx executable; skip (fail under CI=true) when it is not installed."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if found:
        return found
    absent("nginx is not installed (Debian: apt-get install nginx; scripts/test does it as root)")


def _replace(text: str, old: str, new: str, count: int) -> str:
    found = text.count(old)
    if found != count:
        raise AssertionError(f"deploy/nginx/colaflow.conf: expected {old!r} {count} time(s), "
                             f"found {found}; update tests/scale/nginx.py with the file")
    return text.replace(old, new)


@dataclass
class Ports:
    http: int  # the plain-HTTP redirect server
    https: int  # the site, with TLS
    plain: int  # the site without TLS (what most test clients use)


def render(shipped: str, instances: dict[str, int], ports: Ports, cert: Path, cert_key: Path,
           logs: Path) -> str:
    """The shipped configuration, pointed at local instances, ports, certificate and logs."""
    text = shipped
    for tag, address in SHIPPED_INSTANCES.items():
        # Each instance appears in the pool, its own upstream and the other's backup.
        text = _replace(text, f"server {address} ", f"server 127.0.0.1:{instances[tag]} ", 3)
    text = _replace(text, "    listen 80;\n", f"    listen 127.0.0.1:{ports.http};\n", 1)
    text = _replace(text, "    listen [::]:80;\n", "", 1)
    text = _replace(text, "    listen 443 ssl;\n",
                    f"    listen 127.0.0.1:{ports.https} ssl;\n"
                    f"    listen 127.0.0.1:{ports.plain};\n", 1)
    text = _replace(text, "    listen [::]:443 ssl;\n", "", 1)
    text = _replace(text, SHIPPED_CERT, str(cert), 1)
    text = _replace(text, SHIPPED_CERT_KEY, str(cert_key), 1)
    text = _replace(text, "/var/log/nginx/", f"{logs}/", text.count("/var/log/nginx/"))
    if re.search(r"^[^#\n]*\b10\.0\.0\.\d+", text, re.MULTILINE):
        raise AssertionError("an instance address of the shipped file was not replaced")
    return text


def main_config(prefix: Path, site: Path) -> str:
    """nginx.conf around the site: own pid and temp paths, notices on stderr (readiness)."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # temp dirs are the test's
    temp = "\n".join(f"    {name}_temp_path {prefix}/tmp/{name};"
                     for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
{temp}
    access_log {prefix}/logs/default.access.log;
    include {site};
}}
"""


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class Nginx:
    process: ServerProcess
    prefix: Path
    ports: Ports
    cert: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.plain}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.https}"

    def logs(self) -> dict[str, str]:
        """Every log nginx wrote: the files of the site and the main log (stderr)."""
        found = {p.name: p.read_text(errors="replace")
                 for p in sorted((self.prefix / "logs").glob("*")) if p.is_file()}
        found["stderr"] = self.process.output()
        return found


def prepare(prefix: Path, instances: dict[str, int]) -> tuple[Path, Ports, Path]:
    """Write the configuration under ``prefix``; returns (nginx.conf, ports, certificate)."""
    for sub in ("logs", "tmp", "tls"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(prefix / "tls")
    ports = Ports(http=free_port(), https=free_port(), plain=free_port())
    site = prefix / "colaflow.conf"
    site.write_text(render(SHIPPED.read_text(), instances, ports, cert, key, prefix / "logs"))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    return conf, ports, cert


def check(binary: str, prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on the configuration."""
    return subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(conf),
                           "-e", str(prefix / "logs" / "check.log")],
                          capture_output=True, text=True, timeout=60)


@contextmanager
def running_nginx(prefix: Path, instances: dict[str, int]) -> Iterator[Nginx]:
    """nginx (master and two workers) with the shipped site in front of ``instances``
    (tag -> port on 127.0.0.1); stopped (SIGTERM to its process group) on exit."""
    binary = nginx_binary()
    for attempt in range(3):
        conf, ports, cert = prepare(prefix, instances)
        tested = check(binary, prefix, conf)
        if tested.returncode != 0:
            raise AssertionError(f"nginx -t failed:\n{tested.stderr}")
        process, ready = spawn([binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
                               prefix, dict(os.environ),
                               lambda line, port=ports.plain: port
                               if "start worker process" in line else None, new_session=True)
        if ready.wait(30) and process.proc.poll() is None:
            break
        _stop(process)
        if "Address already in use" not in process.output() or attempt == 2:
            raise RuntimeError(f"nginx did not start:\n{process.output()}")
    try:
        yield Nginx(process, prefix, ports, cert)
    finally:
        _stop(process)


def _stop(process: ServerProcess) -> None:
    # SIGTERM to the master is nginx's fast shutdown (it stops its workers); the group kill
    # is the last resort, so no worker outlives the test.
    if process.proc.poll() is None:
        process.proc.send_signal(signal.SIGTERM)
        try:
            process.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.proc.pid, signal.SIGKILL)
            process.proc.wait(10)
    if process.pump is not None:
        process.pump.join(10)


ACCESS_LINE = re.compile(r'"(?P<method>\S+) (?P<uri>\S+) [^"]*" (?P<status>\d+) \d+ \S+ '
                         r'tag=(?P<tag>\S*) upstream=(?P<upstream>.*) status=(?P<ustatus>.*)$')


@dataclass
class Access:
    """One line of the site's access log (the shipped ``colaflow`` format)."""

    method: str
    uri: str
    status: int
    tag: str
    upstreams: list[str]  # every address tried, in order
    upstream_statuses: list[str]


def access_entries(text: str) -> list[Access]:
    """The lines of a ``colaflow``-format access log."""
    entries = []
    for line in text.splitlines():
        m = ACCESS_LINE.search(line)
        assert m is not None, f"access log line not in the shipped format: {line!r}"
        entries.append(Access(
            m["method"], m["uri"], int(m["status"]), m["tag"],
            [u.strip() for u in re.split(r"[,:] (?=\d)", m["upstream"]) if u.strip() != "-"],
            [u.strip() for u in m["ustatus"].split(",") if u.strip() != "-"]))
    return entries
