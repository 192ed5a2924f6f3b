"""Loading jobs and resources factories by ``MODULE:OBJECT``."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zjobs import LoadError
from zjobs.run.loader import add_app_dir, load_callable, load_factory, load_job, load_object

_names = itertools.count()


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a module with the given source under a fresh name; return the name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def write(source: str) -> str:
        name = f"loadertest_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(source)
        created.append(name)
        return name

    yield write
    for name in created:
        sys.modules.pop(name, None)


JOBS = """
def square(request, resources):
    return request * request

class Job:
    def run(self, request, resources):
        return ("class", request)

class Nested:
    class Inner:
        def run(self, request, resources):
            return "inner"

instance = Job()

class NeedsArgs:
    def __init__(self, x):
        pass
    def run(self, request, resources):
        return None

class NoRun:
    pass

number = 3

def factory():
    return {"db": True}
"""


def test_function_class_instance_and_dotted(module: Callable[[str], str]) -> None:
    name = module(JOBS)
    assert load_job(f"{name}:square")(3, None) == 9  # type: ignore[operator]
    job = load_job(f"{name}:Job")
    assert job.run(1, None) == ("class", 1)  # type: ignore[union-attr]
    assert load_job(f"{name}:instance") is load_object(f"{name}:instance")
    assert load_job(f"{name}:Nested.Inner").run(0, None) == "inner"  # type: ignore[union-attr]
    assert load_factory(f"{name}:factory")() == {"db": True}


def test_objects_pass_through() -> None:
    def job(request: object, resources: object) -> object:
        return request

    assert load_job(job) is job
    assert load_factory(dict) is dict


@pytest.mark.parametrize(("attr", "message"), [
    ("missing", "job {m}:missing: '{m}' has no attribute 'missing'"),
    ("Job.missing", "job {m}:Job.missing: '{m}:Job' has no attribute 'missing'"),
    ("number", "job {m}:number: an int is not a job (neither callable nor has a run() method)"),
    ("NoRun", "job {m}:NoRun: a class without a run() method is not a job"),
    ("NeedsArgs", "job {m}:NeedsArgs: the class cannot be instantiated with no arguments: "
                  "TypeError"),
])
def test_job_errors_name_the_problem(module: Callable[[str], str], attr: str,
                                     message: str) -> None:
    name = module(JOBS)
    with pytest.raises(LoadError) as info:
        load_job(f"{name}:{attr}")
    assert str(info.value).startswith(message.format(m=name))
    assert info.value.spec == f"{name}:{attr}"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", ["nocolon", ":f", "mod:", ""])
def test_syntax(spec: str) -> None:
    with pytest.raises(LoadError, match="is not MODULE:OBJECT"):
        load_job(spec)


def test_missing_module_and_missing_dependency(module: Callable[[str], str]) -> None:
    with pytest.raises(LoadError, match=r"no module named 'no_such_mod_q'.*--app-dir"):
        load_job("no_such_mod_q:f")
    with pytest.raises(LoadError, match="no module named 'no_such_mod_q'"):
        load_job("no_such_mod_q.sub:f")
    name = module("import no_such_dependency_q\n")
    with pytest.raises(LoadError, match=f"importing '{name}' failed: it needs the missing "
                                        "module 'no_such_dependency_q'"):
        load_job(f"{name}:f")


def test_module_that_raises_or_does_not_parse(module: Callable[[str], str]) -> None:
    name = module("raise RuntimeError('no config')\n")
    with pytest.raises(LoadError, match="it raised RuntimeError: no config"):
        load_job(f"{name}:f")
    name = module("def f(:\n")
    with pytest.raises(LoadError, match=r"SyntaxError: .*line 1\)"):
        load_job(f"{name}:f")


def test_factory_must_be_callable(module: Callable[[str], str]) -> None:
    name = module(JOBS)
    with pytest.raises(LoadError, match=r"resources .*:number: an int is not callable"):
        load_factory(f"{name}:number")


def test_load_callable(module: Callable[[str], str]) -> None:
    name = module(JOBS)
    with pytest.raises(LoadError, match=r"transform .*:number: an int is not callable"):
        load_callable(f"{name}:number", "transform")
    assert callable(load_callable(f"{name}:square", "transform"))


def test_load_error_is_a_value_error() -> None:
    assert issubclass(LoadError, ValueError)


def test_add_app_dir_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    add_app_dir(tmp_path)
    add_app_dir(str(tmp_path))
    assert sys.path.count(str(tmp_path.resolve())) == 1
    assert sys.path[0] == str(tmp_path.resolve())
