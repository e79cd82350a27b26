"""Shared pieces of the ``spikewatch run`` tests: scenarios, a growing service, leftover checks."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import psutil
from spikewatch.sampler import cgroup as cgm

SMALL_SCENARIO = """\
seed = 3
[target]
url = "http://127.0.0.1:9"   # spikewatch run puts the service's port here
ready = "/health"

[[requests]]
name = "ingest"
method = "POST"
path = "/ingest"
body = { size = "fixed", value = "64KiB", content = "json" }

[[phases]]
name = "boot"
kind = "startup"
timeout = "20s"

[[phases]]
name = "climb"
kind = "ramp"
concurrency = [1, 4]
steps = 2
duration = "1s"

[[phases]]
name = "rush"
kind = "burst"
rate = 20
burst = { every = "1s", length = "300ms", rate = 150 }
duration = "2s"

[[phases]]
name = "rest"
kind = "idle"
duration = "500ms"
"""

LONG_SCENARIO = """\
[target]
url = "http://127.0.0.1:9"
ready = "/health"

[[requests]]
name = "q"
method = "GET"
path = "/health"

[[phases]]
name = "boot"
kind = "startup"
timeout = "20s"

[[phases]]
name = "long"
kind = "steady"
rate = 20
duration = "120s"
"""

# A service that answers /health and then grows by 4 MiB every 50 ms, until stopped.
GROWER = """\
import http.server, os, threading, time
port = int(os.environ["PORT"])
held = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
def grow():
    time.sleep(1.0)
    while True:
        held.append(bytearray(b"x") * (4 << 20))
        time.sleep(0.05)
threading.Thread(target=grow, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text))
    return p


def demo_service() -> list[str]:
    return [
        sys.executable,
        "-m",
        "spikewatch.driver.demo_service",
        "--port",
        "{port}",
        "--startup-peak",
        "24M",
        "--startup-time",
        "0.2",
    ]


def tree(pid: int) -> list[psutil.Process]:
    try:
        return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return out


def leftover_cgroups(pids: list[int]) -> list[Path]:
    """Cgroups ``spikewatch-<pid>-*`` (made by a sampler with that pid, or by the runner's
    probe) still under our memory cgroup; the sampler is our child's child, so it is ours too."""
    me = cgm.cgroup_of_pid(os.getpid())
    if me is None:
        return []
    return [p for pid in pids for p in me.dir.glob(f"spikewatch-{pid}-*") if p.is_dir()]
