"""What a newcomer breaks on day one (issue 19), each case with its documented outcome
(docs/reliability.md, "Bad input"): outputs that never merge or vanish, write errors as
one line and exit 3, one endpoint parser, durations with units, exit statuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.analysis import scenarios
from tests.conftest import free_port
from tests.support.disks import fill, mounted_tmpfs, readonly_tmpfs
from tests.support.sampler import sample_cmd

SW = [sys.executable, "-m", "spikewatch"]


def sw(*args: str, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SW, *args], capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]


def one_line_error(res: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with ``code`` and a single ``Error:`` line holding ``words``."""
    err = res.stderr.strip()
    assert res.returncode == code, (res.returncode, res.stdout[-1500:], err[-1500:])
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "spiky.rec"
    scenarios.spiky(path)
    return path


@pytest.fixture
def full(tmp_path: Path) -> Iterator[Path]:
    yield from mounted_tmpfs(tmp_path / "full", "256k")


@pytest.fixture
def readonly(tmp_path: Path) -> Iterator[Path]:
    yield from readonly_tmpfs(tmp_path / "ro")


def no_partial_files(folder: Path) -> list[str]:
    """Files left half-written: 0-byte ones and our temporary names."""
    return [
        p.name
        for p in folder.rglob("*")
        if p.is_file() and p.name != "filler" and (p.stat().st_size == 0 or p.name.endswith(".part"))
    ]


# --- report, export: write errors ----------------------------------------------------


def test_report_json_into_a_missing_folder(recording: Path, tmp_path: Path) -> None:
    res = sw("report", str(recording), "--json", str(tmp_path / "nodir" / "r.json"), "-q")
    one_line_error(res, 3, "cannot write", "nodir/r.json", "does not exist")


def test_report_html_into_a_read_only_folder(recording: Path, readonly: Path) -> None:
    res = sw("report", str(recording), "--html", str(readonly / "r.html"), "-q")
    one_line_error(res, 3, "cannot write", "r.html", "not writable")


def test_report_on_a_full_disk_leaves_no_half_file(recording: Path, full: Path) -> None:
    fill(full, leave=8192)
    res = sw("report", str(recording), "--json", str(full / "r.json"), "--html", str(full / "r.html"), "-q")
    one_line_error(res, 3, "cannot write", "No space left on device")
    assert not (full / "r.json").exists() or (full / "r.json").stat().st_size > 0
    assert not (full / "r.html").exists()
    assert no_partial_files(full) == []


def test_export_into_a_read_only_folder(recording: Path, readonly: Path) -> None:
    res = sw("export", str(recording), "--format", "csv", "-o", str(readonly / "tables"))
    one_line_error(res, 3, "cannot write to", "tables", "Read-only file system")


def test_export_on_a_full_disk_leaves_no_half_table(recording: Path, full: Path) -> None:
    fill(full, leave=16384)
    res = sw("export", str(recording), "--format", "csv", "-o", str(full / "tables"))
    one_line_error(res, 3, "No space left on device")
    assert not (full / "tables").exists() or not any((full / "tables").iterdir())
    assert no_partial_files(full) == []


def test_export_refuses_a_folder_holding_files_unless_force(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "tables"
    assert sw("export", str(recording), "--format", "csv", "--out", str(out)).returncode == 0
    res = sw("export", str(recording), "--format", "csv", "--out", str(out))
    one_line_error(res, 2, "already exists", "--force")
    assert sw("export", str(recording), "--format", "csv", "--out", str(out), "--force").returncode == 0


def test_a_damaged_recording_is_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\xff" * 64)
    one_line_error(sw("report", str(junk)), 2, "cannot read")


# --- record -------------------------------------------------------------------------


@pytest.fixture
def publishing(endpoints: dict[str, str], sleeper: subprocess.Popen[bytes]) -> Iterator[str]:
    p = subprocess.Popen(
        sample_cmd(endpoints, "--pid", str(sleeper.pid), "--journal", "off", "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield endpoints["publish"]
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=10)


def test_record_refuses_an_existing_recording_unless_append(tmp_path: Path, publishing: str) -> None:
    out = tmp_path / "app.rec"
    assert sw("record", publishing, "-o", str(out), "--duration", "1500ms", "-q").returncode == 0
    size = out.stat().st_size
    res = sw("record", publishing, "-o", str(out), "--duration", "1s", "-q")
    one_line_error(res, 2, "already exists", "--append")
    assert out.stat().st_size == size  # untouched
    assert sw("record", publishing, "-o", str(out), "--duration", "1s", "-q", "--append").returncode == 0
    assert out.stat().st_size > size


def test_record_that_got_nothing_exits_3_and_leaves_no_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "nothing.rec"
    res = sw("record", f"tcp://127.0.0.1:{free_port()}", "-o", str(out), "--duration", "300ms", "-q")
    one_line_error(res, 3, "nothing arrived", "removed")
    assert not out.exists()


def test_record_on_a_full_disk_is_one_line_with_what_was_kept(publishing: str, tmp_path: Path) -> None:
    small = tmp_path / "small"
    gen = mounted_tmpfs(small, "12k")
    next(gen)
    try:
        # Recording format 2 keeps 3 s in a few KiB: leave it less than one block's room.
        (small / "ballast").write_bytes(b"\0" * (11 << 10))
        res = sw("record", publishing, "-o", str(small / "r.rec"), "--duration", "3s", "-q")
        one_line_error(res, 3, "cannot write", "No space left on device", "kept", "lost")
    finally:
        gen.close()


# --- sample, mark: outputs, endpoints, durations ------------------------------------


def test_sample_refuses_an_existing_journal_unless_append(
    endpoints: dict[str, str], sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    j = tmp_path / "twice.journal"
    first = subprocess.run(
        sample_cmd(endpoints, "--pid", str(sleeper.pid), "--journal", str(j), "--duration", "300ms"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    size = j.stat().st_size
    again = subprocess.run(
        sample_cmd(endpoints, "--pid", str(sleeper.pid), "--journal", str(j), "--duration", "300ms"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    one_line_error(again, 2, "already exists", "--append")
    assert j.stat().st_size == size
    appended = subprocess.run(
        sample_cmd(endpoints, "--pid", str(sleeper.pid), "--journal", str(j), "--append", "--duration", "300ms"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert appended.returncode == 0 and j.stat().st_size > size


def test_a_match_that_never_matches_exits_3_without_a_journal(endpoints: dict[str, str], tmp_path: Path) -> None:
    j = tmp_path / "m.journal"
    res = subprocess.run(
        sample_cmd(endpoints, "--match", "no-such-process-xyzzy", "--duration", "500ms", "--journal", str(j)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 3, res.stderr
    assert "no process matched" in res.stderr and "removed the journal" in res.stderr
    assert not j.exists()


BAD_EPS = ["tcp://127.0.0.1:99999", "tcp://127.0.0.1:80a", "tcp://127.0.0.1", "udp://127.0.0.1:5", "127.0.0.1:7781"]


@pytest.mark.parametrize("ep", BAD_EPS)
@pytest.mark.parametrize("option", ["--publish", "--inlet", "--history"])
def test_sample_refuses_bad_endpoints(ep: str, option: str) -> None:
    args = {"--publish": f"tcp://127.0.0.1:{free_port()}", "--inlet": "off", "--history": "off", option: ep}
    res = sw("sample", "--pid", str(os.getpid()), *[x for kv in args.items() for x in kv], "--duration", "1s")
    assert res.returncode == 2 and option in res.stderr and "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize(
    "cmd", [["record", "-o", "x.rec"], ["console", "--plain", "--duration", "1s"], ["mark", "hi", "--inlet"]]
)
@pytest.mark.parametrize("ep", BAD_EPS[:3])
def test_clients_refuse_bad_endpoints(tmp_path: Path, cmd: list[str], ep: str) -> None:
    args = [*cmd, ep] if cmd[0] == "mark" else [cmd[0], ep, *cmd[1:]]
    res = sw(*args, cwd=tmp_path, timeout=20)
    assert res.returncode == 2 and "Traceback" not in res.stderr, (res.returncode, res.stderr)
    assert ep in res.stderr


def test_mark_needs_an_inlet_and_times_out_with_an_error() -> None:
    res = sw("mark", "hi", "--inlet", "off")
    assert res.returncode == 2 and "needs somewhere to go" in res.stderr
    res = sw("mark", "hi", "--inlet", f"tcp://127.0.0.1:{free_port()}", "--timeout", "300ms", timeout=20)
    one_line_error(res, 3, "no sampler answered", "0.3 s")


@pytest.mark.parametrize(
    "args",
    [
        ["sample", "--pid", "1", "--period", "1"],
        ["sample", "--pid", "1", "--duration", "1"],
        ["record", "tcp://127.0.0.1:7781", "-o", "x.rec", "--duration", "1"],
        ["console", "--plain", "--duration", "2"],
        ["report", "R", "--scrape", "15"],
        ["run", "quick", "--period", "1", "--", "true"],
    ],
)
def test_bare_numbers_for_durations_are_refused_everywhere(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "R").write_bytes(b"")
    res = sw(*args, cwd=tmp_path, timeout=20)
    assert res.returncode == 2 and "has no unit" in res.stderr, res.stderr


def test_old_spellings_of_off_still_work(
    endpoints: dict[str, str], sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    res = subprocess.run(
        [
            *SW,
            "sample",
            "--pid",
            str(sleeper.pid),
            "--publish",
            endpoints["publish"],
            "--inlet",
            "none",
            "--no-journal",
            "--history",
            "off",
            "--duration",
            "200ms",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert list(tmp_path.iterdir()) == []  # no journal written


# --- stopping under load ------------------------------------------------------------


def _stop_within(proc: subprocess.Popen[str], sig: int, bound: float = 5.0) -> tuple[float, str, str]:
    proc.send_signal(sig)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=bound + 10)
    return time.monotonic() - t0, out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sample_and_record_stop_promptly_saying_what_they_kept(
    endpoints: dict[str, str], sleeper: subprocess.Popen[bytes], tmp_path: Path, sig: int
) -> None:
    sampler = subprocess.Popen(
        sample_cmd(endpoints, "--pid", str(sleeper.pid), "--journal", str(tmp_path / "j")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rec = subprocess.Popen(
        [*SW, "record", endpoints["publish"], "-o", str(tmp_path / "r.rec")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        from tests.support.waiting import wait_until

        assert wait_until(lambda: (tmp_path / "r.rec").exists() and (tmp_path / "r.rec").stat().st_size > 2000, 20)
        took_rec, out, err = _stop_within(rec, sig)
        assert rec.returncode == 0, err
        assert "recorded" in out and " samples from " in out and "written to" in out
        took_sample, out, err = _stop_within(sampler, sig)
        assert sampler.returncode == 0, err
        assert "samples in" in err and "journal" in err
    finally:
        for p in (rec, sampler):
            p.kill()
    print(f"record stopped in {took_rec:.2f} s, sample in {took_sample:.2f} s")
    assert took_rec < 3 and took_sample < 3


def test_console_plain_stops_on_sigterm(endpoints: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [*SW, "console", "--plain", endpoints["publish"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert "connecting to" in proc.stdout.readline()  # type: ignore[union-attr]
        took, out, err = _stop_within(proc, signal.SIGTERM)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err
    assert took < 3


def test_sigkill_mid_write_never_leaves_a_half_report_under_its_name(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    proc = subprocess.Popen(
        [*SW, "report", str(recording), "--html", str(out), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    from tests.support.waiting import wait_until

    caught = wait_until(lambda: any(p.name.endswith(".part") for p in tmp_path.iterdir()), 60, 0.005)
    proc.kill()
    proc.wait(10)
    if not caught:
        pytest.skip("the report was written before the kill could land mid-write")
    assert not out.exists()  # only the hidden temporary name was ever half-written


def test_an_inconclusive_soak_states_no_time_to_the_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spikewatch.analysis import reader, report, terminal
    from spikewatch.analysis.synth import MiB

    scenarios.leak(tmp_path / "leak.rec", mib_per_hour=30.0, limit=1024 * MiB)
    rep = report.build_report(reader.load(tmp_path / "leak.rec"))
    assert rep["growth"]["trend"] == "growing" and rep["growth"]["time_to_limit_h"]
    terminal.render(rep)
    assert "limit reached in" in " ".join(capsys.readouterr().out.split())  # rich wraps at 80 columns
    rep["growth"]["trend"] = "inconclusive"  # the same figures, but the interval straddles the threshold
    rep["growth"]["stabilized"] = None
    terminal.render(rep)
    out = " ".join(capsys.readouterr().out.split())
    assert "growth " in out and "limit reached in" not in out
