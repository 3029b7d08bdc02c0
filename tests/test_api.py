"""The Python API: DataFrames indexed by (file, start, end), equal to the CLI's numbers."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import deep_spectrum_extractor as ds
from conftest import tone, write_wav
from deep_spectrum_extractor.cli.extract_ds_features import main
from deep_spectrum_extractor.errors import AudioError, ModelError, ParameterError
from deep_spectrum_extractor.settings import FeatureSettings, RunOptions


class ZeroNetwork:
    def features(self, images):
        return np.zeros((len(images), 2), np.float32)


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


# DeepSpectrum: settings and network once, any number of calls ------------------------

def _counting(monkeypatch, owner, name):
    """Replace ``owner.name`` by a wrapper that counts its calls (and still runs it)."""
    original = getattr(owner, name)
    calls = []

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_one_object_loads_the_network_and_checks_the_renderer_once(monkeypatch, corpus,
                                                                    small_config):
    from deep_spectrum_extractor.backend import extractor, networks
    from deep_spectrum_extractor.images import plotting, render

    monkeypatch.setattr(render, "_VERIFIED", set())  # as in a fresh process
    loads = _counting(monkeypatch, extractor.FrozenGraphExtractor, "__init__")
    resolves = _counting(monkeypatch, networks, "resolve_model")
    probes = _counting(monkeypatch, plotting, "plot_matrix")  # the self-check draws 4 probes
    files = sorted(corpus.rglob("*.wav"))
    with ds.DeepSpectrum(window=0.5, hop=0.25, net="small", config=small_config) as spectrum:
        assert (len(loads), len(resolves), len(probes)) == (1, 1, 4)
        first = spectrum.process_file(files[0])
        spectrum.process_signal(tone(0.8), 16000)
        spectrum.process_files(files[:2])
        spectrum.process_folder(corpus)
        again = spectrum.process_file(files[0])
    assert (len(loads), len(resolves), len(probes)) == (1, 1, 4)
    pd.testing.assert_frame_equal(first, again)
    # the matplotlib renderer needs no self-check
    with ds.DeepSpectrum(net="small", config=small_config, renderer="matplotlib"):
        assert len(probes) == 4


@pytest.mark.parametrize("processes", [1, 2])
def test_the_library_path_runs_the_renderer_self_check(monkeypatch, tmp_path, corpus,
                                                       processes):
    """A job run from Python (no command line) refuses a renderer that no longer draws
    what matplotlib draws, before any feature is computed: checked in this process, or by
    a worker when workers draw."""
    from deep_spectrum_extractor.images import render
    from deep_spectrum_extractor.job import Job
    from deep_spectrum_extractor.run import run_job

    monkeypatch.setattr(render, "_VERIFIED", set())
    if processes == 1:
        original = render.render_matrix
        monkeypatch.setattr(render, "render_matrix",
                            lambda *args, **kwargs: 255 - original(*args, **kwargs))
    else:  # the workers' matplotlib draws unsnapped meshes: not what the renderer draws
        (tmp_path / "matplotlibrc").write_text("pcolormesh.snap: False\n")
        monkeypatch.setenv("MATPLOTLIBRC", str(tmp_path))
    batches = []

    class Network(ZeroNetwork):
        def features(self, images):
            batches.append(len(images))
            return super().features(images)

    job = Job(sorted(corpus.rglob("*.wav"))[:2], FeatureSettings(window=0.5, hop=0.25),
              RunOptions(processes=processes))
    with pytest.raises(render.RendererMismatch, match="differs from plot_matrix"):
        list(run_job(job, Network()))
    assert batches == []


def test_process_file_equals_extract(corpus, small_config):
    path = sorted(corpus.rglob("*.wav"))[1]
    settings = dict(window=0.5, hop=0.25, mode="mel", net="small", config=small_config)
    with ds.DeepSpectrum(**settings) as spectrum:
        frame = spectrum.process_file(path)
        by_name = spectrum.process_file(str(path))
    expected = ds.extract(path, **settings)
    assert np.array_equal(frame.to_numpy(), expected.to_numpy())
    assert frame.index.equals(expected.index) and by_name.index.equals(expected.index)
    assert list(frame.index.names) == list(ds.api.INDEX_NAMES)
    assert list(frame.columns) == [f"neuron_{i}" for i in range(48)]
    pd.testing.assert_frame_equal(frame, expected)


def test_process_signal_equals_the_same_samples_in_a_float_wav(tmp_path, small_config):
    signal = tone(1.3, 16000, 700.0).astype(np.float32)  # exactly what a FLOAT wav holds
    path = write_wav(tmp_path / "tone.wav", signal, 16000, subtype="FLOAT")
    with ds.DeepSpectrum(window=0.5, hop=0.25, net="small", config=small_config) as spectrum:
        from_file = spectrum.process_file(path)
        named = spectrum.process_signal(signal, 16000, name=str(path))
        unnamed = spectrum.process_signal(signal, 16000)
        stereo = spectrum.process_signal(np.stack([signal, signal], axis=1), 16000)
    pd.testing.assert_frame_equal(named, from_file)
    assert np.array_equal(unnamed.to_numpy(), from_file.to_numpy())
    assert set(unnamed.index.get_level_values("file")) == {"signal_0"}
    # unnamed, it is what extract() gives for one array
    pd.testing.assert_frame_equal(unnamed, ds.extract([signal], sample_rate=16000, window=0.5,
                                                      hop=0.25, net="small",
                                                      config=small_config))
    pd.testing.assert_frame_equal(stereo, unnamed)  # channels are averaged


def test_process_folder_equals_extract_of_the_folder(corpus, small_config):
    settings = dict(window=1, hop=0.5, net="small", config=small_config, layer="fc8")
    with ds.DeepSpectrum(**settings) as spectrum:
        folder = spectrum.process_folder(corpus)
        files = spectrum.process_files(sorted(corpus.rglob("*.wav")))
        streamed = list(spectrum.iter_files(sorted(corpus.rglob("*.wav"))))
    expected = ds.extract(corpus, **settings)
    pd.testing.assert_frame_equal(folder, expected)
    pd.testing.assert_frame_equal(files, expected)
    assert len(streamed) == 4
    pd.testing.assert_frame_equal(pd.concat(streamed), expected)


def test_broken_inputs_raise_or_are_skipped(tmp_path, small_config):
    good = write_wav(tmp_path / "in" / "good.wav", tone(1.0))
    bad = tmp_path / "in" / "bad.wav"
    bad.write_text("not audio")
    with ds.DeepSpectrum(net="small", config=small_config) as spectrum:
        with pytest.raises(AudioError, match="bad.wav"):
            spectrum.process_files([good, bad])
        with pytest.raises(AudioError, match="bad.wav"):
            spectrum.process_folder(tmp_path / "in")
        with pytest.raises(AudioError, match="bad.wav"):
            spectrum.process_file(bad)
        with pytest.raises(AudioError, match="quiet"):
            spectrum.process_signal(np.zeros(16000), 16000, name="quiet")
        skipped = spectrum.process_files([bad, good], errors="skip")
        pd.testing.assert_frame_equal(skipped, spectrum.process_file(good))
        pd.testing.assert_frame_equal(spectrum.process_folder(tmp_path / "in", errors="skip"),
                                      skipped)
        with pytest.raises(ParameterError, match="no features"):
            spectrum.process_files([bad], errors="skip")
        with pytest.raises(ParameterError, match="errors="):
            spectrum.process_files([good], errors="ignore")
        with pytest.raises(ParameterError, match="process_file"):
            spectrum.process_files(str(good))  # a string is not a list of paths
        # the object is still usable after the errors
        pd.testing.assert_frame_equal(spectrum.process_file(good), skipped)


def test_close_releases_the_network_and_later_use_raises(monkeypatch, small_config):
    from deep_spectrum_extractor.backend import extractor

    closes = _counting(monkeypatch, extractor.FrozenGraphExtractor, "close")
    spectrum = ds.DeepSpectrum(net="small", config=small_config)
    assert not spectrum.closed and "small" in repr(spectrum)
    spectrum.process_signal(tone(0.5), 16000)
    spectrum.close()
    assert spectrum.closed and len(closes) == 1 and "closed" in repr(spectrum)
    for use in (lambda: spectrum.process_signal(tone(0.5), 16000),
                lambda: spectrum.process_files(["x.wav"]),
                lambda: spectrum.iter_files(["x.wav"])):
        with pytest.raises(RuntimeError, match="closed"):
            use()
    spectrum.close()  # again: nothing to release
    assert len(closes) == 1
    with pytest.raises(RuntimeError, match="closed"):
        with spectrum:
            pass


def test_context_manager_closes_even_on_error(monkeypatch, small_config):
    from deep_spectrum_extractor.backend import extractor

    closes = _counting(monkeypatch, extractor.FrozenGraphExtractor, "close")
    with ds.DeepSpectrum(net="small", config=small_config) as spectrum:
        assert spectrum.process_signal(tone(0.5), 16000).shape == (1, 48)
    assert spectrum.closed and len(closes) == 1
    with pytest.raises(KeyError):
        with ds.DeepSpectrum(net="small", config=small_config) as other:
            raise KeyError("stop")
    assert other.closed and len(closes) == 2
    # iter_extract releases its network when the caller stops early, too
    for _frame in ds.iter_extract([tone(0.5), tone(0.6)], sample_rate=16000, net="small",
                                  config=small_config):
        break
    del _frame
    import gc

    gc.collect()
    assert len(closes) == 3


def test_bad_settings_fail_at_construction(small_config):
    with pytest.raises(ParameterError, match="mode"):
        ds.DeepSpectrum(mode="waveform", net="small", config=small_config)
    with pytest.raises(ParameterError, match="-t needs both"):
        ds.DeepSpectrum(window=1, net="small", config=small_config)  # a window needs a hop
    with pytest.raises(ParameterError, match="renderer"):
        ds.DeepSpectrum(renderer="cairo", net="small", config=small_config)
    with pytest.raises(ModelError, match="fc9"):
        ds.DeepSpectrum(net="small", layer="fc9", config=small_config)
    with pytest.raises(ModelError, match="nowhere"):
        ds.DeepSpectrum(net="nowhere", config=small_config)
    with pytest.raises(TypeError):
        ds.DeepSpectrum("small")  # settings are keywords only
    with pytest.raises(TypeError, match="windows"):
        ds.iter_extract([tone(0.5)], sample_rate=16000, windows=1)  # at the call


def test_worker_processes_live_only_during_a_call(monkeypatch, corpus, small_config):
    import multiprocessing
    import time

    import deep_spectrum_extractor.run as run

    executors = []
    original = run.start_executor

    def counted(*args, **kwargs):
        executor = original(*args, **kwargs)
        executors.append(executor)
        return executor

    monkeypatch.setattr(run, "start_executor", counted)
    before = set(multiprocessing.active_children())
    settings = dict(window=0.5, hop=0.25, net="small", config=small_config)
    with ds.DeepSpectrum(processes=2, **settings) as spectrum:
        assert executors == []  # no workers until a call
        folder = spectrum.process_folder(corpus)
        signal = spectrum.process_signal(tone(0.7), 16000)
    assert len(executors) == 2 and all(e.processes == 2 for e in executors)
    deadline = time.monotonic() + 30
    while set(multiprocessing.active_children()) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(multiprocessing.active_children()) - before  # the workers exited
    pd.testing.assert_frame_equal(folder, ds.extract(corpus, processes=1, **settings))
    with ds.DeepSpectrum(processes=1, **settings) as spectrum:
        pd.testing.assert_frame_equal(signal, spectrum.process_signal(tone(0.7), 16000))
