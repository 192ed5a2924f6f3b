"""The conventions of chained work, shared by links, pipelines and their callers.

Pure functions over :class:`~zjobs.wire.protocol.Response` and meta maps; no sockets. Any ZJP/1
peer, in any language, can take part in a chain by following them:

* **One id, one topic.** A link forwards a response as a request with the *same id* and the
  *same topic* (``reply_to`` = the topic the response was published on). Work keeps the
  topic its first sender chose, so a caller that subscribes its private topic on the
  *last* stage's response endpoint gets the final result and nothing else: intermediate
  results are published on the earlier stages' endpoints, which it does not connect to
  (``zjobs listen`` on those endpoints still shows them).
* **The path.** ``meta["zjobs.path"]`` lists the processors that handled the work before
  the one that published the response; :func:`full_path` adds that last one. A request
  whose meta has a ``zjobs.path`` list is *chained*: a caller starts it with ``[]``.
* **Chain pings.** A pong whose meta has ``zjobs.path`` is forwarded by links as a ping, so
  a ping sent to the first stage comes back from the last one: the caller's readiness
  handshake proves every link subscription on the way is live.
* **Errors travel too.** A link that receives an error response sends a ping downstream
  carrying ``meta["zjobs.error"]`` (the error map plus ``"stage"``, the failing
  processor's or link's name). Processors answer pings without running the job and echo
  the meta, so the error reaches the end of the chain on the work's topic, exactly where
  its result would have gone. :func:`carried_error` turns such a pong back into an error
  response.
* **Retried work stays retryable.** A caller that may send the work again with the same id
  (a retry) marks its request ``"dedup": true`` and its meta ``zjobs.dedup = true``; links
  forward such work marked ``"dedup"`` too, so that every stage's replay window answers a
  retry from memory and each stage's effects happen once.
* **Bounded.** Links that feed each other in a cycle would pass the work round forever, so
  a link does not forward work whose path already has :data:`MAX_HOPS` entries: it sends a
  ``LinkFailed`` error (exception ``ChainTooLong``) instead, and each link adds 1 to a
  carried error's ``"hops"`` and drops one that has reached the limit.
* **Dead letters.** Work with no topic (its first request had no ``reply_to``) has nobody
  waiting; its errors travel on :data:`DEAD_LETTER_TOPIC` instead, and the link logs a
  warning. Watch them with ``zjobs listen --responses EP --topic zjobs.dead-letter``.
"""

from __future__ import annotations

from typing import Any, Final

from zjobs.wire.protocol import ERROR, PONG, ErrorInfo, Meta, Response

__all__ = [
    "CHAIN_TOO_LONG",
    "DEAD_LETTER_TOPIC",
    "DEDUP_KEY",
    "ERROR_KEY",
    "HOPS_KEY",
    "LINK_FAILED",
    "MAX_HOPS",
    "PATH_KEY",
    "carried_error",
    "chained_meta",
    "error_meta",
    "full_path",
    "hopped",
    "is_chained",
    "is_retried",
    "path_length",
]

PATH_KEY: Final = "zjobs.path"
"""Meta key: the names of the processors the work went through, oldest first."""

ERROR_KEY: Final = "zjobs.error"
"""Meta key of a chain ping carrying an upstream error: the error map plus ``"stage"``."""

DEDUP_KEY: Final = "zjobs.dedup"
"""Meta key, true when the chain's caller may send the work again with the same id: links
then forward it marked ``"dedup"``."""

DEAD_LETTER_TOPIC: Final = "zjobs.dead-letter"
"""Topic of the errors of work that has no topic, so nobody waits for it."""

LINK_FAILED: Final = "LinkFailed"
"""Error type for work a link could not forward (its filter or transform raised, or the
transformed value cannot be encoded, or the chain is too long)."""

MAX_HOPS: Final = 64
"""The longest chain a link forwards along: work whose path has this many processors, or an
error carried along this many links, is a cycle of links (or a chain nobody should build)."""

CHAIN_TOO_LONG: Final = "ChainTooLong"
"""The ``"exception"`` of the ``LinkFailed`` error a link sends instead of work whose path
is :data:`MAX_HOPS` long."""

HOPS_KEY: Final = "hops"
"""Key of the carried error map (``zjobs.error``): the links it went through since the
failure (absent: none)."""


def is_chained(meta: Meta | None) -> bool:
    """True when ``meta`` marks chained work (it has a ``zjobs.path`` list)."""
    return meta is not None and isinstance(meta.get(PATH_KEY), list)


def is_retried(meta: Meta | None) -> bool:
    """True when ``meta`` marks work its caller may send again (``zjobs.dedup`` is true)."""
    return meta is not None and meta.get(DEDUP_KEY) is True


def chained_meta(meta: Meta | None, processor: str) -> Meta:
    """A copy of ``meta`` with ``processor`` appended to its path (created when absent)."""
    out = dict(meta) if meta is not None else {}
    path = out.get(PATH_KEY)
    out[PATH_KEY] = [*path, processor] if isinstance(path, list) else [processor]
    return out


def error_meta(meta: Meta, stage: str, error: ErrorInfo) -> Meta:
    """``meta`` plus the ``zjobs.error`` entry for ``error`` raised at ``stage``.

    An error already carried (from further upstream) is kept: the first failure wins.
    """
    if isinstance(meta.get(ERROR_KEY), dict):
        return meta
    return {**meta, ERROR_KEY: {**error.to_map(), "stage": stage}}


def path_length(meta: Meta | None) -> int:
    """How many processors the work went through before the one that answered: the length
    of ``zjobs.path`` (0 when there is none)."""
    path = meta.get(PATH_KEY) if meta is not None else None
    return len(path) if isinstance(path, list) else 0


def hopped(meta: Meta) -> tuple[Meta, int]:
    """``meta`` with its carried error's ``"hops"`` one higher, and that new count (a meta
    without a carried error map is returned as is, with 0)."""
    carried = meta.get(ERROR_KEY)
    if not isinstance(carried, dict):
        return meta, 0
    hops = carried.get(HOPS_KEY)
    count = (hops if type(hops) is int and hops >= 0 else 0) + 1
    return {**meta, ERROR_KEY: {**carried, HOPS_KEY: count}}, count


def carried_error(response: Response) -> Response | None:
    """The error response a chain ping's pong carries, or None if it carries none.

    The result has status error, the carried error map (with ``"stage"`` in its details),
    the failing stage as its processor, and the pong's id, topic, meta and instance.
    """
    if response.status != PONG or response.meta is None:
        return None
    carried: Any = response.meta.get(ERROR_KEY)
    if not isinstance(carried, dict):
        return None
    stage = carried.get("stage")
    stage_name = stage if isinstance(stage, str) else response.processor
    error = ErrorInfo(str(carried.get("type", "")), str(carried.get("message", "")),
                      dict(carried))
    return Response(id=response.id, status=ERROR, error=error, processor=stage_name,
                    meta=response.meta, topic=response.topic, instance=response.instance)


def full_path(response: Response) -> list[str]:
    """Every processor the work went through, the one that published ``response`` last.

    For a carried error the path ends at the stage that failed.
    """
    path = response.meta.get(PATH_KEY) if response.meta is not None else None
    names = [str(name) for name in path] if isinstance(path, list) else []
    if response.meta is not None and isinstance(response.meta.get(ERROR_KEY), dict):
        return names
    return [*names, response.processor]
