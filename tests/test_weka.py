"""The ARFF opens in Weka (Debian's weka package) and a classifier cross-validates on it.

Weka is not installed by the tests; CI installs Debian's `weka` package and fails when it
cannot (see .ci/run).
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deep_spectrum_extractor.cli.extract_ds_features import main

WEKA_JAR = Path("/usr/share/java/weka.jar")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"



@pytest.fixture(autouse=True)
def weka_installed():
    """Skip without Weka, except where it is required (CI sets DEEP_SPECTRUM_REQUIRE_WEKA=1)."""
    if WEKA_JAR.exists() and shutil.which("java"):
        return
    if os.environ.get("DEEP_SPECTRUM_REQUIRE_WEKA") == "1":
        pytest.fail(f"Weka is required here but {WEKA_JAR} or java is missing")
    pytest.skip("Debian's weka package is not installed")


def weka(*args, timeout=300):
    return subprocess.run(["java", "-Xmx1g", "-cp", str(WEKA_JAR), *args], capture_output=True,
                          text=True, timeout=timeout)


def test_weka_cross_validates_a_classifier_on_the_arff(tmp_path, small_config):
    out = tmp_path / "features.arff"
    assert main([str(a) for a in ["-i", EXAMPLES, "-o", out, "-t", "1", "0.5", "-mode", "mel",
                                  "-net", "small", "-config", small_config, "-np", "1"]]) == 0
    # the name (string) and timeStamp columns are removed inside the classifier, as a Weka
    # user would do; the class is the last attribute
    result = weka("weka.classifiers.meta.FilteredClassifier",
                  "-F", "weka.filters.unsupervised.attribute.Remove -R 1,2",
                  "-W", "weka.classifiers.functions.SMO", "-t", str(out), "-x", "3")
    assert result.returncode == 0, result.stderr
    assert "Stratified cross-validation" in result.stdout
    correct = next(line for line in result.stdout.splitlines()
                   if line.startswith("Correctly Classified Instances"))
    total = next(line for line in result.stdout.splitlines()
                 if line.startswith("Total Number of Instances"))
    assert int(total.split()[-1]) == 33
    assert 0 <= float(correct.split()[-2]) <= 100  # "Correctly Classified Instances  n  p %"


def test_weka_reads_awkward_names_and_labels(tmp_path, small_config):
    import numpy as np
    import soundfile

    folder = tmp_path / "in"
    names = ["with space.wav", "com,ma.wav", "it's.wav", "naïve.wav"]
    for number, name in enumerate(names):
        path = folder / ("class a" if number % 2 else "class,b") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(8000) / 16000
        soundfile.write(path, 0.5 * np.sin(2 * np.pi * (300 + 200 * number) * t) + 0.01, 16000)
    out = tmp_path / "f.arff"
    assert main([str(a) for a in ["-i", folder, "-o", out, "-net", "small", "-config",
                                  small_config, "-np", "1"]]) == 0
    # Weka's own ARFF reader and writer: convert to CSV, then check names and classes
    csv_out = tmp_path / "f.csv"
    result = weka("weka.core.converters.CSVSaver", "-i", str(out), "-o", str(csv_out))
    assert result.returncode == 0, result.stderr
    import pandas as pd

    frame = pd.read_csv(csv_out, quotechar="'", escapechar="\\")
    assert len(frame) == 4
    assert sorted(frame["name"]) == sorted(names)
    assert sorted(set(frame["class"])) == ["class a", "class,b"]
