"""The wheel as a package index shows it: license, metadata, a README whose links work there,
and only the zjobs package inside (no tests, no benchmarks, no examples)."""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the build backend comes from the test extra, so nothing is fetched.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True,
                   timeout=120)
    (path,) = out.glob("zjobs-*.whl")
    archive = zipfile.ZipFile(path)
    yield archive  # type: ignore[misc]
    archive.close()


def metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_the_license_is_in_the_repository_and_the_wheel(wheel: zipfile.ZipFile) -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the zjobs authors" in text
    licenses = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert licenses and wheel.read(licenses[0]).decode() == text
    meta = metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert meta["License-File"] == "LICENSE"


def test_only_the_package_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {"zjobs", next(t for t in tops if t.endswith(".dist-info"))}
    assert not [n for n in wheel.namelist()
                if re.search(r"(^|/)(tests?|benchmarks|examples)/|conftest\.py$|/test_", n)]
    assert "zjobs/py.typed" in wheel.namelist()


def test_metadata_has_classifiers_and_a_readme_that_works_on_an_index_page(
        wheel: zipfile.ZipFile) -> None:
    meta = metadata(wheel)
    classifiers = meta.get_all("Classifier") or []
    for wanted in ("Programming Language :: Python :: 3.11", "Typing :: Typed",
                   "Framework :: AsyncIO", "Development Status :: 3 - Alpha"):
        assert wanted in classifiers
    assert meta["Requires-Python"] == ">=3.11"
    description = meta.get_payload()
    assert isinstance(description, str) and "## Quickstart" in description
    links = re.findall(r"\]\(([^)]*)\)", description)
    relative = [link for link in links if not re.match(r"https?://", link)]
    assert not relative, f"links that break on an index page: {relative[:5]}"
    assert "docs/PROTOCOL.md" in description  # the reference stays, as text
