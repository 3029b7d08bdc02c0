"""One job, one function: every way of running builds a Job and calls run_job once.

The commands only parse, build the job and turn its report into messages and an exit
code; the checks, the lock, the executor, the network and the writing are the engine's.
"""
from __future__ import annotations

import json
import warnings
from decimal import Decimal

import numpy as np
import pytest

import deep_spectrum_extractor as ds
from conftest import tone, write_wav
from deep_spectrum_extractor import run
from deep_spectrum_extractor.cli import deepspectrum, extract_ds_features
from deep_spectrum_extractor.errors import DeepSpectrumWarning, ParameterError
from deep_spectrum_extractor.job import Cluster, Job, Output
from deep_spectrum_extractor.settings import FeatureSettings, RunOptions


class ZeroNetwork:
    def features(self, images):
        return np.zeros((len(images), 3), np.float32)


@pytest.fixture
def jobs(monkeypatch):
    """Every job handed to run_job, in order (the real run_job still runs it)."""
    seen = []
    original = run.run_job

    def recording(job, *args, **kwargs):
        seen.append(job)
        return original(job, *args, **kwargs)

    monkeypatch.setattr(run, "run_job", recording)
    return seen


def test_every_command_and_the_api_build_one_job_and_call_run_job(jobs, tmp_path, corpus,
                                                                   small_config):
    common = ["-config", small_config, "-np", "1"]
    out = tmp_path / "f.arff"
    assert extract_ds_features.main([str(a) for a in ["-i", corpus, "-o", out, "-t", "1",
                                                      "0.5", "-net", "small", *common]]) == 0
    modern = ["-c", small_config, "-np", "1"]
    assert deepspectrum.main(["features", corpus, "-o", tmp_path / "g.csv", "-en", "small",
                              "--shard", "1/2", *modern]) == 0
    assert deepspectrum.main(["plot", corpus, "-so", tmp_path / "plots", *modern]) == 0
    assert deepspectrum.main(["image-features", tmp_path / "plots", "-o",
                              tmp_path / "images.csv", "-en", "small", "-c",
                              small_config]) == 0
    with ds.DeepSpectrum(net="small", config=small_config) as spectrum:
        spectrum.process_folder(corpus)
        spectrum.process_file(sorted(corpus.rglob("*.wav"))[0])
    assert len(jobs) == 6
    single, shard, plot, images, folder, one = jobs
    assert single.output == Output(out) and single.settings.window == 1
    assert shard.output.shard == (1, 2) and shard.output.target.name == "g.shard-1-of-2.csv"
    assert shard.output.names == "relative" and single.output.names == "file"
    assert plot.output is None and plot.extra.spectrogram_dir == tmp_path / "plots"
    assert images.kind == "images" and images.output.timestamps is False
    assert folder.output is None and len(folder.inputs) == 4 and len(one.inputs) == 1
    assert all(job.options.processes == 1 for job in jobs)


def test_a_job_written_from_python_equals_the_command(tmp_path, corpus, small_config):
    command = tmp_path / "command.csv"
    assert extract_ds_features.main([str(a) for a in [
        "-i", corpus, "-o", command, "-t", "1", "0.5", "-net", "small", "-config",
        small_config, "-np", "1"]]) == 0
    from deep_spectrum_extractor.config import load_config
    from deep_spectrum_extractor.labels import folder_labels

    files = sorted(corpus.rglob("*.wav"))
    job = Job(files, FeatureSettings(window=1, hop=Decimal("0.5"), net="small"),
              RunOptions(processes=1), output=Output(tmp_path / "library.csv"),
              labels=folder_labels(files), root=corpus, config=load_config(small_config))
    report = run.run_job(job).wait()
    assert (report.rows, len(report.done), report.skipped, report.committed) == \
        (12, 4, [], True)
    assert (tmp_path / "library.csv").read_bytes() == command.read_bytes()
    sidecar = json.loads((tmp_path / "library.csv.json").read_text())
    assert sidecar["summary"]["rows"] == 12


def test_a_job_is_checked_before_anything_loads(tmp_path, corpus):
    files = sorted(corpus.rglob("*.wav"))
    loads = []
    folder = tmp_path / "a folder"
    folder.mkdir()
    refusals = {
        "is a directory": Output(folder),
        "--resume works for ARFF and CSV output, not .parquet":
            Output(tmp_path / "f.parquet", resume=True),
        "-shard writes ARFF or CSV": Output(tmp_path / "f.npz", shard=(1, 2)),
        "names an input file type": Output(tmp_path / "f.wav"),
    }
    for message, output in refusals.items():
        job = Job(files, FeatureSettings(), output=output)
        with pytest.raises(ParameterError, match=message):
            run.run_job(job, on_load=lambda: loads.append(1)).wait()
    job = Job(files, FeatureSettings(), output=Output(tmp_path / "f.csv", shard=(1, 2)),
              cluster=Cluster("tcp://127.0.0.1:9"))
    with pytest.raises(ParameterError, match="without --resume and -scheduler"):
        run.run_job(job, on_load=lambda: loads.append(1)).wait()
    assert loads == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a folder"]
    with pytest.raises(ParameterError, match="shards are numbered 1 to N"):
        Output(tmp_path / "f.csv", shard=(3, 2))
    with pytest.raises(ParameterError, match="the job has no inputs"):
        run.run_job(Job([], FeatureSettings())).wait()


def test_library_warnings_are_warnings_and_the_command_prints_them(tmp_path, small_config,
                                                                   capsys):
    path = write_wav(tmp_path / "in" / "a.wav", tone(2.0))
    job = Job([path], FeatureSettings(window=Decimal("0.5"), hop=Decimal("0.75")),
              RunOptions(processes=1))
    with pytest.warns(DeepSpectrumWarning, match="the hop is longer than the window"):
        [result] = run.run_job(job, ZeroNetwork())
    assert result.ok and result.features.shape == (2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the command turns them into lines, never raises
        assert extract_ds_features.main([str(a) for a in [
            "-i", path, "-o", tmp_path / "f.csv", "-t", "0.5", "0.75", "-net", "small",
            "-config", small_config, "-np", "1"]]) == 0
    err = capsys.readouterr().err
    assert "extract_ds_features: warning: -t 0.5 0.75: the hop is longer than the window" in err


def test_a_run_yields_each_input_once_and_is_iterated_once(tmp_path):
    good = write_wav(tmp_path / "good.wav", tone(1.0))
    short = write_wav(tmp_path / "short.wav", tone(0.01))
    job = Job([good, short, good], FeatureSettings(window=Decimal("0.5"), hop=Decimal("0.5")),
              RunOptions(processes=1, batch_size=2))
    result = run.run_job(job, ZeroNetwork())
    outcomes = list(result)
    assert [(o.index, o.ok) for o in outcomes] == [(0, True), (1, False), (2, True)]
    assert [len(o.timestamps) for o in outcomes] == [2, 0, 2]
    assert result.report.done == [good, good] and result.report.skipped[0][0] == short
    with pytest.raises(RuntimeError, match="a run is iterated once"):
        list(result)


def test_stop_on_error_stops_the_run_and_keeps_the_part_file(tmp_path, small_model):
    good = write_wav(tmp_path / "in" / "good.wav", tone(1.0))
    bad = tmp_path / "in" / "bad.wav"
    bad.write_text("not audio")
    output = tmp_path / "out" / "f.csv"
    job = Job([good, bad, good], FeatureSettings(), RunOptions(processes=1),
              output=Output(output), stop_on_error=True, model=small_model)
    with pytest.raises(run.StopOnError, match="bad.wav: cannot decode audio"):
        run.run_job(job, ZeroNetwork()).wait()
    assert not output.exists()
    assert (output.parent / ".f.csv.journal").exists()  # --resume continues from here
