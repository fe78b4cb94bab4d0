"""nginx from Debian as the load balancer in front of gateway replicas, as an ingress would be.

    with Nginx(folder, ["127.0.0.1:5001", "127.0.0.1:5002"]) as balancer:
        balancer.url         # http://127.0.0.1:PORT
        balancer.served()    # one (method, path, status, [upstreams tried]) per request

Round-robin per request and no affinity: HTTP/1.1 to the upstreams without ``keepalive``, so
every request opens its own upstream connection and may land on another replica. Bodies
stream both ways (no request or response buffering, no body size limit). An upstream that
refuses a connection is marked down for ``fail_timeout`` and the request goes to the next
one (only while nothing was sent to it: nginx never replays a POST or PATCH body). nginx
runs in the foreground (``daemon off``) with every path in ``folder``.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.conftest import require_tool
from tests.support.clients import free_port, stop_process

_CONFIG = """\
daemon off;
worker_processes 1;
{user}
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 512; }}
http {{
  log_format served '$request_method $uri $status $upstream_addr';
  access_log {folder}/access.log served;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  upstream gateways {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_next_upstream error timeout;
      proxy_connect_timeout 2s;
      proxy_send_timeout 120s;
      proxy_read_timeout 120s;
    }}
  }}
}}
"""


class Nginx:
    def __init__(self, folder: Path, upstreams: list[str], port: int = 0,
                 fail_timeout: float = 10.0) -> None:
        self.binary = require_tool("nginx")
        self.folder = Path(folder)
        self.upstreams = upstreams  # host:port of each replica
        self.port = port or free_port()
        self.fail_timeout = fail_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log(self) -> Path:
        return self.folder / "error.log"

    def start(self, timeout: float = 15.0) -> Nginx:
        self.folder.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"    server {address} max_fails=1 fail_timeout="
                            f"{int(self.fail_timeout)}s;" for address in self.upstreams)
        # As root the workers would switch to nobody, who cannot write the test's folder.
        user = "user root root;" if os.geteuid() == 0 else ""
        config = self.folder / "nginx.conf"
        config.write_text(_CONFIG.format(folder=self.folder, servers=servers, port=self.port,
                                         user=user))
        with open(self.folder / "stderr.log", "ab") as err:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(config), "-p", str(self.folder), "-e",
                 str(self.log)], stdout=err, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("nginx exited:\n" + self._logs())
            if "start worker process" in self._logs():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start:\n" + self._logs())

    def _logs(self) -> str:
        return "".join(path.read_text(errors="replace")[-4000:]
                       for path in (self.folder / "stderr.log", self.log) if path.exists())

    def served(self) -> list[tuple[str, str, int, list[str]]]:
        """Every finished request: method, path, status and the upstreams tried, in order."""
        path = self.folder / "access.log"
        entries = []
        for line in path.read_text().splitlines() if path.exists() else []:
            method, uri, status, upstreams = line.split(" ", 3)
            entries.append((method, uri, int(status),
                            [u.strip() for u in upstreams.split(",") if u.strip() != "-"]))
        return entries

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.process = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
