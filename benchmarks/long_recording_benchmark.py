"""Cost and memory of extract_ds_features against the length of one recording.

    python benchmarks/long_recording_benchmark.py [--scale 1] [--work DIR] [--np 2]
                                                  [--only linear,full,stereo]

Each case runs ``extract_ds_features`` (``python -m deep_spectrum_extractor``) on one WAV
file in a process of its own and samples the resident memory of its whole process tree
(every process of the run summed, every 0.2 s: ``process_memory.peak_tree_memory``):

linear  5-, 30- and 60-minute recordings at 8 kHz mono, ``-t 1 0.1 -mode mel``, an
        AlexNet-topology graph at 1/8 of the real channel counts with random weights,
        ``-layer fc7``: wall time, chunks, the marginal time per chunk from 5 to 30 and
        from 30 to 60 minutes (difference of wall times over difference of chunk counts)
        and their ratio (goal <= 1.2), and the peak memory at 60 minutes over the peak
        at 5 minutes (goal <= 1.25);
full    the same settings through the full-size AlexNet topology's fc7 (random weights,
        about 240 MB of graph): peak memory at 12 minutes over 2 minutes (goal <= 1.25);
stereo  a 2-hour 48 kHz stereo recording with ``-sr 16000`` through the 1/8 graph: its
        peak memory over the 5-minute linear run's (goal <= 1.25; that run is made too
        when ``linear`` is not selected).

The recordings are the example corpus (``examples/audio``: engine hum, bird chirps and
rain, each resampled with soxr) concatenated over and over to the length needed and
written as 16-bit PCM WAV a block at a time; stereo pairs each clip with the one before
it.  Their first and last samples are never exactly zero, so the tool's trimming of
zeros at both ends leaves their lengths as written.  Every run must exit with status 0
and write as many rows as the recording has chunks; the feature file is counted and
deleted after each run.

A short unmeasured run comes first, so that the first measured one does not pay for
reading the libraries from disk.  Wall times include each run's start-up (TensorFlow,
the graph, the workers), which cancels out of the marginal times.

``--scale`` multiplies every length (``--scale 0.02`` checks the script in a few
minutes, though its times are then mostly start-up and noise); ``--work DIR`` keeps the
recordings and graphs for later runs (by default a temporary folder, deleted at the
end); ``--only`` picks cases (repeatable or a comma list). At full size the runs take
about ten minutes on two cores and the stereo run needs several GB of memory.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO / "deep-spectrum"
sys.path.insert(0, str(PACKAGE_ROOT))

from process_memory import peak_tree_memory  # noqa: E402

CASES = ("linear", "full", "stereo")
EXAMPLES = REPO / "examples" / "audio"
#: The example clips in the order they are concatenated (each 3 s at 16 kHz).
CLIPS = ("engine/engine_0.wav", "birdsong/birdsong_0.wav", "rain/rain_0.wav",
         "engine/engine_1.wav", "birdsong/birdsong_1.wav", "rain/rain_1.wav")
WINDOW, HOP = "1", "0.1"
LINEAR_MINUTES = (5, 30, 60)
FULL_MINUTES = (2, 12)
STEREO_MINUTES = 120
MONO_RATE = 8000
STEREO_RATE, STEREO_TARGET = 48000, 16000
TIME_GOAL, MEMORY_GOAL = 1.2, 1.25
WARM_UP_SECONDS = 20
BLOCK_SECONDS = 30  # largest piece of a recording held in memory while writing


# --- inputs ----------------------------------------------------------------------------------

def eighth_widths() -> dict[str, int]:
    """AlexNet's channel counts divided by eight (every grouped width stays even)."""
    from deep_spectrum_extractor.backend.alexnet import FULL_WIDTHS

    return {layer: width // 8 for layer, width in FULL_WIDTHS.items()}


def build_graph(size: str, path: Path) -> None:
    """Write the AlexNet-topology graph (``eighth`` or ``full`` widths, random weights)."""
    from deep_spectrum_extractor.backend.alexnet import (FULL_WIDTHS, build_alexnet_graph,
                                                         random_alexnet_weights)
    from deep_spectrum_extractor.backend.graph_io import write_graph_def

    widths = FULL_WIDTHS if size == "full" else eighth_widths()
    write_graph_def(build_alexnet_graph(random_alexnet_weights(widths)), path)


def prepare_models(work: Path, sizes: list[str]) -> Path:
    """The graphs (built in a child process, so this one never imports TensorFlow; kept
    when already in ``work``) and a deep.conf naming them; returns the config's path."""
    for size in sizes:
        path = work / f"alexnet_{size}.pb"
        if not path.exists():
            print(f"building {path.name} ...", flush=True)
            subprocess.run([sys.executable, __file__, "--build-graph", size, str(path)],
                           check=True, env=child_environment())
    config = work / "deep.conf"
    config.write_text("[main]\nsize = 227\ngpu = 1\nbackend = tensorflow\n\n"
                      "[tensorflow-nets]\neighth = alexnet_eighth.pb\n"
                      "full = alexnet_full.pb\n")
    return config


def source_cycle(rate: int, channels: int) -> np.ndarray:
    """One pass over the example clips at ``rate`` as int16, shape (n,) or (n, 2).

    The second channel is the first delayed by one clip, so that each moment pairs two
    different recordings.
    """
    import soundfile
    import soxr

    clips = []
    for name in CLIPS:
        signal, sr = soundfile.read(EXAMPLES / name, dtype="float64")
        clips.append(soxr.resample(signal, sr, rate, quality="HQ") if sr != rate else signal)
    mono = np.concatenate(clips)
    pcm = np.round(np.clip(mono, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    if channels == 1:
        return pcm
    return np.stack([pcm, np.roll(pcm, len(clips[0]))], axis=1)


def _nonzero_frame(block: np.ndarray, index: int) -> None:
    """Make the frame at ``index`` non-zero after averaging the channels (in place)."""
    frame = block[index:index + 1]
    if int(frame.astype(np.int64).sum()) == 0:
        frame[...] = 1


def write_recording(path: Path, frames: int, rate: int, channels: int) -> Path:
    """Write ``frames`` frames of the tiled example clips to ``path`` (16-bit WAV).

    Written in blocks of at most BLOCK_SECONDS to a partial file that is renamed at the
    end; an existing file of the right length and format is kept.
    """
    import soundfile

    if path.exists():
        info = soundfile.info(path)
        if (info.frames, info.samplerate, info.channels) == (frames, rate, channels):
            return path
    cycle = source_cycle(rate, channels)
    block_frames = BLOCK_SECONDS * rate
    partial = path.with_name(path.name + ".part")
    with soundfile.SoundFile(partial, "w", samplerate=rate, channels=channels,
                             subtype="PCM_16", format="WAV") as handle:
        written = 0
        while written < frames:
            offset = written % len(cycle)
            size = min(block_frames, len(cycle) - offset, frames - written)
            block = cycle[offset:offset + size].copy()
            if written == 0:
                _nonzero_frame(block, 0)
            if written + size == frames:
                _nonzero_frame(block, size - 1)
            handle.write(block)
            written += size
    os.replace(partial, path)
    return path


def recording(work: Path, minutes: float, scale: float, rate: int, channels: int) -> Path:
    """The recording of ``minutes * scale`` minutes at ``rate`` Hz (written if needed)."""
    frames = max(int(round(minutes * 60 * scale * rate)), 1)
    path = work / "audio" / f"examples_{rate}Hz_{channels}ch_{frames}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_recording(path, frames, rate, channels)


def expected_chunks(path: Path, target_rate: int | None = None) -> int:
    """Chunks of ``-t 1 0.1`` in a recording whose ends are not zero.

    With ``-sr`` soxr gives ``round(n * target / rate)`` samples (halves rounded up);
    chunks shorter than the FFT length at the end are dropped, as the tool does.
    """
    import soundfile

    from deep_spectrum_extractor.audio import default_nfft

    info = soundfile.info(path)
    length, rate = info.frames, info.samplerate
    if target_rate is not None and target_rate != rate:
        length = (2 * length * target_rate + rate) // (2 * rate)
        rate = target_rate
    window, hop = int(Decimal(WINDOW) * rate), int(Decimal(HOP) * rate)
    nfft = default_nfft(rate)
    if min(window, length) < nfft:
        return 0
    # chunk n holds min(window, length - n*hop) samples
    return min(max(length // hop, 1), (length - nfft) // hop + 1)


# --- runs ------------------------------------------------------------------------------------

def child_environment() -> dict[str, str]:
    """The environment of every child: this checkout's package first, TensorFlow quiet."""
    path = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2")


def count_rows(path: Path) -> int:
    """Data rows of a CSV feature file (lines after the header), read in blocks."""
    lines = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            lines += block.count(b"\n")
    return lines - 1


def run_case(name: str, audio: Path, config: Path, net: str, processes: int, work: Path,
             target_rate: int | None = None) -> dict:
    """One extract_ds_features run on ``audio``: wall time, peak memory of its process
    tree and chunks; fails unless it exits with 0 and writes one row per chunk."""
    folder = work / "runs" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    output, log = folder / "features.csv", folder / "stderr.txt"
    command = [os.path.abspath(sys.executable), "-m", "deep_spectrum_extractor", "-i", str(audio),
               "-o", str(output), "-t", WINDOW, HOP, "-mode", "mel", "-net", net,
               "-layer", "fc7", "-config", str(config), "-np", str(processes)]
    if target_rate is not None:
        command += ["-sr", str(target_rate)]
    print(f"[{name}] {shlex.join(command)}", flush=True)
    with open(log, "w") as errors:
        status, peak, seconds = peak_tree_memory(command, stdout=subprocess.DEVNULL,
                                                 stderr=errors, env=child_environment())
    messages = log.read_text(errors="replace")
    if status != 0:
        raise RuntimeError(f"[{name}] exit status {status}:\n{messages[-3000:]}")
    expected = expected_chunks(audio, target_rate)
    summary = re.search(r"(\d+) feature vectors from", messages)
    reported = int(summary.group(1)) if summary else None
    rows = count_rows(output)
    if not rows == reported == expected:
        raise RuntimeError(f"[{name}] {rows} rows in {output}, {reported} reported, "
                           f"{expected} chunks expected:\n{messages[-3000:]}")
    shutil.rmtree(folder)
    print(f"[{name}] {rows} chunks in {seconds:.1f} s, peak {peak / 2**20:.0f} MiB",
          flush=True)
    return {"chunks": rows, "seconds": seconds, "peak": peak, "command": command}


def warm_up(work: Path, config: Path, processes: int) -> None:
    """An unmeasured short run first, so that the first measured run does not pay for
    reading the libraries from disk."""
    audio = recording(work, WARM_UP_SECONDS / 60, 1, MONO_RATE, 1)
    print("warm-up run (not measured):", flush=True)
    run_case("warm-up", audio, config, "eighth", processes, work)


# --- report ----------------------------------------------------------------------------------

def machine() -> str:
    """CPU model, cores and memory of this machine."""
    model = "unknown CPU"
    memory = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as handle:
            kilobytes = int(handle.readline().split()[1])
            memory = f", {kilobytes / 2**20:.0f} GiB"
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores{memory}"


def revision() -> str:
    """The checkout's commit, with ``+ changes`` when the working tree differs from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain"],
                               cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return commit + (" + changes" if dirty else "")


def verdict(value: float, goal: float) -> str:
    return f"goal <= {goal:g}: {'PASS' if value <= goal else 'FAIL'}"


def length_label(minutes: float, scale: float) -> str:
    """``5 min`` at scale 1, the scaled length otherwise (``5 min x 0.02 = 6 s``)."""
    if scale == 1:
        return f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"
    return f"{minutes:g} min x {scale:g} = {minutes * 60 * scale:g} s"


def summarize(results: dict, cases: list[str], scale: float, processes: int) -> list[str]:
    """The figures as a compact block of lines."""
    mib = 2 ** 20
    lines = []
    if "linear" in cases:
        runs = [results[f"linear-{m}"] for m in LINEAR_MINUTES]
        lines.append(f"8 kHz, -t {WINDOW} {HOP}, -mode mel, 1/8 AlexNet fc7, -np {processes}")
        labels = [length_label(minutes, scale) + ":" for minutes in LINEAR_MINUTES]
        width = max(map(len, labels))
        for label, run in zip(labels, runs):
            lines.append(f"  {label:<{width}} {run['chunks']:6d} chunks in "
                         f"{run['seconds']:6.1f} s, peak {run['peak'] / mib:5.0f} MiB")
        marginals = [(b["seconds"] - a["seconds"]) / (b["chunks"] - a["chunks"])
                     for a, b in zip(runs, runs[1:])]
        text = (f"marginal time per chunk: 5->30 min {marginals[0] * 1e3:.2f} ms, "
                f"30->60 min {marginals[1] * 1e3:.2f} ms")
        if min(marginals) > 0:
            ratio = marginals[1] / marginals[0]
            text += f", ratio {ratio:.2f} ({verdict(ratio, TIME_GOAL)})"
        else:  # noise in the start-up larger than the work: only at a small --scale
            text += f", no ratio: not both positive (goal <= {TIME_GOAL:g}: FAIL)"
        lines.append(text)
        ratio = runs[2]["peak"] / runs[0]["peak"]
        lines.append(f"peak memory 60 min / 5 min: {ratio:.2f} ({verdict(ratio, MEMORY_GOAL)})")
    if "full" in cases:
        small, large = (results[f"full-{m}"] for m in FULL_MINUTES)
        ratio = large["peak"] / small["peak"]
        lines.append(f"full-size fc7: 2 min peak {small['peak'] / mib:.0f} MiB "
                     f"({small['chunks']} chunks, {small['seconds']:.1f} s), 12 min peak "
                     f"{large['peak'] / mib:.0f} MiB ({large['chunks']} chunks, "
                     f"{large['seconds']:.1f} s), ratio {ratio:.2f} "
                     f"({verdict(ratio, MEMORY_GOAL)})")
    if "stereo" in cases:
        run, reference = results["stereo"], results[f"linear-{LINEAR_MINUTES[0]}"]
        ratio = run["peak"] / reference["peak"]
        lines.append(f"2 h 48 kHz stereo, -sr {STEREO_TARGET}: peak {run['peak'] / mib:.0f} MiB "
                     f"({run['chunks']} chunks, {run['seconds']:.1f} s), ratio to 5 min "
                     f"{ratio:.2f} ({verdict(ratio, MEMORY_GOAL)})")
    return lines


def parse_cases(values: list[str] | None) -> list[str]:
    """``--only`` values (repeated and/or comma lists) as cases in their usual order."""
    if not values:
        return list(CASES)
    chosen = {item.strip() for value in values for item in value.split(",") if item.strip()}
    unknown = chosen - set(CASES)
    if unknown:
        raise argparse.ArgumentTypeError(f"--only: unknown case(s) {', '.join(sorted(unknown))}; "
                                         f"choose from {', '.join(CASES)}")
    return [case for case in CASES if case in chosen]


def benchmark(work: Path, cases: list[str], scale: float, processes: int) -> list[str]:
    """Write the inputs, run the cases; returns the summary lines."""
    sizes = ["eighth"] + (["full"] if "full" in cases else [])  # eighth: also the warm-up's
    config = prepare_models(work, sizes)
    warm_up(work, config, processes)
    results = {}
    if "linear" in cases or "stereo" in cases:
        minutes = LINEAR_MINUTES if "linear" in cases else LINEAR_MINUTES[:1]
        if "linear" not in cases:
            print("stereo is compared with the 5-minute run, which is made first", flush=True)
        for length in minutes:
            audio = recording(work, length, scale, MONO_RATE, 1)
            results[f"linear-{length}"] = run_case(f"linear-{length}", audio, config,
                                                   "eighth", processes, work)
    if "full" in cases:
        for length in FULL_MINUTES:
            audio = recording(work, length, scale, MONO_RATE, 1)
            results[f"full-{length}"] = run_case(f"full-{length}", audio, config, "full",
                                                 processes, work)
    if "stereo" in cases:
        audio = recording(work, STEREO_MINUTES, scale, STEREO_RATE, 2)
        results["stereo"] = run_case("stereo", audio, config, "eighth", processes, work,
                                     target_rate=STEREO_TARGET)
    return summarize(results, cases, scale, processes)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies every recording's length (default 1; 0.02 for a "
                        "quick check)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for recordings, graphs and outputs, kept and reused "
                        "(default: a temporary folder)")
    parser.add_argument("--np", type=int, default=2, help="-np of every run (default 2)")
    parser.add_argument("--only", action="append", metavar="CASE",
                        help=f"run only these cases ({', '.join(CASES)}); repeatable or a "
                        "comma list (default: all)")
    parser.add_argument("--build-graph", nargs=2, metavar=("SIZE", "PATH"),
                        help=argparse.SUPPRESS)  # internal: write one graph
    args = parser.parse_args(argv)
    if args.build_graph:
        build_graph(args.build_graph[0], Path(args.build_graph[1]))
        return
    try:
        cases = parse_cases(args.only)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.scale <= 0 or args.np < 1:
        parser.error("--scale must be positive and --np at least 1")

    print(f"machine: {machine()}; commit {revision()}", flush=True)
    print(f"cases: {', '.join(cases)}; scale {args.scale:g}; -np {args.np}", flush=True)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        lines = benchmark(args.work.resolve(), cases, args.scale, args.np)
    else:
        with tempfile.TemporaryDirectory(prefix="ds-long-") as tmp:
            lines = benchmark(Path(tmp), cases, args.scale, args.np)
    print()
    print(f"machine: {machine()}; commit {revision()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
