import pytest
from spikewatch.sampler.units import format_bytes, format_duration_ns, parse_duration, parse_duration_ns, parse_size


@pytest.mark.parametrize(
    "text,expected",
    [
        ("4096", 4096),
        ("64M", 64 << 20),
        ("2GiB", 2 << 30),
        ("512Mi", 512 << 20),
        ("1.5G", 3 << 29),
        ("10MB", 10_000_000),
        ("1k", 1024),
        (" 7 KiB ", 7168),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "-5M", "12 apples", "1.2.3G"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    "text,ns",
    [
        ("500us", 500_000),
        ("2ms", 2_000_000),
        ("30s", 30 * 10**9),
        ("5m", 300 * 10**9),
        ("1h", 3600 * 10**9),
        ("1.5s", 1_500_000_000),
        ("100µs", 100_000),
        ("20", 20 * 10**9),
    ],
)
def test_parse_duration(text, ns):
    assert parse_duration_ns(text) == ns


def test_parse_duration_default_unit_and_errors():
    assert parse_duration("250", default_unit="ms") == 0.25
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ns("soon")


def test_formatting():
    assert format_bytes(64 << 20) == "64.0 MiB"
    assert format_bytes(512) == "512 B"
    assert format_bytes(None) == "–"
    assert format_duration_ns(1500) == "1.5 µs"
    assert format_duration_ns(90e9) == "1m30s"
