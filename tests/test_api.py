"""The Python API: DataFrames indexed by (file, start, end), equal to the CLI's numbers."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import deep_spectrum_extractor as ds
from conftest import tone
from deep_spectrum_extractor.cli.extract_ds_features import main
from deep_spectrum_extractor.errors import AudioError, ParameterError


def test_extract_folder_equals_the_command_line(tmp_path, corpus, small_config):
    frame = ds.extract(corpus, window=1, hop=0.5, mode="mel", net="small", config=small_config)
    out = tmp_path / "f.csv"
    assert main([str(a) for a in ["-i", corpus, "-o", out, "-t", "1", "0.5", "-mode", "mel",
                                  "-net", "small", "-config", small_config, "-np", "1"]]) == 0
    written = pd.read_csv(out)
    assert list(frame.index.names) == ["file", "start", "end"]
    assert [Path(f).name for f in frame.index.get_level_values("file")] == list(written["name"])
    assert list(frame.index.get_level_values("start")) == list(written["timeStamp"])
    np.testing.assert_array_equal(frame.to_numpy(),
                                  written.filter(like="neuron_").to_numpy(dtype=np.float32))
    assert list(frame.columns) == [f"neuron_{i}" for i in range(48)]
    # a chunk ends a window after it starts, or where its (trimmed) file ends
    starts = frame.index.get_level_values("start").to_numpy()
    ends = frame.index.get_level_values("end").to_numpy()
    assert np.all(ends - starts <= 1 + 1e-9) and np.all(ends > starts)


def test_arrays_with_a_sample_rate(small_config):
    signals = [tone(1.0, 16000, 440.0), np.stack([tone(0.6, 16000, 300.0)] * 2, axis=1)]
    frame = ds.extract(signals, sample_rate=16000, window=0.5, hop=0.25, net="small",
                       config=small_config)
    files = list(dict.fromkeys(frame.index.get_level_values("file")))
    assert files == ["signal_0", "signal_1"]
    assert list(frame.loc["signal_0"].index) == [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0),
                                                 (0.75, 1.0)]
    with pytest.raises(ParameterError, match="sample_rate"):
        ds.extract(signals, net="small", config=small_config)


def test_streaming_yields_one_frame_per_file(corpus, small_config):
    frames = list(ds.iter_extract(corpus, net="small", config=small_config, layer="fc8"))
    assert len(frames) == 4 and all(frame.shape == (1, 10) for frame in frames)
    whole = ds.extract(corpus, net="small", config=small_config, layer="fc8")
    pd.testing.assert_frame_equal(pd.concat(frames), whole)


def test_bad_input_raises_or_is_skipped(tmp_path, small_config):
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        ds.extract([tmp_path / "bad.wav"], net="small", config=small_config)
    frames = list(ds.iter_extract([tmp_path / "bad.wav"], net="small", config=small_config,
                                  errors="skip"))
    assert frames == []
