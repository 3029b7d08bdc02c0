"""The package pip installs asks for what pipenv installs.

``.ci/install_check`` builds the wheel and the sdist, installs the wheel into a fresh
virtual environment outside pipenv and runs a small extraction from it; this test keeps
the two dependency lists from drifting apart in the meantime, the lock from the Pipfile, and
the Pipfile's ``gpu`` category from what TensorFlow's ``and-cuda`` extra asks.
"""
from __future__ import annotations

import json
import tomllib
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def pipfile_packages(category: str = "packages") -> dict[str, str]:
    packages = tomllib.loads((REPO / "Pipfile").read_text(encoding="utf-8"))[category]
    return {canonicalize_name(name): spec for name, spec in packages.items()
            if not isinstance(spec, dict)}  # the package itself (an editable path)


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "deep-spectrum" / "pyproject.toml").read_text(
        encoding="utf-8"))["project"]
    lines = project["dependencies"] + [line for extra in
                                       project.get("optional-dependencies", {}).values()
                                       for line in extra]
    return [Requirement(line) for line in lines]


def test_the_wheel_requires_what_the_pipfile_installs_with_the_same_pins():
    pipfile = pipfile_packages()
    required = {}
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        required.setdefault(name, []).append(requirement)
    assert set(required) == set(pipfile), (sorted(set(required) ^ set(pipfile)))
    for name, spec in pipfile.items():
        for requirement in required[name]:
            if spec == "*":
                assert not requirement.specifier, requirement
            else:
                assert str(requirement.specifier) == spec, (requirement, spec)


def test_the_version_is_defined_in_one_place():
    pyproject = (REPO / "deep-spectrum" / "pyproject.toml").read_text(encoding="utf-8")
    project = tomllib.loads(pyproject)
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "deep_spectrum_extractor.__version__"}


def test_the_gpu_category_is_what_tensorflows_and_cuda_extra_asks():
    """``pipenv sync --categories "packages gpu"`` installs what ``pip install
    tensorflow[and-cuda]`` would: the CUDA libraries from PyPI, in the same ranges."""
    and_cuda = {}
    for line in requires("tensorflow") or []:
        requirement = Requirement(line)
        marker = requirement.marker  # only the extra's: not met without it
        if marker and marker.evaluate({"extra": "and-cuda"}) and not marker.evaluate(
                {"extra": ""}):
            and_cuda[canonicalize_name(requirement.name)] = requirement.specifier
    assert and_cuda, "the installed tensorflow names no and-cuda extra"
    gpu = pipfile_packages("gpu")
    assert set(gpu) == set(and_cuda), sorted(set(gpu) ^ set(and_cuda))
    for name, spec in gpu.items():
        assert SpecifierSet(spec) == and_cuda[name], (name, spec, str(and_cuda[name]))


def test_the_lock_pins_what_the_pipfile_asks_with_hashes():
    lock = json.loads((REPO / "Pipfile.lock").read_text(encoding="utf-8"))
    for category, section in (("packages", "default"), ("gpu", "gpu")):
        locked = {canonicalize_name(name): entry for name, entry in lock[section].items()}
        for name, spec in pipfile_packages(category).items():
            assert name in locked, (section, name)
            version = Version(locked[name]["version"].removeprefix("=="))
            assert spec == "*" or version in SpecifierSet(spec), (section, name, version)
            assert locked[name]["hashes"], (section, name)
    # tensorflow-cpu and tensorflow install the same files: one of them, the GPU-ready one
    assert "tensorflow-cpu" not in lock["default"] and "tensorflow" in lock["default"]
