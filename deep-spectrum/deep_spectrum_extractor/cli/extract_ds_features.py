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
from pathlib import Path

from .. import __version__
from ..config import load_config
from ..errors import DeepSpectrumError, ParameterError, exit_status
from ..settings import (DEFAULT_LAYER, DEFAULT_NET, FeatureSettings, RunOptions,
                        available_colormaps, network_layers)
from . import options
from .report import Progress, Voice

PROG = "extract_ds_features"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser, with the original tool's option names and defaults
    (:mod:`.options`)."""
    parser = options.StrictParser(
        prog=prog, family=options.CLASSIC, description="Extract deep spectrum features from "
        "audio files: each chunk is plotted as a spectrogram, mel spectrogram or chromagram "
        "and fed to an ImageNet-pretrained CNN; the activations of one layer are the "
        "features.")
    required = parser.add_argument_group("required options")
    options.add(required, options.CLASSIC, "i")
    options.add(required, options.CLASSIC, "o", required=True)
    options.add_groups(parser, options.CLASSIC, options.GROUPS)
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
    """Run the command; returns the exit status.  Without ``argv`` it is the program
    (see :func:`interrupted_once`)."""
    return execute(build_parser(prog).parse_args(argv), Voice(prog), program=argv is None)


@contextlib.contextmanager
def interrupted_once(*, program: bool):
    """Within the block, the first Ctrl-C raises KeyboardInterrupt and later ones are
    ignored (main thread only; where Ctrl-C is ignored already it stays so).

    The run is ending by then: a second Ctrl-C, or one that a thread held back while
    workers started, must cut short neither its cleanup and report nor, for the
    ``program``, the interpreter's teardown, which would then end with the signal
    instead of status 130 (and a traceback).  After an interrupt the program keeps
    ignoring Ctrl-C while it exits (about a second); otherwise the previous handler is
    restored.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def first(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        if not (program and signal.getsignal(signal.SIGINT) == signal.SIG_IGN):
            signal.signal(signal.SIGINT, signal.default_int_handler)


def execute(args: argparse.Namespace, voice: Voice, *, program: bool = False) -> int:
    """Run a parsed command (``args.run``, this command's :func:`run` by default) and
    turn what happens into messages and an exit status; ``deepspectrum`` runs its
    commands through here too.  ``program``: this command is the process's program."""
    _terminated.clear()
    try:
        with sigterm_raises(), interrupted_once(program=program), voice.warnings():
            status = getattr(args, "run", run)(args, voice)
        if _terminated.is_set():
            raise Terminated()
        return status
    except DeepSpectrumError as exc:
        voice.error(str(exc))
        return exit_status(exc)
    except (KeyboardInterrupt, Terminated) as exc:
        voice.say("interrupted" + (f"; {args.o} not written (run again with --resume to "
                                   "continue where it stopped)"
                                   if getattr(args, "resumable", True) else ""))
        return 143 if isinstance(exc, Terminated) else 130


def pairs_from_args(args: argparse.Namespace, config) -> tuple[tuple[str, str], ...]:
    """The (network, layer) pairs of ``-net`` and ``-layer`` (``-en``, ``-fl``)."""
    def default_layer(net: str) -> str:
        entry = config.nets.get(net)
        return (entry.default_layer if entry else None) or DEFAULT_LAYER

    modern = getattr(args, "family", options.CLASSIC) == options.MODERN
    return network_layers(args.net, args.layer, default_layer=default_layer,
                          default_net=options.MODERN_NET if modern else DEFAULT_NET)


def settings_from_args(args: argparse.Namespace, config) -> FeatureSettings:
    """The feature settings of a parsed command line and a loaded config (with the
    first of its (network, layer) pairs)."""
    window, hop = args.t if args.t else (None, None)
    ((net, layer), *_others) = pairs_from_args(args, config)
    if args.cmap not in available_colormaps():
        raise ParameterError(f"-cmap={args.cmap!r} is not a matplotlib colour map; "
                             f"available: {', '.join(available_colormaps())}")
    return FeatureSettings(mode=args.mode, scale=args.scale, window=window, hop=hop,
                           start=args.start, end=args.end, nfft=args.nfft, ylim=args.ylim,
                           delta=args.delta, nmel=args.nmel, cmap=args.cmap, size=config.size,
                           net=net, layer=layer, sample_rate=args.sr)


def labels_from_args(args: argparse.Namespace, settings: FeatureSettings, files: list[Path],
                     root: Path | None):
    """The labels the options ask for, checked against ``files``, and the files to use
    (with a label file, ``--skip_unlabelled`` leaves out the files it does not name)."""
    from ..labels import choose_labels

    if args.tc and not (settings.chunked and args.l):
        raise ParameterError("--tc needs both -t and a label file (-l)")
    return choose_labels(files, root=root, label_file=args.l,
                         explicit=args.el[0] if args.el else None, no_labels=args.no_labels,
                         time_continuous=args.tc,
                         unlisted="skip" if args.skip_unlabelled else "stop")


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
    root = Path(args.i) if Path(args.i).is_dir() else None
    labels, files = labels_from_args(args, settings, files, root)
    modern = getattr(args, "family", options.CLASSIC) == options.MODERN
    return Job(
        files, settings,
        RunOptions(processes=args.np or os.cpu_count() or 1, batch_size=args.batch_size,
                   progress=True, renderer=args.renderer),
        output=Output(args.o, timestamps=not args.no_timestamps, resume=args.resume,
                      shard=shard, names="relative" if modern else "file"),
        labels=labels, root=root,
        extra=ExtraOutput(Path(args.specout) if args.specout else None,
                          Path(args.wavout) if args.wavout else None),
        cluster=Cluster(args.scheduler) if args.scheduler else None,
        stop_on_error=args.stop_on_error, config=config, statistics=args.statistics,
        networks=pairs_from_args(args, config))


def run(args: argparse.Namespace, voice: Voice) -> int:
    """Everything after parsing: build the job, run it, report."""
    from ..run import StopOnError, run_job

    started = time.monotonic()
    job = job_from_args(args)
    voice.detail(f"settings: {job.settings.to_dict()}", level=2)
    if job.labels is not None and job.labels.time_continuous:
        voice.say(f"checking the time-continuous labels against {len(job.inputs)} file(s)")
    with Progress(voice, len(job.inputs), "file") as progress:
        def loading():  # the job is checked: say what loads, then show progress
            voice.announce_loading(f"{len(job.inputs)} audio file(s)", job.config, job.pairs)
            progress.start()

        run = run_job(job, on_load=loading)
        try:
            for result in run:
                progress.update(result)
        except StopOnError as stop:
            progress.close()
            voice.say(f"stopped at the first bad file ({stop.path}: "
                      f"{voice.words(stop.reason)}); {job.output.path} not written")
            return 1
    voice.device_note(run.report, job.config)
    if job.output.shard is not None:
        return _shard_summary(voice, job, run.report)
    return _summary(voice, job, run.report, time.monotonic() - started)


def _summary(voice: Voice, job, report, elapsed: float) -> int:
    from ..extraction import sidecar_path

    output = ", ".join(str(path) for path in report.outputs)
    if report.resumed:
        voice.say(f"resumed; {report.resumed_files} file(s) were done before and "
                  f"{report.resumed_position} chunk(s) were not drawn again"
                  + (f" ({report.resume_note})" if report.resume_note else ""))
    if not report.committed:
        voice.say(f"no features extracted from {len(job.inputs)} file(s); {output} not "
                  "written")
        return 1
    summary = (f"{report.rows} feature vectors from {len(report.done)} file(s) "
               f"written to {output} ({elapsed:.1f} s)")
    if report.skipped:
        summary += (f"; {len(report.skipped)} file(s) skipped: "
                    + ", ".join(str(path) for path, _ in report.skipped[:10])
                    + (" ..." if len(report.skipped) > 10 else "")
                    + f" (all listed in {sidecar_path(report.outputs[0])})")
    voice.say(summary)
    return 1 if report.skipped else 0


def _shard_summary(voice: Voice, job, report) -> int:
    """One part of a job array: a one-line summary of its shard file."""
    number, count = job.output.shard
    begin, end = report.positions
    if begin >= end:
        voice.warn(f"shard {number} of {count} gets no work: the job's {report.batches} "
                   f"batch(es) of {job.options.batch_size} chunks went to the other shards; "
                   "use fewer shards or a smaller -batch_size")
    written = ", ".join(str(path) for path in report.outputs)
    voice.say(f"shard {number} of {count}: {report.rows} feature vectors written to "
              f"{written}; join the parts with ds_merge_shards")
    return 1 if report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
