"""Endpoint syntax: what a ``--publish``, ``--inlet`` or ``--history`` value may be, checked
before ZeroMQ sees it, and the one spelling of "off". Part of the wire's public face
(re-exported by :mod:`spikewatch.sampler.wire.protocol`)."""

from __future__ import annotations

import ipaddress
import re

# Default endpoints: loopback only; binding elsewhere requires CURVE keys.
DEFAULT_PUBLISH = "tcp://127.0.0.1:7781"
DEFAULT_INLET = "tcp://127.0.0.1:7782"
DEFAULT_HISTORY = "tcp://127.0.0.1:7783"


class EndpointSyntaxError(ValueError):
    """An endpoint that is not ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``;
    the message names the endpoint and what is wrong with it."""


# A name ZeroMQ resolves (host, IPv4, interface), or `*` (all interfaces) when binding.
_HOST = re.compile(r"^(\*|[A-Za-z0-9_]([A-Za-z0-9_.%-]*[A-Za-z0-9_])?)$")
_OFF_ALIASES = ("off", "none", "")


def is_off(value: str | None) -> bool:
    """Whether an endpoint or output option was turned off (``--inlet off``)."""
    return value is None or value.strip().lower() in _OFF_ALIASES


def parse_endpoint(endpoint: str, *, bind: bool = False) -> tuple[str, str, int | None]:
    """Check ``endpoint`` before ZeroMQ sees it: ZeroMQ itself binds ``tcp://127.0.0.1:99999``
    to a random port and ``…:80a`` to port 80 without a word, and a connect to a port-less
    endpoint waits forever. Returns (transport, host or path, port or None); raises
    :class:`EndpointSyntaxError` with one sentence saying what is wrong.

    ``bind``: a port ``*`` (any free one) and the host ``*`` are allowed."""
    ep = endpoint.strip()
    scheme, sep, rest = ep.partition("://")
    example = "write e.g. tcp://127.0.0.1:7781 or ipc:///tmp/spikewatch.sock"
    if not sep:
        raise EndpointSyntaxError(f"{endpoint!r} is not a ZeroMQ endpoint; {example}")
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise EndpointSyntaxError(f"{endpoint!r} names no {'path' if scheme == 'ipc' else 'name'}; {example}")
        return scheme, rest, None
    if scheme != "tcp":
        raise EndpointSyntaxError(f"{endpoint!r}: transport {scheme!r} is not supported (tcp://, ipc://); {example}")
    address = rest.split(";")[-1] if not bind else rest
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise EndpointSyntaxError(f"{endpoint!r} has no port; {example}")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise EndpointSyntaxError(f"{endpoint!r}: an IPv6 host goes in brackets, e.g. tcp://[::1]:7781")
        host_ok = all(c in "0123456789abcdefABCDEF:." for c in host[1:-1])
        host = host[1:-1]
    else:
        host_ok = bool(_HOST.match(host)) and (bind or host != "*")
    if not host_ok:
        raise EndpointSyntaxError(f"{endpoint!r}: {host!r} is not a host name or address")
    if bind and port == "*":
        return scheme, host, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise EndpointSyntaxError(f"{endpoint!r}: port {port!r} is not a number from 1 to 65535")
    return scheme, host, int(port)


def check_endpoint(endpoint: str, *, bind: bool = False) -> str:
    """``endpoint`` unchanged (stripped) when :func:`parse_endpoint` accepts it."""
    parse_endpoint(endpoint, bind=bind)
    return endpoint.strip()


def tcp_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) a client connects to for a ``tcp://`` endpoint (also the
    ``tcp://source;host:port`` form), or None for other transports or a malformed one."""
    try:
        scheme, host, port = parse_endpoint(endpoint)
    except EndpointSyntaxError:
        return None
    if scheme != "tcp" or port is None:
        return None
    return host, port


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback address literals: an HTTP listener (the
    Prometheus exporter, the bridge) bound there is reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
