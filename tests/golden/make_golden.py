"""Record what today's code writes, for every way of running, on a fixed generated corpus.

Run from the repository root::

    python tests/golden/make_golden.py          # (re)records tests/golden/<case>/...
    python tests/golden/make_golden.py --keep   # also keeps the temporary work folder

It builds, in a temporary folder and byte for byte the same every time,

* a corpus of audio files in three class folders (seeded tones, a chirp, noise; 0.3 s to
  20 s; 16 kHz and 44.1 kHz; a stereo file; a FLAC file; a file with exact zeros at both
  ends that are trimmed; a file shorter than one chunk) plus files that are skipped (an
  empty ``.wav``, a text file named ``.wav``, an all-zero file) and a label file for
  ``-l`` (:func:`make_corpus`);
* the small AlexNet-topology model with random weights (seed 1) that ``tests/conftest.py``
  builds, and a ``deep.conf`` naming it ``small`` (:func:`make_model`);

then runs every case of :data:`CASES` (``-batch_size 4 -renderer numpy`` always, so that
batches span files) and stores each output, normalised by :func:`normalise`, under
``tests/golden/<case>/``: ARFF without its ``%`` provenance lines, CSV as written,
Parquet rewritten without its schema metadata (the provenance), NPZ without its
``provenance`` array.  Sidecar JSON files are not stored.  ``cases.json`` records each
case's exit status and files; ``machine.json`` the machine the data were recorded on (CPU
model and flags, CPU count, TensorFlow and NumPy versions, oneDNN on or off), so that
``tests/test_golden.py`` knows whether it may demand identical bits.

``tests/test_golden.py`` imports :func:`make_corpus`, :func:`make_model`, :data:`CASES`
and :func:`run_case` from here, so the recording and the test cannot drift apart.
Re-record only on purpose: the point of the files is that a changed run layer must
reproduce them.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent
TESTS = GOLDEN.parent
REPO = TESTS.parent
for folder in (REPO / "deep-spectrum", TESTS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

# before anything imports TensorFlow: the same kernels as the command line gets
from deep_spectrum_extractor.backend.tf import prepare_environment  # noqa: E402

prepare_environment()

BATCH = "4"          # small, so that batches straddle files
CHUNKS = ("-t", "1", "0.5")
RENDERER = "numpy"
NET = "small"


# --- the corpus and the model -------------------------------------------------------------

def _tone(seconds, rate, frequency, *, seed, noise=0.05):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    signal = 0.5 * np.sin(2 * np.pi * frequency * t) + noise * rng.standard_normal(len(t))
    signal[0] = signal[-1] = 0.25  # no exact zeros at the ends: nothing is trimmed
    return signal


def _chirp(seconds, rate, low, high, *, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    phase = 2 * np.pi * (low * t + (high - low) * t ** 2 / (2 * seconds))
    signal = 0.4 * np.sin(phase) + 0.02 * rng.standard_normal(len(t))
    signal[0] = signal[-1] = 0.25
    return signal


def _noise(seconds, rate, *, seed):
    signal = 0.3 * np.random.default_rng(seed).standard_normal(int(round(seconds * rate)))
    signal = np.clip(signal, -0.99, 0.99)
    signal[0] = signal[-1] = 0.25
    return signal


def _write(path: Path, signal, rate, subtype="FLOAT", fmt=None):
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, signal, rate, subtype=subtype, format=fmt)


#: the usable files, in the order the tools sort them, with (seconds, sample rate)
GOOD_FILES = {
    "a/chirp_44k.wav": (2.6, 44100),
    "a/stereo_44k.wav": (1.7, 44100),
    "a/tone_16k.wav": (1.3, 16000),
    "b/beep_44k.wav": (1.3, 44100),
    "b/noise.flac": (1.2, 16000),
    "b/padded_16k.wav": (2.0, 16000),   # 0.4 s of exact zeros, 1.2 s tone, 0.4 s zeros
    "b/short_16k.wav": (0.3, 16000),    # shorter than one 1 s chunk
    "c/medium_44k.wav": (6.0, 44100),
    "c/z_long_16k.wav": (20.0, 16000),  # last and long: a killed run is still busy with it
}
# With -t 1 0.5 these give 69 chunks and with -batch_size 4 the last batch holds a single
# chunk (as the last of the 9 whole files does without -t): on this machine's oneDNN
# kernels a batch of one gives other bits than larger batches, so a batch boundary that
# moves (other batches, per-file batches) changes the output.
#: files every run skips
BAD_FILES = ("a/empty.wav", "b/text.wav", "c/silence.wav")


def make_corpus(root: Path) -> tuple[Path, Path]:
    """Write the corpus under ``root/audio`` and its label file; returns both paths."""
    audio = root / "audio"
    _write(audio / "a/chirp_44k.wav", _chirp(2.6, 44100, 200, 6000, seed=1), 44100, "PCM_16")
    left, right = _tone(1.7, 44100, 660, seed=2), _tone(1.7, 44100, 990, seed=3)
    _write(audio / "a/stereo_44k.wav", np.stack([left, 0.5 * right], axis=1), 44100, "PCM_24")
    _write(audio / "a/tone_16k.wav", _tone(1.3, 16000, 440, seed=4), 16000)
    _write(audio / "b/beep_44k.wav", _tone(1.3, 44100, 2500, seed=10, noise=0.1), 44100)
    _write(audio / "b/noise.flac", _noise(1.2, 16000, seed=5), 16000, "PCM_16", "FLAC")
    padded = np.concatenate([np.zeros(6400), _tone(1.2, 16000, 300, seed=6), np.zeros(6400)])
    _write(audio / "b/padded_16k.wav", padded, 16000)
    _write(audio / "b/short_16k.wav", _tone(0.3, 16000, 1500, seed=7), 16000)
    _write(audio / "c/medium_44k.wav", _chirp(6.0, 44100, 3000, 300, seed=8), 44100)
    rate = 16000
    t = np.arange(20 * rate) / rate
    long = 0.4 * np.sin(2 * np.pi * (250 + 200 * np.floor(t / 2.5)) * t) \
        + 0.03 * np.random.default_rng(9).standard_normal(len(t))
    long[0] = long[-1] = 0.25
    _write(audio / "c/z_long_16k.wav", long, rate)
    (audio / "a/empty.wav").write_bytes(b"")
    (audio / "b/text.wav").write_text("this is not audio\n" * 20)
    _write(audio / "c/silence.wav", np.zeros(16000), 16000, "PCM_16")

    labels = root / "labels.csv"
    rows = ["file,speaker,score"]
    for number, name in enumerate(sorted([*GOOD_FILES, *BAD_FILES])):
        rows.append(f"{Path(name).name},spk{number % 3},{0.25 * number:g}")
    labels.write_text("\n".join(rows) + "\n")
    return audio, labels


def make_model(root: Path) -> Path:
    """The small model (``tests/conftest.py``'s ``small_model``) and a deep.conf naming it."""
    from deep_spectrum_extractor.backend.alexnet import build_alexnet_graph, random_alexnet_weights
    from deep_spectrum_extractor.backend.graph_io import write_graph_def

    folder = root / "model"
    folder.mkdir(parents=True, exist_ok=True)
    write_graph_def(build_alexnet_graph(random_alexnet_weights(seed=1)), folder / "small.pb")
    config = folder / "deep.conf"
    config.write_text("[main]\nsize = 227\ngpu = 1\nbackend = tensorflow\n\n"
                      "[tensorflow-nets]\nsmall = small.pb\n")
    return config


# --- the cases ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One way of running; each output file is one run (one kill-and-resume, ...)."""

    name: str
    way: str                  # cli | deepspectrum | resume | shard | dask
    outputs: tuple[str, ...]  # file names; the extension picks the format
    args: tuple[str, ...] = ()
    labels: bool = False      # pass the corpus's label file with -l


CASES = (
    Case("np2", "cli", ("features.arff", "features.csv", "features.parquet", "features.npz"),
         (*CHUNKS, "-np", "2")),
    Case("np1", "cli", ("features.arff",), (*CHUNKS, "-np", "1")),
    Case("whole_files", "cli", ("features.arff",), ("-np", "1")),
    Case("mel64", "cli", ("features.csv",), (*CHUNKS, "-mode", "mel", "-nmel", "64", "-np", "1")),
    Case("sr16000", "cli", ("features.arff",), (*CHUNKS, "-sr", "16000", "-np", "1")),
    Case("label_file", "cli", ("features.csv", "features.parquet"), (*CHUNKS, "-np", "1"),
         labels=True),
    Case("resumed_np2", "resume", ("features.csv",), (*CHUNKS, "-np", "2")),
    Case("resumed_np1", "resume", ("features.arff",), (*CHUNKS, "-np", "1")),
    Case("sharded", "shard", ("features.arff",), (*CHUNKS, "-np", "1")),
    Case("dask", "dask", ("features.csv",), CHUNKS),
    Case("deepspectrum_features", "deepspectrum", ("features.arff",), (*CHUNKS, "-np", "1")),
)

SHARDS = 3
#: the journal lines (fingerprint + one per file) to see before the kill
KILL_AFTER_LINES = 3
#: seconds the run to be killed goes on between two looks at its journal
SLICE = 0.005


def case_argv(case: Case) -> list[str]:
    """The case's options, with ``{audio}``, ``{config}`` and ``{labels}`` for the paths."""
    return ["-i", "{audio}", "-net", NET, "-config", "{config}", "-batch_size", BATCH,
            "-renderer", RENDERER, *case.args, *(["-l", "{labels}"] if case.labels else [])]


def common_args(audio: Path, config: Path, labels: Path | None, case: Case) -> list[str]:
    paths = {"{audio}": str(audio), "{config}": str(config), "{labels}": str(labels)}
    return [paths.get(arg, arg) for arg in case_argv(case)]


def spelled_0_6(argv: list[str]) -> list[str]:
    """An extract_ds_features command line as DeepSpectrum 0.6.x spells it (the input
    first, then 0.6.x's option names), for ``deepspectrum features``."""
    from deep_spectrum_extractor.cli.options import OPTIONS

    modern = {spelling: option.modern[0] for option in OPTIONS.values() if option.modern
              for spelling in option.classic}
    rest = list(argv)
    source = rest.pop(rest.index("-i") + 1)
    rest.remove("-i")
    return [source, *(modern.get(arg, arg) for arg in rest)]


def _cli(argv: list[str]) -> tuple[int, str]:
    """extract_ds_features in this process; its exit status and what it wrote to stderr."""
    from deep_spectrum_extractor.cli.extract_ds_features import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def _check(code: int, err: str, what: str) -> None:
    if code not in (0, 1):  # 1: the bad files were skipped
        raise RuntimeError(f"{what} exited with {code}:\n{err}")


def run_case(case: Case, audio: Path, config: Path, labels: Path, work: Path) -> dict:
    """Run ``case`` into ``work``; returns ``{output name: (path, exit status)}``."""
    work.mkdir(parents=True, exist_ok=True)
    base = common_args(audio, config, labels, case)
    produced = {}
    for name in case.outputs:
        out = work / name
        if case.way == "cli":
            code, err = _cli([*base, "-o", str(out)])
        elif case.way == "deepspectrum":
            from deep_spectrum_extractor.cli.deepspectrum import main as deepspectrum

            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                code = deepspectrum(["features", *spelled_0_6(base), "-o", str(out)])
            err = stderr.getvalue()
        elif case.way == "resume":
            code, err = _killed_and_resumed(base, out, work)
        elif case.way == "shard":
            code, err = _sharded(base, out)
        elif case.way == "dask":
            code, err = _on_dask(base, out)
        else:
            raise ValueError(case.way)
        _check(code, err, f"{case.name} ({name})")
        if not out.exists():
            raise RuntimeError(f"{case.name}: {out} was not written:\n{err}")
        produced[name] = (out, code)
    return produced


def _killed_and_resumed(base: list[str], out: Path, work: Path) -> tuple[int, str]:
    """A run killed (SIGKILL to its process group) part way, then ``--resume``."""
    from test_robustness import start_cli

    journal = out.with_name(f".{out.name}.journal")
    process = start_cli([*base, "-o", out], work)
    try:
        _kill_part_way(process, journal, KILL_AFTER_LINES)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    if out.exists() or not journal.exists():
        raise RuntimeError(f"the killed run finished {out} before the kill")
    code, err = _cli([*base, "-o", str(out), "--resume"])
    done = re.search(r"resumed; (\d+) file\(s\) were done before and (\d+) chunk", err)
    total = len(GOOD_FILES) + len(BAD_FILES)
    # killed after some batches: inside the first file (0 files done, chunks kept) or later
    if not done or int(done.group(1)) >= total or int(done.group(2)) < 1:
        raise RuntimeError(f"the second run did not resume a part-done run:\n{err}")
    print(f"make_golden: {out.name}: killed after {done.group(1)} of {total} files and "
          f"{done.group(2)} chunks, resumed", file=sys.stderr)
    return code, err


def _kill_part_way(process, journal: Path, lines: int, timeout: float = 180) -> None:
    """SIGKILL ``process``'s group once ``journal`` has more than ``lines`` lines.

    The run needs only a few tenths of a second from its journal's first line to its
    end, too little to poll reliably (``test_robustness.wait_for_journal``) on a busy
    machine.  So once the journal exists the group runs in slices of ``SLICE`` seconds
    and is stopped (SIGSTOP) while the journal is read: it cannot finish between the look
    and the kill.  Stopping changes nothing it computes.
    """
    import time

    deadline = time.monotonic() + timeout

    def alive():
        if process.poll() is not None:
            raise RuntimeError(f"the run ended (status {process.returncode}) before it "
                               f"could be killed:\n{process.stderr.read().decode()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the run wrote no {journal} in {timeout} s")

    while not journal.exists():
        alive()
        time.sleep(0.002)
    while True:
        alive()
        os.killpg(process.pid, signal.SIGSTOP)
        time.sleep(0.002)  # let the stop reach every process of the group
        if len(journal.read_text(errors="replace").splitlines()) > lines:
            os.killpg(process.pid, signal.SIGKILL)
            return
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(SLICE)


def _sharded(base: list[str], out: Path) -> tuple[int, str]:
    """``-shard i/N`` for every i, then ``ds_merge_shards``."""
    from deep_spectrum_extractor.sharding import main as merge, shard_path

    codes, errs, shards = [], [], []
    for number in range(1, SHARDS + 1):
        code, err = _cli([*base, "-o", str(out), "-shard", f"{number}/{SHARDS}"])
        _check(code, err, f"shard {number}/{SHARDS}")
        codes.append(code)
        errs.append(err)
        shards.append(str(shard_path(out, (number, SHARDS))))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        merged = merge(["-o", str(out), *shards])
    if merged != 0:
        raise RuntimeError(f"ds_merge_shards exited with {merged}:\n{stderr.getvalue()}")
    return max(codes), "".join(errs) + stderr.getvalue()


def _on_dask(base: list[str], out: Path) -> tuple[int, str]:
    """``-scheduler ADDRESS`` of a local cluster: one in-process single-threaded worker."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None) as cluster:
        return _cli([*base, "-o", str(out), "-scheduler", cluster.scheduler_address])


# --- what is stored -----------------------------------------------------------------------

#: NPZ arrays that are provenance, not results: neither stored nor compared
NPZ_PROVENANCE = ("provenance",)


def normalise(path: Path, dest: Path) -> None:
    """Write ``path`` to ``dest`` without provenance (see the module docstring)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".arff":
        dest.write_bytes(strip_arff(path.read_bytes()))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(pq.read_table(path).replace_schema_metadata(None), dest)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files if key not in NPZ_PROVENANCE}
        with open(dest, "wb") as handle:
            np.savez(handle, **arrays)
    else:
        shutil.copyfile(path, dest)


def strip_arff(data: bytes) -> bytes:
    """An ARFF file without its ``%`` comment (provenance) lines."""
    return b"".join(line for line in data.splitlines(keepends=True)
                    if not line.startswith(b"%"))


def machine() -> dict:
    """What decides the last bits of the float32 results on this machine."""
    import tensorflow as tf

    from deep_spectrum_extractor.backend.tf import default_threads, onednn_enabled

    cpu = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "flags") and key not in cpu:
                cpu[key] = value.strip()
    return {"cpu_model": cpu.get("model name", platform.processor()),
            "cpu_flags": sorted(cpu.get("flags", "").split()),
            "machine": platform.machine(),
            "cpus": default_threads(),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "onednn": onednn_enabled()}


def record(work: Path, golden: Path = GOLDEN) -> None:
    audio, labels = make_corpus(work / "corpus")
    config = make_model(work)
    cases = {}
    for case in CASES:
        print(f"make_golden: {case.name} ...", file=sys.stderr, flush=True)
        produced = run_case(case, audio, config, labels, work / "runs" / case.name)
        target = golden / case.name
        if target.exists():
            shutil.rmtree(target)
        for name, (path, _code) in produced.items():
            normalise(path, target / name)
        cases[case.name] = {"way": case.way, "argv": case_argv(case),
                            "status": {name: code for name, (_p, code) in produced.items()}}
    (golden / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    (golden / "machine.json").write_text(json.dumps(machine(), indent=1) + "\n")
    total = sum(p.stat().st_size for p in golden.rglob("*") if p.is_file())
    print(f"make_golden: {len(CASES)} cases recorded in {golden} ({total} bytes in all)",
          file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ds-golden-"))
    try:
        record(work)
    finally:
        if args.keep:
            print(f"make_golden: work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
