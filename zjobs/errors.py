"""The zjobs exception tree.

Every error zjobs raises derives from :class:`ZJobsError`::

    ZJobsError
    ├── ProtocolError          bytes that are not valid ZJP/1
    ├── EncodeError            a value msgpack cannot encode
    ├── BindError              an endpoint could not be bound (names the endpoint)
    ├── ConnectError           an endpoint could not be connected (names the endpoint)
    ├── StartError             a processor could not start (its resources factory raised)
    ├── CrashedError           a processor's or link's background thread or task died
    ├── OptionsError           processor or client options that cannot be used (also a ValueError)
    ├── LoadError              a MODULE:OBJECT reference cannot be loaded (also a ValueError)
    ├── KeyFileError           a CURVE key file is missing or unusable (names the file)
    ├── MembershipError        the set of processors cannot be read (a DNS name, a file)
    ├── RemoteError            a processor answered with an error response
    │   └── StageError         a stage of a chain failed (names the stage)
    ├── Timeout                (also a builtin TimeoutError)
    │   ├── SendTimeout        a request could not be queued in time
    │   ├── ReceiveTimeout     no response arrived in time
    │   ├── CallTimeout        a call got no answer in time
    │   │   └── ProcessorsGone a call failed early: every processor stopped heartbeating
    │   └── NotReady           the readiness handshake got no pong in time
    └── ClosedError            the object was closed (pending calls fail with it)

Errors carry their context as attributes, not only in their text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ZJobsError(Exception):
    """Root of every error zjobs raises."""


class ProtocolError(ZJobsError):
    """Bytes that do not form a valid ZJP/1 message."""


class EncodeError(ZJobsError):
    """A value that msgpack cannot encode (for example a set or a custom object)."""


class BindError(ZJobsError):
    """An endpoint could not be bound: in use, malformed, or not permitted."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot bind {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class ConnectError(ZJobsError):
    """An endpoint could not be connected (usually a malformed address)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot connect {endpoint}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class KeyFileError(ZJobsError):
    """A CURVE key (certificate) file is missing, malformed, or not the kind needed.

    Attributes:
        path: the file (or key directory) at fault.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"key file {path}: {reason}")
        self.path = path
        self.reason = reason


class MembershipError(ZJobsError):
    """The current set of processors cannot be told: a DNS name does not resolve, resolves
    to nothing or gets no answer in time, or a system file cannot be read.

    Raised by the first reading (``Client.connect(membership=...)``); later readings that
    fail keep the last known set (see :mod:`zjobs.core.membership`).

    Attributes:
        source: what was read (a DNS name, a file).
        reason: what went wrong.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class StartError(ZJobsError):
    """A processor failed to start, for example because its resources factory raised."""


class CrashedError(ZJobsError):
    """The background thread or task of a processor or link died of an exception that was
    not a job's failure; raised from its next ``stop()``/``close()``.

    Attributes:
        owner: what crashed, e.g. ``"processor 'square'"`` or ``"link 'a->b'"``.
        cause: the exception that ended it (also ``__cause__``).
    """

    def __init__(self, owner: str, cause: BaseException) -> None:
        super().__init__(f"{owner} crashed: {type(cause).__name__}: {cause}")
        self.owner = owner
        self.cause = cause
        self.__cause__ = cause


class OptionsError(ZJobsError, ValueError):
    """Processor or client options that cannot be used: a value out of range, of the wrong
    type, or an unknown name.

    Attributes:
        problems: ``(option name, what is wrong)`` for every mistake found.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems))
        self.problems = list(problems)


class LoadError(ZJobsError, ValueError):
    """A ``MODULE:OBJECT`` reference cannot be used: bad syntax, module or attribute missing,
    the module raised on import, or the object is not what was asked for.

    Attributes:
        spec: the reference as given.
    """

    def __init__(self, spec: str, message: str) -> None:
        super().__init__(message)
        self.spec = spec


class RemoteError(ZJobsError):
    """A processor answered with an error response.

    Attributes:
        type: the ZJP/1 error type ("JobFailed", "BadRequest", ...).
        message: the processor's message, e.g. ``ValueError: boom``.
        id: the request id the error answers.
        processor: the name of the processor that answered.
        details: every key of the error map, including ones this version does not know.
    """

    def __init__(
        self,
        type: str,
        message: str,
        *,
        id: str | bytes | None = None,
        processor: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{type}: {message}" if message else type)
        self.type = type
        self.message = message
        self.id = id
        self.processor = processor
        self.details = details if details is not None else {"type": type, "message": message}

    @property
    def exception(self) -> str | None:
        """The class name of the exception the job raised, when the processor sent it."""
        value = self.details.get("exception")
        return value if isinstance(value, str) else None


class StageError(RemoteError):
    """A stage of a chain (a processor, or a link between two) failed.

    Raised by a :class:`~zjobs.Pipeline` for the first error of the work, wherever it
    happened; later stages never ran.

    Attributes:
        stage: the name of the processor (or link) that failed.
        path: the processors the work went through, ending with the last one that handled it.
    """

    def __init__(
        self,
        type: str,
        message: str,
        *,
        stage: str,
        path: Sequence[str] = (),
        id: str | bytes | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(type, message, id=id, processor=stage, details=details)
        self.args = (f"stage {stage!r} failed: {type}: {message}",)
        self.stage = stage
        self.path = list(path)


class Timeout(ZJobsError, TimeoutError):
    """Something did not happen in time; catchable as the builtin ``TimeoutError`` too."""


class SendTimeout(Timeout):
    """A request could not be queued before the send timeout (no processor, or all full)."""

    def __init__(self, endpoints: Sequence[str], timeout_s: float | None) -> None:
        super().__init__(
            f"could not send within {timeout_s}s to {', '.join(endpoints) or 'no endpoint'}"
        )
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s


class ReceiveTimeout(Timeout):
    """No response arrived before the receive timeout."""

    def __init__(self, timeout_s: float | None) -> None:
        super().__init__(f"no response within {timeout_s}s")
        self.timeout_s = timeout_s


class CallTimeout(Timeout):
    """A call got no response in time.

    Attributes:
        id: the request id.
        timeout_s: the time allowed for each attempt.
        attempts: how many times the request was sent.
    """

    def __init__(self, id: str | bytes, timeout_s: float, attempts: int = 1) -> None:
        tries = "" if attempts == 1 else f" after {attempts} attempts"
        super().__init__(f"no response to request {id!r} within {timeout_s}s{tries}")
        self.id = id
        self.timeout_s = timeout_s
        self.attempts = attempts


class ProcessorsGone(CallTimeout):
    """A waiting call was failed early: every processor the client heard heartbeats from has
    gone silent (or said it stopped), so no answer is coming.

    A :class:`CallTimeout`, with the same attributes, raised before the timeout.
    """

    def __init__(self, id: str | bytes, timeout_s: float, attempts: int = 1) -> None:
        super().__init__(id, timeout_s, attempts)
        self.args = (f"no processor left to answer request {id!r}: every processor stopped "
                     "sending heartbeats",)


class NotReady(Timeout):
    """The readiness handshake did not see enough processors answer a ping in time."""

    def __init__(
        self, endpoints: Sequence[str], timeout_s: float, seen: int, expected: int
    ) -> None:
        super().__init__(
            f"no pong from {expected - seen} of {expected} processor(s) within {timeout_s}s "
            f"(requests: {', '.join(endpoints) or 'in-memory'})"
        )
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s
        self.seen = seen
        self.expected = expected


class ClosedError(ZJobsError):
    """The client, sender, receiver or processor was closed."""
