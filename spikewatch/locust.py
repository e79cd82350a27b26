"""Locust integration: ``import spikewatch.locust`` in a locustfile.

It publishes to a sampler's inlet, on the same schema as ``spikewatch drive``:

* phase markers from a ``LoadTestShape``'s stages (``phase_start``/``phase_end``, with the
  stage's ``users`` and ``spawn_rate`` as attributes), or one phase ``locust`` for the whole
  test when there is no shape; notes for test start, spawning complete and test stop;
* ``load`` telemetry every ``--spikewatch-interval`` (1 s): rate, in flight, completed, errors
  and latency percentiles, in total and per request name (``endpoints``).

Options (added through Locust's ``init_command_line_parser`` event, also as environment
variables): ``--spikewatch-inlet`` (default the local sampler's), ``--spikewatch-keys DIR``
(CURVE keys, as ``spikewatch mark --keys``), ``--spikewatch-client-key NAME``,
``--spikewatch-interval SECONDS``; ``--spikewatch-inlet off`` disables the plugin.

Distributed mode: only the master (or a local runner) talks to the sampler. Workers send
their counts to the master every quarter interval as a custom Locust message and once more
when they stop; the master adds them up and publishes one ``load`` message per interval. So
markers are never duplicated and every request is counted exactly once: a worker's counts
are reset when sent, and the master consumes each message once. In-flight counts are the
sum of each worker's latest figure.

In flight: Locust has no "request started" event, so the plugin wraps ``HttpSession.request``
and ``FastHttpSession.request``. A custom client can count its requests with
:func:`in_flight`. Names are ``name=`` (or the session's ``request_name``), else the URL as
called, as Locust names them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

try:
    import gevent
    from locust import events
    from locust.runners import MasterRunner, WorkerRunner
except ImportError as exc:  # one sentence, not a chain of tracebacks from a locustfile
    raise ImportError(
        f"spikewatch.locust needs Locust ({exc.name} is missing): pip install 'spikewatch[locust]'"
    ) from None

from spikewatch.sampler.wire import protocol

from .locust_counts import Counts as Counts
from .locust_counts import Totals as Totals

log = logging.getLogger("spikewatch")

MESSAGE = "spikewatch_load"  # the custom Locust message workers send to the master
DEFAULT_INTERVAL_S = 1.0
INLET_LINGER_MS = 1000


# The one tracker of this process (Locust runs one test per process).
COUNTS = Counts()


@contextlib.contextmanager
def in_flight(name: str) -> Iterator[None]:
    """Count a custom client's request as in flight under ``name`` while the block runs."""
    COUNTS.start(name)
    try:
        yield
    finally:
        COUNTS.end(name)


def _request_name(session: Any, url: Any, name: Any) -> str:
    if name:
        return str(name)
    group = getattr(session, "request_name", None)
    if group:
        return str(group)
    text = url.decode() if isinstance(url, bytes) else str(url)
    if text.startswith("/"):
        return text
    parts = urlsplit(text)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _wrap(cls: Any) -> None:
    original = cls.request
    if getattr(original, "_spikewatch", False):
        return

    def request(self: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        key = _request_name(self, url, kwargs.get("name") or (args[0] if args else None))
        COUNTS.start(key)
        try:
            return original(self, method, url, *args, **kwargs)
        finally:
            COUNTS.end(key)

    request._spikewatch = True  # type: ignore[attr-defined]
    request.__doc__ = original.__doc__
    cls.request = request


def _track_sessions() -> None:
    from locust.clients import HttpSession

    _wrap(HttpSession)
    try:
        from locust.contrib.fasthttp import FastHttpSession
    except ImportError:  # geventhttpclient missing: no FastHttpUser to track
        return
    _wrap(FastHttpSession)


def _error_kind(exception: Any, response: Any) -> str | None:
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return f"http_{status}"
    if exception is None:
        return None
    return type(exception).__name__


def _on_request(
    request_type: str = "",
    name: str = "",
    response_time: float = 0.0,
    exception: Any = None,
    response: Any = None,
    **_: Any,
) -> None:
    COUNTS.done(str(name), response_time, _error_kind(exception, response))


def _options(parser: Any) -> None:
    group = parser  # configargparse: env_var works on the parser itself
    group.add_argument(
        "--spikewatch-inlet",
        default=protocol.DEFAULT_INLET,
        env_var="SPIKEWATCH_INLET",
        help="the sampler's inlet ('off': do not publish); only the master or a local run uses it",
    )
    group.add_argument(
        "--spikewatch-keys",
        default="",
        env_var="SPIKEWATCH_KEYS",
        metavar="DIR",
        help="CURVE keys folder for a sampler started with --keys (server.key + your *.key_secret)",
    )
    group.add_argument(
        "--spikewatch-client-key",
        default="",
        env_var="SPIKEWATCH_CLIENT_KEY",
        metavar="NAME",
        help="which NAME.key_secret in --spikewatch-keys to use",
    )
    group.add_argument(
        "--spikewatch-interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        env_var="SPIKEWATCH_INTERVAL",
        help="seconds between load messages (default 1)",
    )


class Publisher:
    """On the master (or a local runner): markers, and the summed telemetry every interval."""

    def __init__(
        self, environment: Any, inlet: str, socket_options: dict[int, Any], interval_s: float, keys: str | None
    ) -> None:
        import zmq

        from spikewatch.sampler.wire.client import InletClient

        self.env = environment
        self.interval_ns = int(interval_s * 1e9)
        # Our own context: destroying it at quit is what waits (bounded) for the last messages.
        self.ctx = zmq.Context()
        self.client = InletClient(
            inlet,
            context=self.ctx,
            linger_ms=INLET_LINGER_MS,
            socket_options=socket_options,
            watch_handshakes=True,
            keys=keys,
        )
        self.totals = Totals()
        self.last = time.monotonic_ns()
        self.stage: str | None = None  # the open phase
        self.stage_no = 0
        self.stage_index = -1
        self.last_users: int | None = None
        self.closed = False
        self.running = False  # between test start and test stop
        self.greenlet: Any = None

    # --- markers ------------------------------------------------------------------------

    def marker(self, kind: str, name: str, attrs: dict[str, Any] | None = None) -> None:
        try:
            self.client.marker(kind, name, attrs)
        except protocol.ProtocolError as exc:  # never let the plugin stop the test
            log.warning("spikewatch: marker %r not sent: %s", name, exc)

    def open_phase(self, name: str, attrs: dict[str, Any]) -> None:
        self.close_phase()
        self.stage = name
        self.marker(protocol.PHASE_START, name, attrs)

    def close_phase(self, **attrs: Any) -> None:
        if self.stage is not None:
            self.marker(protocol.PHASE_END, self.stage, attrs)
            self.stage = None

    def stage_tick(self, shape: Any, tick: Any) -> None:
        """A shape's tick: a new (users, spawn rate[, user classes]) is a new phase."""
        if tick is None:
            self.close_phase()
            return
        users, spawn_rate = int(tick[0]), float(tick[1])
        classes = tick[2] if len(tick) > 2 else None
        self.stage_no += 1
        name, kind = f"stage {self.stage_no}", None
        stages = getattr(shape, "stages", None)
        if isinstance(stages, (list, tuple)):
            # the usual StagesShape: find this stage among the later ones by its figures
            for i in range(self.stage_index + 1, len(stages)):
                st = stages[i]
                if (
                    isinstance(st, dict)
                    and st.get("users") == users
                    and float(st.get("spawn_rate", spawn_rate)) == spawn_rate
                ):
                    self.stage_index = i
                    name = str(st.get("name") or f"stage {i + 1}")
                    kind = st.get("kind")
                    break
        if kind is None:
            kind = "ramp" if self.last_users is None or users > self.last_users else "steady"
        attrs: dict[str, Any] = {
            "kind": str(kind),
            "users": users,
            "spawn_rate": spawn_rate,
            "shape": type(shape).__name__,
        }
        if classes:
            attrs["user_classes"] = [getattr(c, "__name__", str(c)) for c in classes][:16]
        self.last_users = users
        self.open_phase(name, attrs)

    # --- telemetry ----------------------------------------------------------------------

    def workers(self) -> int:
        runner = self.env.runner
        if not isinstance(runner, MasterRunner):
            return 1
        # at the end the workers have quit, but their last counts are in this message
        return max(int(runner.worker_count), len(self.totals.senders - {"local"}))

    def publish(self) -> None:
        now = time.monotonic_ns()
        workers = self.workers()
        self.totals.add("local", COUNTS.take())
        msg = self.totals.message(max(1, now - self.last), self.stage or "", workers)
        self.last = now
        if not self.running and not msg["completed"] and not msg["in_flight"]:
            return  # no test running and nothing left to report: an idle master stays quiet
        try:
            self.client.load(msg)
        except protocol.ProtocolError as exc:
            log.warning("spikewatch: telemetry not sent: %s", exc)
        if self.client.handshake is not None:
            for sentence in self.client.handshake.poll():
                log.warning("spikewatch: %s: markers and telemetry go nowhere", sentence)

    def run(self) -> None:
        due = time.monotonic_ns() + self.interval_ns
        while not self.closed:
            gevent.sleep(max(0, due - time.monotonic_ns()) / 1e9)
            if self.closed:
                return
            self.publish()
            due += self.interval_ns

    def on_worker_message(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        self.totals.add(str(msg.node_id), msg.data or {})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
        self.close_phase()
        self.publish()  # what the workers flushed when they stopped
        self.ctx.destroy(linger=INLET_LINGER_MS)


class WorkerSender:
    """On a worker: this process's counts to the master, a few times per interval and at stop."""

    def __init__(self, environment: Any, interval_s: float) -> None:
        self.env = environment
        self.period = max(0.1, interval_s / 4)
        self.greenlet = gevent.spawn(self.run)

    def send(self) -> None:
        try:
            self.env.runner.send_message(MESSAGE, COUNTS.take())
        except Exception as exc:  # a master that is gone: nothing to count for
            log.debug("spikewatch: counts not sent to the master: %s", exc)

    def run(self) -> None:
        while True:
            gevent.sleep(self.period)
            self.send()


_state: dict[str, Any] = {}


def _init(environment: Any, **_: Any) -> None:
    opts = environment.parsed_options
    inlet = getattr(opts, "spikewatch_inlet", protocol.DEFAULT_INLET) if opts is not None else protocol.DEFAULT_INLET
    if not inlet or protocol.is_off(inlet):
        return
    interval = float(getattr(opts, "spikewatch_interval", DEFAULT_INTERVAL_S) or DEFAULT_INTERVAL_S)
    if interval <= 0:
        raise SystemExit("spikewatch: --spikewatch-interval must be positive")
    _track_sessions()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        _state["worker"] = WorkerSender(environment, interval)
        return
    keys = getattr(opts, "spikewatch_keys", "") or None
    socket_options: dict[int, Any] = {}
    if keys:
        from spikewatch.sampler.wire.security import KeysError, client_options

        try:
            socket_options = client_options(keys, getattr(opts, "spikewatch_client_key", "") or None)
        except KeysError as exc:
            raise SystemExit(f"spikewatch: --spikewatch-keys: {exc}") from None
    pub = Publisher(environment, inlet, socket_options, interval, keys)
    _state["publisher"] = pub
    if isinstance(runner, MasterRunner):
        runner.register_message(MESSAGE, pub.on_worker_message)
    shape = environment.shape_class
    if shape is not None:
        original = shape.tick

        def tick() -> Any:
            result = original()
            if result != getattr(tick, "last", ()):
                tick.last = result  # type: ignore[attr-defined]
                pub.stage_tick(shape, result)
            return result

        shape.tick = tick
    pub.greenlet = gevent.spawn(pub.run)
    log.info("spikewatch: markers and telemetry to %s", inlet)


def _test_start(environment: Any, **_: Any) -> None:
    pub = _state.get("publisher")
    if pub is None:
        return
    opts = environment.parsed_options
    attrs: dict[str, Any] = {"host": str(environment.host or "")}
    if environment.shape_class is not None:
        attrs["shape"] = type(environment.shape_class).__name__
    pub.running = True
    pub.marker(protocol.NOTE, "locust test start", attrs)
    if environment.shape_class is None and pub.stage is None:
        users = getattr(opts, "num_users", None)
        rate = getattr(opts, "spawn_rate", None)
        pattrs: dict[str, Any] = {"kind": "steady"}
        if users is not None:
            pattrs["users"] = int(users)
        if rate is not None:
            pattrs["spawn_rate"] = float(rate)
        pub.open_phase("locust", pattrs)


def _spawning_complete(user_count: int = 0, **_: Any) -> None:
    pub = _state.get("publisher")
    if pub is not None:
        pub.marker(protocol.NOTE, "locust spawning complete", {"user_count": int(user_count)})


def _test_stop(environment: Any, **_: Any) -> None:
    worker = _state.get("worker")
    if worker is not None:
        worker.send()  # before Locust's own final report: the master counts it before it quits
        return
    pub = _state.get("publisher")
    if pub is not None:
        pub.running = False
        pub.close_phase()
        pub.marker(protocol.NOTE, "locust test stop")


def _quit(**_: Any) -> None:
    worker = _state.pop("worker", None)
    if worker is not None:
        worker.greenlet.kill(block=False)
    pub = _state.pop("publisher", None)
    if pub is not None:
        pub.close()


# Locust's event hooks are untyped: registered here rather than as decorators.
_LISTENERS: tuple[tuple[str, Any], ...] = (
    ("request", _on_request),
    ("init_command_line_parser", _options),
    ("init", _init),
    ("test_start", _test_start),
    ("spawning_complete", _spawning_complete),
    ("test_stop", _test_stop),
    ("quit", _quit),
)
for _event, _listener in _LISTENERS:
    hook: Any = getattr(events, _event)
    hook.add_listener(_listener)
