"""A sampler that comes up after the driver started still gets the run's last messages:
closing the inlet waits (bounded) until the final phase_end and telemetry are sent."""

from __future__ import annotations

import json
import subprocess
import sys

import zmq
from spikewatch.sampler.wire import protocol

from tests.conftest import free_port

from .conftest import Recorder

# Runs the scenario in its own process, so what was not sent by its exit is lost for good.
# On the run's last progress call (after the final phase_end and load are queued, before
# the inlet is closed) it says END and waits until the test has bound the inlet.
CHILD = """
import json, sys, tomllib
from spikewatch.driver.run import run_scenario
from spikewatch.driver.scenario import parse_scenario

inlet, url = sys.argv[1], sys.argv[2]
sc = parse_scenario(tomllib.loads('''
[target]
url = "%s"
[[requests]]
path = "/late"
[[phases]]
name = "warm"
kind = "steady"
rate = 50
duration = "400ms"
[[phases]]
name = "last"
kind = "idle"
duration = "300ms"
''' % url), ".")
said = []

def progress(p):
    if p.index == p.phases - 1 and p.remaining_s == 0 and not said:
        said.append(1)
        print("END", flush=True)
        sys.stdin.readline()

res = run_scenario(sc, inlet=inlet, progress=progress)
print(json.dumps({"completed": res.total.completed, "reachable": res.sampler_reachable}), flush=True)
"""


def test_a_sampler_bound_after_the_start_gets_the_final_phase_end(server: Recorder) -> None:
    inlet = f"tcp://127.0.0.1:{free_port()}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, inlet, server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    got: list = []
    try:
        assert child.stdout.readline().strip() == "END", child.stderr.read()
        pull.bind(inlet)  # the "sampler" comes up only now: nothing was connected before
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=30)
        # The child has exited: whatever it sent is on our side of the connection now.
        while pull.poll(500):
            got.append(protocol.validate_inlet(pull.recv_multipart()))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        pull.close()
        ctx.term()
    assert child.returncode == 0, err
    assert "markers go nowhere" in err  # nobody was there at the start
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["reachable"] is False
    markers = [(b["kind"], b["name"]) for topic, b in got if topic == protocol.MARKER]
    assert markers == [("phase_start", "warm"), ("phase_end", "warm"), ("phase_start", "last"), ("phase_end", "last")]
    loads = [b for topic, b in got if topic == protocol.LOAD]
    assert summary["completed"] > 0
    assert sum(b["completed"] for b in loads) == summary["completed"], "the last load message is there too"
