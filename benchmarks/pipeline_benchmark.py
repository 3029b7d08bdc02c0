"""End-to-end benchmark: the original design against this project's pipeline.

    python benchmarks/pipeline_benchmark.py [--files 200] [--seconds 5] [--scale 10] [--runs 3]

Generates a corpus (``--files`` recordings of ``--seconds`` at 16 kHz in two class folders),
builds an AlexNet-topology graph at full size with random weights, and runs each design in a
process of its own, on the same graph file and the same chunks (``-t 1 0.5``, mel):

(a) the original design as the 2018 tool ran it: chunks read in the main process; per
    chunk, in a ``multiprocessing.Pool``, librosa's STFT and a new mel filter bank, a
    pyplot figure and a PNG round trip; batches of 128 through a ``tf.Session`` with
    TensorFlow's defaults (the 2018 code set only GPU memory growth; on this CPU
    TensorFlow's default kernels are Eigen's); rows written with ``str``;
(b) this project's default, as ``extract_ds_features`` runs it (``extract_to_file``):
    worker processes drawing with the direct renderer, files shipped whole (or in pieces
    of ``batch_size`` chunks), TensorFlow set up for the machine (oneDNN kernels where
    they are faster, Grappler off), inference in the main process, rows written by a
    writer thread;
(c) the same as (b) with ``-renderer matplotlib``: its features must be byte-identical
    to (b)'s.

Worker processes are started and have drawn one plot, and each session has run once,
before the clock starts, for every design: both tools do that while the network loads.
It prints chunks per second for each design and the ratio (b)/(a); the time per chunk of
each drawing path and of both ways to compute the matrix; the inference-only throughput of
each design's session (on as many images, right before and right after its run); (b) runs
``--runs`` times, each run between its own two inference-only runs, and the median run (by
its share of the inference rate) is reported with the others listed; how far
(a)'s features are from (b)'s; whether (b) and (c) are byte-identical; and the peak memory
(all processes of a run together) of the command line on the corpus and on a ``--scale``
times larger one.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deep-spectrum"))

from deep_spectrum_extractor.audio import chunk_signal, default_nfft, read_audio  # noqa: E402
from deep_spectrum_extractor.images import plot_matrix, spectral_matrix  # noqa: E402
from deep_spectrum_extractor.images.render import render_matrix  # noqa: E402
from deep_spectrum_extractor.settings import FeatureSettings, RunOptions  # noqa: E402
from process_memory import peak_tree_memory  # noqa: E402

SAMPLE_RATE = 16000
SETTINGS = FeatureSettings(mode="mel", window=Decimal(1), hop=Decimal("0.5"))


def make_corpus(folder: Path, files: int, seconds: float) -> list[Path]:
    import soundfile

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    paths = []
    for number in range(files):
        label = "tone" if number % 2 else "noise"
        frequency = rng.uniform(100, 4000)
        signal = 0.4 * np.sin(2 * np.pi * frequency * t * (1 + 0.1 * t)) \
            + 0.1 * rng.standard_normal(len(t))
        path = folder / label / f"{label}_{number:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, signal, SAMPLE_RATE, subtype="PCM_16")
        paths.append(path)
    return sorted(paths)


# --- (a) the original design ---------------------------------------------------------------

def _original_chunks(files):
    for path in files:
        signal, sr = read_audio(path)
        nfft = default_nfft(sr)
        for chunk in chunk_signal(signal, sr, window=SETTINGS.window, hop=SETTINGS.hop,
                                  min_length=nfft):
            yield path.name, chunk.timestamp, chunk.samples, sr


def _original_matrix(samples: np.ndarray, sr: int) -> np.ndarray:
    """The mel matrix as the 2018 code computed it: librosa's functions, the mel filter
    bank built anew for every chunk (equal to this project's, which caches it)."""
    import librosa

    nfft = default_nfft(sr)
    spectrum = librosa.stft(samples, n_fft=nfft, hop_length=nfft // 2, center=False)
    mel = librosa.feature.melspectrogram(S=np.abs(spectrum) ** 2, sr=sr, n_mels=SETTINGS.nmel)
    return librosa.power_to_db(mel, ref=np.max, top_db=None)


def _original_draw(matrix: np.ndarray, sr: int) -> np.ndarray:
    """The 2018 drawing: a pyplot figure per chunk, the PNG written to memory and decoded
    again (the pixels equal this project's: tests/test_plotting.py, test_render.py)."""
    import io
    import warnings

    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    nfft = default_nfft(sr)
    figure = plt.figure(frameon=False)
    figure.set_size_inches(1, 1)
    axes = plt.Axes(figure, [0.0, 0.0, 1.0, 1.0])
    axes.set_axis_off()
    figure.add_axes(axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        librosa.display.specshow(matrix, hop_length=nfft // 2, sr=sr, cmap=SETTINGS.cmap,
                                 y_axis=SETTINGS.plot_scale, ax=axes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=SETTINGS.size)
    figure.clf()
    plt.close(figure)
    buffer.seek(0)
    with Image.open(buffer) as png:
        return np.asarray(png.convert("RGBA"))[:, :, :3]


def _original_plot(item):
    """One chunk as a 2018 pool worker turned it into an image."""
    name, timestamp, samples, sr = item
    return name, timestamp, _original_draw(_original_matrix(samples, sr), sr)


def _warm_original(_):
    """A first plot, as this project's workers draw one while the network loads."""
    rng = np.random.default_rng(0)
    _original_plot(("warm-up", Decimal(0), rng.standard_normal(SAMPLE_RATE), SAMPLE_RATE))
    return os.getpid()


class OriginalSession:
    """The 2018 backend: a ``tf.Session`` whose config only turns on GPU memory growth.

    Imports TensorFlow directly, with the environment it was started in (this benchmark
    starts it without ``TF_ENABLE_ONEDNN_OPTS``: TensorFlow's own choice of kernels).
    """

    def __init__(self, model: Path, layer: str = "fc7"):
        import tensorflow as tf

        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(model.read_bytes())
        graph = tf.Graph()
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
            self._input = graph.get_tensor_by_name("input:0")
            output = graph.get_tensor_by_name(f"{layer}/{layer}:0")
            self._output = tf.reshape(output, [tf.shape(output)[0], -1])
        config = tf.compat.v1.ConfigProto()
        config.gpu_options.allow_growth = True
        self.session = tf.compat.v1.Session(graph=graph, config=config)

    def features(self, images) -> np.ndarray:
        return self.session.run(self._output, {self._input: np.asarray(images, np.float32)})


def start_original_pool(processes: int):
    """The 2018 tool created its Pool before loading the network, so the workers' start-up
    overlapped the model's loading; here it happens before the clock starts."""
    pool = multiprocessing.get_context("spawn").Pool(processes)
    pool.map(_warm_original, range(processes), chunksize=1)
    return pool


def run_original(files, extractor, output: Path, pool, labels) -> int:
    """The 2018 structure: Pool.imap over chunks, batches of 128, str() per value."""
    from deep_spectrum_extractor.output.writers import attribute_names

    rows = 0
    with pool, open(output, "w", newline="") as handle:
        plots = pool.imap(_original_plot, _original_chunks(files))
        header = False
        while True:
            batch = [item for _, item in zip(range(128), plots)]
            if not batch:
                break
            features = extractor.features(np.array([image for _, _, image in batch]))
            if not header:
                handle.write(",".join(attribute_names(features.shape[1], timestamps=True,
                                                      labels=None) + ["class"]) + "\n")
                header = True
            for (name, timestamp, _), vector in zip(batch, features):
                handle.write(",".join([name, str(timestamp)] + [str(v) for v in vector]
                                      + [labels[name]]) + "\n")
            rows += len(batch)
    return rows


# --- (b) this project's pipeline -----------------------------------------------------------

def start_default_workers(processes: int, renderer: str = "numpy"):
    """extract_ds_features starts its workers while the network loads, too."""
    from deep_spectrum_extractor.run import start_executor

    return start_executor(processes, SETTINGS, renderer)  # every worker started now


def default_job(files, model: Path, processes: int, renderer: str = "numpy"):
    """What extract_ds_features prepares while the network loads: options, provenance
    (the model's SHA-256) and labels."""
    from deep_spectrum_extractor.extraction import provenance
    from deep_spectrum_extractor.labels import folder_labels

    options = RunOptions(processes=processes, batch_size=128, renderer=renderer)
    return options, provenance(SETTINGS, options, model), folder_labels(files)


def run_default(files, extractor, output: Path, workers, job) -> int:
    """The job as extract_ds_features runs it: engine, writer thread, journal (with the
    workers started beforehand, as extract_ds_features starts them while the network
    loads)."""
    from deep_spectrum_extractor.job import Job, Output
    from deep_spectrum_extractor.run import run_job

    options, _record, labels = job
    try:
        return run_job(Job(files, SETTINGS, options, output=Output(output), labels=labels,
                           model=extractor.model_path), extractor, executor=workers).wait().rows
    finally:
        workers.close()


# --- measurements ----------------------------------------------------------------------------

def render_times(files, count: int = 100) -> dict[str, float]:
    """Seconds per chunk of each drawing path and of each way to compute the matrix."""
    items = [item for _, item in zip(range(count), _original_chunks(files))]
    nfft = default_nfft(SAMPLE_RATE)
    matrices = [spectral_matrix(samples, sr, mode="mel", nfft=nfft) for _, _, samples, sr in items]
    steps = {
        "2018 matrix": (lambda index: _original_matrix(items[index][2], SAMPLE_RATE)),
        "cached matrix": (lambda index: spectral_matrix(items[index][2], SAMPLE_RATE,
                                                        mode="mel", nfft=nfft)),
        "2018 figure": (lambda index: _original_draw(matrices[index], SAMPLE_RATE)),
        "matplotlib": (lambda index: plot_matrix(matrices[index], sample_rate=SAMPLE_RATE,
                                                 nfft=nfft, scale="linear")),
        "direct": (lambda index: render_matrix(matrices[index], sample_rate=SAMPLE_RATE,
                                               nfft=nfft, scale="linear")),
    }
    timings = {}
    for name, step in steps.items():
        step(0)  # warm caches
        started = time.perf_counter()
        for index in range(len(items)):
            step(index)
        timings[name] = (time.perf_counter() - started) / len(items)
    return timings


def inference_rate(extractor, images: int) -> float:
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, size=(128, 227, 227, 3), dtype=np.uint8)
    extractor.features(batch[:8])  # warm up
    started = time.perf_counter()
    done = 0
    while done < images:
        size = min(128, images - done)
        extractor.features(batch[:size])
        done += size
    return done / (time.perf_counter() - started)


def peak_memory(corpus: Path, config: Path, output: Path, processes: int) -> tuple[int, float]:
    command = [sys.executable, "-m", "deep_spectrum_extractor", "-i", str(corpus), "-o",
               str(output), "-t", "1", "0.5", "-mode", "mel", "-net", "bench", "-config",
               str(config), "-np", str(processes)]
    status, peak, seconds = peak_tree_memory(command, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
    if status != 0:
        raise RuntimeError(f"{' '.join(command)} failed with {status}")
    return peak, seconds


def run_design(design: str, work: Path, processes: int, runs: int = 1) -> dict:
    """One design's ``runs`` runs in this process (a fresh one), each between two
    inference-only runs.

    The session's inference-only rate is measured on as many images right before and
    right after each run and averaged: this machine's speed drifts over minutes.
    """
    files = sorted((work / "corpus").rglob("*.wav"))
    model = work / "alexnet_random.pb"
    output = work / f"{design}.csv"
    rows = sum(1 for _ in _original_chunks(files))
    if design == "original":
        labels = {path.name: path.parent.name for path in files}
        network = OriginalSession(model)
    else:
        from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor

        network = FrozenGraphExtractor(model, "fc7")
        renderer = "matplotlib" if design == "matplotlib" else "numpy"
        job = default_job(files, model, processes, renderer)
    network.features(np.zeros((2, 227, 227, 3), np.uint8))  # the session's first-run work
    measured = []
    for _ in range(runs):
        if design == "original":
            pool = start_original_pool(processes)
        else:
            workers = start_default_workers(processes, renderer)  # run_default closes them
        before = inference_rate(network, rows)
        started = time.perf_counter()
        if design == "original":
            done = run_original(files, network, output, pool, labels)
        else:
            done = run_default(files, network, output, workers, job)
        seconds = time.perf_counter() - started
        after = inference_rate(network, rows)
        measured.append({"rate": done / seconds, "seconds": seconds,
                         "inference": [before, after],
                         "share": done / seconds / ((before + after) / 2)})
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    middle = sorted(measured, key=lambda run: run["share"])[len(measured) // 2]
    return {"rows": done, "runs": measured, "median": middle,
            "onednn": bool(_pywrap_util_port.IsMklEnabled()), "tensorflow": tf.__version__}


def _run_child(design: str, work: Path, processes: int, runs: int = 1) -> dict:
    """``run_design`` in a new interpreter: each design gets TensorFlow as it sets it up."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if design == "original":
        environment.pop("TF_ENABLE_ONEDNN_OPTS", None)  # TensorFlow's own default
    result = subprocess.run([sys.executable, __file__, "--design", design, "--work", str(work),
                             "--np", str(processes), "--runs", str(runs)], env=environment,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"design {design} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _feature_values(path: Path) -> np.ndarray:
    import pandas as pd

    frame = pd.read_csv(path)
    return frame[[c for c in frame.columns if c.startswith("neuron_")]].to_numpy(np.float32)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--scale", type=int, default=10, help="size of the larger corpus for "
                        "the memory measurement, in multiples of --files (0: skip)")
    parser.add_argument("--np", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak-memory measurement")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of (b), each between two inference-only runs; the median "
                        "is reported")
    parser.add_argument("--design", choices=("original", "default", "matplotlib"),
                        help=argparse.SUPPRESS)  # internal: one design's run
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.design:
        print(json.dumps(run_design(args.design, args.work, args.np, args.runs)))
        return

    from deep_spectrum_extractor.backend.alexnet import (FULL_WIDTHS, build_alexnet_graph,
                                                         random_alexnet_weights)
    from deep_spectrum_extractor.backend.graph_io import write_graph_def

    with tempfile.TemporaryDirectory(prefix="ds-bench-") as tmp:
        tmp = Path(tmp)
        files = make_corpus(tmp / "corpus", args.files, args.seconds)
        model = write_graph_def(build_alexnet_graph(random_alexnet_weights(FULL_WIDTHS)),
                                tmp / "alexnet_random.pb")
        config = tmp / "deep.conf"
        config.write_text(f"[main]\nsize = 227\ngpu = 1\nbackend = tensorflow\n"
                          f"[tensorflow-nets]\nbench = {model}\n")
        if not args.memory_only:
            print(f"corpus: {len(files)} files x {args.seconds:g} s at {SAMPLE_RATE} Hz, "
                  f"-t 1 0.5, mode mel; AlexNet topology, full size, random weights; "
                  f"-np {args.np}; {os.cpu_count()} CPU cores", flush=True)
            runs = {design: _run_child(design, tmp, args.np, args.runs if design == "default"
                                       else 1)
                    for design in ("original", "default", "matplotlib")}
            a, b, c = runs["original"], runs["default"], runs["matplotlib"]
            assert a["rows"] == b["rows"] == c["rows"], runs
            kernels = {True: "oneDNN", False: "Eigen"}
            rate = {design: run["median"]["rate"] for design, run in runs.items()}
            for label, design, text in (("(a) original design ", "original", "matplotlib, "),
                                        ("(b) this project    ", "default", "direct, "),
                                        ("(c) (b), -renderer matplotlib", "matplotlib",
                                         "matplotlib, ")):
                run = runs[design]
                print(f"{label}: {run['rows']} chunks in {run['median']['seconds']:6.1f} s = "
                      f"{rate[design]:6.1f} chunks/s  ({text}{kernels[run['onednn']]} kernels)")
            print(f"end-to-end speed-up (b)/(a): {rate['default'] / rate['original']:.2f}x")
            step = render_times(files)
            print(f"draw per chunk: 2018 pyplot figure {step['2018 figure'] * 1e3:.2f} ms, "
                  f"-renderer matplotlib {step['matplotlib'] * 1e3:.2f} ms, direct "
                  f"{step['direct'] * 1e3:.3f} ms; ratio "
                  f"{step['2018 figure'] / step['direct']:.0f}x and "
                  f"{step['matplotlib'] / step['direct']:.0f}x")
            print(f"matrix per chunk: 2018 {step['2018 matrix'] * 1e3:.2f} ms, cached "
                  f"{step['cached matrix'] * 1e3:.2f} ms")
            before_after = {design: ", ".join(f"{value:.1f}" for value in
                                              run["median"]["inference"])
                            for design, run in runs.items()}
            print("inference only (same images, before and after the run): (a)'s session "
                  f"{before_after['original']} images/s, (b)'s {before_after['default']}"
                  f" images/s; (b) reaches {100 * b['median']['share']:.0f}% of its "
                  "session's mean rate")
            if len(b["runs"]) > 1:
                print(f"(b) in each of {len(b['runs'])} runs: " + "; ".join(
                    f"{run['rate']:.1f} chunks/s, {100 * run['share']:.0f}% of inference "
                    f"({run['inference'][0]:.1f}, {run['inference'][1]:.1f} images/s)"
                    for run in b["runs"]) + " (the median run is reported above)")
            identical = (tmp / "default.csv").read_bytes() == (tmp / "matplotlib.csv").read_bytes()
            print(f"features of (b) and (c) byte-identical: {identical}")
            difference = np.abs(_feature_values(tmp / "original.csv")
                                - _feature_values(tmp / "default.csv"))
            scale = np.abs(_feature_values(tmp / "original.csv")).max()
            print(f"(a) against (b): largest feature difference {difference.max():.3g} "
                  f"({difference.max() / scale:.1e} of the largest value; kernels differ)")

        if args.scale:
            small, small_time = peak_memory(tmp / "corpus", config, tmp / "m1.csv", args.np)
            large_corpus = tmp / "corpus_large"
            make_corpus(large_corpus, args.files * args.scale, args.seconds)
            large, large_time = peak_memory(large_corpus, config, tmp / "m2.csv", args.np)
            print(f"peak memory of extract_ds_features (all processes): {args.files} files "
                  f"{small / 2**20:.0f} MiB ({small_time:.0f} s), {args.files * args.scale} "
                  f"files {large / 2**20:.0f} MiB ({large_time:.0f} s), ratio "
                  f"{large / small:.2f}")


if __name__ == "__main__":
    main()
