import msgpack
import pytest
from spikewatch.sampler.wire import protocol
from spikewatch.sampler.wire.protocol import ProtocolError


def test_encode_decode_roundtrip():
    body = protocol.samples_body(7, [100, 1100, 2100], {"rss": [1, 2, 3], "cg_usage": [4, 5, 6]})
    topic, back = protocol.decode(protocol.encode(protocol.SAMPLES, body))
    assert topic == "samples"
    assert back == {
        "v": 1,
        "seq": 7,
        "t": 100,
        "dt": [0, 1000, 2000],
        "series": {"rss": [1, 2, 3], "cg_usage": [4, 5, 6]},
    }
    assert protocol.sample_times(back) == [100, 1100, 2100]


def test_marker_validation():
    m = protocol.marker_message("phase_start", "ramp", {"concurrency": [1, 64]})
    assert m["kind"] == "phase_start" and isinstance(m["origin_wall_ns"], int)
    with pytest.raises(ProtocolError, match="kind"):
        protocol.validate_marker({"kind": "boom", "name": "x"})
    with pytest.raises(ProtocolError, match="name"):
        protocol.validate_marker({"kind": "note", "name": ""})
    deep: dict = {}
    cur = deep
    for _ in range(10):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(ProtocolError, match="deeper"):
        protocol.validate_marker({"kind": "note", "name": "n", "attrs": deep})


@pytest.mark.parametrize(
    "frames,match",
    [
        ([b"marker"], "2 frames"),
        ([b"marker", b"\xc1garbage"], "bad msgpack"),
        ([b"marker", msgpack.packb([1, 2])], "expected a map"),
        ([b"samples", msgpack.packb({})], "inlet takes"),
        ([b"marker", b"x" * (protocol.MAX_INLET_FRAME + 1)], "larger"),
        ([b"load", msgpack.packb({"interval_ns": 1, "rate": "fast"})], "finite number"),
        ([b"load", msgpack.packb({"interval_ns": 1, "hack": 1})], "unknown field"),
    ],
)
def test_inlet_rejects(frames, match):
    with pytest.raises(ProtocolError, match=match):
        protocol.validate_inlet(frames)


def test_inlet_accepts_load():
    body = {"interval_ns": 100_000_000, "rate": 99.5, "in_flight": 3, "errors": {"timeout": 2}, "phase": "ramp"}
    topic, out = protocol.validate_inlet(protocol.encode("load", body))
    assert topic == "load" and out == body
