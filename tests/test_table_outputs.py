"""Parquet and NPZ outputs hold the same rows as the CSV."""
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from deep_spectrum_extractor.cli.extract_ds_features import main


def run(*args):
    return main([str(a) for a in args] + ["-np", "1"])


@pytest.fixture(scope="module")
def csv_reference(tmp_path_factory, corpus, small_config):
    out = tmp_path_factory.mktemp("ref") / "f.csv"
    assert run("-i", corpus, "-o", out, "-t", "1", "0.5", "-net", "small", "-config",
               small_config) == 0
    return pd.read_csv(out)


def test_parquet_equals_csv(tmp_path, corpus, small_config, small_model, csv_reference):
    out = tmp_path / "f.parquet"
    assert run("-i", corpus, "-o", out, "-t", "1", "0.5", "-net", "small", "-config",
               small_config) == 0
    table = pq.read_table(out)
    frame = table.to_pandas()
    assert list(frame.columns) == list(csv_reference.columns)
    assert list(frame["name"]) == list(csv_reference["name"])
    assert list(frame["timeStamp"]) == list(csv_reference["timeStamp"])
    assert list(frame["class"]) == list(csv_reference["class"])
    assert frame["neuron_0"].dtype == np.float32
    np.testing.assert_array_equal(frame.filter(like="neuron_").to_numpy(),
                                  csv_reference.filter(like="neuron_").to_numpy(np.float32))
    record = json.loads(table.schema.metadata[b"deep_spectrum"])
    assert record["network"]["file"] == small_model.name
    assert table.num_rows == len(csv_reference)
    assert pq.ParquetFile(out).num_row_groups == 4  # one per input file


def test_npz_equals_csv_and_loads_without_pickle(tmp_path, corpus, small_config,
                                                 csv_reference):
    out = tmp_path / "f.npz"
    assert run("-i", corpus, "-o", out, "-t", "1", "0.5", "-net", "small", "-config",
               small_config) == 0
    with np.load(out, allow_pickle=False) as data:
        assert list(data["name"]) == list(csv_reference["name"])
        np.testing.assert_array_equal(data["timeStamp"], csv_reference["timeStamp"])
        assert data["features"].dtype == np.float32
        np.testing.assert_array_equal(data["features"],
                                      csv_reference.filter(like="neuron_").to_numpy(np.float32))
        assert list(data["label_class"]) == list(csv_reference["class"])
        assert json.loads(str(data["provenance"]))["settings"]["window"] == "1"
    assert not list(tmp_path.glob(".f.npz*"))  # no spool or part file left


def test_numeric_labels_and_no_timestamps(tmp_path, corpus, small_config):
    label_file = tmp_path / "labels.csv"
    names = sorted(p.name for p in corpus.rglob("*.wav"))
    label_file.write_text("file,score\n" + "\n".join(f"{n},{i / 4}" for i, n in enumerate(names)))
    out = tmp_path / "f.npz"
    assert run("-i", corpus, "-o", out, "-l", label_file, "-net", "small", "-config",
               small_config) == 0
    with np.load(out) as data:
        assert "timeStamp" not in data.files
        assert data["label_score"].dtype == np.float64
        assert list(data["label_score"]) == [names.index(n) / 4 for n in data["name"]]


def test_resume_is_refused_for_binary_outputs(tmp_path, corpus, small_config, capsys):
    code = run("-i", corpus, "-o", tmp_path / "f.parquet", "-net", "small", "-config",
               small_config, "--resume")
    assert code == 2 and "--resume works for ARFF and CSV" in capsys.readouterr().err
