"""One vector per recording: statistics of every feature over its chunks.

The reference is numpy over the chunk rows that the same settings write without
``--file_statistics``: means and standard deviations (ddof 0) at a float32 rounding,
minima and maxima exactly.  Every way of running must write the same bytes.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import deep_spectrum_extractor as ds
from conftest import tone, write_wav
from deep_spectrum_extractor.cli import deepspectrum
from deep_spectrum_extractor.sharding import merge_shards, record_path, shard_path
from test_robustness import cli, start_cli

CHUNKS = ["-t", "0.5", "0.25", "-net", "small", "-batch_size", "5"]


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> Path:
    """Two class folders; lengths chosen so that files straddle batches and shards."""
    root = tmp_path_factory.mktemp("recordings")
    for number, seconds in enumerate((1.3, 3.1, 0.6, 2.2, 4.0)):
        label = "low" if number % 2 else "high"
        write_wav(root / label / f"r{number}.wav",
                  tone(seconds, frequency=200.0 + 170 * number, seed=number))
    (root / "high" / "broken.wav").write_text("not audio")
    return root


def chunk_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"name": str})


def test_statistics_equal_numpy_over_the_chunk_rows(recordings, tmp_path, small_config):
    rows, stats = tmp_path / "rows.csv", tmp_path / "stats.csv"
    common = ["-i", recordings, "-config", small_config, "-np", "1", *CHUNKS]
    assert cli(*common, "-o", rows) == 1  # broken.wav is skipped
    assert cli(*common, "-o", stats, "--file_statistics") == 1
    chunks, summary = chunk_table(rows), chunk_table(stats)
    neurons = [column for column in chunks.columns if column.startswith("neuron_")]
    names = [f"{statistic}_neuron_{index}" for statistic in ("mean", "std", "min", "max")
             for index in range(len(neurons))]
    assert list(summary.columns) == ["name", *names, "class"]  # no timeStamp column
    assert list(summary["name"]) == list(dict.fromkeys(chunks["name"]))
    for _, row in summary.iterrows():
        group = chunks[chunks["name"] == row["name"]]
        values = group[neurons].to_numpy(np.float32).astype(np.float64)
        assert len(values) >= 1
        got = row[names].to_numpy(np.float32).reshape(4, -1)
        np.testing.assert_allclose(got[0], values.mean(axis=0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got[1], values.std(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[2], values.min(axis=0).astype(np.float32))
        np.testing.assert_array_equal(got[3], values.max(axis=0).astype(np.float32))
        assert row["class"] == group["class"].iloc[0]
    one = summary[summary["name"] == "r2.wav"]  # 0.6 s: two chunks
    assert (chunks["name"] == "r2.wav").sum() == 2 and len(one) == 1


def test_every_way_of_running_writes_the_same_statistics(recordings, tmp_path, small_config):
    common = ["-i", recordings, "-config", small_config, *CHUNKS, "--file_statistics"]
    reference = tmp_path / "np1.arff"
    assert cli(*common, "-np", "1", "-o", reference) == 1
    assert cli(*common, "-np", "2", "-o", tmp_path / "np2.arff") == 1
    assert (tmp_path / "np2.arff").read_bytes() == reference.read_bytes()
    # shards: the files are cut between shards by batch, but each shard owns whole files
    out = tmp_path / "sharded" / "f.arff"
    for number in (1, 2, 3):
        assert cli(*common, "-np", "1", "-shard", f"{number}/3", "-o", out) in (0, 1)
    merge_shards([shard_path(out, (number, 3)) for number in (1, 2, 3)], out)
    # 43 chunks in 9 batches of 5: r4.wav (positions 7 to 22) starts in shard 1's batches
    # 0-2 and ends in shard 2's; shard 1 walks on to its end, shard 2 starts after it
    positions = [json.loads(record_path(shard_path(out, (number, 3))).read_text())["positions"]
                 for number in (1, 2, 3)]
    assert positions == [[0, 25], [20, 35], [35, 43]]
    assert out.read_bytes() == reference.read_bytes()
    # Parquet and NPZ hold the same values
    for suffix in (".parquet", ".npz"):
        assert cli(*common, "-np", "1", "-o", tmp_path / f"f{suffix}") == 1
    arff = reference.read_text().split("@data\n")[1].splitlines()
    values = np.array([[np.float32(v) for v in line.split(",")[1:-1]] for line in arff])
    table = pd.read_parquet(tmp_path / "f.parquet")
    assert list(table.columns[1:3]) == ["mean_neuron_0", "mean_neuron_1"]
    np.testing.assert_array_equal(table[table.columns[1:-1]].to_numpy(), values)
    with np.load(tmp_path / "f.npz") as npz:
        np.testing.assert_array_equal(npz["features"], values)
        assert list(npz["columns"]) == list(table.columns[1:-1])
    # deepspectrum (0.6.x spelling) and the Python API
    assert deepspectrum.main([str(a) for a in [
        "features", recordings, "-c", small_config, "-t", "0.5", "0.25", "-en", "small",
        "-bs", "5", "-np", "1", "--file-statistics", "-o", tmp_path / "06.arff"]]) == 1
    modern = (tmp_path / "06.arff").read_text().split("@data\n")[1].splitlines()
    assert [line.split(",", 1)[1] for line in modern] == [line.split(",", 1)[1] for line in arff]
    with ds.DeepSpectrum(window=0.5, hop=0.25, net="small", config=small_config,
                         batch_size=5, statistics=True) as spectrum:
        frame = spectrum.process_folder(recordings, errors="skip")
    np.testing.assert_array_equal(frame.to_numpy(), values)
    assert list(frame.columns) == list(table.columns[1:-1])
    first = frame.loc[str(recordings / "high" / "r0.wav")]
    # 1.3 s: chunks start at 0, 0.25 ... 1.0 s; the last one is 0.3 s long
    assert first.index.tolist() == [(0.0, 1.3)]


def test_a_recording_killed_inside_resumes_its_statistics(tmp_path, small_config, capsys):
    recording = write_wav(tmp_path / "in" / "long.wav", tone(90.0, 8000, seed=3), 8000)
    args = ["-i", recording, "-t", "0.5", "0.25", "-net", "small", "-config", small_config,
            "-np", "1", "-batch_size", "8", "--file_statistics"]
    reference = tmp_path / "reference.csv"
    assert cli(*args, "-o", reference) == 0
    out = tmp_path / "session.csv"
    process = start_cli([*args, "-o", out], tmp_path)
    journal = out.with_name(".session.csv.journal")
    deadline = time.monotonic() + 300
    while True:  # until some batches are done, then kill it inside the recording
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the run made no progress"
        os.killpg(process.pid, signal.SIGSTOP)
        lines = journal.read_text().splitlines() if journal.exists() else []
        checkpoints = [json.loads(line) for line in lines[1:] if '"checkpoint"' in line]
        if len(checkpoints) >= 20:
            break
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists() and checkpoints[-1]["next_input"] == 0
    kept = sorted(path.name for path in tmp_path.glob(".session.csv.journal.*.npz"))
    assert 1 <= len(kept) <= 2  # the statistics of the open recording at the last checkpoints
    capsys.readouterr()
    assert cli(*args, "-o", out, "--resume") == 0
    err = capsys.readouterr().err
    assert "0 file(s) were done before and" in err
    assert int(err.split(" chunk(s) were not drawn again")[0].rsplit(" ", 1)[1]) >= 20 * 8
    assert out.read_bytes() == reference.read_bytes()
    assert not list(tmp_path.glob(".session.csv*"))  # journal and statistics removed


def test_statistics_refuse_what_has_no_meaning(tmp_path, recordings, small_config, capsys):
    labels = tmp_path / "tc.csv"
    labels.write_text("name,time,v\nr0.wav,0,1\n")
    assert cli("-i", recordings, "-o", tmp_path / "f.csv", "-t", "1", "1", "--tc", "-l",
               labels, "--skip_unlabelled", "--file_statistics", "-net", "small", "-config",
               small_config) == 2
    assert "per-file statistics write one row per file" in capsys.readouterr().err
