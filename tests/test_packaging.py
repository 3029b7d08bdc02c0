"""The package pip installs asks for what pipenv installs.

``.ci/install_check`` builds the wheel and the sdist, installs the wheel into a fresh
virtual environment outside pipenv and runs a small extraction from it; this test keeps
the two dependency lists from drifting apart in the meantime.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
#: Installed on aarch64 in place of tensorflow-cpu, which has no wheels there.
PLATFORM_ALTERNATIVES = {"tensorflow": "tensorflow-cpu"}


def pipfile_packages() -> dict[str, str]:
    packages = tomllib.loads((REPO / "Pipfile").read_text(encoding="utf-8"))["packages"]
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
        required.setdefault(PLATFORM_ALTERNATIVES.get(name, name), []).append(requirement)
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
