"""zjobs.__all__ is exactly the public surface of the package."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import zjobs
import zjobs.errors


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then everything else.
    if name.isupper() and len(name) > 1:
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted_and_unique() -> None:
    assert zjobs.__all__ == sorted(zjobs.__all__, key=_isort_key)
    assert len(set(zjobs.__all__)) == len(zjobs.__all__)


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
                "MemoryCache", "cached", "MISS", "ZJobsError", "RemoteError", "CallTimeout"}
    assert required <= set(zjobs.__all__)


def test_version_is_a_string() -> None:
    assert isinstance(zjobs.__version__, str)
    assert zjobs.__version__.count(".") >= 2


def test_import_does_not_pull_in_the_cli() -> None:
    code = "import sys, zjobs; assert 'click' not in sys.modules, 'click imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
