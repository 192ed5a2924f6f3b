"""The package's layers: every import inside zjobs points down (or sideways), never up.

errors < wire < core < transport < processor = client = testing = aio facade < compose
< run < cli. Checked on the source with :mod:`ast`, so imports inside functions and under
``TYPE_CHECKING`` count as much as module-level ones: a lazy import to dodge a cycle is a
module on the wrong floor.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import zjobs

PACKAGE = Path(zjobs.__file__).resolve().parent

RANKS = {
    "zjobs.errors": 0,
    "zjobs.wire": 1,
    "zjobs.core": 2,
    "zjobs.transport": 3,
    "zjobs.processor": 4,
    "zjobs.client": 4,
    "zjobs.testing": 4,
    "zjobs.aio": 4,  # the asyncio facade, and zjobs.aio.testing
    "zjobs.compose": 5,
    "zjobs.demo": 5,  # documented jobs and a demo system built from processors and links
    "zjobs.run": 6,
    "zjobs": 6,  # zjobs/__init__.py, the public facade: re-exports up to run
    "zjobs.cli": 7,
    "zjobs.__main__": 7,
}


def rank(module: str) -> int:
    """The layer of ``module``: that of the longest entry of RANKS it is or lies under (the
    root entry, ``zjobs``, is the facade module alone)."""
    if module == "zjobs":
        return RANKS[module]
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        prefix = ".".join(parts[:end])
        if prefix in RANKS:
            return RANKS[prefix]
    raise KeyError(f"{module} is in no layer: add it to RANKS")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every zjobs module ``source`` imports, anywhere in it, with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module if is_package else module.rpartition(".")[0]
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                # `from zjobs import aio` imports a module; `from zjobs import Client` does not
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else base))
    return [(line, name) for line, name in found if name == "zjobs" or name.startswith("zjobs.")]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def upward_imports(path: Path, source: str | None = None) -> list[str]:
    """Every import in ``path`` of a module from a higher layer, as "file:line: a -> b"."""
    module = module_name(path)
    text = path.read_text() if source is None else source
    own = rank(module)
    return [f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {own}) imports "
            f"{target} (layer {rank(target)})"
            for line, target in imported(text, module, path.name == "__init__.py")
            if rank(target) > own]


def test_every_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        rank(module_name(path))


def test_no_module_imports_from_a_higher_layer() -> None:
    problems = [problem for path in sorted(PACKAGE.rglob("*.py"))
                for problem in upward_imports(path)]
    assert problems == []


@pytest.mark.parametrize(("where", "source"), [
    ("core/handler.py", "from zjobs.processor.sync import ZmqProcessor\n"),
    ("core/handler.py", "def f():\n    from zjobs.client import sync\n"),
    ("transport/memory.py", "import zjobs.cli.app\n"),
    ("wire/codec.py", "from zjobs import aio\n"),
    ("processor/base.py", "from ..compose import link\n"),
    ("core/job.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from zjobs.run.daemon import Daemon\n"),
])
def test_the_check_catches_an_upward_import(where: str, source: str) -> None:
    assert len(upward_imports(PACKAGE / where, source)) == 1


def test_sideways_and_downward_imports_pass() -> None:
    assert upward_imports(PACKAGE / "processor/base.py",
                          "from zjobs.client.sync import Client\nfrom zjobs.core import job\n"
                          "from zjobs import errors\n") == []


def test_import_zjobs_imports_neither_asyncio_nor_click() -> None:
    code = ("import sys, zjobs\n"
            "zjobs.ZmqProcessor, zjobs.Client, zjobs.Pipeline, zjobs.ProcessorProcess\n"
            "loaded = sorted({'asyncio', 'zmq.asyncio', 'click'} & set(sys.modules))\n"
            "assert not loaded, loaded\n"
            "zjobs.AsyncZmqProcessor\n"
            "assert 'asyncio' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


# -- inside the cli: the group, the command modules, what they share ----------------------

CLI_COMMANDS = {"zjobs.cli.serve", "zjobs.cli.calls", "zjobs.cli.system",
                "zjobs.cli.observe", "zjobs.cli.tools"}


def cli_import_problems(overrides: dict[str, str] | None = None) -> list[str]:
    """What breaks the cli's shape: only the package (zjobs/cli/__init__.py) imports the
    command modules, to register them; nothing in zjobs.cli imports the package back.
    ``overrides`` replaces the source of some modules (by module name), to test the check."""
    problems = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        module = module_name(path)
        source = (overrides or {}).get(module, path.read_text())
        for line, target in imported(source, module, path.name == "__init__.py"):
            if target == "zjobs.cli" and module != "zjobs.cli":
                problems.append(f"{module}:{line} imports the package zjobs.cli")
            elif target in CLI_COMMANDS and module != "zjobs.cli":
                problems.append(f"{module}:{line} imports the command module {target}")
    return problems


def test_only_the_cli_package_imports_the_command_modules() -> None:
    assert {module_name(path) for path in (PACKAGE / "cli").glob("*.py")} >= CLI_COMMANDS
    assert cli_import_problems() == []


@pytest.mark.parametrize(("module", "source"), [
    ("zjobs.cli.app", "from zjobs.cli import serve\n"),
    ("zjobs.cli.calls", "from zjobs.cli.observe import status\n"),
    ("zjobs.cli.tools", "from zjobs.cli import main\n"),
])
def test_the_cli_check_catches_a_cycle(module: str, source: str) -> None:
    assert len(cli_import_problems({module: source})) == 1
