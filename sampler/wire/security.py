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

The sampler follows ``authorized_clients`` while it runs (KeyWatcher): a key file
added or deleted there is picked up within about a second (or at once on
``request_reload``, which `spikewatch sample` calls on SIGHUP). ZAP is asked at
the handshake only, so a revoked subscriber that is already connected keeps its
session until it reconnects; the inlet checks each message's sender key
(``AuthorizedKeys.allows_user_id``), so a revoked sender is cut at once
(docs/security.md).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from .endpoints import is_loopback_host

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
    if is_loopback_host(host):
        return True
    try:
        ipaddress.ip_address(host)
        return False  # an address literal that is not loopback
    except ValueError:
        pass
    try:
        addrs = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
    except OSError:
        return False  # an interface name (eth0) or unknown: assume reachable from outside
    return bool(addrs) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addrs)


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
    # Copied in under another name, then renamed: a running sampler never reads half a key.
    tmp = auth / f".{name}.key.tmp"
    shutil.copy(pub, tmp)
    os.replace(tmp, auth / f"{name}.key")
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


def load_authorized(folder: str | os.PathLike[str]) -> tuple[dict[bytes, str], list[str]]:
    """The public keys (z85) in ``folder/*.key``, each with its file name, and one line
    per file that holds no usable key (skipped). Raises OSError when the folder cannot
    be listed."""
    import zmq.auth

    keys: dict[bytes, str] = {}
    problems: list[str] = []
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.name.endswith(".key"))
    for name in names:
        path = os.path.join(folder, name)
        try:
            public, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:  # being written, a typo, not a key file
            problems.append(f"{path}: {exc}")
            continue
        if not public or len(public) != 40:  # a z85 Curve25519 key is 40 characters
            problems.append(f"{path}: no public key in it")
            continue
        keys.setdefault(public, name)
    return keys, problems


def folder_signature(folder: str | os.PathLike[str]) -> tuple[Any, ...] | None:
    """What changes when a ``*.key`` file in ``folder`` is added, removed, replaced or
    rewritten: names, inodes, sizes and mtimes (None when the folder cannot be listed).
    A few stat calls: cheap enough to take every second."""
    sig: list[tuple[str, int | None, int | None, int | None]] = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.endswith(".key"):
                    try:
                        st = e.stat()  # follows symlinks, as loading does
                    except OSError:
                        sig.append((e.name, None, None, None))
                        continue
                    sig.append((e.name, st.st_ino, st.st_size, st.st_mtime_ns))
    except OSError:
        return None
    return tuple(sorted(sig, key=lambda item: item[0]))


def _keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


class AuthorizedKeys:
    """The key set pyzmq's ZAP handler asks about at every CURVE handshake (a credentials
    provider for ``configure_curve_callback``). A reload swaps ``keys`` in one assignment,
    so the authenticator thread sees the old set or the new one, never a mix."""

    def __init__(self, keys: dict[bytes, str]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys

    def allows_user_id(self, user_id: str | None) -> bool:
        """Is the sender of a message still authorized? ``user_id`` is the message's
        ``User-Id`` property: pyzmq's ZAP handler sets it to the Z85 of the client key
        at the handshake (keys are held in Z85 too), so a session opened before a
        revocation can be told apart."""
        return user_id is not None and bool(user_id) and user_id.encode("ascii", "replace") in self.keys


@dataclass
class ServerSecurity:
    """CURVE for a sampler: a private ZeroMQ context with its ZAP handler running,
    and the options every bound socket gets."""

    context: zmq.Context[Any]
    socket_options: dict[int, Any] = field(default_factory=dict)
    authenticator: Any = None
    clients: int = 0
    folder: Path | None = None  # authorized_clients/
    authorized: AuthorizedKeys | None = None
    watcher: KeyWatcher | None = None

    def watch(self, log: Callable[[str], None], warn: Callable[[str], None], interval_s: float = 1.0) -> KeyWatcher:
        """Follow ``authorized_clients`` from now on (a daemon thread, stopped by close())."""
        if self.watcher is None:
            self.watcher = KeyWatcher(self, log, warn, interval_s).start()
        return self.watcher

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None


class KeyWatcher:
    """Keeps the ZAP handler's key set in step with ``authorized_clients``.

    A thread of its own (never the sampling thread) takes the folder's signature about
    every ``interval_s`` and reloads when it changed; ``request_reload()`` (safe in a
    signal handler) reloads at once. A reload that finds no usable key, or cannot read
    the folder, keeps the keys it had and says so: an operator's slip must neither lock
    every client out silently nor stop the sampler."""

    def __init__(
        self, security: ServerSecurity, log: Callable[[str], None], warn: Callable[[str], None], interval_s: float = 1.0
    ) -> None:
        if security.folder is None or security.authorized is None:
            raise ValueError("KeyWatcher needs a ServerSecurity made by server_security()")
        self.security = security
        self.folder = security.folder
        self.interval_s = interval_s
        self._log, self._warn = log, warn
        self._signature = folder_signature(self.folder)
        self._requested = False
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="spikewatch-keys", daemon=True)
        self.reloads = 0  # reloads done, whatever their outcome

    def start(self) -> KeyWatcher:
        self._thread.start()
        return self

    def request_reload(self) -> None:
        """Reload now, and log it even if nothing changed (what SIGHUP does)."""
        self._requested = True
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stopped:
                break
            requested, self._requested = self._requested, False
            try:
                sig = folder_signature(self.folder)
                if requested:
                    self.reload("SIGHUP", sig)
                elif sig != self._signature:
                    self.reload("folder changed", sig)
            except Exception as exc:  # never let the watcher die quietly
                self._warn(
                    f"spikewatch: warning: client key reload failed ({exc!r}); still admitting the keys loaded before"
                )

    def reload(self, why: str, signature: tuple[Any, ...] | None = None) -> None:
        """Read the folder and swap the key set in (or keep the old one, saying why)."""
        self.reloads += 1
        self._signature = signature if signature is not None else folder_signature(self.folder)
        provider = self.security.authorized
        assert provider is not None
        old = provider.keys
        try:
            new, problems = load_authorized(self.folder)
        except OSError as exc:
            self._warn(
                f"spikewatch: warning: client keys not reloaded ({why}): cannot read {self.folder} "
                f"({exc.strerror or exc}); still admitting the {_keys(len(old))} loaded before"
            )
            return
        for line in problems:
            self._warn(f"spikewatch: warning: skipped {line}")
        if not new:
            self._warn(
                f"spikewatch: warning: client keys not reloaded ({why}): no usable *.key in {self.folder}; "
                f"still admitting the {_keys(len(old))} loaded before (nobody could connect otherwise; "
                f"to shut every client out, stop the sampler)"
            )
            return
        provider.keys = new
        self.security.clients = len(new)
        added = sorted(new[k] for k in new.keys() - old.keys())
        removed = sorted(old[k] for k in old.keys() - new.keys())
        parts = ([f"+{len(added)} added ({', '.join(added)})"] if added else []) + (
            [f"-{len(removed)} removed ({', '.join(removed)})"] if removed else []
        )
        self._log(
            f"spikewatch: client keys reloaded ({why}): {len(new)} authorized, "
            f"{'; '.join(parts) or 'no change'}"
            + (
                "; their open inlet sessions are refused from now on, open subscriptions last until they reconnect"
                if removed
                else ""
            )
        )


def server_security(
    directory: str | os.PathLike[str],
    context: zmq.Context[Any] | None = None,
    warn: Callable[[str], None] | None = None,
) -> ServerSecurity:
    """Load ``DIR/server.key_secret`` and ``DIR/authorized_clients``; start the ZAP
    handler (before any socket binds: without one libzmq would admit any client
    that knows the server key)."""
    from zmq.auth.thread import ThreadAuthenticator

    d = Path(directory)
    if not d.is_dir():
        raise KeysError(f"no keys folder {d}; {MAKE_KEYS_HINT}")
    public, secret = _load_pair(d / f"{SERVER}.key_secret")
    auth_dir = d / AUTHORIZED
    try:
        keys, problems = load_authorized(auth_dir)
    except OSError:
        keys, problems = {}, []
    if not keys:
        raise KeysError(
            f"no client keys in {auth_dir}: nobody could connect; "
            f"make one with `spikewatch keys {d} --name NAME`" + (f" ({'; '.join(problems)})" if problems else "")
        )
    if problems and warn is not None:
        for line in problems:
            warn(f"spikewatch: warning: skipped {line}")
    ctx = context or zmq.Context[Any]()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    # pyzmq's ZAP handler asks this provider at every handshake. (configure_curve(location=)
    # again would re-read the folder too, but it cannot keep the old keys when a reload
    # finds none, and a file read between our check and its own could differ.)
    provider = AuthorizedKeys(keys)
    auth.configure_curve_callback(domain=ZAP_DOMAIN.decode(), credentials_provider=provider)
    opts: dict[int, Any] = {
        zmq.CURVE_SERVER: 1,
        zmq.CURVE_PUBLICKEY: public,
        zmq.CURVE_SECRETKEY: secret,
        zmq.ZAP_DOMAIN: ZAP_DOMAIN,
    }
    return ServerSecurity(ctx, opts, auth, len(keys), auth_dir, provider)


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
                raise KeysError(
                    f"{'no' if not found else 'several'} client secret keys in {d} "
                    f"({', '.join(sorted(found)) or 'none'}); "
                    f"{'pass --client-key NAME' if found else MAKE_KEYS_HINT}"
                )
            name = found[0]
    public, secret = _load_pair(d / f"{name}.key_secret")
    return {zmq.CURVE_SERVERKEY: server_public, zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}


def check_binds(endpoints: Iterable[str | None], keys: str | os.PathLike[str] | None) -> None:
    """Refuse a bind outside loopback without keys (call before binding anything)."""
    if keys:
        return
    open_eps = [ep for ep in endpoints if ep and not is_loopback(ep)]
    if open_eps:
        raise KeysError(
            f"refusing to bind {', '.join(open_eps)} without CURVE keys: anyone on the network "
            f"could read the stream and inject markers; {MAKE_KEYS_HINT} "
            f"(clients then need --keys with server.key and their client.key_secret)"
        )
