"""End-to-end benchmark: the original design against this project's pipeline.

    python benchmarks/pipeline_benchmark.py [--files 200] [--seconds 5] [--scale 10]

Generates a corpus (``--files`` recordings of ``--seconds`` at 16 kHz in two class folders),
builds an AlexNet-topology graph at full size with random weights, and measures in one run,
on the same graph and the same chunks (``-t 1 0.5``, mel spectrograms):

(a) the original design: chunks read in the main process, one matplotlib figure per chunk in
    a ``multiprocessing.Pool``, batches of 128 through the graph, rows written with ``str``;
(b) this project's default, as ``extract_ds_features`` runs it (``extract_to_file``): worker
    processes drawing with the direct renderer, files shipped whole (or in pieces of
    ``batch_size`` chunks), inference in the main process, rows written by a writer thread.

Worker processes are started (and have imported their libraries) before the clock starts, for
both designs: both tools start them while the network loads.  It prints chunks per second for
each and their ratio, the render time per chunk of each
drawing path, the inference-only throughput of the graph on the same number of images, whether
both outputs are byte-identical, and the peak memory (all processes of a run together) of the
command line on the corpus and on a ``--scale`` times larger one.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deep-spectrum"))

from deep_spectrum_extractor.audio import chunk_signal, default_nfft, read_audio  # noqa: E402
from deep_spectrum_extractor.images import min_chunk_length, plot_matrix, spectral_matrix  # noqa: E402
from deep_spectrum_extractor.images.render import render_matrix  # noqa: E402
from deep_spectrum_extractor.settings import FeatureSettings, RunOptions  # noqa: E402

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


def _original_plot(item):
    name, timestamp, samples, sr = item
    nfft = default_nfft(sr)
    matrix = spectral_matrix(samples, sr, mode=SETTINGS.mode, nfft=nfft)
    image = plot_matrix(matrix, sample_rate=sr, nfft=nfft, scale=SETTINGS.plot_scale,
                        cmap=SETTINGS.cmap, size=SETTINGS.size)
    return name, timestamp, image


def _warm_original(_):
    """What a 2018 worker had loaded before its first chunk."""
    import librosa.display  # noqa: F401
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401

    return os.getpid()


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

def start_default_workers(processes: int):
    """extract_ds_features starts its workers while the network loads, too."""
    from deep_spectrum_extractor.pipeline import start_workers

    workers = start_workers(processes)
    for future in [workers.submit(os.getpid) for _ in range(processes)]:
        future.result()
    return workers


def run_default(files, extractor, output: Path, workers, processes: int, model: Path) -> int:
    """The job as extract_ds_features runs it: pipeline, writer thread, journal."""
    from deep_spectrum_extractor.extraction import extract_to_file, provenance
    from deep_spectrum_extractor.labels import folder_labels

    options = RunOptions(processes=processes, batch_size=128)
    report = extract_to_file(files, output, SETTINGS, extractor, options,
                             record=provenance(SETTINGS, options, model),
                             labels=folder_labels(files), timestamps=True, executor=workers)
    return report.rows


# --- measurements ----------------------------------------------------------------------------

def render_times(files, count: int = 100) -> tuple[float, float]:
    items = [item for _, item in zip(range(count), _original_chunks(files))]
    nfft = default_nfft(SAMPLE_RATE)
    matrices = [spectral_matrix(samples, sr, mode="mel", nfft=nfft) for _, _, samples, sr in items]
    timings = []
    for draw in (plot_matrix, render_matrix):
        draw(matrices[0], sample_rate=SAMPLE_RATE, nfft=nfft, scale="linear")  # warm caches
        started = time.perf_counter()
        for matrix in matrices:
            draw(matrix, sample_rate=SAMPLE_RATE, nfft=nfft, scale="linear")
        timings.append((time.perf_counter() - started) / len(matrices))
    return timings[0], timings[1]


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


def _tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(current, []))
    return total


def peak_memory(corpus: Path, config: Path, output: Path, processes: int) -> tuple[int, float]:
    command = [sys.executable, "-m", "deep_spectrum_extractor", "-i", str(corpus), "-o",
               str(output), "-t", "1", "0.5", "-mode", "mel", "-net", "bench", "-config",
               str(config), "-np", str(processes)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.2)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with {process.returncode}")
    return peak, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--scale", type=int, default=10, help="size of the larger corpus for "
                        "the memory measurement, in multiples of --files (0: skip)")
    parser.add_argument("--np", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak-memory measurement")
    args = parser.parse_args(argv)

    from deep_spectrum_extractor.backend.alexnet import (FULL_WIDTHS, build_alexnet_graph,
                                                         random_alexnet_weights)
    from deep_spectrum_extractor.backend.convention import write_graph_def
    from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor

    with tempfile.TemporaryDirectory(prefix="ds-bench-") as tmp:
        tmp = Path(tmp)
        files = make_corpus(tmp / "corpus", args.files, args.seconds)
        labels = {path.name: path.parent.name for path in files}
        model = write_graph_def(build_alexnet_graph(random_alexnet_weights(FULL_WIDTHS)),
                                tmp / "alexnet_random.pb")
        config = tmp / "deep.conf"
        config.write_text(f"[main]\nsize = 227\ngpu = 1\nbackend = tensorflow\n"
                          f"[tensorflow-nets]\nbench = {model}\n")
        if not args.memory_only:
            extractor = FrozenGraphExtractor(model, "fc7")
            # TensorFlow optimises the graph on its first run: not part of either design
            extractor.features(np.zeros((2, 227, 227, 3), np.uint8))
            print(f"corpus: {len(files)} files x {args.seconds:g} s at {SAMPLE_RATE} Hz, "
                  f"-t 1 0.5, mode mel; AlexNet topology, full size, random weights; "
                  f"-np {args.np}; {os.cpu_count()} CPU cores")

            pool = start_original_pool(args.np)
            started = time.perf_counter()
            rows_a = run_original(files, extractor, tmp / "original.csv", pool, labels)
            time_a = time.perf_counter() - started
            workers = start_default_workers(args.np)
            started = time.perf_counter()
            rows_b = run_default(files, extractor, tmp / "default.csv", workers, args.np, model)
            time_b = time.perf_counter() - started
            assert rows_a == rows_b, (rows_a, rows_b)
            identical = (tmp / "original.csv").read_bytes() == (tmp / "default.csv").read_bytes()

            rate_a, rate_b = rows_a / time_a, rows_b / time_b
            inference = inference_rate(extractor, rows_a)
            plot_time, render_time = render_times(files)
            print(f"(a) original design : {rows_a} chunks in {time_a:6.1f} s = {rate_a:6.1f} chunks/s")
            print(f"(b) this project    : {rows_b} chunks in {time_b:6.1f} s = {rate_b:6.1f} chunks/s")
            print(f"end-to-end speed-up (b)/(a): {rate_b / rate_a:.2f}x")
            print(f"render per chunk: matplotlib {plot_time * 1e3:.2f} ms, direct "
                  f"{render_time * 1e3:.3f} ms, ratio {plot_time / render_time:.0f}x")
            print(f"inference only: {inference:.1f} images/s; (b) reaches "
                  f"{100 * rate_b / inference:.0f}% of it")
            print(f"outputs of (a) and (b) byte-identical: {identical}")
            extractor.close()

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
