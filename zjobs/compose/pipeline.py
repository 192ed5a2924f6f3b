"""Pipelines: declare stages A -> B -> C once, then ``call(x)`` returns C(B(A(x))).

A :class:`Pipeline` is a caller of a chain: it sends work to the first stage and listens
for the result on the last stage's response endpoint, on its own topic. Between the
stages it runs one :class:`~zjobs.compose.link.Link` per hop in background threads, each
subscribed to that topic only, so:

* the caller gets the final result, or the first error with the name of the stage that
  failed (:class:`~zjobs.StageError`), and never the intermediate results;
* the intermediate results stay visible on the earlier stages' response endpoints to
  anyone listening there (``zjobs listen``), on the pipeline's topic;
* many callers share one pipeline: it is thread-safe, thousands of calls may be in flight,
  and other pipelines (or clients) over the same processors use other topics, so their
  links never see each other's work.

Retries: with ``retries=N`` a call unanswered within ``timeout_s`` is sent into the first
stage again, with the *same id*, up to N more times (the client's Lazy Pirate, end to end).
Every attempt is marked for the replay windows (``"dedup"``, and ``zjobs.dedup`` in meta so
that links keep forwarding it marked): a stage that already ran the work answers the repeat
from its window and the chain carries that answer on, so a stage that was restarted, or a
message lost on the way, costs a retry and not a result, and each stage's effects happen
once. A stage killed with SIGKILL loses its window with it: work it finished but whose
result never left it runs again in its successor.

When the links already run elsewhere (as ``zjobs link`` daemons or under ``zjobs up``),
:meth:`Pipeline.connect` builds the caller alone. The first ``call`` (or :meth:`start`)
sends a ping through the whole chain and waits for it to come back from the last stage,
so no early work is lost to a subscription that is not live yet::

    with Pipeline([parse, score, store]) as pipeline:   # processors, or Stage(...)s
        print(pipeline.call("some text"))
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, replace
from typing import Any, Self

import zmq

from zjobs.client.sync import Client
from zjobs.compose.link import Link, Transform, endpoints_of
from zjobs.core.options import ClientOptions, build_client_options, expecting
from zjobs.errors import CrashedError, RemoteError, StageError
from zjobs.processor.base import Endpoints, HasEndpoints
from zjobs.transport.receiver import ZmqReceiver
from zjobs.transport.sender import USE_SENDER_DEFAULT, UseSenderDefault, ZmqSender
from zjobs.transport.sockets import ClientSecurity, endpoint_list
from zjobs.wire.chain import DEDUP_KEY, PATH_KEY, carried_error, full_path
from zjobs.wire.protocol import Id, Meta, Response

__all__ = ["Pipeline", "Stage"]

_TOPIC_PREFIX = "zjobs.pipeline."


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of a pipeline: a running processor's endpoints, and how work enters it.

    Args:
        endpoints: where the processor listens.
        name: names the stage in logs and in the link that feeds it (errors are named after
            the processor that answered, which is the processor's own name).
        transform: applied by the link feeding this stage to the previous stage's result.
        keep: a filter on the previous stage's result; rejected work ends silently.
    """

    endpoints: Endpoints
    name: str = ""
    transform: Transform | None = None
    keep: Callable[[Any], bool] | None = None

    @classmethod
    def of(cls, processor: HasEndpoints, **options: Any) -> Stage:
        """The stage served by a processor of any kind (or anything that has ``endpoints``,
        such as a started :class:`~zjobs.ProcessorProcess`); named after it when it has a
        name."""
        if processor.name:
            options.setdefault("name", processor.name)
        return cls(endpoints_of(processor), **options)


def _stage(item: Stage | HasEndpoints | Endpoints, index: int) -> Stage:
    if isinstance(item, Stage):
        return item
    if isinstance(item, Endpoints):
        return Stage(item, name=f"stage{index}")
    return Stage.of(item) if item.name else Stage.of(item, name=f"stage{index}")


class _ChainEntry:
    """An MpSend that marks everything it sends as chained work (``zjobs.path = []``), and
    work that may be sent again as retried (``zjobs.dedup``) for the links on the way."""

    def __init__(self, sender: ZmqSender) -> None:
        self.sender = sender
        self.endpoints = sender.endpoints

    def __repr__(self) -> str:
        return repr(self.sender)

    def send(self, request: Any, *, id: Id | None = None, reply_to: str | bytes | None = None,
             meta: Meta | None = None, deadline_ms: int | None = None, ping: bool = False,
             timeout_s: float | UseSenderDefault | None = USE_SENDER_DEFAULT,
             dedup: bool = False) -> Id:
        meta = {**(meta or {}), PATH_KEY: []}
        if dedup:
            meta[DEDUP_KEY] = True
        return self.sender.send(request, id=id, reply_to=reply_to, meta=meta,
                                deadline_ms=deadline_ms, ping=ping, timeout_s=timeout_s,
                                dedup=dedup)

    def close(self) -> None:
        self.sender.close()


class _ChainExit:
    """An McReceive that turns pongs carrying an upstream error back into error responses,
    and writes the failing stage and the path into every error's details."""

    def __init__(self, receiver: ZmqReceiver) -> None:
        self.receiver = receiver

    def __repr__(self) -> str:
        return repr(self.receiver)

    def receive(self, timeout: float | None = None) -> Response:
        response = self.receiver.receive(timeout)
        out = carried_error(response) or response
        if out.error is None:
            return out
        details = {"stage": out.processor, **out.error.details, "path": full_path(response)}
        return replace(out, error=replace(out.error, details=details))

    def subscribe(self, topic: str | bytes) -> None:
        self.receiver.subscribe(topic)

    def close(self) -> None:
        self.receiver.close()


def _refuse_repeated_stages(stages: list[Stage]) -> None:
    first: dict[str, int] = {}
    for index, stage in enumerate(stages):
        earlier = first.setdefault(stage.endpoints.requests, index)
        if earlier != index:
            raise ValueError(
                f"stage {stage.name or index!r} appears twice (stages {earlier} and {index}, "
                f"requests {stage.endpoints.requests}): a cycle, the links would pass the "
                "work round forever")


def _stage_error(exc: RemoteError) -> StageError:
    stage, path = exc.details.get("stage"), exc.details.get("path")
    return StageError(exc.type, exc.message,
                      stage=stage if isinstance(stage, str) else exc.processor,
                      path=path if isinstance(path, list) else (), id=exc.id,
                      details=exc.details)


class Pipeline:
    """Calls a chain of processors as one function.

    Args:
        stages: the stages in order: :class:`Stage`\\ s, processors of any kind (sync or
            asyncio, anything that has ``endpoints``), or :class:`~zjobs.Endpoints` of
            running processors.
        context: the zmq context (the shared instance by default).
        security: client-side security for every socket.
        options: how the pipeline's caller calls (:class:`~zjobs.ClientOptions`, or its
            fields as keywords, which override it), end to end: ``timeout_s`` is the default time
            one attempt of a call may take through the whole chain; ``ready_timeout_s``
            how long starting (links' and the caller's handshakes) may take; ``retries``
            the default number of times a call unanswered within ``timeout_s`` is sent
            again with the same id (see the module docstring; 0 sends it once). Readiness
            waits for every replica of the last stage unless ``expect_processors`` says.

    Raises:
        ValueError: no stages; a stage given twice (its links would make a cycle).
        TypeError: a keyword is not a client option, or ``options`` and keywords were
            both given.
        OptionsError: an option's value cannot be used (each named).
    """

    def __init__(
        self,
        stages: Iterable[Stage | HasEndpoints | Endpoints],
        *,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ClientSecurity | None = None,
        options: ClientOptions | None = None,
        **keywords: Any,
    ) -> None:
        chosen = build_client_options(options, keywords, "Pipeline")
        listed = [_stage(item, i) for i, item in enumerate(stages)]
        if not listed:
            raise ValueError("a pipeline needs at least one stage")
        _refuse_repeated_stages(listed)
        topic = _TOPIC_PREFIX + secrets.token_hex(16)
        links = [
            Link(a.endpoints, b.endpoints.requests, name=f"{a.name}->{b.name}", topic=topic,
                 transform=b.transform, keep=b.keep, context=context, security=security,
                 ready_timeout_s=chosen.ready_timeout_s)
            for a, b in itertools.pairwise(listed)
        ]
        client = _chain_client(listed[0].endpoints.requests, listed[-1].endpoints.responses,
                               topic=topic, context=context, security=security,
                               options=chosen)
        self._assemble(listed, links, client)

    def _assemble(self, stages: list[Stage], links: list[Link], client: Client) -> None:
        self.stages = stages
        self.links = links
        self._client = client
        self._started = False

    @classmethod
    def connect(
        cls,
        requests: str | Sequence[str],
        responses: str | Sequence[str],
        *,
        topic_prefix: str = "",
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        security: ClientSecurity | None = None,
        options: ClientOptions | None = None,
        **keywords: Any,
    ) -> Pipeline:
        """A caller of a chain whose links run elsewhere (``zjobs link``, ``zjobs up``).

        Args:
            requests: the first stage's request endpoint(s) (several for a group).
            responses: the last stage's response endpoint(s), one per replica: the caller
                is ready once a ping through the chain came back from each of them.
            topic_prefix: the prefix the links take work from (their ``topic``); the
                caller's topic is this prefix plus 32 random hex characters.

        The other arguments (``options``, or its fields as keywords) are those of
        :class:`Pipeline`.
        """
        chosen = build_client_options(options, keywords, "Pipeline.connect")
        pipeline = cls.__new__(cls)
        pipeline._assemble([], [], _chain_client(
            requests, responses, topic=topic_prefix + secrets.token_hex(16), context=context,
            security=security, options=chosen))
        return pipeline

    def __repr__(self) -> str:
        names = " -> ".join(s.name for s in self.stages) or "connected"
        return f"<Pipeline {names} links={len(self.links)} caller={self._client!r}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def topic(self) -> str:
        """The topic the pipeline's work travels on."""
        return self._client.topic

    @property
    def unmatched(self) -> int:
        """Responses that reached the caller but answered none of its calls (late ones)."""
        return self._client.unmatched

    @property
    def resent(self) -> int:
        """Calls sent into the chain again because an attempt got no answer in time."""
        return self._client.resent

    @property
    def options(self) -> ClientOptions:
        """The :class:`~zjobs.ClientOptions` of the pipeline's caller (``coalesce`` is
        always 0: links forward one response per request, so no batch travels a chain)."""
        return self._client.options

    def start(self, timeout_s: float | None = None) -> Self:
        """Start the links, then ping through the whole chain until the pong comes back.

        Raises:
            NotReady: a stage did not answer in time (everything started is stopped).
        """
        if not self._started:
            self._started = True
            try:
                for link in self.links:
                    link.start()
                self._client.wait_ready(timeout_s)
            except BaseException:
                self.close()
                raise
        return self

    def submit(self, value: Any, *, timeout_s: float | None = None,
               meta: Meta | None = None, retries: int | None = None) -> Future[Any]:
        """Send ``value`` into the first stage; return a future for the last stage's result.

        The future fails with :class:`~zjobs.StageError` (``.stage`` names the processor or
        link that failed) for the first error on the way, :class:`~zjobs.CallTimeout` when
        none of its attempts (1 + ``retries``, the pipeline's default when None) was
        answered within ``timeout_s``, :class:`~zjobs.ClosedError` when the pipeline
        closes first.
        """
        self.start()
        inner = self._client.submit(value, timeout_s=timeout_s, meta=meta, retries=retries)
        outer: Future[Any] = Future()

        def settle(done: Future[Any]) -> None:
            if done.cancelled():
                return
            exc = done.exception()
            try:
                if exc is None:
                    outer.set_result(done.result())
                else:
                    outer.set_exception(_stage_error(exc) if isinstance(exc, RemoteError)
                                        else exc)
            except InvalidStateError:
                pass  # the caller cancelled it

        inner.add_done_callback(settle)
        outer.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        return outer

    def call(self, value: Any, *, timeout_s: float | None = None,
             meta: Meta | None = None, retries: int | None = None) -> Any:
        """C(B(A(value))): the last stage's result.

        Raises:
            StageError: a stage failed (``.stage`` names it); later stages never ran.
            CallTimeout: no answer to any attempt within ``timeout_s``.
        """
        return self.submit(value, timeout_s=timeout_s, meta=meta, retries=retries).result()

    def call_response(self, value: Any, *, timeout_s: float | None = None,
                      meta: Meta | None = None, retries: int | None = None) -> Response:
        """The last stage's whole response (its meta has the path), or the carried error
        as an error response whose ``processor`` is the failing stage."""
        self.start()
        return self._client.call_response(value, timeout_s=timeout_s, meta=meta,
                                          retries=retries)

    def ping(self, timeout_s: float | None = None) -> float:
        """Send a ping through the whole chain; return the round-trip seconds.

        Raises:
            CallTimeout: it did not come back in time (a stage or a link is down).
        """
        self.start()
        return self._client.ping(timeout_s)

    def close(self) -> None:
        """Stop the links and close the caller; pending calls fail with ClosedError.
        Idempotent.

        Raises:
            CrashedError: a link's thread had died (the first one; every link is stopped).
        """
        self._client.close()
        crash: CrashedError | None = None
        for link in self.links:
            try:
                link.stop()
            except CrashedError as exc:
                crash = crash or exc
        if crash is not None:
            raise crash


def _chain_client(requests: str | Sequence[str], responses: str | Sequence[str], *,
                  topic: str,
                  context: zmq.Context[zmq.Socket[bytes]] | None,
                  security: ClientSecurity | None, options: ClientOptions) -> Client:
    exits = endpoint_list(responses)
    sender = ZmqSender(endpoint_list(requests), context=context, security=security)
    try:
        receiver = ZmqReceiver(exits, topics=(), context=context, security=security)
    except BaseException:
        sender.close()
        raise
    # Chain pings reach the last stage's replicas in turn (the last link load-balances):
    # count distinct pongs until every replica answered, as Client does for a group.
    try:
        # Links forward one response per request: a batch cannot travel a chain whole, so
        # the chain's client sends every call alone.
        return Client(_ChainEntry(sender), _ChainExit(receiver), topic=topic,
                      options=expecting(options, max(1, len(exits))).replace(coalesce=0))
    except BaseException:  # liveness without heartbeats: the client never took the sockets
        sender.close()
        receiver.close()
        raise
