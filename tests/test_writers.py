"""ARFF and CSV output read back by independent parsers."""
from decimal import Decimal

import arff
import numpy as np
import pandas as pd
import pytest
from scipy.io import arff as scipy_arff

from deep_spectrum_extractor.labels import LabelAttribute
from deep_spectrum_extractor.output import FeatureWriter

RNG = np.random.default_rng(3)
FEATURES = [RNG.standard_normal((3, 5)).astype(np.float32),
            np.abs(RNG.standard_normal((2, 5))).astype(np.float32)]
TIMES = [[Decimal("0.0"), Decimal("0.5"), Decimal("1.0")], [Decimal("0.0"), Decimal("0.5")]]
CLASS = [LabelAttribute("class", ("music", "speech"))]


def write(path, names, labels=CLASS, timestamps=True, values=(["speech"], ["music"])):
    with FeatureWriter(path, timestamps=timestamps, labels=labels) as writer:
        for name, times, features, value in zip(names, TIMES, FEATURES, values):
            writer.write(name, times, features, [value] * len(times))
    return path


def test_arff_header_is_the_original_layout(tmp_path):
    text = write(tmp_path / "f.arff", ["a.wav", "b.wav"]).read_text()
    header = text.split("@data\n")[0].splitlines()
    assert header == (["@relation 'Deep Spectrum Features'", "", "@attribute name string",
                       "@attribute timeStamp numeric"]
                      + [f"@attribute neuron_{i} numeric" for i in range(5)]
                      + ["@attribute class {music,speech}", ""])
    rows = text.split("@data\n")[1].splitlines()
    assert rows[0].startswith("a.wav,0.0,") and rows[0].endswith(",speech")
    assert len(rows) == 5


def test_arff_parses_with_liac_arff_and_scipy(tmp_path):
    path = write(tmp_path / "f.arff", ["a.wav", "b.wav"])
    parsed = arff.load(path.read_text())
    assert parsed["relation"] == "Deep Spectrum Features"
    assert [a[0] for a in parsed["attributes"]] == (["name", "timeStamp"]
                                                    + [f"neuron_{i}" for i in range(5)] + ["class"])
    assert parsed["attributes"][-1][1] == ["music", "speech"]
    data = parsed["data"]
    assert [row[0] for row in data] == ["a.wav"] * 3 + ["b.wav"] * 2
    assert [row[1] for row in data] == [0.0, 0.5, 1.0, 0.0, 0.5]
    assert [row[-1] for row in data] == ["speech"] * 3 + ["music"] * 2
    values = np.array([row[2:-1] for row in data], dtype=np.float64)
    np.testing.assert_array_equal(values.astype(np.float32), np.concatenate(FEATURES))

    # scipy.io.arff refuses every string attribute ("not supported yet"), and the
    # original format declares the name column as string.  Its data rows are still
    # checked with scipy's reader by declaring the name column nominal in a copy.
    with pytest.raises(NotImplementedError, match="String attributes"):
        scipy_arff.loadarff(path)
    copy = tmp_path / "nominal_name.arff"
    copy.write_text(path.read_text().replace("@attribute name string",
                                             "@attribute name {a.wav,b.wav}"))
    records, meta = scipy_arff.loadarff(copy)
    assert meta.names()[:2] == ["name", "timeStamp"] and len(records) == 5
    np.testing.assert_array_equal(
        np.array([[r[f"neuron_{i}"] for i in range(5)] for r in records]).astype(np.float32),
        np.concatenate(FEATURES))
    assert [r["class"].decode() for r in records] == ["speech"] * 3 + ["music"] * 2


def test_csv_parses_with_pandas(tmp_path):
    path = write(tmp_path / "f.csv", ["a.wav", "b.wav"])
    frame = pd.read_csv(path)
    assert list(frame.columns) == (["name", "timeStamp"] + [f"neuron_{i}" for i in range(5)]
                                   + ["class"])
    assert list(frame["name"]) == ["a.wav"] * 3 + ["b.wav"] * 2
    assert list(frame["class"]) == ["speech"] * 3 + ["music"] * 2
    np.testing.assert_array_equal(frame.iloc[:, 2:7].to_numpy().astype(np.float32),
                                  np.concatenate(FEATURES))


def test_no_timestamps_and_no_labels(tmp_path):
    path = write(tmp_path / "f.arff", ["a.wav", "b.wav"], labels=None, timestamps=False)
    parsed = arff.load(path.read_text())
    assert [a[0] for a in parsed["attributes"]] == ["name"] + [f"neuron_{i}" for i in range(5)]
    frame = pd.read_csv(write(tmp_path / "f.csv", ["a.wav", "b.wav"], labels=None,
                              timestamps=False))
    assert list(frame.columns) == ["name"] + [f"neuron_{i}" for i in range(5)]


NASTY = ["with space.wav", "com,ma.wav", "it's.wav", 'say "hi".wav', "naïve_日本.wav",
         "back\\slash%.wav", "new\nline.wav", "tab\there.wav", "{brace}?.wav"]


@pytest.mark.parametrize("suffix", [".arff", ".csv"])
def test_awkward_names_and_labels_round_trip(tmp_path, suffix):
    labels = [LabelAttribute("class", ("a b", "c,d")), LabelAttribute("score", None)]
    path = tmp_path / f"f{suffix}"
    with FeatureWriter(path, timestamps=False, labels=labels) as writer:
        for number, name in enumerate(NASTY):
            writer.write(name, [None], FEATURES[0][:1],
                         [["a b" if number % 2 else "c,d", str(number / 2)]])
    if suffix == ".arff":
        parsed = arff.load(path.read_text(encoding="utf-8"))
        names = [row[0] for row in parsed["data"]]
        classes = [row[-2] for row in parsed["data"]]
        scores = [row[-1] for row in parsed["data"]]
        assert parsed["attributes"][-2][1] == ["a b", "c,d"]
    else:
        frame = pd.read_csv(path)
        names, classes, scores = list(frame["name"]), list(frame["class"]), list(frame["score"])
    assert names == NASTY
    assert classes == ["a b" if n % 2 else "c,d" for n in range(len(NASTY))]
    assert scores == [n / 2 for n in range(len(NASTY))]


def test_interrupted_writer_leaves_no_file(tmp_path):
    path = tmp_path / "out.arff"
    path.write_text("previous results")
    with pytest.raises(RuntimeError):
        with FeatureWriter(path, timestamps=False, labels=None) as writer:
            writer.write("a.wav", [None], FEATURES[0][:1])
            raise RuntimeError("killed")
    assert path.read_text() == "previous results"
    assert list(tmp_path.iterdir()) == [path]


def test_feature_values_are_written_as_numpy_prints_float32():
    from deep_spectrum_extractor.output.writers import format_features

    rng = np.random.default_rng(11)
    values = (rng.standard_normal(4000) * 10.0 ** rng.integers(-44, 38, 4000)).astype(np.float32)
    values = np.concatenate([values, np.float32([0, -0.0, 1e-45, 3.4028235e38, 0.1, 1 / 3])])
    values = values[np.isfinite(values)].reshape(1, -1)
    formatted = format_features(values)[0]
    assert formatted == ",".join(str(v) for v in values[0])
    assert np.array_equal(np.array(formatted.split(","), dtype=np.float32), values[0])


def test_every_kind_of_float32_is_formatted_as_numpy_prints_it():
    """Random bit patterns: zeros of both signs, subnormals, inf, NaN, the longest texts."""
    from deep_spectrum_extractor.output.writers import format_features

    bits = np.random.default_rng(12).integers(0, 2**32, size=(64, 1024), dtype=np.uint64)
    values = bits.astype(np.uint32).view(np.float32)
    values[0, :6] = [0.0, -0.0, np.inf, -np.inf, np.nan, -1.1754942e-38]
    values[1::2, ::2] = 0.0  # rows that are half zeros, as after a ReLU
    assert format_features(values) == [",".join(str(value) for value in row) for row in values]


def test_csv_rows_are_what_the_csv_module_writes(tmp_path):
    import csv
    import io

    labels = [LabelAttribute("class", ("a b", "c,d", 'q"uote', "")),
              LabelAttribute("score", None)]
    path = tmp_path / "f.csv"
    expected = io.StringIO()
    reference = csv.writer(expected, lineterminator="\n")
    with FeatureWriter(path, timestamps=True, labels=labels) as writer:
        reference.writerow(["name", "timeStamp"] + [f"neuron_{i}" for i in range(5)]
                           + ["class", "score"])
        for number, name in enumerate(NASTY):
            label = labels[0].values[number % 4]
            writer.write(name, [Decimal("0.5")], FEATURES[0][:1], [[label, str(number)]])
            reference.writerow([name, "0.5"] + [str(v) for v in FEATURES[0][0]]
                               + [label, str(number)])
    assert path.read_text(encoding="utf-8") == expected.getvalue()
