"""CurveZMQ for the sampler's endpoints: key pairs, the ZAP authenticator, socket options.

Layout of a keys folder (made by ``spikewatch keys DIR``)::

    DIR/server.key            the sampler's public key   (copy it to every client)
    DIR/server.key_secret     the sampler's secret key   (stays on the sampler host)
    DIR/client.key            a client's public key      (--name NAME: NAME.key)
    DIR/client.key_secret     a client's secret key      (copy it to that client only)
    DIR/authorized_clients/   public keys the sampler accepts (one *.key per client)

On the sampler, ``--keys DIR`` turns CURVE on for the stream, the inlet and the
history endpoint alike; a ZAP handler (pyzmq's ThreadAuthenticator) admits only
the public keys in ``authorized_clients``. A client with ``--keys DIR`` needs
``server.key`` and its own ``*.key_secret`` there. Binding anywhere but loopback
(or a local ipc:// socket) without keys is refused.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import zmq

SERVER = "server"
CLIENT = "client"
AUTHORIZED = "authorized_clients"
ZAP_DOMAIN = b"spikewatch"
MAKE_KEYS_HINT = "make keys with `spikewatch keys DIR` and pass --keys DIR"


class KeysError(Exception):
    """Missing or unusable keys; the message says what to do."""


def _host(endpoint: str) -> str | None:
    """The host part of a tcp:// endpoint (None for ipc://, inproc://)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        raise KeysError(f"not an endpoint: {endpoint!r} (expected e.g. tcp://127.0.0.1:7781)")
    if scheme.lower() not in ("tcp", "ws", "wss", "udp", "pgm", "epgm"):
        return None
    # tcp://[iface;]host:port ; keep the bind side only
    rest = rest.split(";")[-1]
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    return host.strip("[]")


def is_loopback(endpoint: str) -> bool:
    """True when ``endpoint`` can only be reached from this host: tcp on a loopback
    address (or a name resolving only to loopback), ipc:// and inproc://."""
    host = _host(endpoint)
    if host is None:
        return True
    if host in ("*", ""):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host == "localhost":
        return True
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # an interface name (eth0) or unknown: assume reachable from outside
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def create_keys(directory: str | os.PathLike[str], name: str = CLIENT) -> dict[str, Path]:
    """Create the server pair (unless there is one) and a client pair ``name``;
    authorize the client. Returns the paths made or reused."""
    import zmq.auth

    if not name or name == SERVER or "/" in name or name.startswith("."):
        raise KeysError(f"bad client name {name!r}: use letters, digits, - or _ (not {SERVER!r})")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    auth = d / AUTHORIZED
    auth.mkdir(exist_ok=True)
    out: dict[str, Path] = {}
    server_secret = d / f"{SERVER}.key_secret"
    if not server_secret.exists():
        zmq.auth.create_certificates(d, SERVER)
    out["server_public"], out["server_secret"] = d / f"{SERVER}.key", server_secret
    client_secret = d / f"{name}.key_secret"
    if client_secret.exists():
        raise KeysError(f"{client_secret} exists already; pick another --name")
    pub, sec = zmq.auth.create_certificates(d, name)
    shutil.copy(pub, auth / f"{name}.key")
    for p in (server_secret, Path(sec)):
        os.chmod(p, 0o600)
    out["client_public"], out["client_secret"] = Path(pub), Path(sec)
    out["authorized"] = auth / f"{name}.key"
    return out


def _load_public(path: Path) -> bytes:
    import zmq.auth

    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read the key {path}: {exc}; {MAKE_KEYS_HINT}") from None
    return public


def _load_pair(path: Path) -> tuple[bytes, bytes]:
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeysError(f"cannot read the key {path}: {exc}; {MAKE_KEYS_HINT}") from None
    if not secret:
        raise KeysError(f"{path} holds no secret key; {MAKE_KEYS_HINT}")
    return public, secret


@dataclass
class ServerSecurity:
    """CURVE for a sampler: a private ZeroMQ context with its ZAP handler running,
    and the options every bound socket gets."""

    context: zmq.Context
    socket_options: dict[int, Any] = field(default_factory=dict)
    authenticator: Any = None
    clients: int = 0

    def close(self) -> None:
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


def server_security(directory: str | os.PathLike[str], context: zmq.Context | None = None) -> ServerSecurity:
    """Load ``DIR/server.key_secret`` and ``DIR/authorized_clients``; start the ZAP
    handler (before any socket binds: without one libzmq would admit any client
    that knows the server key)."""
    from zmq.auth.thread import ThreadAuthenticator

    d = Path(directory)
    if not d.is_dir():
        raise KeysError(f"no keys folder {d}; {MAKE_KEYS_HINT}")
    public, secret = _load_pair(d / f"{SERVER}.key_secret")
    auth_dir = d / AUTHORIZED
    clients = len(list(auth_dir.glob("*.key"))) if auth_dir.is_dir() else 0
    if clients == 0:
        raise KeysError(f"no client keys in {auth_dir}: nobody could connect; "
                        f"make one with `spikewatch keys {d} --name NAME`")
    ctx = context or zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain=ZAP_DOMAIN.decode(), location=str(auth_dir))
    opts = {zmq.CURVE_SERVER: 1, zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret,
            zmq.ZAP_DOMAIN: ZAP_DOMAIN}
    return ServerSecurity(ctx, opts, auth, clients)


def client_options(directory: str | os.PathLike[str], name: str | None = None) -> dict[int, Any]:
    """Socket options for a client of a CURVE sampler: ``DIR/server.key`` and the
    client's own secret key (``NAME.key_secret``; by default ``client.key_secret``
    or the only non-server ``*.key_secret`` in DIR)."""
    d = Path(directory)
    if not d.is_dir():
        raise KeysError(f"no keys folder {d}; {MAKE_KEYS_HINT}")
    server_public = _load_public(d / f"{SERVER}.key")
    if name is None:
        if (d / f"{CLIENT}.key_secret").exists():
            name = CLIENT
        else:
            found = [p.name[: -len(".key_secret")] for p in d.glob("*.key_secret") if p.name != f"{SERVER}.key_secret"]
            if len(found) != 1:
                raise KeysError(f"{'no' if not found else 'several'} client secret keys in {d} "
                                f"({', '.join(sorted(found)) or 'none'}); "
                                f"{'pass --client-key NAME' if found else MAKE_KEYS_HINT}")
            name = found[0]
    public, secret = _load_pair(d / f"{name}.key_secret")
    return {zmq.CURVE_SERVERKEY: server_public, zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}


def check_binds(endpoints: Iterable[str | None], keys: str | os.PathLike[str] | None) -> None:
    """Refuse a bind outside loopback without keys (call before binding anything)."""
    if keys:
        return
    open_eps = [ep for ep in endpoints if ep and not is_loopback(ep)]
    if open_eps:
        raise KeysError(f"refusing to bind {', '.join(open_eps)} without CURVE keys: anyone on the network "
                        f"could read the stream and inject markers; {MAKE_KEYS_HINT} "
                        f"(clients then need --keys with server.key and their client.key_secret)")
