"""Throughput of distributed extraction against the single-machine pipeline.

    python benchmarks/distributed_benchmark.py [--files 24] [--seconds 4] [--model full]
                                               [--workers 1 2] [--batch-size 32]
                                               [--split-threads]

Generates a corpus (``--files`` recordings of ``--seconds`` at 16 kHz, ``-t 1 0.5``, mel
spectrograms), builds an AlexNet-topology graph with random weights (``full``: the real
network's widths, 244 MB; ``small``: the test suite's narrow one) and extracts the corpus

(a) in one process: a job with ``-np 1`` (reading, plotting and the
    network all in this process), and
(b) with a job on a local Dask
    cluster (scheduler and single-threaded worker processes over TCP on 127.0.0.1) of
    each ``--workers`` size, TensorFlow in every worker using as many threads as in (a)
    (the thread count changes the last bits of the features); with ``--split-threads``
    also the largest cluster with the cores split between its workers.

Each cluster is warmed up first (TensorFlow imported and the network loaded on every
worker), so the timings are of the extraction: the counting pass, plotting, the network
and collecting the rows.  It prints chunks per second, the throughput per worker and
whether every run's features are byte-identical to (a).  On one machine the workers
share its cores, so the table shows the overhead of the distributed path and how far
the cores go, not what more machines would add.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deep-spectrum"))

SAMPLE_RATE = 16000

from pipeline_benchmark import make_corpus  # noqa: E402  (the same corpus)


def features_of(results) -> tuple[int, bytes]:
    """Rows and the bytes of all features, in order."""
    rows, blocks = 0, []
    for result in results:
        if result.features is not None:
            rows += len(result.features)
            blocks.append(result.features.tobytes())
    return rows, b"".join(blocks)


def single_process(files, settings, options, model: Path) -> tuple[float, int, bytes]:
    import numpy as np

    from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor
    from deep_spectrum_extractor.job import Job
    from deep_spectrum_extractor.run import run_job

    with FrozenGraphExtractor(model, settings.layer) as extractor:
        extractor.features(np.zeros((1, 227, 227, 3), np.uint8))  # warm up
        features_of(run_job(Job(files[:1], settings, options), extractor))  # imports
        started = time.perf_counter()
        rows, data = features_of(run_job(Job(files, settings, options), extractor))
        return time.perf_counter() - started, rows, data


def _load_network(model) -> None:
    """Run on every worker: load the network into the worker's cache."""
    from deep_spectrum_extractor.distributed import worker_extractor

    worker_extractor(model)


def on_cluster(workers: int, files, settings, options, model: Path,
               threads: int | None) -> tuple[float, int, bytes]:
    from distributed import Client, LocalCluster

    from deep_spectrum_extractor.config import load_config
    from deep_spectrum_extractor.distributed import ModelRef, single_machine_threads
    from deep_spectrum_extractor.extraction import file_sha256
    from deep_spectrum_extractor.job import Cluster, Job
    from deep_spectrum_extractor.run import run_job

    def job(inputs):
        return Job(inputs, settings, options, model=model, config=load_config(None),
                   cluster=Cluster(client, ship_model=False, threads=threads))

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0",
                      silence_logs=logging.ERROR) as cluster, \
            Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(workers, timeout=120)
        # warm-up: every worker imports TensorFlow and loads the network
        client.run(_load_network, ModelRef(str(model), file_sha256(model), settings.layer,
                                           threads=threads or single_machine_threads()))
        features_of(run_job(job(files[:1])))
        started = time.perf_counter()
        rows, data = features_of(run_job(job(files)))
        return time.perf_counter() - started, rows, data


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--model", choices=("full", "small"), default="full")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--split-threads", action="store_true",
                        help="also run the largest cluster with the cores split between its "
                        "workers (TensorFlow threads = cores / workers): faster on one "
                        "machine, other last bits")
    args = parser.parse_args(argv)

    from deep_spectrum_extractor.backend.alexnet import (FULL_WIDTHS, SMALL_WIDTHS,
                                                         build_alexnet_graph,
                                                         random_alexnet_weights)
    from deep_spectrum_extractor.backend.graph_io import write_graph_def
    from deep_spectrum_extractor.settings import FeatureSettings, RunOptions

    settings = FeatureSettings(mode="mel", window=Decimal(1), hop=Decimal("0.5"))
    options = RunOptions(processes=1, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory(prefix="ds-dist-bench-") as tmp:
        tmp = Path(tmp)
        files = make_corpus(tmp / "corpus", args.files, args.seconds)
        widths = FULL_WIDTHS if args.model == "full" else SMALL_WIDTHS
        model = write_graph_def(build_alexnet_graph(random_alexnet_weights(widths)),
                                tmp / f"alexnet_{args.model}.pb")
        print(f"corpus: {len(files)} files x {args.seconds:g} s at {SAMPLE_RATE} Hz, -t 1 0.5, "
              f"mode mel; AlexNet topology ({args.model}, random weights, fc7); batch size "
              f"{args.batch_size}; {os.cpu_count()} CPU cores")
        runs = [("single process (-np 1)", 1, *single_process(files, settings, options,
                                                             model))]
        cores = len(os.sched_getaffinity(0))
        for workers in args.workers:
            runs.append((f"Dask, {cores} TF threads", workers,
                         *on_cluster(workers, files, settings, options, model, None)))
        if args.split_threads:
            workers = max(args.workers)
            threads = max(1, cores // workers)
            runs.append((f"Dask, {threads} TF thread(s)", workers,
                         *on_cluster(workers, files, settings, options, model, threads)))
        reference = runs[0][4]
        print(f"{'setup':<24}{'workers':>8}{'chunks':>8}{'seconds':>9}{'chunks/s':>10}"
              f"{'per worker':>12}  identical to single")
        for name, workers, seconds, rows, data in runs:
            rate = rows / seconds
            print(f"{name:<24}{workers:>8}{rows:>8}{seconds:>9.1f}{rate:>10.1f}"
                  f"{rate / workers:>12.1f}  {data == reference}")


if __name__ == "__main__":
    main()
