"""zjobs.__all__ is exactly the public surface of the package."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import zjobs
import zjobs.errors


def _groups() -> dict[str, list[str]]:
    """``__all__`` as written in zjobs/__init__.py: each comment line starts a group."""
    source = Path(zjobs.__file__).read_text()
    body = source[source.index("__all__ = ["):]
    body = body[body.index("\n") + 1:body.index("\n]")]
    groups: dict[str, list[str]] = {}
    for line in body.splitlines():
        comment = re.match(r"\s*# (.+)", line)
        if comment:
            groups[comment.group(1)] = current = []
        elif line.strip():
            current.append(ast.literal_eval(line.strip().rstrip(",")))
    return groups


def test_all_is_grouped_by_concept_and_unique() -> None:
    groups = _groups()
    assert len(set(zjobs.__all__)) == len(zjobs.__all__)
    assert [name for names in groups.values() for name in names] == zjobs.__all__
    assert all(groups.values()) and len(groups) >= 8
    errors = next(names for title, names in groups.items() if title.startswith("Errors"))
    assert all(issubclass(getattr(zjobs, name), zjobs.ZJobsError) for name in errors)


def test_every_name_in_all_is_importable() -> None:
    for name in zjobs.__all__:
        assert getattr(zjobs, name, None) is not None, name
    namespace: dict[str, object] = {}
    exec("from zjobs import *", namespace)
    assert set(zjobs.__all__) <= set(namespace)


def test_nothing_public_is_missing_from_all() -> None:
    public = {
        name for name, value in vars(zjobs).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(zjobs.__all__) - {"__version__"}


def test_every_zjobs_error_is_exported() -> None:
    errors = {
        name for name, value in vars(zjobs.errors).items()
        if inspect.isclass(value) and issubclass(value, zjobs.ZJobsError)
        and value.__module__ == "zjobs.errors"
    }
    assert errors <= set(zjobs.__all__)


def test_the_names_the_issue_asks_for() -> None:
    required = {"Run", "GetCache", "MpSend", "McReceive", "Processor", "Client", "ZmqProcessor",
                "ZmqSender", "ZmqReceiver", "MemoryProcessor", "MemorySender", "MemoryReceiver",
                "MemoryCache", "cached", "MISS", "ZJobsError", "RemoteError", "CallTimeout",
                "ProcessorOptions", "ServeSettings", "ClientOptions"}
    assert required <= set(zjobs.__all__)


def test_client_options_are_one_class_for_both_clients() -> None:
    import zjobs.aio

    assert zjobs.aio.ClientOptions is zjobs.ClientOptions
    assert "ClientOptions" in zjobs.aio.__all__


def test_version_is_a_string() -> None:
    assert isinstance(zjobs.__version__, str)
    assert zjobs.__version__.count(".") >= 2


def test_import_does_not_pull_in_the_cli() -> None:
    code = "import sys, zjobs; assert 'click' not in sys.modules, 'click imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
