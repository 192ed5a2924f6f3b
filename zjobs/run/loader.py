"""Finding user code by name: ``MODULE:OBJECT`` for jobs, ``MODULE:FACTORY`` for resources.

This is how the command line and child processes get a job without pickling it. Every
failure is a :class:`LoadError` whose one-line message names the problem.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zjobs.core.job import Job
from zjobs.core.resources import ResourceFactory
from zjobs.errors import LoadError

__all__ = ["LoadError", "add_app_dir", "load_callable", "load_factory", "load_job",
           "load_object"]


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: "a str", "an int"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _check_call(name: str, function: Any, shown: str, call: str) -> None:
    # A load-time check that the user's function takes what the processor passes, so a
    # wrong signature fails the daemon's start instead of every request (JobFailed).
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): let the call decide
    try:
        signature.bind(None, None)
    except TypeError:
        params = ", ".join(str(p).split(":")[0].split("=")[0].strip() for p in
                           signature.parameters.values())
        raise LoadError(name, f"job {name}: {shown}({params}) cannot be called as {call}: "
                        "a job takes the request and the resources") from None


def add_app_dir(path: str | Path) -> None:
    """Make the modules in ``path`` importable (first on ``sys.path``), once."""
    entry = str(Path(path).resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _import(spec: str, module_name: str, what: str) -> Any:
    def fail(problem: str) -> LoadError:
        return LoadError(spec, f"{what} {spec}: {problem}")

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise fail(f"no module named {missing!r} (run from its folder, or use "
                       "--app-dir)") from exc
        raise fail(f"importing {module_name!r} failed: it needs the missing module "
                   f"{missing!r}") from exc
    except SyntaxError as exc:
        where = f" ({exc.filename}, line {exc.lineno})" if exc.filename else ""
        raise fail(f"importing {module_name!r} failed: SyntaxError: {exc.msg}{where}") from exc
    except Exception as exc:
        raise fail(f"importing {module_name!r} failed: it raised {type(exc).__name__}: "
                   f"{exc}") from exc


def load_object(spec: str, what: str = "object") -> Any:
    """Import ``MODULE:OBJECT`` and return the object (``OBJECT`` may be dotted: ``a.b``).

    Args:
        spec: the reference.
        what: what the object is for, to start error messages with ("job", ...).

    Raises:
        LoadError: with a one-line message naming the problem.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(spec, f"{what} {spec!r} is not MODULE:OBJECT (for example "
                        "myjobs:square)")
    obj = _import(spec, module_name, what)
    where = module_name
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise LoadError(spec, f"{what} {spec}: {where!r} has no attribute "
                            f"{part!r}") from None
        where = f"{where}:{part}" if where == module_name else f"{where}.{part}"
    return obj


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNC`` and return it, checking it can be called.

    Raises:
        LoadError: the reference cannot be loaded, or names something not callable.
    """
    obj = load_object(spec, what)
    if not callable(obj):
        raise LoadError(spec, f"{what} {spec}: {_a(type(obj).__name__)} is not callable")
    return obj  # type: ignore[no-any-return]


def load_job(spec: str | Job) -> Job:
    """The job named by ``spec``, or ``spec`` itself if it is already a job.

    ``OBJECT`` may be a function ``f(request, resources)``, an instance with a ``run``
    method, or a class with a ``run`` method (instantiated with no arguments).

    Raises:
        LoadError: the reference cannot be loaded, or does not name a job.
    """
    obj = load_object(spec, "job") if isinstance(spec, str) else spec
    name = spec if isinstance(spec, str) else repr(spec)
    if isinstance(obj, type):
        if not callable(getattr(obj, "run", None)):
            raise LoadError(name, f"job {name}: a class without a run() method is not a job")
        try:
            obj = obj()
        except Exception as exc:
            raise LoadError(name, f"job {name}: the class cannot be instantiated with no "
                            f"arguments: {type(exc).__name__}: {exc}") from exc
    run = getattr(obj, "run", None)
    if callable(run):
        _check_call(name, run, f"{type(obj).__name__}.run", "run(request, resources)")
        return obj
    if callable(obj):
        _check_call(name, obj, getattr(obj, "__name__", type(obj).__name__),
                    "job(request, resources)")
        return obj
    raise LoadError(name, f"job {name}: {_a(type(obj).__name__)} is not a job (neither "
                    "callable nor has a run() method)")


def load_factory(spec: str | ResourceFactory) -> ResourceFactory:
    """The resources factory named by ``spec`` (any callable with no arguments).

    Raises:
        LoadError: the reference cannot be loaded, or is not callable.
    """
    obj = load_object(spec, "resources") if isinstance(spec, str) else spec
    if not callable(obj):
        raise LoadError(str(spec), f"resources {spec}: {_a(type(obj).__name__)} is not "
                        "callable, so not a factory")
    return obj
