"""Feature changes are announced: CHANGELOG.md, the version and the stored features agree."""
from __future__ import annotations

import json

import numpy as np
import pytest

import feature_reference as reference
from deep_spectrum_extractor import __version__

#: Relative tolerance of the comparison: the last bits depend on the CPU's kernels.
RTOL = 1e-5


def test_the_newest_changelog_version_is_the_package_version():
    versions = [version for version, _ in reference.changelog_versions()]
    assert versions[0] == __version__, \
        f"CHANGELOG.md's newest section is {versions[0]}; the package is {__version__}"
    assert len(set(versions)) == len(versions)


def test_the_stored_features_belong_to_the_version_that_changed_them():
    stored = json.loads(reference.REFERENCE.read_text(encoding="utf-8"))
    assert stored["version"] == reference.features_version()


def test_features_are_unchanged_or_the_changelog_says_so(tmp_path):
    stored = json.loads(reference.REFERENCE.read_text(encoding="utf-8"))
    computed = reference.compute(tmp_path)
    assert list(computed) == list(stored["features"]) == list(reference.MODES)
    for mode in reference.MODES:
        old = np.array(stored["features"][mode], dtype=np.float32)
        new = np.array(computed[mode], dtype=np.float32)
        assert new.shape == old.shape, f"{mode}: the rows or features changed"
        scale = float(np.abs(old).max())
        assert scale > 0
        close = np.isclose(new, old, rtol=RTOL, atol=RTOL * scale)
        assert close.all(), (
            f"{mode}: {int((~close).sum())} of {old.size} feature values differ from those "
            f"of version {stored['version']}. If that is intended, bump the version, add a "
            f"{reference.MARKER} entry to CHANGELOG.md and run "
            "'pipenv run python tests/feature_reference.py'.")


def test_the_recorder_refuses_without_a_changelog_entry():
    text = "# Changelog\n\n## 9.9.9\n\n- faster\n\n## 1.0.0\n\n- **Features changed**: x\n"
    assert reference.features_version(text) == "1.0.0"
    assert [version for version, _ in reference.changelog_versions(text)] == ["9.9.9", "1.0.0"]
    with pytest.raises(StopIteration):
        reference.features_version("# Changelog\n\n## 1.0.0\n\n- nothing\n")
