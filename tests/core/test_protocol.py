import re

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


# Every public name protocol.py had before it was split by job (kinds, endpoints,
# framing, messages, inlet): the wire's public face keeps them all.
PUBLIC_BEFORE_THE_SPLIT = {
    "Build",
    "CgroupInfo",
    "DEFAULT_HISTORY",
    "DEFAULT_INLET",
    "DEFAULT_PUBLISH",
    "DETAIL",
    "Detail",
    "DetailFields",
    "ENDPOINT_FIELDS",
    "EVENT",
    "EVENT_KINDS",
    "EV_BUILD",
    "EV_HWM_SPIKE",
    "EV_JOURNAL_ERROR",
    "EV_LIMIT_CHANGE",
    "EV_MEMORY_EVENTS",
    "EV_OOM_KILL",
    "EV_OVERRUN",
    "EV_PROC_CHURN",
    "EV_PROC_EXIT",
    "EV_PROC_START",
    "EV_RESTART",
    "EndpointSyntaxError",
    "Event",
    "EventFields",
    "HELLO",
    "HISTORY",
    "Header",
    "HeapMetricInfo",
    "Hello",
    "HwmSpike",
    "JournalError",
    "LOAD",
    "LOAD_NUMBER_FIELDS",
    "LimitChange",
    "Load",
    "MARKER",
    "MARKER_KINDS",
    "MAX_ATTRS",
    "MAX_DEPTH",
    "MAX_INLET_FRAME",
    "MAX_NAME_LEN",
    "Marker",
    "MemoryEvents",
    "NOTE",
    "OomKill",
    "Overrun",
    "PHASE_END",
    "PHASE_START",
    "PROTOCOL_VERSION",
    "ProcChurn",
    "ProcExit",
    "ProcStart",
    "ProtocolError",
    "Restart",
    "SAMPLES",
    "SERIES_CG_USAGE",
    "SERIES_RSS",
    "Samples",
    "TOPICS",
    "Target",
    "as_detail",
    "as_event",
    "as_hello",
    "as_load",
    "as_marker",
    "as_samples",
    "check_endpoint",
    "decode",
    "detail_body",
    "encode",
    "event_body",
    "header",
    "inlet_body",
    "is_off",
    "marker_message",
    "pack",
    "parse_endpoint",
    "sample_times",
    "samples_body",
    "tcp_address",
    "unpack",
    "validate_inlet",
    "validate_load",
    "validate_marker",
}


def test_the_public_face_keeps_every_name() -> None:
    missing = {name for name in PUBLIC_BEFORE_THE_SPLIT if not hasattr(protocol, name)}
    assert not missing
    assert PUBLIC_BEFORE_THE_SPLIT <= set(protocol.__all__)


@pytest.mark.parametrize(
    "topic, body, says",
    [
        (protocol.HELLO, {"v": 1, "seq": 0, "t": 5}, "hello without 'session'"),
        (protocol.HELLO, {"v": 1, "seq": 0, "t": 5, "session": 3}, "hello.session is int, expected str"),
        (protocol.SAMPLES, {"v": 1, "seq": 1, "t": True, "dt": [], "series": {}}, "samples.t is bool"),
        (protocol.SAMPLES, {"v": 1, "seq": 1, "t": 5, "dt": [0, 1], "series": {"rss": [1]}}, "one per dt"),
        (protocol.SAMPLES, {"v": 1, "seq": 1, "t": 5, "dt": [0], "series": [[1]]}, "samples.series is list"),
        (protocol.DETAIL, {"v": 1, "seq": "7", "t": 5}, "detail.seq is str, expected int"),
        (protocol.EVENT, {"v": 1, "seq": 1, "t": 5}, "event without 'kind'"),
        (protocol.MARKER, {"v": 1, "seq": 1, "t": 5, "kind": "note", "name": None}, "marker.name is NoneType"),
        (protocol.LOAD, {"v": 1, "seq": 1, "t": 5.5}, "load.t is float, expected int"),
        (protocol.DETAIL, [1, 2], "detail body is list, expected a map"),
    ],
)
def test_as_message_refuses_a_malformed_body_in_one_sentence(topic, body, says) -> None:
    with pytest.raises(ProtocolError, match=re.escape(says)):
        protocol.as_message(topic, body)


def test_as_message_passes_what_a_producer_builds_and_topics_it_does_not_know() -> None:
    samples = protocol.samples_body(3, [10, 11, 12], {"rss": [1, 2, 3]})
    assert protocol.as_message(protocol.SAMPLES, samples) is samples
    event = protocol.event_body(4, 20, {"kind": "restart", "pid": 2, "old_pid": 1})
    assert protocol.as_message(protocol.EVENT, event) is event
    future = {"anything": object()}
    assert protocol.as_message("from_a_newer_sampler", future) is future
