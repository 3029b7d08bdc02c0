"""The features of a fixed small job, stored with the version that last changed them.

``tests/test_changelog.py`` recomputes them and compares with
``tests/feature_reference.json`` (rtol 1e-5: the last bits depend on the CPU's kernels).
When they differ on purpose, the version is bumped, CHANGELOG.md gets a
**Features changed** entry under it, and this script records them again::

    pipenv run python tests/feature_reference.py

It refuses to record when the current version's CHANGELOG section has no such entry, so
stored values always belong to a version that says its features changed.
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(REPO / "deep-spectrum"))

from conftest import tone, write_wav  # noqa: E402

REFERENCE = TESTS / "feature_reference.json"
CHANGELOG = REPO / "CHANGELOG.md"
MARKER = "**Features changed**"
#: The job: two generated recordings, chunked, in each plot mode, through a small
#: AlexNet-topology graph with seeded random weights.
MODES = ("spectrogram", "mel", "chroma")


def changelog_versions(text: str | None = None) -> list[tuple[str, str]]:
    """``(version, section text)`` of CHANGELOG.md, newest first."""
    text = CHANGELOG.read_text(encoding="utf-8") if text is None else text
    parts = re.split(r"^## (\S+).*$", text, flags=re.M)
    return [(parts[number], parts[number + 1]) for number in range(1, len(parts), 2)]


def features_version(text: str | None = None) -> str:
    """The newest version whose CHANGELOG section says its features changed."""
    return next(version for version, section in changelog_versions(text) if MARKER in section)


def compute(folder: Path) -> dict[str, list[list[str]]]:
    """The job's features: for each mode, one list of float32 texts per chunk."""
    from deep_spectrum_extractor.backend.alexnet import build_alexnet_graph, random_alexnet_weights
    from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor
    from deep_spectrum_extractor.backend.graph_io import write_graph_def
    from deep_spectrum_extractor.job import Job
    from deep_spectrum_extractor.run import run_job
    from deep_spectrum_extractor.settings import FeatureSettings, RunOptions

    files = [write_wav(folder / "a.wav", tone(1.6, frequency=330.0, seed=11)),
             write_wav(folder / "b.wav", tone(2.2, 22050, frequency=1500.0, seed=12), 22050)]
    model = write_graph_def(build_alexnet_graph(random_alexnet_weights(seed=5)),
                            folder / "reference.pb")
    results = {}
    with FrozenGraphExtractor(model, "fc7", gpu=False) as network:
        for mode in MODES:
            settings = FeatureSettings(mode=mode, window=Decimal(1), hop=Decimal("0.5"))
            job = Job(files, settings, RunOptions(processes=1, batch_size=4))
            rows = [row for result in run_job(job, network) for row in result.features]
            results[mode] = [[str(np.float32(value)) for value in row] for row in rows]
    return results


def main() -> int:
    from deep_spectrum_extractor import __version__

    versions = changelog_versions()
    newest, section = versions[0]
    if newest != __version__:
        print(f"CHANGELOG.md's newest version is {newest}, the package's {__version__}",
              file=sys.stderr)
        return 1
    if REFERENCE.exists() and MARKER not in section:
        print(f"CHANGELOG.md has no {MARKER} entry under {newest}: say what changed the "
              "features before recording them", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        features = compute(Path(folder))
    REFERENCE.write_text(json.dumps({"version": features_version(), "features": features},
                                    indent=0) + "\n", encoding="utf-8")
    print(f"recorded {REFERENCE} for version {features_version()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
