"""zjobs.ClientOptions: the client's policy defined once, and everything that takes it.

The defaults are the clients' defaults from before the dataclass; every bad value is
refused naming its field; ``options=`` and keywords build the same client, and giving both
is an error; Client, AsyncClient, their ``connect``, Pipeline and ``zjobs send`` carry
the options into real calls (a timeout that fires, a retry count that resends) against
real processors.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from test_client_behaviour import WAIT_S, Driven, Gate

from zjobs import (
    AsyncClient,
    CallTimeout,
    Client,
    ClientOptions,
    OptionsError,
    Pipeline,
    ZmqProcessor,
    ZmqReceiver,
    ZmqSender,
)
from zjobs.cli import main
from zjobs.cli.connect import call_options
from zjobs.core.options import client_option_names
from zjobs.testing import wait_until

FIELDS = ("timeout_s", "ready_timeout_s", "expect_processors", "retries", "liveness",
          "send_timeout_s", "max_in_flight", "coalesce")

# What the client constructors defaulted to before ClientOptions existed.
TODAY = {"timeout_s": 30.0, "ready_timeout_s": 10.0, "expect_processors": None, "retries": 0,
         "liveness": None, "send_timeout_s": None, "max_in_flight": 10_000, "coalesce": 64}

# Quick to fail, slow to give up on readiness: the attempts are what is counted.
HELD: dict[str, Any] = {"timeout_s": 0.2, "retries": 2, "ready_timeout_s": WAIT_S}


@pytest.fixture
def gate() -> Iterator[tuple[ZmqProcessor, Gate]]:
    job = Gate()
    with ZmqProcessor(job, name="gate") as proc:
        yield proc, job
        job.open.set()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def connect(kind: str) -> Iterator[Callable[..., Driven]]:
    made: list[Driven] = []

    def make(proc: ZmqProcessor, **options: Any) -> Driven:
        made.append(client := Driven(kind, proc.endpoints.requests, proc.endpoints.responses,
                                     **options))
        return client

    yield make
    for client in made:
        client.shutdown()


def test_the_defaults_are_the_clients_defaults_until_now() -> None:
    assert ClientOptions().to_dict() == TODAY
    assert tuple(ClientOptions().to_dict()) == FIELDS == client_option_names()


def test_a_client_built_without_options_has_the_defaults(gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, _ = gate
    with Client(ZmqSender(proc.endpoints.requests), ZmqReceiver(proc.endpoints.responses)) as c:
        assert c.options == ClientOptions(expect_processors=1)
        assert (c.timeout_s, c.retries, c.expect_processors) == (30.0, 0, 1)
        assert (c.ready_timeout_s, c.send_timeout_s) == (10.0, None)
    with proc.client() as c:
        assert c.options == ClientOptions(expect_processors=1)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("timeout_s", 0, "must be positive"),
    ("timeout_s", -1.5, "must be positive"),
    ("timeout_s", math.nan, "must be positive"),
    ("timeout_s", None, "None is not allowed"),
    ("timeout_s", "5", "must be a number"),
    ("ready_timeout_s", 0.0, "must be positive"),
    ("expect_processors", 0, "at least 1"),
    ("expect_processors", 1.5, "whole number"),
    ("retries", -1, "must not be negative"),
    ("coalesce", -1, "must not be negative"),
    ("retries", True, "whole number"),
    ("retries", 2.0, "whole number"),
    ("liveness", 0, "at least 1"),
    ("send_timeout_s", -0.1, "must not be negative"),
    ("max_in_flight", 0, "at least 1"),
])
def test_each_bad_value_is_refused_naming_its_field(field: str, value: Any, says: str) -> None:
    with pytest.raises(OptionsError) as info:
        ClientOptions(**{field: value})
    assert [name for name, _ in info.value.problems] == [field]
    assert says in info.value.problems[0][1] and str(info.value).startswith(f"{field}: ")
    with pytest.raises(OptionsError, match=f"^{field}: "):
        ClientOptions().replace(**{field: value})


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(OptionsError) as info:
        ClientOptions(timeout_s=0, retries=-1, max_in_flight=0)
    assert [name for name, _ in info.value.problems] == ["timeout_s", "retries", "max_in_flight"]


def test_good_values_pass() -> None:
    options = ClientOptions(timeout_s=1, ready_timeout_s=0.5, expect_processors=3, retries=5,
                            liveness=2, send_timeout_s=0, max_in_flight=None)
    assert options.send_timeout_s == 0 and options.max_in_flight is None


def test_plain_values_round_trip_and_unknown_names_are_named() -> None:
    options = ClientOptions(timeout_s=2.5, retries=3, max_in_flight=None)
    assert ClientOptions.from_dict(options.to_dict()) == options
    assert ClientOptions.from_dict({"liveness": False}).liveness is None
    with pytest.raises(OptionsError) as info:
        ClientOptions.from_dict({"retires": 1, "timeout_s": 0})
    assert [name for name, _ in info.value.problems] == ["retires", "timeout_s"]
    with pytest.raises(TypeError, match="not a client option: retires"):
        options.replace(retires=1)


def test_clients_refuse_bad_and_unknown_keywords(gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, _ = gate
    ep = proc.endpoints
    with pytest.raises(OptionsError, match=r"^retries: "):
        Client.connect(ep.requests, ep.responses, retries=-1)
    with pytest.raises(TypeError, match=r"Client\.connect\(\): not a client option: retires"):
        Client.connect(ep.requests, ep.responses, retires=2)
    with pytest.raises(TypeError, match=r"AsyncClient\.connect\(\): not a client option: tmeout"):
        AsyncClient.connect(ep.requests, ep.responses, tmeout=2)
    with ZmqSender(ep.requests) as sender, ZmqReceiver(ep.responses) as receiver:
        with pytest.raises(TypeError, match=r"Client\(\): not a client option: security"):
            Client(sender, receiver, security=None)
        with pytest.raises(TypeError, match="options must be a ClientOptions"):
            Client(sender, receiver, options={"retries": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Pipeline\(\): not a client option: retires"):
        Pipeline([proc], retires=1)


def test_keywords_given_with_options_override_its_fields(
        gate: tuple[ZmqProcessor, Gate]) -> None:
    # As for processors: options=, and keywords for the fields to change.
    proc, _ = gate
    ep = proc.endpoints
    options = ClientOptions(retries=1, timeout_s=5)
    wanted = ClientOptions(retries=1, timeout_s=1, expect_processors=1)
    with Client.connect(ep.requests, ep.responses, options=options, timeout_s=1) as client:
        assert client.options == wanted
    with ZmqSender(ep.requests) as sender, ZmqReceiver(ep.responses) as receiver:
        with Client(sender, receiver, options=options, timeout_s=1) as client:
            assert client.options == wanted
    with Pipeline([proc], options=options, timeout_s=1) as pipeline:
        assert pipeline.options == wanted.replace(coalesce=0)
    with proc.client(options=options, timeout_s=1) as client:  # passed on
        assert client.options == wanted
    with pytest.raises(OptionsError, match="timeout_s"):
        Client.connect(ep.requests, ep.responses, options=options, timeout_s=0)


def test_async_client_takes_options_too(gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, _ = gate

    async def build() -> tuple[ClientOptions, int]:
        async with AsyncClient.connect(proc.endpoints.requests, proc.endpoints.responses,
                                       options=ClientOptions(retries=4)) as client:
            return client.options, client.retries

    assert asyncio.run(build()) == (ClientOptions(retries=4, expect_processors=1), 4)


def test_connect_waits_for_every_endpoint_unless_told(gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, _ = gate
    with ZmqProcessor(lambda request, resources: request, name="other") as other:
        requests = [proc.endpoints.requests, other.endpoints.requests]
        responses = [proc.endpoints.responses, other.endpoints.responses]
        for given in ({"options": ClientOptions(retries=1)}, {"retries": 1}):
            with Client.connect(requests, responses, **given) as client:
                assert client.expect_processors == 2
                assert client.options == ClientOptions(retries=1, expect_processors=2)
        for given in ({"options": ClientOptions(expect_processors=1)},
                      {"expect_processors": 1}):
            with Client.connect(requests, responses, **given) as client:
                assert client.expect_processors == 1


@pytest.mark.parametrize("how", ["options", "keywords"])
def test_options_and_keywords_time_out_and_resend_alike(
        how: str, connect: Callable[..., Driven], gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, job = gate
    given: dict[str, Any] = {"options": ClientOptions(**HELD)} if how == "options" else HELD
    client = connect(proc, **given)
    assert client.options == ClientOptions(**HELD, expect_processors=1)
    assert (client.timeout_s, client.retries, client.ready_timeout_s) == (0.2, 2, WAIT_S)
    client.wait_ready()
    with pytest.raises(CallTimeout) as info:
        client.call("held")  # the client's timeout_s and retries, no per-call ones
    assert info.value.attempts == 3
    assert client.resent == 2
    job.open.set()
    # The processor got every attempt: it ran the job once, and answered the two resends
    # from its replay window.
    wait_until(lambda: proc.counters.replays == 2, WAIT_S)
    assert job.runs[repr("held")] == 1
    assert client.call("after", retries=0, timeout_s=WAIT_S) == "after"


def test_a_call_s_own_bad_options_are_named(connect: Callable[..., Driven],
                                             gate: tuple[ZmqProcessor, Gate]) -> None:
    proc, job = gate
    job.open.set()
    client = connect(proc, options=ClientOptions(timeout_s=WAIT_S))
    with pytest.raises(OptionsError) as info:
        client.call(1, timeout_s=0, retries=-1)
    assert [name for name, _ in info.value.problems] == ["timeout_s", "retries"]


@pytest.mark.parametrize("how", ["options", "keywords"])
def test_a_pipeline_hands_its_options_to_its_caller(
        how: str, gate: tuple[ZmqProcessor, Gate]) -> None:
    last, job = gate
    given: dict[str, Any] = {"options": ClientOptions(**HELD)} if how == "options" else HELD
    with ZmqProcessor(lambda request, resources: request, name="first") as first, \
            Pipeline([first, last], **given) as pipeline:
        assert pipeline.options == ClientOptions(**HELD, expect_processors=1, coalesce=0)
        with pytest.raises(CallTimeout) as info:
            pipeline.call("held")
        assert info.value.attempts == 3
        assert pipeline.resent == 2
        job.open.set()
        # Every attempt went into the first stage: it answered the resends from its window.
        wait_until(lambda: first.counters.replays == 2, WAIT_S)
        wait_until(lambda: last.counters.replays == 2, WAIT_S)
        assert job.runs[repr("held")] == 1


def test_zjobs_send_builds_its_options_from_its_flags(gate: tuple[ZmqProcessor, Gate]) -> None:
    assert call_options(2.5, 3) == ClientOptions(timeout_s=2.5, ready_timeout_s=2.5,
                                                 send_timeout_s=2.5, retries=3)
    assert call_options(1.0).retries == 0  # zjobs ping: no resends
    proc, job = gate
    result = CliRunner().invoke(main, [
        "send", "--requests", proc.endpoints.requests, "--responses", proc.endpoints.responses,
        "--timeout", "1", "--retries", "2", '"held"'], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "after 3 attempts" in result.stderr
    job.open.set()
    wait_until(lambda: proc.counters.replays == 2, WAIT_S)
    assert job.runs[repr("held")] == 1
