"""Membership sources and watchers: the set of processors changes while a client runs."""

from __future__ import annotations

import asyncio
import collections
import threading
from pathlib import Path
from typing import Any

import pytest

import zjobs
from zjobs.aio import AsyncMembershipWatcher
from zjobs.core.membership import MembershipTracker
from zjobs.testing import running_processor, wait_until


class Mutable:
    """A membership source the test changes (or makes fail) by assignment."""

    def __init__(self, members: zjobs.Members) -> None:
        self.value: zjobs.Members | Exception = members
        self.reads = 0
        self._lock = threading.Lock()

    def members(self) -> zjobs.Members:
        with self._lock:
            self.reads += 1
            if isinstance(self.value, Exception):
                raise self.value
            return self.value


def members_of(*processors: zjobs.ZmqProcessor) -> zjobs.Members:
    eps = [p.connect_endpoints for p in processors]
    return zjobs.Members([e.requests for e in eps], [e.responses for e in eps])


def job(request: Any, resources: Any) -> Any:
    return request


# -- the decision ------------------------------------------------------------------------


def test_members_are_sorted_sets_and_compare_by_content() -> None:
    a = zjobs.Members(["tcp://b:1", "tcp://a:1", "tcp://a:1"], "tcp://a:2")
    assert a.requests == ("tcp://a:1", "tcp://b:1")
    assert a.responses == ("tcp://a:2",)
    assert a == zjobs.Members(["tcp://a:1", "tcp://b:1"], ["tcp://a:2"])
    assert not zjobs.Members([], [])


def test_tracker_applies_changes_only_and_keeps_the_last_set_on_failure() -> None:
    first = zjobs.Members(["tcp://a:1"], ["tcp://a:2"])
    second = zjobs.Members(["tcp://a:1", "tcp://b:1"], ["tcp://a:2", "tcp://b:2"])
    tracker = MembershipTracker("test", first)
    assert tracker.read(first) is None
    assert tracker.read(second) == second
    error = zjobs.MembershipError("name.test", "no such name")
    assert tracker.read(error) is None
    assert tracker.read(zjobs.Members([], [])) is None  # nothing at all: a failure too
    assert (tracker.current, tracker.failures, tracker.changes) == (second, 2, 1)
    assert tracker.last_error is not None and "no processors found" in str(tracker.last_error)
    assert tracker.read(second) is None
    assert tracker.last_error is None
    assert tracker.readings == 5


def test_static_membership_is_todays_behaviour() -> None:
    static = zjobs.StaticMembership("tcp://a:1", "tcp://a:2")
    assert isinstance(static, zjobs.Membership)
    assert static.members() == zjobs.Members("tcp://a:1", "tcp://a:2")


# -- a system file as the source ---------------------------------------------------------


SYSTEM = """
[processors.score]
job = "jobs:score"
replicas = {n}
requests = "tcp://*:{{i}}5"
responses = "tcp://10.0.0.1:{{i}}6"

[processors.other]
job = "jobs:other"
requests = "ipc:///tmp/other.req"
responses = "ipc:///tmp/other.pub"
"""


def test_system_file_membership_reads_the_file_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    path.write_text(SYSTEM.format(n=1), encoding="utf-8")
    source = zjobs.SystemFileMembership(path, "score")
    assert source.members() == zjobs.Members(["tcp://127.0.0.1:05"], ["tcp://10.0.0.1:06"])
    path.write_text(SYSTEM.format(n=3), encoding="utf-8")  # another size: seen as changed
    assert source.members().requests == ("tcp://127.0.0.1:05", "tcp://127.0.0.1:15",
                                         "tcp://127.0.0.1:25")
    both = zjobs.SystemFileMembership(path, ["score", "other"])
    assert "ipc:///tmp/other.req" in both.members().requests


def test_system_file_membership_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "system.toml"
    with pytest.raises(zjobs.MembershipError, match="cannot read") as info:
        zjobs.SystemFileMembership(path, "score").members()
    assert info.value.source == str(path)
    path.write_text(SYSTEM.format(n=1), encoding="utf-8")
    with pytest.raises(zjobs.MembershipError, match="no processor 'nope'"):
        zjobs.SystemFileMembership(path, "nope").members()
    path.write_text("[processors.score\n", encoding="utf-8")
    with pytest.raises(zjobs.MembershipError, match="invalid TOML"):
        zjobs.SystemFileMembership(path, "score").members()


# -- a client whose processors change ---------------------------------------------------


def answered_by(client: zjobs.Client, count: int) -> collections.Counter[str]:
    return collections.Counter(client.call_response(n, timeout_s=10).processor
                               for n in range(count))


def test_client_follows_its_membership_grow_and_shrink() -> None:
    with running_processor(job, name="p1") as p1, running_processor(job, name="p2") as p2:
        source = Mutable(members_of(p1))
        with zjobs.Client.connect(membership=source, membership_interval_s=0.02,
                                  timeout_s=10) as client:
            assert client.watcher is not None
            assert answered_by(client, 10) == {"p1": 10}
            source.value = members_of(p1, p2)
            wait_until(lambda: len(client.sender.endpoints) == 2)  # type: ignore[attr-defined]
            # PUSH round-robins over both: p2 gets its share without any restart.
            wait_until(lambda: answered_by(client, 10)["p2"] >= 3, timeout_s=20)
            source.value = members_of(p2)
            wait_until(lambda: len(client.sender.endpoints) == 1)  # type: ignore[attr-defined]
            assert answered_by(client, 20) == {"p2": 20}
            assert client.watcher.tracker.changes == 2
        assert not client.watcher.tracker.last_error


def test_a_failing_source_keeps_the_last_known_set() -> None:
    with running_processor(job, name="p1") as p1:
        source = Mutable(members_of(p1))
        with zjobs.Client.connect(membership=source, membership_interval_s=0.02,
                                  timeout_s=10) as client:
            assert client.call(1) == 1
            source.value = zjobs.MembershipError("name.test", "no such name")
            reads = source.reads
            wait_until(lambda: source.reads >= reads + 3)
            assert client.watcher is not None and client.watcher.tracker.failures >= 2
            assert [client.call(n) for n in range(5)] == list(range(5))
            source.value = RuntimeError("a bug in the source")  # logged, counted, kept
            wait_until(lambda: client.watcher is not None and isinstance(
                client.watcher.tracker.last_error, zjobs.MembershipError)
                and "RuntimeError" in str(client.watcher.tracker.last_error))
            assert client.call(7) == 7


def test_connect_raises_when_the_first_reading_fails() -> None:
    source = Mutable(zjobs.Members([], []))
    source.value = zjobs.MembershipError("name.test", "no such name")
    with pytest.raises(zjobs.MembershipError, match=r"name\.test: no such name"):
        zjobs.Client.connect(membership=source)
    with pytest.raises(ValueError, match="not both"):
        zjobs.Client.connect("tcp://127.0.0.1:1", "tcp://127.0.0.1:2",
                             membership=zjobs.StaticMembership("tcp://a:1", "tcp://a:2"))


def test_update_endpoints_reports_a_bad_endpoint_and_applies_the_rest() -> None:
    with running_processor(job, name="p1") as p1, running_processor(job, name="p2") as p2:
        eps1, eps2 = p1.connect_endpoints, p2.connect_endpoints
        with zjobs.Client.connect(eps1.requests, eps1.responses, timeout_s=10) as client:
            assert client.call(1) == 1
            with pytest.raises(zjobs.ConnectError) as info:
                client.update_endpoints([eps1.requests, "nonsense://x"],
                                        [eps1.responses, eps2.responses])
            assert info.value.endpoint == "nonsense://x"
            assert client.call(2) == 2
        with pytest.raises(zjobs.ClosedError):
            client.update_endpoints([eps2.requests], [eps2.responses])


def test_removed_response_endpoints_stay_subscribed_for_one_call_timeout() -> None:
    with running_processor(job, name="p1") as p1, running_processor(job, name="p2") as p2:
        eps1, eps2 = p1.connect_endpoints, p2.connect_endpoints
        with zjobs.Client.connect([eps1.requests, eps2.requests],
                                  [eps1.responses, eps2.responses], timeout_s=0.3) as client:
            client.wait_ready()
            client.update_endpoints([eps2.requests], [eps2.responses])
            receiver = client.receiver
            assert isinstance(receiver, zjobs.ZmqReceiver)
            assert client.sender.endpoints == [eps2.requests]  # type: ignore[attr-defined]
            assert eps1.responses in receiver.endpoints  # still draining
            # Whoever reads the socket drops it once the call timeout passed.
            wait_until(lambda: client.call(0) == 0 and receiver.endpoints == [eps2.responses])


# -- the asyncio watcher -------------------------------------------------------------------


async def test_async_watcher_applies_changes_on_the_loop() -> None:
    a = zjobs.Members("tcp://a:1", "tcp://a:2")
    b = zjobs.Members(["tcp://a:1", "tcp://b:1"], ["tcp://a:2", "tcp://b:2"])
    source = Mutable(a)
    applied: list[tuple[zjobs.Members, bool]] = []
    loop = asyncio.get_running_loop()

    def apply(members: zjobs.Members) -> None:
        applied.append((members, asyncio.get_running_loop() is loop))

    async with AsyncMembershipWatcher(source, apply, interval_s=0.01) as watcher:
        assert applied == [(a, True)]
        source.value = b
        while len(applied) < 2:
            await asyncio.sleep(0.01)
        source.value = zjobs.MembershipError("name.test", "timed out")
        reads = source.reads
        while source.reads < reads + 2:
            await asyncio.sleep(0.01)
        assert watcher.tracker is not None and watcher.tracker.failures >= 1
    assert applied == [(a, True), (b, True)]
    source.value = zjobs.MembershipError("name.test", "no such name")
    with pytest.raises(zjobs.MembershipError):
        await AsyncMembershipWatcher(source, apply).start()


def test_a_link_follows_its_downstream_membership() -> None:
    with running_processor(lambda r, _: r + 1, name="up") as up, \
            running_processor(job, name="d1") as d1, running_processor(job, name="d2") as d2:
        source = Mutable(members_of(d1))
        entry = up.connect_endpoints.requests
        link = zjobs.Link(up, d1.connect_endpoints.requests, name="follow")
        with link, zjobs.MembershipWatcher(source, lambda m: link.update_targets(m.requests),
                                           interval_s=0.02, current=source.members()):
            with zjobs.Pipeline.connect(entry, d1.connect_endpoints.responses,
                                        timeout_s=10) as chain:
                assert chain.call_response(1).processor == "d1"
            source.value = members_of(d2)
            wait_until(lambda: link.targets == [d2.connect_endpoints.requests])
            # Were work still sent to d1, these calls (waiting on d2 only) would time out.
            with zjobs.Pipeline.connect(entry, d2.connect_endpoints.responses,
                                        timeout_s=10) as chain:
                assert [chain.call(n) for n in range(5)] == [n + 1 for n in range(5)]
        with pytest.raises(zjobs.ClosedError):
            link.update_targets([d1.connect_endpoints.requests])
