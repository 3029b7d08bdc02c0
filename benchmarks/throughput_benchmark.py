"""Where a run's time goes: several layers in one pass, the CPU side, start-up, the network.

    python benchmarks/throughput_benchmark.py [--files 80] [--seconds 15] [--np N] [--runs 3]

Generates a corpus (``--files`` recordings of ``--seconds`` at 16 kHz, the generator of
``pipeline_benchmark.py``), a larger one for the CPU side (``--cpu-files`` of
``--cpu-seconds``), each also at 8 kHz, and a one-second, one-chunk file, builds an
AlexNet-topology graph
at full size with random weights and a graph that only averages the image, and runs the
``extract_ds_features`` command line on them (``-t 1 0.5 -mode mel``, 227 px), each run a
process of its own whose CPU time is counted with all its workers (``RUSAGE_CHILDREN``):

(a) one pass with ``-layer fc6 fc7`` against two runs with one layer each, full-size graph
    (wall-clock seconds; goal: ratio at most 0.6);
(b) CPU seconds per chunk of the CPU side (read, matrix, drawing, hand-over, bookkeeping,
    writing), all processes counted, with the averaging graph: the corpus run minus the
    one-chunk run, divided by the chunks in between (the larger corpus: start-up varies by
    a second or two); for this project and for the original design
    (``pipeline_benchmark.py``'s 2018 structure: a Pool over chunks, librosa, a pyplot
    figure and a PNG per chunk, ``str`` per value; once, on the smaller corpus, which costs
    it a minute of CPU already); the chunks per second 16 such cores could feed (goal: at
    most 0.8 ms per chunk); also at 8 kHz; and the averaging graph's own CPU per picture
    (alone, as in (d)), which both figures include;
(c) the wall-clock time of a one-file job with the full-size graph (its first row is
    written just before it ends) against ``python -c "import tensorflow"`` plus reading the
    graph once TensorFlow is imported (goal: within 1 s); the same to the job's summary
    line and to the end of the import (without the interpreter's teardown); and what
    TensorFlow itself spends on this graph after its read (session and first batch of
    one image, alone in a process configured as the command configures it);
(d) the steady-state rate of the full-size graph (corpus run minus one-chunk run) against
    the rate of the same graph alone, in a process configured as the command configures
    it, on as many random images in batches of 128 (goal: at least 0.9; median of
    ``--runs``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deep-spectrum"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

OPTIONS = ["-t", "1", "0.5", "-mode", "mel"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(command: list[str], environment: dict | None = None) -> tuple[float, float, str]:
    """Run ``command``; its wall-clock seconds, its CPU seconds (with every process it
    waited for) and its stderr."""
    cpu, started = children_cpu(), time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True,
                            env=environment or os.environ)
    seconds, cpu = time.perf_counter() - started, children_cpu() - cpu
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, cpu, result.stderr


def extract(work: Path, corpus: Path, net: str, *layers: str, processes: int,
            output: str = "out.csv") -> tuple[float, float]:
    command = [sys.executable, "-m", "deep_spectrum_extractor", "-i", str(corpus), "-o",
               str(work / output), *OPTIONS, "-net", net, "-config", str(work / "deep.conf"),
               "-np", str(processes)]
    if layers:
        command += ["-layer", *layers]
    seconds, cpu, _err = measured(command)
    return seconds, cpu


def averaging_graph(path: Path) -> Path:
    """A graph in the convention whose one layer, ``mean``, averages each colour."""
    from deep_spectrum_extractor.backend.graph_io import write_graph_def
    from deep_spectrum_extractor.backend.tf import tensorflow

    tf = tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        average = tf.reduce_mean(images, axis=[1, 2], name="average")
        with tf.compat.v1.name_scope("mean/"):  # the op "mean/mean" exactly
            tf.identity(average, name="mean")
    return write_graph_def(graph.as_graph_def(), path)


def prepare(work: Path, files: int, seconds: float, cpu_files: int,
            cpu_seconds: float) -> dict:
    import soundfile

    from deep_spectrum_extractor.backend.alexnet import (FULL_WIDTHS, build_alexnet_graph,
                                                         random_alexnet_weights)
    from deep_spectrum_extractor.backend.graph_io import write_graph_def
    from pipeline_benchmark import make_corpus

    corpora = {}
    for rate in (16000, 8000):
        folders = []
        for name, count, length in (("corpus", files, seconds), ("large", cpu_files,
                                                                 cpu_seconds)):
            folder = work / f"{name}{rate}"
            if rate == 16000:
                make_corpus(folder, count, length)
            else:  # the same recordings, every other sample
                for path in sorted((work / f"{name}16000").rglob("*.wav")):
                    signal, _ = soundfile.read(path)
                    target = folder / path.relative_to(work / f"{name}16000")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    soundfile.write(target, signal[::2], 8000, subtype="PCM_16")
            folders.append(folder)
        one = work / f"one{rate}"
        one.mkdir()
        noise = 0.1 * np.random.default_rng(1).standard_normal(rate)
        soundfile.write(one / "one.wav", noise, rate, subtype="PCM_16")
        corpora[rate] = (*folders, one)
    write_graph_def(build_alexnet_graph(random_alexnet_weights(FULL_WIDTHS)),
                    work / "alexnet_random.pb")
    averaging_graph(work / "average.pb")
    (work / "deep.conf").write_text("[main]\nsize = 227\ngpu = 1\nbackend = tensorflow\n\n"
                                    "[tensorflow-nets]\nbench = alexnet_random.pb\n"
                                    "average = average.pb\n\n[tensorflow-layers]\n"
                                    "bench = fc7\naverage = mean\n")
    return corpora


def chunk_count(corpus: Path) -> int:
    from deep_spectrum_extractor.audio import chunk_signal, default_nfft, read_audio
    from deep_spectrum_extractor.settings import FeatureSettings

    settings = FeatureSettings(window=1, hop=0.5)
    total = 0
    for path in corpus.rglob("*.wav"):
        signal, rate = read_audio(path)
        total += len(chunk_signal(signal, rate, window=settings.window, hop=settings.hop,
                                  min_length=default_nfft(rate)))
    return total


# --- the original design with the averaging graph -------------------------------------------

def original_child(corpus: Path, model: Path, output: Path, processes: int) -> None:
    """Run pipeline_benchmark's 2018 design (pool started, session loaded, as the 2018 tool
    did before its first chunk) in this process."""
    import pipeline_benchmark as original

    files = sorted(corpus.rglob("*.wav"))
    labels = {path.name: path.parent.name for path in files}
    session = original.OriginalSession(model, layer="mean")
    pool = original.start_original_pool(processes)
    original.run_original(files, session, output, pool, labels)


def original(work: Path, corpus: Path, processes: int) -> tuple[float, float]:
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_ENABLE_ONEDNN_OPTS", None)
    seconds, cpu, _err = measured([sys.executable, __file__, "--original", str(corpus),
                                   "--work", str(work), "--np", str(processes)], environment)
    return seconds, cpu


# --- the network alone -----------------------------------------------------------------------

def inference_child(model: Path, images: int, layer: str) -> None:
    """The images per second of the graph alone, set up as the command sets it up, and
    its CPU seconds per image (all threads)."""
    from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor
    from deep_spectrum_extractor.config import load_config

    network = FrozenGraphExtractor(model, layer, gpu=load_config(None).gpu)
    batch = np.random.default_rng(1).integers(0, 256, (128, 227, 227, 3), dtype=np.uint8)
    network.features(batch[:8])  # the first run's set-up, as the command's first batch
    started, cpu, done = time.perf_counter(), time.process_time(), 0
    while done < images:
        size = min(128, images - done)
        network.features(batch[:size])
        done += size
    print(json.dumps({"rate": done / (time.perf_counter() - started),
                      "cpu": (time.process_time() - cpu) / done}))


def inference(model: Path, images: int, layer: str = "fc7") -> dict:
    result = subprocess.run([sys.executable, __file__, "--inference", str(model), "--images",
                             str(images), "--layer", layer], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def setup_child(model: Path) -> None:
    """Seconds TensorFlow spends on the graph after reading it: the session (graph read
    included, subtracted by the caller) and the first batch of one image."""
    from deep_spectrum_extractor.backend.extractor import FrozenGraphExtractor, tensorflow
    from deep_spectrum_extractor.config import load_config

    tensorflow()
    started = time.perf_counter()
    network = FrozenGraphExtractor(model, "fc7", gpu=load_config(None).gpu)
    built = time.perf_counter()
    network.features(np.zeros((1, 227, 227, 3), np.uint8))
    print(json.dumps({"session": built - started, "first": time.perf_counter() - built}))


def tensorflow_setup(model: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--setup", str(model)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def to_summary(command: list[str]) -> tuple[float, float]:
    """Seconds until ``command`` prints its summary line (the file is complete) and until
    it ends."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    summary = None
    assert process.stderr is not None
    for line in process.stderr:
        if summary is None and "feature vectors" in line:
            summary = time.perf_counter() - started
    if process.wait() != 0 or summary is None:
        raise RuntimeError(f"{' '.join(command)} failed")
    return summary, time.perf_counter() - started


def import_only() -> float:
    """Seconds from the start of ``python -c "import tensorflow"`` to the end of the
    import (the interpreter's teardown left out)."""
    started = time.time()
    result = subprocess.run([sys.executable, "-c", "import time, tensorflow; print(time.time())"],
                            capture_output=True, text=True, check=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return float(result.stdout.strip().splitlines()[-1]) - started


def import_and_read(model: Path) -> tuple[float, float]:
    """Seconds of ``python -c "import tensorflow"`` and of reading the graph (parsed and
    checked, as the command reads it) once TensorFlow is imported."""
    seconds, _cpu, _err = measured([sys.executable, "-c", "import tensorflow"],
                                   dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    probe = ("import time, sys; from deep_spectrum_extractor.backend.extractor import "
             "read_graph_def, tensorflow; tensorflow(); t = time.perf_counter(); "
             "read_graph_def(sys.argv[1]); print(time.perf_counter() - t)")
    result = subprocess.run([sys.executable, "-c", probe, str(model)], capture_output=True,
                            text=True, check=True)
    return seconds, float(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--cpu-files", type=int, default=100)
    parser.add_argument("--cpu-seconds", type=float, default=60.0)
    parser.add_argument("--np", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep the corpus and outputs here")
    parser.add_argument("--original", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--inference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layer", default="fc7", help=argparse.SUPPRESS)
    parser.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.setup:
        return setup_child(args.setup)
    if args.original:
        return original_child(args.original, args.work / "average.pb",
                              args.work / "original.csv", args.np)
    if args.inference:
        return inference_child(args.inference, args.images, args.layer)

    work = args.work or Path(tempfile.mkdtemp(prefix="throughput_"))
    work.mkdir(parents=True, exist_ok=True)
    corpora = prepare(work, args.files, args.seconds, args.cpu_files, args.cpu_seconds)
    counts = {folder: chunk_count(folder) for folders in corpora.values()
              for folder in folders[:2]}
    corpus, _large, one = corpora[16000]
    chunks = counts[corpus]
    cpu_name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name")), "?") if os.path.exists(
                         "/proc/cpuinfo") else "?"
    print(f"machine: {cpu_name}, {os.cpu_count()} cores; -np {args.np}; corpus "
          f"{args.files} x {args.seconds:g} s at 16 kHz = {chunks} chunks, larger corpus "
          f"{args.cpu_files} x {args.cpu_seconds:g} s = {counts[_large]} chunks (-t 1 0.5, "
          "mel, 227 px)")

    # (a) two layers in one pass
    both, _ = extract(work, corpus, "bench", "fc6", "fc7", processes=args.np)
    fc6, _ = extract(work, corpus, "bench", "fc6", processes=args.np)
    fc7, _ = extract(work, corpus, "bench", "fc7", processes=args.np)
    ratio = both / (fc6 + fc7)
    print(f"(a) -layer fc6 fc7 in one pass {both:.1f} s; -layer fc6 {fc6:.1f} s + -layer fc7 "
          f"{fc7:.1f} s = {fc6 + fc7:.1f} s; ratio {ratio:.2f} "
          f"(goal <= 0.6: {'PASS' if ratio <= 0.6 else 'FAIL'})")

    # (b) the CPU side
    for rate in (16000, 8000):
        small, large, single = corpora[rate]
        rows = []
        for name, folder, times, run in (
                ("this project", large, args.runs,
                 lambda path: extract(work, path, "average", processes=args.np)),
                # a minute of CPU per run: once (start-up noise is small beside it)
                ("original design", small, 1, lambda path: original(work, path, args.np))):
            runs = [(run(folder)[1], run(single)[1]) for _ in range(times)]
            per_chunk = statistics.median((full - first) / (counts[folder] - 1)
                                          for full, first in runs)
            rows.append((name, per_chunk, times))
        for name, per_chunk, times in rows:
            verdict = ""
            if name == "this project":
                verdict = f" (goal <= 0.8 ms: {'PASS' if per_chunk <= 0.8e-3 else 'FAIL'})"
            print(f"(b) {rate // 1000} kHz, {name}: {per_chunk * 1e3:.2f} ms CPU per chunk, "
                  f"all processes (median of {times}); 16 such cores feed "
                  f"{16 / per_chunk:,.0f} chunks/s{verdict}")
    # what the averaging graph itself costs (counted in (b), but not the CPU side's)
    own = inference(work / "average.pb", 12800, "mean")["cpu"]
    print(f"    the averaging graph alone: {own * 1e3:.2f} ms CPU per picture (all threads, "
          "batches of 128; counted in both sides' figures above)")

    # (c) start-up
    model = work / "alexnet_random.pb"
    command = [sys.executable, "-m", "deep_spectrum_extractor", "-i", str(one), "-o",
               str(work / "one.csv"), *OPTIONS, "-net", "bench", "-config",
               str(work / "deep.conf"), "-np", str(args.np)]
    timings = [to_summary(command) for _ in range(args.runs)]
    summary = statistics.median(timing[0] for timing in timings)
    first = statistics.median(timing[1] for timing in timings)
    imported, read = import_and_read(model)
    import_end = statistics.median(import_only() for _ in range(args.runs))
    setup = tensorflow_setup(model)
    late = first - (imported + read)
    print(f"(c) one-file job {first:.2f} s; import tensorflow {imported:.2f} s + reading the "
          f"graph {read:.2f} s = {imported + read:.2f} s; {late:+.2f} s "
          f"(goal within 1 s: {'PASS' if late <= 1.0 else 'FAIL'}; medians of {args.runs})")
    baseline = import_end + read
    print(f"    to its summary line {summary:.2f} s; to the end of the import {import_end:.2f} "
          f"s + reading {read:.2f} s = {baseline:.2f} s; {summary - baseline:+.2f} s")
    print(f"    TensorFlow's own work on the graph after its read: session "
          f"{setup['session'] - read:.2f} s + first batch (one image) {setup['first']:.2f} s "
          f"= {setup['session'] - read + setup['first']:.2f} s")

    # (d) the network sets the pace
    shares = []
    for _ in range(args.runs):
        full = extract(work, corpus, "bench", processes=args.np)[0]
        single = extract(work, one, "bench", processes=args.np)[0]
        steady = (chunks - 1) / (full - single)
        alone = inference(model, chunks)["rate"]
        shares.append((steady / alone, steady, alone))
        print(f"    corpus {full:.1f} s, one chunk {single:.1f} s: steady state "
              f"{steady:.1f} chunks/s; the graph alone {alone:.1f} images/s; "
              f"{steady / alone:.2f}")
    share, steady, alone = sorted(shares)[len(shares) // 2]
    print(f"(d) steady state {steady:.1f} chunks/s against the graph alone {alone:.1f} "
          f"images/s: {share:.2f} (median of {args.runs}; goal >= 0.9: "
          f"{'PASS' if share >= 0.9 else 'FAIL'})")


if __name__ == "__main__":
    main()
