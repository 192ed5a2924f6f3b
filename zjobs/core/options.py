"""Options, defined once: :class:`ProcessorOptions` (with the :class:`Keepalive` it holds)
for processors, :class:`ClientOptions` for clients.

Every way to start a processor takes this one frozen dataclass: the
:class:`~zjobs.ZmqProcessor` and :class:`~zjobs.aio.AsyncZmqProcessor` constructors (as
``options=`` or as keywords that build it), :class:`~zjobs.ServeSettings` and
:class:`~zjobs.Daemon`, :class:`~zjobs.ProcessorProcess`, ``zjobs serve`` (one flag per
field) and system files (one key per field, spelled as here). Child processes are handed
the dataclass itself, never a command line rebuilt from it.

Every client takes :class:`ClientOptions` alike: :class:`~zjobs.Client`,
:class:`~zjobs.aio.AsyncClient` and their ``connect`` (as ``options=`` or as keywords that
build it), :class:`~zjobs.Pipeline`, and ``zjobs send``/``zjobs ping`` (built from their
flags). The call engine takes them checked.

Only values live here; the transport layer applies them to sockets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, Final, Self, get_args, get_type_hints

from zjobs.core.coalescing import DEFAULT_COALESCE
from zjobs.errors import OptionsError
from zjobs.wire.batch import DEFAULT_BATCH_MAX

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_KEEPALIVE",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ClientOptions",
    "Keepalive",
    "ProcessorOptions",
    "build_client_options",
    "check_call_options",
    "client_option_names",
    "expecting",
]

DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
"""Largest frame a processor accepts (ZMQ_MAXMSGSIZE); a peer sending more is disconnected."""

DEFAULT_CONCURRENCY: Final = 100
"""Requests an :class:`~zjobs.aio.AsyncZmqProcessor` has in flight unless told otherwise."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """How a socket notices dead connections (TCP keepalive), and optionally stalled peers
    (ZMTP heartbeats on sending sockets); applied by
    :func:`zjobs.transport.keepalive.apply_keepalive`, whose module says why TCP keepalive
    and not ZMTP heartbeats.

    With the defaults, a connection that carried nothing for ``idle_s`` is probed every
    ``interval_s`` and dropped after ``count`` unanswered probes: a vanished peer host is
    noticed within ``idle_s + interval_s * count`` = 10 s of silence. A peer that is only
    slow, or whose process is stopped, still answers (its kernel does), so its connection
    and everything queued on it are kept.

    Attributes:
        idle_s: seconds without traffic before the first probe (``ZMQ_TCP_KEEPALIVE_IDLE``).
        interval_s: seconds between probes (``ZMQ_TCP_KEEPALIVE_INTVL``).
        count: unanswered probes that drop the connection (``ZMQ_TCP_KEEPALIVE_CNT``).
        zmtp_interval_ms: ZMTP heartbeats every this many ms on sending sockets (PUSH, PUB);
            None (the default): none. Such a socket drops a connection whose peer has not
            read its PING within ``zmtp_timeout_ms``: a stopped peer, but also one merely
            busy (its queue full), and whatever was queued for it is lost (retries resend
            requests; a subscriber loses responses). Receiving sockets (SUB, PULL) never get
            them, nor do peers get a TTL, since a reader whose reading paused would cut its
            own connection and could abort the process.
        zmtp_timeout_ms: how long a sending socket waits for its peer to answer a PING.
    """

    idle_s: int = 5
    interval_s: int = 1
    count: int = 5
    zmtp_interval_ms: int | None = None
    zmtp_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        whole = (self.idle_s, self.interval_s, self.count, self.zmtp_timeout_ms,
                 0 if self.zmtp_interval_ms is None else self.zmtp_interval_ms)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in whole):
            raise TypeError("keepalive fields must be whole numbers (zmtp_interval_ms may "
                            "be None)")
        if self.idle_s <= 0 or self.interval_s <= 0 or self.count <= 0:
            raise ValueError("keepalive idle_s, interval_s and count must be positive")
        if (self.zmtp_interval_ms is not None and self.zmtp_interval_ms <= 0) \
                or self.zmtp_timeout_ms <= 0:
            raise ValueError("keepalive zmtp_interval_ms and zmtp_timeout_ms must be positive")


DEFAULT_KEEPALIVE: Final = Keepalive()
"""TCP keepalive: probe after 5 s of silence, every second, drop after 5 unanswered probes;
no ZMTP heartbeats."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessorOptions:
    """How a processor serves: every option of every processor kind, in one frozen value.

    Attributes:
        name: written into every response; the job's name when None.
        requests: endpoint to bind the PULL socket on (``tcp://127.0.0.1:*`` picks a port).
        responses: endpoint to bind the PUB socket on.
        concurrency: requests in flight at once. None: one at a time for
            :class:`~zjobs.ZmqProcessor` (which only takes None or 1),
            :data:`DEFAULT_CONCURRENCY` for :class:`~zjobs.aio.AsyncZmqProcessor`. A daemon
            given a number serves a sync job in that many threads.
        threads: run the job's sync methods in a pool of ``concurrency`` threads
            (:class:`~zjobs.aio.AsyncZmqProcessor`; its resources must then be thread-safe).
        cache_size: when positive, answer repeated requests from an in-memory LRU cache of
            this many responses (:func:`zjobs.cached`).
        dedup_size: how many recent responses are kept to answer a repeated request id (a
            client's retry) without running the job again; 0 turns this off.
        dedup_ttl_s: how long after a request was taken up a repeat of it is answered from
            that window.
        heartbeat_interval_s: seconds between heartbeats on the reserved topic; None: none.
        max_message_size: largest request frame accepted (ZMQ_MAXMSGSIZE), -1 for no limit;
            a peer sending a larger one is disconnected by libzmq.
        rcvhwm: requests queued in ZeroMQ before senders are held back (0: no limit).
        sndhwm: responses queued per subscriber before the PUB socket drops for that
            subscriber (0: no limit).
        linger_ms: how long published responses may still flush after the sockets close
            (-1: until they are sent).
        keepalive: TCP keepalive on both sockets (and ZMTP heartbeats on the PUB socket if
            it asks for them); None: the kernel's defaults.
        metrics: ``HOST:PORT`` to serve Prometheus metrics on (``/metrics``; port 0 picks
            one), from creation until stopped; None: none. Needs the ``zjobs[metrics]``
            extra.
        batch_max: most values taken in one batch request (ZJP/1's batch extension,
            advertised in pongs): each runs as a request of its own (concurrently within
            ``concurrency`` on an asyncio processor); 0 turns the extension off, and
            batches are refused with BadRequest as a processor without it refuses them.

    Raises:
        OptionsError: every value out of range or of the wrong type, named.
    """

    name: str | None = None
    requests: str = "tcp://127.0.0.1:*"
    responses: str = "tcp://127.0.0.1:*"
    concurrency: int | None = None
    threads: bool = False
    cache_size: int = 0
    dedup_size: int = 10_000
    dedup_ttl_s: float = 60.0
    heartbeat_interval_s: float | None = 1.0
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    rcvhwm: int = 1000
    sndhwm: int = 100_000
    linger_ms: int = 1000
    keepalive: Keepalive | None = DEFAULT_KEEPALIVE
    metrics: str | None = None
    batch_max: int = DEFAULT_BATCH_MAX

    def __post_init__(self) -> None:
        problems = [(name, problem) for name in option_names()
                    if (problem := _problem(name, getattr(self, name))) is not None]
        if problems:
            raise OptionsError(problems)

    @property
    def options(self) -> ProcessorOptions:
        """These options as a plain :class:`ProcessorOptions` (for a subclass such as
        :class:`~zjobs.ServeSettings`, without what it adds)."""
        if type(self) is ProcessorOptions:
            return self
        return ProcessorOptions(**{name: getattr(self, name) for name in option_names()})

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (option names as keywords).

        Raises:
            TypeError: a keyword is not an option.
            OptionsError: a changed value cannot be used.
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"not a processor option: {', '.join(unknown)} (options: "
                            f"{', '.join(option_names())})")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values (``keepalive`` as a dict or None), for JSON and logs."""
        return {name: _plain(getattr(self, name)) for name in option_names()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessorOptions:
        """Options from plain values, as :meth:`to_dict` writes them or a system file holds
        them: ``false`` stands for None, ``keepalive`` may be a table of its fields.

        Raises:
            OptionsError: every unknown name and every value that cannot be used.
        """
        problems = [(key, f"unknown option (options: {', '.join(option_names())})")
                    for key in data if key not in _HINTS]
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in _HINTS:
                try:
                    values[key] = _from_plain(key, value)
                except (TypeError, ValueError) as exc:
                    problems.append((key, str(exc)))
        try:
            options = ProcessorOptions(**values)
        except OptionsError as exc:
            problems += exc.problems
        if problems:
            raise OptionsError(problems)
        return options


_HINTS: Final[dict[str, Any]] = {
    f.name: get_type_hints(ProcessorOptions)[f.name] for f in dataclasses.fields(ProcessorOptions)}
_NAMES: Final = tuple(_HINTS)


def option_names() -> tuple[str, ...]:
    """The names of every processor option, in their declared order."""
    return _NAMES


def _ranges(name: str, value: Any) -> str | None:
    """What is wrong with a well-typed ``value`` of option ``name``, if anything."""
    if value is None:
        return None
    match name:
        case "name" | "requests" | "responses" | "metrics":
            return None if value else "must not be empty"
        case "concurrency":
            return None if value >= 1 else f"must be at least 1, not {value}"
        case "heartbeat_interval_s":
            return None if value > 0 else f"must be positive (or none), not {value}"
        case "max_message_size":
            return None if value >= 1 or value == -1 else (
                f"must be at least 1 (or -1: no limit), not {value}")
        case "linger_ms":
            return None if value >= -1 else f"must be -1 or more, not {value}"
        case "threads" | "keepalive":
            return None
    return None if value >= 0 else f"must not be negative, not {value}"


def _problem(name: str, value: Any) -> str | None:
    return _type_problem(_HINTS[name], value) or _ranges(name, value)


def _type_problem(hint: Any, value: Any) -> str | None:
    """What is wrong with the type of ``value`` for a field annotated ``hint``, if anything
    (None passes where the annotation allows it)."""
    optional = isinstance(hint, UnionType) and NoneType in get_args(hint)
    if value is None:
        return None if optional else "must be given (None is not allowed)"
    kind = next(a for a in get_args(hint) if a is not NoneType) if optional else hint
    wanted = {bool: "true or false", int: "a whole number", float: "a number",
              str: "a string", Keepalive: "a Keepalive"}[kind]
    if kind is float:
        typed = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        typed = isinstance(value, int) and not isinstance(value, bool)
    else:
        typed = isinstance(value, kind)
    if not typed:
        return f"must be {wanted}{' (or none)' if optional else ''}, not {value!r}"
    return None


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if isinstance(value, Keepalive) else value


def _from_plain(name: str, value: Any) -> Any:
    optional = NoneType in get_args(_HINTS[name])
    if value is False and optional:
        return None
    if name == "keepalive" and isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(Keepalive)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown keepalive field(s) {', '.join(unknown)} (fields: "
                             f"{', '.join(sorted(known))})")
        return Keepalive(**value)
    return value


# -- clients -------------------------------------------------------------------------------

DEFAULT_MAX_IN_FLIGHT: Final = 10_000
"""Calls a client keeps pending at most by default: as many answers as a receiver buffers
(its ZMQ_RCVHWM), so that the response path never overflows with a client's own answers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """How a client calls: the policy of :class:`~zjobs.Client` and
    :class:`~zjobs.aio.AsyncClient` (and of a :class:`~zjobs.Pipeline`'s caller), in one
    frozen value. How it connects (endpoints, security, keepalive...) is not here: that
    belongs to ``connect``.

    Attributes:
        timeout_s: the default time one attempt of a call may take; after the last attempt
            the call fails with :class:`~zjobs.CallTimeout`.
        ready_timeout_s: how long the readiness handshake may take.
        expect_processors: how many distinct processors must answer a ping before the
            client counts as ready (load balancing over N processors needs all N
            subscribed). None: as many as there are request endpoints (``connect``, a
            pipeline's last stage), 1 for a client built from a sender.
        retries: the default number of times an unanswered request is sent again (same id)
            before the call fails; 0 sends each request once (at most once). A first
            attempt that no processor takes in time counts as an attempt too.
        liveness: when set, fail the waiting calls with :class:`~zjobs.ProcessorsGone` as
            soon as every processor heard from has been silent for this many heartbeat
            intervals (or said it stopped). Needs a receiver that reads heartbeats.
        send_timeout_s: how long the first send of a call may wait for room when no
            processor can take it; None: up to the call's ``timeout_s``.
        max_in_flight: requests awaiting an answer at most (:data:`DEFAULT_MAX_IN_FLIGHT`,
            a receiver's buffer of answers; a batch of coalesced calls is one request): a
            call beyond it first waits for one to end, up to its ``timeout_s`` (then
            :class:`~zjobs.SendTimeout`). None: no bound (then mind the buffers: more
            answers on their way than the processor and the receiver buffer are dropped).
        coalesce: most calls sent together in one batch request
            (:data:`~zjobs.core.coalescing.DEFAULT_COALESCE`): while calls with fast, small
            answers are in flight and every processor takes batches, a plain ``submit``
            (no ``meta``, no ``deadline_ms``) is held and goes with the next ones, when
            this many are held, when any result is waited for, or within 2 ms (asyncio:
            at the end of the event loop's turn). Each keeps its own future and outcome;
            a batch is one attempt (one id, retried whole). 0 or 1: every call alone. See
            :mod:`zjobs.core.coalescing`.

    Raises:
        OptionsError: every value out of range or of the wrong type, named.

    Example::

        options = zjobs.ClientOptions(timeout_s=5, retries=2)
        with zjobs.Client.connect(requests, responses, options=options) as client: ...
    """

    timeout_s: float = 30.0
    ready_timeout_s: float = 10.0
    expect_processors: int | None = None
    retries: int = 0
    liveness: int | None = None
    send_timeout_s: float | None = None
    max_in_flight: int | None = DEFAULT_MAX_IN_FLIGHT
    coalesce: int = DEFAULT_COALESCE

    def __post_init__(self) -> None:
        problems = [(name, problem) for name in _CLIENT_NAMES
                    if (problem := _client_problem(name, getattr(self, name))) is not None]
        if problems:
            raise OptionsError(problems)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (option names as keywords).

        Raises:
            TypeError: a keyword is not a client option.
            OptionsError: a changed value cannot be used.
        """
        _refuse_unknown(changes, "")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values, for JSON and logs."""
        return {name: getattr(self, name) for name in _CLIENT_NAMES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClientOptions:
        """Options from plain values, as :meth:`to_dict` writes them (``false`` stands for
        None where None is allowed).

        Raises:
            OptionsError: every unknown name and every value that cannot be used.
        """
        problems = [(key, f"unknown option (options: {', '.join(_CLIENT_NAMES)})")
                    for key in data if key not in _CLIENT_HINTS]
        values: dict[str, Any] = {
            key: None if value is False and NoneType in get_args(_CLIENT_HINTS[key]) else value
            for key, value in data.items() if key in _CLIENT_HINTS}
        try:
            options = cls(**values)
        except OptionsError as exc:
            problems += exc.problems
        if problems:
            raise OptionsError(problems)
        return options


_CLIENT_HINTS: Final[dict[str, Any]] = {
    f.name: get_type_hints(ClientOptions)[f.name] for f in dataclasses.fields(ClientOptions)}
_CLIENT_NAMES: Final = tuple(_CLIENT_HINTS)


def client_option_names() -> tuple[str, ...]:
    """The names of every client option, in their declared order."""
    return _CLIENT_NAMES


def _client_ranges(name: str, value: Any) -> str | None:
    """What is wrong with a well-typed ``value`` of client option ``name``, if anything."""
    if value is None:
        return None
    match name:
        case "timeout_s" | "ready_timeout_s":
            return None if value > 0 else f"must be positive, not {value!r}"
        case "expect_processors" | "liveness" | "max_in_flight":
            return None if value >= 1 else f"must be at least 1 (or none), not {value!r}"
    # retries, send_timeout_s (0: do not wait for room at all), coalesce (0: never)
    return None if value >= 0 else f"must not be negative, not {value!r}"


def _client_problem(name: str, value: Any) -> str | None:
    return _type_problem(_CLIENT_HINTS[name], value) or _client_ranges(name, value)


def _refuse_unknown(keywords: Mapping[str, Any], owner: str) -> None:
    unknown = sorted(set(keywords) - set(_CLIENT_NAMES))
    if unknown:
        where = f"{owner}(): " if owner else ""
        raise TypeError(f"{where}not a client option: {', '.join(unknown)} (options: "
                        f"{', '.join(_CLIENT_NAMES)})")


def build_client_options(options: ClientOptions | None, keywords: Mapping[str, Any],
                         owner: str) -> ClientOptions:
    """The options a client constructor was given: ``options`` (defaults when None) with
    the fields given as ``keywords`` replaced, as processors' options are.

    Raises:
        TypeError: a keyword is not a client option, or ``options`` is not a
            :class:`ClientOptions` (naming ``owner``).
        OptionsError: a value cannot be used.
    """
    _refuse_unknown(keywords, owner)
    if options is None:
        return ClientOptions(**keywords)
    if not isinstance(options, ClientOptions):
        raise TypeError(f"{owner}(): options must be a ClientOptions, not {options!r}")
    return options.replace(**keywords) if keywords else options


def expecting(options: ClientOptions, processors: int) -> ClientOptions:
    """``options`` waiting for ``processors`` at readiness, unless ``expect_processors``
    was given."""
    if options.expect_processors is not None:
        return options
    return dataclasses.replace(options, expect_processors=processors)


def check_call_options(timeout_s: float, retries: int) -> None:
    """Reject one call's own ``timeout_s`` and ``retries`` as :class:`ClientOptions` would.

    Raises:
        OptionsError: ``timeout_s`` not a positive number, or ``retries`` not a whole
            number of at least 0 (each named).
    """
    # The common case in two comparisons: this runs for every call given its own options.
    if (type(timeout_s) is float or type(timeout_s) is int) and timeout_s > 0 \
            and type(retries) is int and retries >= 0:
        return
    problems = [(name, problem) for name, value in (("timeout_s", timeout_s),
                                                     ("retries", retries))
                if (problem := _client_problem(name, value)) is not None]
    if problems:
        raise OptionsError(problems)
