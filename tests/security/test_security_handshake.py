"""A client whose CURVE handshake fails says why (spikewatch.sampler.wire.handshake), with real samplers:
`mark` exits 1 with the sentence, `record` prints it on stderr, the console's receiver
gets it as a notice; an authorized client hears nothing of the kind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from spikewatch.analysis.console.receiver import StreamReceiver
from spikewatch.analysis.console.state import StreamState
from spikewatch.sampler.wire.security import create_keys

from tests.conftest import free_port
from tests.support.sampler import spawn_sample, stop_sampler

CASES = {
    # case: (which sampler, which keys folder, what the sentence must say)
    "unauthorized": ("curve", "rogue", "is not in its authorized_clients/): copy "),
    "no_keys": ("curve", None, "requires CURVE keys: pass --keys DIR"),
    "keys_vs_plain": ("plain", "good", "does not use CURVE: drop --keys"),
    "wrong_server_key": (
        "curve",
        "wrong",
        "server.key in --keys is not its key; copy server.key from the sampler's keys folder",
    ),
}


def _named(setup: dict, case: str, sentence: str) -> str:
    """The sentence as a client that knows its keys folder says it: naming the file."""
    if case == "wrong_server_key":
        return f"{setup['keys']['wrong']}/server.key is not its key"
    if case == "unauthorized":
        return f"refused our key (rogue.key is not in its authorized_clients/): copy {setup['keys']['rogue']}/rogue.key"
    return sentence


def spikewatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spikewatch", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two running samplers (one with --keys, one plain) and four keys folders."""
    base = tmp_path_factory.mktemp("hs")
    good, other, rogue, wrong = (base / n for n in ("good", "other", "rogue", "wrong"))
    create_keys(good)
    create_keys(other)  # another sampler's pair: its server.key is the wrong one
    create_keys(rogue, "rogue")  # a pair the sampler never authorized
    shutil.copy(good / "server.key", rogue / "server.key")
    wrong.mkdir()
    shutil.copy(other / "server.key", wrong / "server.key")
    for name in ("client.key", "client.key_secret"):
        shutil.copy(good / name, wrong / name)
    sleeper = subprocess.Popen(["sleep", "120"])
    samplers, procs = {}, []
    try:
        for kind, extra in (("curve", ["--keys", str(good)]), ("plain", [])):
            eps = {"publish": f"tcp://127.0.0.1:{free_port()}", "inlet": f"tcp://127.0.0.1:{free_port()}"}
            p = spawn_sample(eps, *extra, "--journal", str(base / f"{kind}.journal"), "--pid", str(sleeper.pid))
            procs.append(p)
            assert "journal" in p.stderr.readline()
            samplers[kind] = eps
        yield {"samplers": samplers, "keys": {"good": good, "rogue": rogue, "wrong": wrong, None: None}}
    finally:
        for p in procs:
            stop_sampler(p)
        sleeper.kill()
        sleeper.wait()


def _keys_args(folder) -> list[str]:
    return ["--keys", str(folder)] if folder else []


@pytest.mark.parametrize("case", list(CASES))
def test_mark_says_why_the_sampler_refused(setup, case):
    sampler, keys, sentence = CASES[case]
    inlet = setup["samplers"][sampler]["inlet"]
    res = spikewatch("mark", "hello", "--inlet", inlet, *_keys_args(setup["keys"][keys]))
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert f"the sampler at {inlet}" in res.stderr and _named(setup, case, sentence) in res.stderr, res.stderr
    assert "the note was not sent" in res.stderr and "Traceback" not in res.stderr and "note sent" not in res.stdout


def test_mark_authorized_and_plain_say_sent(setup):
    for sampler, keys in (("curve", "good"), ("plain", None)):
        inlet = setup["samplers"][sampler]["inlet"]
        res = spikewatch("mark", "hello", "--inlet", inlet, *_keys_args(setup["keys"][keys]))
        assert res.returncode == 0 and f"note sent to {inlet}" in res.stdout, res.stderr
        assert "refused" not in res.stderr and "CURVE" not in res.stderr


def test_mark_without_any_sampler_says_so():
    inlet = f"tcp://127.0.0.1:{free_port()}"
    res = spikewatch("mark", "hello", "--inlet", inlet)
    assert res.returncode == 3 and f"no sampler answered at {inlet}" in res.stderr, res.stderr


def test_record_prints_why_on_stderr(setup, tmp_path):
    """Every case and an authorized client, recorded side by side (2 s each, at once)."""
    runs = {case: (setup["samplers"][s]["publish"], setup["keys"][k]) for case, (s, k, _) in CASES.items()}
    runs["authorized"] = (setup["samplers"]["curve"]["publish"], setup["keys"]["good"])
    procs = {
        case: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spikewatch",
                "record",
                ep,
                "--duration",
                "2s",
                "-o",
                str(tmp_path / f"{case}.rec"),
                *_keys_args(keys),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, (ep, keys) in runs.items()
    }
    out = {case: p.communicate(timeout=60) for case, p in procs.items()}
    for case, (_, _, sentence) in CASES.items():
        stdout, stderr = out[case]
        sentence = _named(setup, case, sentence)
        assert f"spikewatch record: the sampler at {runs[case][0]}" in stderr and sentence in stderr, (case, stderr)
        assert stderr.count(sentence) == 1, (case, stderr)  # said once, not at every retry
    stdout, stderr = out["authorized"]
    assert procs["authorized"].returncode == 0 and "spikewatch record:" not in stderr, stderr
    assert " 0 samples" not in stdout, stdout


def test_console_receiver_gets_a_notice(setup):
    """No keys against the CURVE sampler: the console's receiver tells the UI (notices + notify)."""
    woken = []
    rx = StreamReceiver([setup["samplers"]["curve"]["publish"]], StreamState(), lambda: woken.append(1), fps=10)
    with rx:
        deadline = time.monotonic() + 10
        while not rx.handshake_errors and time.monotonic() < deadline:
            time.sleep(0.05)
    assert rx.error is None
    assert rx.handshake_errors and "requires CURVE keys" in rx.handshake_errors[0]
    assert rx.handshake_errors[0] in rx.notices and woken
