"""``extract_ds_features``: Deep Spectrum features from audio files.

Parses the options of the original tool, checks everything that can be checked
before the first plot (input, config, network, layer, labels, output), runs the
pipeline and writes the features.  Exit status: 0 when every file produced features,
1 when some files were skipped or nothing could be extracted, 2 for usage errors.
Importing this module does not import TensorFlow, so ``-h`` is instant.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .. import __version__
from ..config import DEFAULT_CONFIG_PATH, load_config
from ..errors import DeepSpectrumError, DeepSpectrumWarning, ParameterError, exit_status
from ..settings import (DEFAULT_BATCH_SIZE, DEFAULT_CMAP, DEFAULT_LAYER, DEFAULT_MODE,
                        DEFAULT_NET, DEFAULT_NMEL, DEFAULT_RENDERER, DEFAULT_SCALE, MODES,
                        RENDERERS, SCALES, FeatureSettings, RunOptions, available_colormaps)

PROG = "extract_ds_features"


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser, with the original tool's option names and defaults."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Extract deep spectrum features from wav files: each chunk "
        "is plotted as a spectrogram, mel spectrogram or chromagram and fed to an "
        "ImageNet-pretrained CNN; the activations of one layer are the features.")
    required = parser.add_argument_group("required options")
    required.add_argument("-i", required=True, metavar="INPUT",
                          help="folder with audio files (.wav, .flac, .ogg, .mp3 ...; searched "
                          "recursively) or one audio file")
    required.add_argument("-o", required=True, metavar="OUTPUT",
                          help="feature file; .arff gives ARFF, any other extension CSV")

    chunks = parser.add_argument_group("extracting features from audio chunks")
    chunks.add_argument("-t", nargs=2, type=_decimal, metavar=("WINDOW", "HOP"),
                        help="window and hop size in seconds, e.g. -t 1 0.5 "
                        "(default: the whole file is one chunk)")
    chunks.add_argument("-start", type=_decimal, default=Decimal(0),
                        help="start time in seconds (default: 0)")
    chunks.add_argument("-end", type=_decimal, default=None,
                        help="end time in seconds (default: end of file)")
    chunks.add_argument("-sr", type=_positive_int, default=None, metavar="RATE",
                        help="resample every file to this sample rate in Hz (default: keep "
                        "each file's rate)")

    plots = parser.add_argument_group("parameters of the audio plots")
    plots.add_argument("-mode", choices=MODES, default=DEFAULT_MODE,
                       help=f"type of plot (default: {DEFAULT_MODE})")
    plots.add_argument("-scale", choices=SCALES, default=DEFAULT_SCALE,
                       help=f"y axis scale of the plots; chroma plots always use the chroma "
                       f"axis (default: {DEFAULT_SCALE})")
    plots.add_argument("-ylim", type=_positive_int, default=None,
                       help="highest frequency in Hz shown in the plot (default: none)")
    plots.add_argument("-delta", type=_positive_int, default=None,
                       help="plot the derivative of this order of the features (default: none)")
    plots.add_argument("-nmel", type=_positive_int, default=DEFAULT_NMEL,
                       help=f"number of mel bands, mode mel only (default: {DEFAULT_NMEL})")
    plots.add_argument("-nfft", type=_positive_int, default=None,
                       help="FFT length in samples (default: the next power of two of "
                       "0.025 x the sample rate)")
    plots.add_argument("-cmap", default=DEFAULT_CMAP,
                       help=f"matplotlib colour map (default: {DEFAULT_CMAP})")
    plots.add_argument("-renderer", choices=RENDERERS, default=DEFAULT_RENDERER,
                       help="how plots are drawn: numpy draws the same pixels as matplotlib "
                       "about a hundred times faster; matplotlib draws a figure per chunk as "
                       f"the original did (default: {DEFAULT_RENDERER})")

    cnn = parser.add_argument_group("parameters of the feature extractor CNN")
    cnn.add_argument("-net", default=DEFAULT_NET,
                     help=f"network, as named in the config file (default: {DEFAULT_NET})")
    cnn.add_argument("-layer", default=None,
                     help=f"layer whose activations are the features (default: the net's "
                     f"layer in the config file, else {DEFAULT_LAYER})")
    cnn.add_argument("-batch_size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                     help=f"images per network run (default: {DEFAULT_BATCH_SIZE})")

    labels = parser.add_argument_group("label information")
    labels.add_argument("-l", metavar="LABEL_FILE", default=None,
                        help="CSV (or .tsv) file with a header; first column the audio file "
                        "name with extension, further columns labels")
    labels.add_argument("--tc", action="store_true",
                        help="time-continuous labels: with -t and -l, the label file's second "
                        "column is the timestamp of each hop")
    labels.add_argument("-el", nargs=1, metavar="LABEL", default=None,
                        help="one explicit label for every input file")
    labels.add_argument("--no_timestamps", action="store_true",
                        help="do not write timestamps")
    labels.add_argument("--no_labels", action="store_true", help="do not write labels")

    extra = parser.add_argument_group("additional output")
    extra.add_argument("-specout", default=None, metavar="FOLDER",
                       help="save the plot of every chunk as .png in this folder")
    extra.add_argument("-wavout", default=None, metavar="FOLDER",
                       help="save the audio of every chunk as .wav in this folder")

    conf = parser.add_argument_group("configuration")
    conf.add_argument("-np", type=_positive_int, default=None,
                      help="number of processes (default: number of CPU cores)")
    conf.add_argument("-scheduler", default=None, metavar="ADDRESS",
                      help="run on a Dask cluster: a scheduler address (tcp://host:8786) or a "
                      "scheduler file (.json); the output is the same as on one machine")
    conf.add_argument("-shard", nargs="?", const="slurm", default=None, metavar="i/N",
                      help="process the i-th of N equal parts of the job into "
                      "<output stem>.shard-i-of-N<ext> (for job arrays; without a value: the "
                      "SLURM array task's part); ds_merge_shards joins the parts")
    conf.add_argument("--resume", action="store_true",
                      help="continue an interrupted run with the same settings: files already "
                      "done are not processed again")
    conf.add_argument("--stop_on_error", action="store_true",
                      help="stop at the first file that cannot be used instead of skipping it")
    conf.add_argument("-config", default=str(DEFAULT_CONFIG_PATH),
                      help="configuration file; created with the defaults if it does not "
                      "exist (default: deep.conf of the package)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


class Terminated(BaseException):
    """SIGTERM, raised as an exception so that the run stops cleanly."""


_terminated = threading.Event()


def _terminate(signum, frame):
    _terminated.set()  # remembered even if a library swallows the exception below
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None, *, prog: str = PROG) -> int:
    """Run the command; returns the exit status.

    ``prog`` names the command in usage and messages (``deepspectrum features`` runs
    this same command under its own name).
    """
    args = build_parser(prog).parse_args(argv)
    args.prog = prog
    _terminated.clear()
    try:
        with sigterm_raises():
            status = run(args)
        if _terminated.is_set():
            raise Terminated()
        return status
    except DeepSpectrumError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"{prog}: interrupted; {args.o} not written (run again with --resume to "
              "continue where it stopped)", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def settings_from_args(args: argparse.Namespace, config) -> FeatureSettings:
    """The feature settings of a parsed command line and a loaded config."""
    window, hop = args.t if args.t else (None, None)
    layer = args.layer
    if layer is None:
        net = config.nets.get(args.net.lower())
        layer = (net.default_layer if net else None) or DEFAULT_LAYER
    if args.cmap not in available_colormaps():
        raise ParameterError(f"-cmap={args.cmap!r} is not a matplotlib colour map; "
                             f"available: {', '.join(available_colormaps())}")
    return FeatureSettings(mode=args.mode, scale=args.scale, window=window, hop=hop,
                           start=args.start, end=args.end, nfft=args.nfft, ylim=args.ylim,
                           delta=args.delta, nmel=args.nmel, cmap=args.cmap, size=config.size,
                           net=args.net.lower(), layer=layer, sample_rate=args.sr)


def labels_from_args(args: argparse.Namespace, settings: FeatureSettings, files: list[Path]):
    """The label source the options ask for, checked against ``files`` (None: no labels)."""
    from ..labels import choose_labels

    if args.tc and not (settings.chunked and args.l):
        raise ParameterError("--tc needs both -t and a label file (-l)")
    return choose_labels(files, label_file=args.l, explicit=args.el[0] if args.el else None,
                         no_labels=args.no_labels, time_continuous=args.tc)


def job_from_args(args: argparse.Namespace):
    """The :class:`~deep_spectrum_extractor.job.Job` a parsed command line asks for."""
    from ..audio import find_audio_files
    from ..job import Cluster, Job, Output
    from ..run import ExtraOutput

    config = load_config(args.config)
    settings = settings_from_args(args, config)
    files = find_audio_files(args.i)
    if not files:
        raise ParameterError(f"no audio files found in {args.i}")
    shard = None
    if args.shard is not None:
        from ..sharding import resolve_shard

        shard = resolve_shard(args.shard)
    return Job(
        files, settings,
        RunOptions(processes=args.np or os.cpu_count() or 1, batch_size=args.batch_size,
                   progress=True, renderer=args.renderer),
        output=Output(args.o, timestamps=not args.no_timestamps, resume=args.resume,
                      shard=shard),
        labels=labels_from_args(args, settings, files),
        root=Path(args.i) if Path(args.i).is_dir() else None,
        extra=ExtraOutput(Path(args.specout) if args.specout else None,
                          Path(args.wavout) if args.wavout else None),
        cluster=Cluster(args.scheduler) if args.scheduler else None,
        stop_on_error=args.stop_on_error, config=config)


def run(args: argparse.Namespace) -> int:
    """Everything after parsing: build the job, run it, report."""
    from ..run import StopOnError, run_job

    started = time.monotonic()
    prog = getattr(args, "prog", PROG)
    with warning_lines(prog):
        job = job_from_args(args)
        if job.labels is not None and job.labels.time_continuous:
            print(f"{prog}: checking the time-continuous labels against {len(job.inputs)} "
                  "file(s)", file=sys.stderr)
        with Progress(prog, len(job.inputs), "file") as progress:
            def loading():  # the job is checked: say what loads, then show progress
                announce_loading(prog, f"{len(job.inputs)} audio file(s)",
                                 job.config.net(job.settings.net), job.settings.layer)
                progress.start()

            run = run_job(job, on_load=loading)
            try:
                for result in run:
                    progress.update(result)
            except StopOnError as stop:
                progress.close()
                print(f"{prog}: stopped at the first bad file ({stop.path}: {stop.reason}); "
                      f"{job.output.path} not written", file=sys.stderr)
                return 1
    if job.output.shard is not None:
        return _shard_summary(prog, job, run.report)
    return _summary(prog, job, run.report, time.monotonic() - started)


@contextlib.contextmanager
def warning_lines(prog: str):
    """Within the block, library warnings are printed as ``PROG: warning: MESSAGE``."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DeepSpectrumWarning)
        warnings.showwarning = show
        yield


class Progress:
    """A progress bar on stderr, shown from :meth:`start` (or the first input done); each
    skipped input is printed above it with its reason."""

    def __init__(self, prog: str, total: int, unit: str):
        self.prog, self.total, self.unit = prog, total, unit
        self._bar = None

    def start(self) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=self.total, unit=self.unit, file=sys.stderr)

    def update(self, result) -> None:
        """One input is done (``result.ok``) or skipped (``result.error``)."""
        self.start()
        self._bar.update()
        if not result.ok:
            self._bar.write(f"{self.prog}: skipped {result.path}: {result.error}",
                            file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def announce_loading(prog: str, inputs: str, entry, layer: str) -> None:
    """The first line of a run: what it is about to load (that takes seconds)."""
    from ..backend.networks import BUILDERS

    print(f"{prog}: {inputs}; loading {entry.name} ({entry.path}, layer {layer})",
          file=sys.stderr)
    if not entry.path.exists() and entry.name in BUILDERS:
        print(f"{prog}: building {entry.path} from the installed weights (first use only)",
              file=sys.stderr)


def _summary(prog: str, job, report, elapsed: float) -> int:
    from ..extraction import sidecar_path

    output = job.output.path
    if report.resumed:
        print(f"{prog}: resumed; {report.resumed_files} file(s) were done before and "
              f"{report.resumed_position} chunk(s) were not drawn again"
              + (f" ({report.resume_note})" if report.resume_note else ""), file=sys.stderr)
    if not report.committed:
        print(f"{prog}: no features extracted from {len(job.inputs)} file(s); {output} not "
              "written", file=sys.stderr)
        return 1
    summary = (f"{prog}: {report.rows} feature vectors from {len(report.done)} file(s) "
               f"written to {output} ({elapsed:.1f} s)")
    if report.skipped:
        summary += (f"; {len(report.skipped)} file(s) skipped: "
                    + ", ".join(str(path) for path, _ in report.skipped[:10])
                    + (" ..." if len(report.skipped) > 10 else "")
                    + f" (all listed in {sidecar_path(output)})")
    print(summary, file=sys.stderr)
    return 1 if report.skipped else 0


def _shard_summary(prog: str, job, report) -> int:
    """One part of a job array: a one-line summary of its shard file."""
    number, count = job.output.shard
    begin, end = report.positions
    if begin >= end:
        print(f"{prog}: warning: shard {number} of {count} gets no work: the job's "
              f"{report.batches} batch(es) of {job.options.batch_size} chunks went to the "
              "other shards; use fewer shards or a smaller -batch_size", file=sys.stderr)
    print(f"{prog}: shard {number} of {count}: {report.rows} feature vectors written to "
          f"{report.output}; join the parts with ds_merge_shards", file=sys.stderr)
    return 1 if report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
