"""Extraction on a real Dask cluster (scheduler and two worker processes on 127.0.0.1).

Every test compares with the single-machine run byte for byte: the network's float32
results depend on each image's batch, so equal bytes show that the cluster fed the
network exactly the single run's batches.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from deep_spectrum_extractor.backend.networks import resolve_model
from deep_spectrum_extractor.distributed import (DistributedError, dask_executor, has_model,
                                                 shipped_models)
from deep_spectrum_extractor.errors import AudioError, ModelError
from deep_spectrum_extractor.extraction import file_sha256
from deep_spectrum_extractor.job import Cluster
from deep_spectrum_extractor.run import Driver, run_job, work
from deep_spectrum_extractor.run.engine import Model
from deep_spectrum_extractor.settings import RunOptions
from test_sharding import BATCH, cli_args, job_from_args, make_corpus, single_run

TIMEOUT = 120  # seconds any one task may take before the run gives up


@pytest.fixture(scope="module")
def dist_corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("dist_corpus"))


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two single-threaded worker processes over TCP on 127.0.0.1."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def reference(dist_corpus, small_config, tmp_path_factory):
    """The single-machine ARFF (``-np 1``) and the files it skipped, with reasons."""
    output = tmp_path_factory.mktemp("single") / "features.arff"
    data = single_run(dist_corpus, output, small_config)
    sidecar = json.loads(output.with_name(output.name + ".json").read_text())
    skipped = [(entry["file"], entry["reason"]) for entry in sidecar["summary"]["files_skipped"]]
    return data, skipped


def on_cluster(job, scheduler, *, gpu: bool = True, memory: bool = False, **cluster):
    """``job`` run by the workers of ``scheduler`` (its features returned with ``memory``)."""
    return dataclasses.replace(job, cluster=Cluster(scheduler, timeout=TIMEOUT, **cluster),
                               config=dataclasses.replace(job.config, gpu=gpu),
                               output=None if memory else job.output)


def in_memory(job, files=None, options=None):
    """``job`` with its features returned instead of written."""
    return dataclasses.replace(job, output=None, inputs=job.inputs if files is None else files,
                               options=options or job.options)


def skipped_of(output):
    sidecar = json.loads(output.with_name(output.name + ".json").read_text())
    return [(entry["file"], entry["reason"]) for entry in sidecar["summary"]["files_skipped"]]


def same_results(first, second):
    assert [(r.index, r.path, r.error) for r in first] == \
        [(r.index, r.path, r.error) for r in second]
    for a, b in zip(first, second):
        assert a.timestamps == b.timestamps and a.durations == b.durations
        if a.features is None:
            assert b.features is None
        else:
            assert a.features.dtype == b.features.dtype == np.float32
            assert a.features.tobytes() == b.features.tobytes()


def test_arff_from_the_cluster_equals_the_single_run(dist_corpus, small_config, cluster,
                                                     reference, tmp_path):
    job = job_from_args(cli_args(dist_corpus, tmp_path / "dist.arff", small_config))
    model = resolve_model(job.config, job.settings.net)[1]
    with Client(cluster.scheduler_address, set_as_default=False) as client:
        assert set(client.run(has_model, str(model), file_sha256(model)).values()) == {True}
    report = run_job(on_cluster(job, cluster.scheduler_address, ship_model=False)).wait()
    expected, expected_skipped = reference
    assert job.output.path.read_bytes() == expected
    assert skipped_of(job.output.path) == expected_skipped
    assert [path.name for path, _ in report.skipped] == ["short.wav", "bad.wav"]


def test_csv_with_the_model_sent_to_the_workers(dist_corpus, small_config, cluster, tmp_path):
    expected = single_run(dist_corpus, tmp_path / "single.csv", small_config)
    job = job_from_args(cli_args(dist_corpus, tmp_path / "dist.csv", small_config))
    model = resolve_model(job.config, job.settings.net)[1]
    sha256 = file_sha256(model)
    with Client(cluster, set_as_default=False) as client:
        run_job(on_cluster(job, client, ship_model=True, batches_per_task=3,
                           window=2)).wait()
        received = client.run(shipped_models)
    assert job.output.path.read_bytes() == expected
    assert len(received) == 2
    for models in received.values():
        assert file_sha256(models[sha256]) == sha256       # a copy in the worker's folder
        assert models[sha256] != str(model)


def test_an_unreachable_scheduler_or_a_model_the_workers_lack_is_named(
        dist_corpus, small_config, cluster, tmp_path):
    job = job_from_args(cli_args(dist_corpus, tmp_path / "unused.arff", small_config))
    unreachable = run_job(dataclasses.replace(job, cluster=Cluster("tcp://127.0.0.1:9",
                                                                   timeout=2)))
    with pytest.raises(DistributedError, match="cannot reach the Dask scheduler at "
                                               "tcp://127.0.0.1:9"):
        unreachable.wait()
    assert not job.output.path.exists()
    # the client has the model, the workers do not see its path and nothing is sent
    real = resolve_model(job.config, job.settings.net)[1]
    missing = Model(tmp_path / "elsewhere" / "small.pb", job.settings.layer, False,
                    file_sha256(real))
    with dask_executor(Cluster(cluster, ship_model=False, timeout=TIMEOUT), missing) as executor:
        driver = Driver(in_memory(job), executor)
        with pytest.raises(ModelError, match=r"small\.pb does not exist on worker "
                                             r".*ship_model=True"):
            list(driver.walk())


def test_chunks_that_cannot_be_plotted_shift_the_batches_as_in_a_single_run(
        dist_corpus, small_config, session_extractor, monkeypatch):
    """Failures met while plotting make the client re-plan the batches after them.

    The single run drops the segment (``-batch_size`` chunks of a file) being plotted,
    or the whole file for an unexpected error in its first segment; every later chunk
    moves to another batch position.
    """
    job = job_from_args(cli_args(dist_corpus, dist_corpus / "unused.arff", small_config))
    by_name = {path.name: path for path in job.inputs}
    # two.wav (positions 0-1) shares batch 0 with the segment of three.wav that fails in
    # batch 1, so two.wav is final only when batch 1 is; the later files move
    files = [by_name[name] for name in ("two.wav", "three.wav", "four.wav", "six.wav",
                                        "one.wav", "short.wav", "bad.wav", "five.wav")]
    options = RunOptions(processes=1, batch_size=BATCH)
    untouched = list(run_job(in_memory(job, files, options), session_extractor))
    render = work.render_chunks
    failing = {("three.wav", 4): AudioError("chunk 4 cannot be drawn"),  # drops chunks 0-4
               ("four.wav", 0): RuntimeError("first chunk"),             # drops the file
               ("six.wav", 5): RuntimeError("last chunk")}               # drops chunk 5

    def flaky(chunks, *args, relative=None, **kwargs):
        for chunk in chunks:
            if relative is not None and (relative.name, chunk.index) in failing:
                raise failing[relative.name, chunk.index]
        return render(chunks, *args, relative=relative, **kwargs)

    monkeypatch.setattr(work, "render_chunks", flaky)
    local = list(run_job(in_memory(job, files, options), session_extractor))
    # one in-process worker with two threads: it sees the patched plotting function
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster:
        remote = list(run_job(on_cluster(in_memory(job, files, options), cluster,
                                         gpu=False, memory=True, ship_model=False)))
    same_results(local, remote)
    errors = {r.path.name: r.error for r in remote if not r.ok}
    assert errors == {"short.wav": errors["short.wav"], "bad.wav": errors["bad.wav"],
                      "three.wav": "chunk 4 cannot be drawn",
                      "four.wav": "RuntimeError: first chunk",
                      "six.wav": "RuntimeError: last chunk"}
    # the files after the failures moved to other batch positions and shapes, which
    # changes bits (which files depends on the kernels: oneDNN's rows depend on the
    # batch's shape, Eigen's on the position too): the comparison above is not vacuous
    changed = []
    for name in ("one.wav", "five.wav"):
        before, after = (next(r.features for r in run if r.path.name == name)
                         for run in (untouched, remote))
        assert before.shape == after.shape, name
        changed += [name] if before.tobytes() != after.tobytes() else []
    assert changed


def test_a_worker_killed_part_way_leaves_the_output_complete(dist_corpus, small_config,
                                                             cluster, reference, tmp_path):
    job = job_from_args(cli_args(dist_corpus, tmp_path / "killed.arff", small_config))
    # matplotlib draws the same pixels, more slowly: the tasks stay in flight long enough
    options = RunOptions(processes=1, batch_size=BATCH, renderer="matplotlib")
    yielded, killed = [], {}
    stop = threading.Event()
    with Client(cluster, set_as_default=False) as client, \
            Client(cluster, set_as_default=False) as observer:
        client.wait_for_workers(2, timeout=60)
        pids = observer.run(os.getpid)

        def kill_a_busy_worker():
            deadline = time.monotonic() + TIMEOUT
            while not stop.is_set() and time.monotonic() < deadline:
                if yielded:
                    for address, keys in observer.processing().items():
                        busy = [key for key in keys if str(key).startswith("deep-spectrum-range")]
                        if busy and address in pids:
                            os.kill(pids[address], signal.SIGKILL)
                            killed[address] = busy
                            return
                time.sleep(0.005)

        watcher = threading.Thread(target=kill_a_busy_worker, daemon=True)
        watcher.start()
        try:
            for result in run_job(on_cluster(dataclasses.replace(job, options=options),
                                             client)):
                yielded.append(result.index)
        finally:
            stop.set()
            watcher.join(10)
    assert killed, "no worker was busy with an extraction task after the first file"
    expected, expected_skipped = reference
    assert yielded == list(range(len(job.inputs)))
    assert job.output.path.read_bytes() == expected
    assert skipped_of(job.output.path) == expected_skipped


def test_command_line_on_the_cluster_equals_the_single_run(dist_corpus, small_config,
                                                           cluster, tmp_path):
    """extract_ds_features -scheduler ADDRESS writes the bytes of a single-machine run."""
    from deep_spectrum_extractor.cli.extract_ds_features import main

    args = ["-i", dist_corpus, "-t", "0.5", "0.25", "-net", "small", "-config", small_config,
            "-batch_size", "5"]
    single, clustered = tmp_path / "single.arff", tmp_path / "cluster.arff"
    assert main([str(a) for a in [*args, "-o", single, "-np", "1"]]) in (0, 1)
    assert main([str(a) for a in [*args, "-o", clustered, "-scheduler",
                                  cluster.scheduler_address]]) in (0, 1)
    assert clustered.read_bytes() == single.read_bytes()
    assert (tmp_path / "cluster.arff.json").read_bytes() == \
        (tmp_path / "single.arff.json").read_bytes().replace(b"single.arff", b"cluster.arff")


def test_per_file_statistics_on_the_cluster_equal_the_single_run(dist_corpus, small_config,
                                                                 cluster, tmp_path):
    from deep_spectrum_extractor.cli.extract_ds_features import main

    args = ["-i", dist_corpus, "-t", "0.5", "0.25", "-net", "small", "-config", small_config,
            "-batch_size", "5", "--file_statistics"]
    single, clustered = tmp_path / "single.csv", tmp_path / "cluster.csv"
    assert main([str(a) for a in [*args, "-o", single, "-np", "1"]]) in (0, 1)
    assert main([str(a) for a in [*args, "-o", clustered, "-scheduler",
                                  cluster.scheduler_address]]) in (0, 1)
    assert clustered.read_bytes() == single.read_bytes()
    assert single.read_text().splitlines()[0].split(",")[1] == "mean_neuron_0"
